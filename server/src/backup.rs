//! Backups of a SQLite database, and putting one back.
//!
//! `mam backup FILE` copies the database with `VACUUM INTO` from a reader: one consistent
//! snapshot, taken while `mam serve` goes on answering (under WAL, readers never block the
//! writer). `mam restore FILE` puts a copy back while no server runs (the data directory's
//! lock says so), keeps the database it replaces beside it, and gives the restored database a
//! new epoch: phones then pull from the start and push again every edit they kept that the
//! backup does not hold (`sync-protocol/PROTOCOL.md`, "After a restore").
//!
//! PostgreSQL has its own tools (`pg_dump`, base backups, replicas); after a restore from them,
//! `mam epoch renew` does what `mam restore` does to the epoch, and a promoted replica or a
//! cluster restored from a base backup renews it by itself ([`crate::store::postgres`]).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The database file inside a data directory.
pub fn database_file(data_dir: &Path) -> PathBuf {
    data_dir.join("mam.db")
}

/// The lock a server holds on its data directory while it runs: one server per SQLite
/// database, and no restore under a running server.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Take the lock, or say who holds it.
    pub fn take(data_dir: &Path, purpose: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let path = data_dir.join("mam.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "{} is in use by a running `mam serve`: stop it before {purpose}",
                data_dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

/// Check that `file` is a whole Mầm database: SQLite's integrity check passes and it holds the
/// records table. Returns how many records it holds.
pub async fn check_backup(file: &Path) -> anyhow::Result<i64> {
    if !file.is_file() {
        bail!("{} is not a file", file.display());
    }
    let mut conn = SqliteConnectOptions::new()
        .filename(file)
        .read_only(true)
        .connect()
        .await
        .with_context(|| format!("{} is not a SQLite database", file.display()))?;
    let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .with_context(|| format!("{} is not a SQLite database", file.display()))?;
    if verdict != "ok" {
        bail!("{} is damaged: {verdict}", file.display());
    }
    let records: Option<i64> = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM records) WHERE EXISTS
           (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records')",
    )
    .fetch_optional(&mut conn)
    .await?;
    conn.close().await?;
    records.with_context(|| {
        format!(
            "{} is not a Mầm database (no records table)",
            file.display()
        )
    })
}

/// Put `backup` in place of the data directory's database. The database it replaces (with its
/// WAL) is renamed, never deleted. Returns where it went, if there was one.
pub async fn restore(backup: &Path, data_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let target = database_file(data_dir);
    let incoming = data_dir.join("mam.db.restoring");
    std::fs::copy(backup, &incoming)
        .with_context(|| format!("cannot copy {} to {}", backup.display(), incoming.display()))?;
    File::open(&incoming)?.sync_all()?;
    check_backup(&incoming).await?;
    let kept = if target.exists() {
        let stamp = chrono_stamp();
        let aside = data_dir.join(format!("mam.db.replaced-{stamp}"));
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", target.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                std::fs::rename(&from, &to).with_context(|| {
                    format!("cannot move {} to {}", from.display(), to.display())
                })?;
            }
        }
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&incoming, &target)?;
    File::open(data_dir)?.sync_all()?;
    Ok(kept)
}

/// The folder beside a backup file that holds its attachments: `FILE.attachments`.
pub fn attachments_beside(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.attachments", file.display()))
}

/// Copies every stored attachment of `dir` (the store's `objects/`, with each one's media
/// type; not uploads under way, not thumbnails) into `to`. Attachments never change once
/// stored, so a hard link is a copy; across file systems the bytes are copied. Returns how
/// many, and their bytes.
pub fn backup_attachments(dir: &Path, to: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut count, mut bytes) = (0, 0);
    for (name, path) in stored_objects(&dir.join("objects"))? {
        let target = to.join("objects").join(&name[..2]);
        std::fs::create_dir_all(&target)?;
        for file in [path.clone(), path.with_extension("type")] {
            let dest = target.join(file.file_name().expect("a file name"));
            let size = std::fs::metadata(&file)?.len();
            if std::fs::metadata(&dest).is_ok_and(|d| d.len() == size) {
                continue;
            }
            let _ = std::fs::remove_file(&dest);
            if std::fs::hard_link(&file, &dest).is_err() {
                // Copied under another name, then renamed: never a cut copy under the
                // attachment's own name.
                let part = dest.with_extension("copying");
                std::fs::copy(&file, &part).with_context(|| {
                    format!("cannot copy {} to {}", file.display(), part.display())
                })?;
                File::open(&part)?.sync_all()?;
                std::fs::rename(&part, &dest)?;
            }
        }
        count += 1;
        bytes += std::fs::metadata(&path)?.len();
    }
    Ok((count, bytes))
}

/// The attachments under an `objects/` folder, (SHA-256, path); none when there is no folder.
fn stored_objects(objects: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    if !objects.exists() {
        return Ok(out);
    }
    for shard in std::fs::read_dir(objects)? {
        let shard = shard?.path();
        if !shard.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&shard)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if sync_protocol::media::is_sha256(&name) {
                out.push((name, entry.path()));
            }
        }
    }
    Ok(out)
}

/// Puts a backup's attachments (`from`, as [`backup_attachments`] made it) into the store's
/// folder `dir`: each one that is missing, once its bytes prove to be what its name says.
/// Nothing there is removed: an attachment that arrived after the backup stays. Returns how
/// many were added, and the damaged ones left out.
pub fn restore_attachments(from: &Path, dir: &Path) -> anyhow::Result<(u64, Vec<String>)> {
    let (mut added, mut damaged) = (0, Vec::new());
    for (name, path) in stored_objects(&from.join("objects"))? {
        let target = dir.join("objects").join(&name[..2]).join(&name);
        if target.exists() {
            continue;
        }
        let kind = path.with_extension("type");
        if !kind.exists() || crate::attachments::hash_file(&path)? != name {
            damaged.push(path.display().to_string());
            continue;
        }
        std::fs::create_dir_all(target.parent().expect("a folder"))?;
        std::fs::copy(&kind, target.with_extension("type"))?;
        let part = target.with_extension("restoring");
        std::fs::copy(&path, &part)?;
        File::open(&part)?.sync_all()?;
        std::fs::rename(&part, &target)?;
        added += 1;
    }
    Ok((added, damaged))
}

/// Seconds since the Unix epoch, for names of kept files.
fn chrono_stamp() -> String {
    (crate::now_ms() / 1000).to_string()
}
