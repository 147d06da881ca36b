//! SQLite: one file in WAL mode, so a district runs Mầm on one laptop with nothing installed.
//!
//! Writes go through a pool of one connection: SQLite has one writer at a time anyway, and a
//! single writer connection never meets `SQLITE_BUSY` on upgrade. Reads use their own pool
//! and, under WAL, never wait for the writer; a connection of its own copies the WAL into the
//! database file ([`Checkpointer`]). An acknowledged write survives a power cut, not
//! only a crash: `synchronous = FULL` for every write but the sync pushes, whose group commits
//! are flushed to disk by the store itself before any push of the group answers ([`Wal`]). The
//! file is read through a memory map (up to 1 GiB): a reader's cache starts cold after every
//! write, and the map spares each pull a system call and a copy per page.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, FromRow, QueryBuilder, Row, Sqlite, SqlitePool};
use sync_protocol::{CommuneCode, DeviceId, Record, RecordId, Rejection};
use tokio::sync::{oneshot, OwnedMutexGuard};

use super::cells::{Amount, CellKey};

use super::rows::{CellRow, DeviceRow, RejectionRow, StoredRejectionRow, SummaryRow};
use super::{
    communes_text, page, parse_id, parse_move, push_rejections, Device, DeviceSummary, EditLog,
    Lockout, Move, NewUser, Pull, RecordQuery, RecordRow, Result, StoreError, StoredRejection,
    SyncTx, UploadRefusal, User, WriteBatch,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows per multi-row INSERT: well under SQLite's limit of 32,766 bound variables.
const CHUNK: usize = 500;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    group: Arc<GroupCommit>,
}

/// Group commit. Pushes that queue behind the single writer join the transaction already open,
/// each in a savepoint of its own; the last of a burst commits for all, and every push answers
/// only after that commit is on disk. One flush then covers several pushes, and a push that
/// fails rolls back to its savepoint without touching the others.
struct GroupCommit {
    state: Arc<tokio::sync::Mutex<GroupState>>,
    /// Pushes waiting for the writer: while any wait, a finished push leaves the commit to them.
    queued: AtomicUsize,
    /// The WAL, when the database is a file on a Unix system: see [`Wal`]. Without it, a group
    /// commits with `synchronous = FULL` and holds the writer until the disk has its commit.
    wal: Option<Arc<Wal>>,
    /// Told of every commit: see [`Checkpointer`].
    checkpoint: Arc<tokio::sync::Notify>,
    /// Set by the checkpointer when the WAL has grown long: the next group starts it over.
    restart: Arc<AtomicBool>,
    limits: GroupLimits,
}

/// When a group commits even though pushes are still queued to join it: after this many
/// pushes, or once it has been open this long. Under a steady stream a group that waited for a
/// quiet moment would never commit: nothing would be acknowledged until the requests timed
/// out, and every other write (an enrolment, a sign-in) would wait behind it.
#[derive(Clone, Copy, Debug)]
pub struct GroupLimits {
    pub max_pushes: usize,
    pub max_wait: Duration,
}

impl Default for GroupLimits {
    fn default() -> Self {
        Self {
            max_pushes: DEFAULT_GROUP_PUSHES,
            max_wait: Duration::from_millis(DEFAULT_GROUP_MS),
        }
    }
}

use crate::config::{DEFAULT_GROUP_MS, DEFAULT_GROUP_PUSHES};

#[derive(Default)]
struct GroupState {
    /// The writer connection, while a group transaction is open on it.
    conn: Option<PoolConnection<Sqlite>>,
    /// The first change seq the open group writes.
    first_change: Option<u64>,
    /// Pushes done and released, waiting for the commit.
    waiters: Vec<oneshot::Sender<std::result::Result<(), String>>>,
    /// When the open group began.
    opened_at: Option<std::time::Instant>,
}

impl GroupState {
    /// Commit the open transaction. The pushes waiting on it are told how it went by
    /// [`Flush::complete`], which the caller runs after letting go of the writer.
    async fn finish(&mut self, wal: Option<&Arc<Wal>>, checkpoint: &tokio::sync::Notify) -> Flush {
        let result = match self.conn.take() {
            Some(mut conn) => {
                let end = match wal {
                    Some(_) => "COMMIT; PRAGMA synchronous = FULL",
                    None => "COMMIT",
                };
                let result = sqlx::query(end).execute(&mut *conn).await;
                if result.is_ok() {
                    checkpoint.notify_one();
                }
                if result.is_err() {
                    // Whatever state it is in, the connection serves no other write.
                    conn.close_on_drop();
                }
                result.map(|_| ()).map_err(|e| e.to_string())
            }
            None => Ok(()),
        };
        // Listed in commit order, whether or not the commit went through.
        let first_change = self.first_change.take();
        self.opened_at = None;
        Flush {
            result,
            waiters: std::mem::take(&mut self.waiters),
            wal: wal.map(|wal| (wal.clone(), wal.committed(first_change))),
        }
    }

    /// Give up the open transaction: nothing in it is committed.
    fn abandon(&mut self, wal: Option<&Arc<Wal>>) {
        if let Some(mut conn) = self.conn.take() {
            // Closing the connection rolls the transaction back.
            conn.close_on_drop();
        }
        if let (Some(wal), Some(first)) = (wal, self.first_change.take()) {
            wal.unflushed().remove(&first);
            wal.flushed.notify_waiters();
        }
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err("the group transaction failed".into()));
        }
    }

    fn conn(&mut self) -> &mut PoolConnection<Sqlite> {
        self.conn
            .as_mut()
            .expect("a push runs inside the open group transaction")
    }
}

/// A committed group whose pushes have not been told yet.
#[must_use = "the pushes of the group wait for complete()"]
struct Flush {
    result: std::result::Result<(), String>,
    waiters: Vec<oneshot::Sender<std::result::Result<(), String>>>,
    /// The WAL and the group's place in commit order.
    wal: Option<(Arc<Wal>, u64)>,
}

impl Flush {
    /// Wait until the commit is on disk, then answer the pushes of the group.
    async fn complete(self) {
        let mut result = self.result;
        if let Some((wal, group)) = &self.wal {
            let flushed = wal.flush(*group).await;
            if let Err(e) = &flushed {
                // The commit is in the WAL but may not be on disk, and SQLite's readers would
                // serve it all the same: stop rather than answer from data a power cut could
                // take back. A restart recovers the database to what is on disk.
                tracing::error!(error = %e, wal = %wal.path.display(),
                    "cannot flush the database's WAL to disk; stopping the server");
                eprintln!(
                    "mam: cannot flush {} to disk ({e}); stopping",
                    wal.path.display()
                );
                std::process::exit(74);
            }
            if result.is_ok() {
                result = flushed;
            }
        }
        for waiter in self.waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

/// The WAL file, flushed by the store itself. A group transaction commits with
/// `synchronous = NORMAL`: SQLite writes the WAL but does not wait for the disk, and the next
/// group may write at once. The pushes of a group answer only after an fdatasync of the WAL
/// that began after their commit, so an acknowledged push is on disk, as with `FULL`; the disk
/// catches up while the writer works instead of holding it. A pull whose snapshot holds a
/// commit not yet on disk waits for its flush ([`Wal::wait_flushed`]), so no phone's cursor
/// ever passes a change that a power cut could take back.
struct Wal {
    path: std::path::PathBuf,
    file: std::sync::Mutex<Arc<std::fs::File>>,
    /// The first change seq of each group written and not yet flushed.
    unflushed: std::sync::Mutex<BTreeSet<u64>>,
    book: std::sync::Mutex<FlushBook>,
    flushed: tokio::sync::Notify,
}

/// Groups committed and flushed. One flush at a time; it covers every group committed before
/// it began, so groups that commit meanwhile share the next one.
#[derive(Default)]
struct FlushBook {
    committed: u64,
    flushed: u64,
    /// Groups up to this one were to be covered by a flush that failed.
    failed: u64,
    /// The first change seqs of committed groups that no flush has begun to cover.
    pending: Vec<u64>,
    running: bool,
}

impl Wal {
    /// The WAL of the database file at `db`, if this system lets the store flush it.
    fn open(db: &Path) -> Option<Self> {
        if !cfg!(unix) {
            return None;
        }
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        let path = std::path::PathBuf::from(path);
        let file = std::fs::File::open(&path).ok()?;
        Some(Self {
            path,
            file: std::sync::Mutex::new(Arc::new(file)),
            unflushed: Default::default(),
            book: Default::default(),
            flushed: tokio::sync::Notify::new(),
        })
    }

    fn unflushed(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.unflushed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn book(&self) -> std::sync::MutexGuard<'_, FlushBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A group committed, whose changes start at `first_change`: its place in commit order.
    fn committed(&self, first_change: Option<u64>) -> u64 {
        let mut book = self.book();
        book.committed += 1;
        book.pending.extend(first_change);
        book.committed
    }

    /// Wait until every change up to `seq` is on disk: at most the flushes already under way.
    async fn wait_flushed(&self, seq: u64) {
        loop {
            let flushed = self.flushed.notified();
            tokio::pin!(flushed);
            flushed.as_mut().enable();
            if self.unflushed().first().is_none_or(|first| *first > seq) {
                return;
            }
            flushed.await;
        }
    }

    /// Return once the group at `place` in commit order is on disk: by a flush under way that
    /// covers it, or by one this call runs.
    async fn flush(self: &Arc<Self>, place: u64) -> std::result::Result<(), String> {
        loop {
            let flushed = self.flushed.notified();
            tokio::pin!(flushed);
            flushed.as_mut().enable();
            let run = {
                let mut book = self.book();
                if book.failed >= place {
                    return Err("the disk did not take the commit".into());
                }
                if book.flushed >= place {
                    return Ok(());
                }
                match book.running {
                    true => None,
                    false => {
                        book.running = true;
                        Some((book.committed, std::mem::take(&mut book.pending)))
                    }
                }
            };
            let Some((upto, covered)) = run else {
                flushed.await;
                continue;
            };
            let wal = self.clone();
            let synced = tokio::task::spawn_blocking(move || wal.sync())
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            {
                let mut book = self.book();
                book.running = false;
                match &synced {
                    Ok(()) => book.flushed = book.flushed.max(upto),
                    Err(e) => {
                        // The pushes are refused and will be sent again; pulls go on.
                        tracing::error!(error = %e, "cannot flush the WAL to disk");
                        book.failed = book.failed.max(upto);
                    }
                }
            }
            let mut unflushed = self.unflushed();
            for first in covered {
                unflushed.remove(&first);
            }
            drop(unflushed);
            self.flushed.notify_waiters();
        }
    }

    fn sync(&self) -> std::io::Result<()> {
        let file = {
            let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
            // SQLite deletes the WAL when its last connection closes, after copying it into
            // the database, and starts a new file: a handle on the old one would flush nothing.
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                match std::fs::metadata(&self.path) {
                    Ok(now) if now.ino() != file.metadata()?.ino() => {
                        *file = Arc::new(std::fs::File::open(&self.path)?);
                    }
                    Ok(_) => {}
                    // No WAL: everything is in the database file, which SQLite flushed.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            file.clone()
        };
        file.sync_data()
    }
}

impl GroupCommit {
    /// Commit the open group if no push is queued to join it (the last of a burst commits for
    /// all) or it is full ([`GroupLimits`]), flush it, and answer its pushes. Runs in a task of its own, never in a request's
    /// future: a request cancelled mid-way must not leave the group open, its pushes
    /// unanswered, or a flush begun and never finished, which would stall every later push
    /// and pull.
    fn close_if_idle(self: &Arc<Self>, mut state: OwnedMutexGuard<GroupState>) {
        let group = self.clone();
        tokio::spawn(async move {
            let full = state.waiters.len() >= group.limits.max_pushes
                || state
                    .opened_at
                    .is_some_and(|at| at.elapsed() >= group.limits.max_wait);
            if full || group.queued.load(Ordering::SeqCst) == 0 {
                let flush = state.finish(group.wal.as_ref(), &group.checkpoint).await;
                drop(state);
                flush.complete().await;
            }
        });
    }

    /// Before a write transaction on the writer: if the checkpointer asked for it, copy what
    /// is left of the WAL, so that the transaction's first write starts the WAL over (unless a
    /// reader still uses it; then a later transaction does). See [`Checkpointer`].
    async fn restart_wal(&self, writer: &mut PoolConnection<Sqlite>) {
        if self.restart.swap(false, Ordering::Relaxed) {
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut **writer)
                .await
            {
                tracing::warn!(error = %e, "cannot copy the WAL into the database file");
            }
        }
    }

    /// Undo a push that ends without committing, back to its savepoint; the pushes before it
    /// in the group stay. If even that fails, the group is given up.
    async fn undo_push(&self, state: &mut GroupState) {
        if let Some(conn) = state.conn.as_mut() {
            let undone = sqlx::query("ROLLBACK TO push; RELEASE push")
                .execute(&mut **conn)
                .await
                .is_ok();
            if !undone {
                // The transaction itself is broken: nothing in it may be committed.
                state.abandon(self.wal.as_ref());
            }
        }
    }
}

/// Counts a push as queued until it holds the writer; if it gives up first (its request was
/// cancelled), it makes sure the pushes that left the commit to it are not left waiting.
struct Queued {
    group: Arc<GroupCommit>,
    holding: bool,
}

impl Queued {
    fn new(group: &Arc<GroupCommit>) -> Self {
        group.queued.fetch_add(1, Ordering::SeqCst);
        Self {
            group: group.clone(),
            holding: false,
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if self.group.queued.fetch_sub(1, Ordering::SeqCst) == 1 && !self.holding {
            let group = self.group.clone();
            tokio::spawn(async move {
                let state = group.state.clone().lock_owned().await;
                group.close_if_idle(state);
            });
        }
    }
}

/// Copies the WAL into the database file on a connection of its own, so that no commit waits
/// for it. SQLite would otherwise checkpoint inside the commit that crosses its threshold: tens
/// of megabytes written and flushed while every push waits behind the writer. A passive
/// checkpoint blocks neither the writer nor the readers. The writer's own automatic checkpoint
/// stays as a backstop, at 256 MiB.
///
/// Under a steady stream of pushes the WAL would still grow without end: SQLite starts it over
/// only when a write transaction begins with every frame copied, and the group commits leave
/// no such moment. Each frame would then land in new file blocks, which the file system
/// allocates and zero-fills, and the page cache would hold the whole file. So once the WAL
/// passes [`Checkpointer::RESTART_FRAMES`], the next group first copies what is left on the
/// writer itself (little: this checkpointer has copied the rest), and SQLite writes the
/// following frames from the start of the file again.
struct Checkpointer;

impl Checkpointer {
    /// Commits to gather before a checkpoint runs, while they keep coming.
    const PAUSE: Duration = Duration::from_millis(50);
    /// WAL frames (of a page each, 4 KiB) past which the writer starts the WAL over.
    const RESTART_FRAMES: i64 = 4096;

    async fn run(
        pool: SqlitePool,
        commits: std::sync::Weak<tokio::sync::Notify>,
        restart: Arc<AtomicBool>,
    ) {
        // The store is gone when nobody else holds the notice. A commit made while no
        // checkpoint waits leaves a permit, so none is missed; writes that are not pushes (the
        // office's, enrolments) tell nobody, and are copied within a second.
        while let Some(notice) = commits.upgrade() {
            let committed = tokio::time::timeout(Duration::from_secs(1), notice.notified()).await;
            drop(notice);
            if committed.is_ok() {
                tokio::time::sleep(Self::PAUSE).await;
            }
            // (busy, frames in the WAL, frames copied)
            match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&pool)
                .await
            {
                Ok((_, frames, _)) if frames > Self::RESTART_FRAMES => {
                    restart.store(true, Ordering::Relaxed)
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot copy the WAL into the database file"),
            }
        }
        pool.close().await;
    }
}

impl SqliteStore {
    pub async fn open_file(path: &Path, limits: GroupLimits) -> Result<Self> {
        Self::open(SqliteConnectOptions::new().filename(path), limits).await
    }

    pub async fn open_url(url: &str, limits: GroupLimits) -> Result<Self> {
        Self::open(SqliteConnectOptions::from_str(url)?, limits).await
    }

    async fn open(options: SqliteConnectOptions, limits: GroupLimits) -> Result<Self> {
        let file = options.get_filename().to_owned();
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("cache_size", "-65536")
            // A backstop only: the checkpointer below keeps the WAL short, off the writer.
            .pragma("wal_autocheckpoint", "65536")
            .pragma("mmap_size", "1073741824")
            .row_buffer_size(2048);
        // The writer stays open: while it is, SQLite keeps the WAL file that `Wal` flushes.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone().read_only(true))
            .await?;
        let checkpoint = Arc::new(tokio::sync::Notify::new());
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        let restart = Arc::new(AtomicBool::new(false));
        tokio::spawn(Checkpointer::run(
            checkpointer,
            Arc::downgrade(&checkpoint),
            restart.clone(),
        ));
        let group = Arc::new(GroupCommit {
            state: Arc::new(tokio::sync::Mutex::new(GroupState::default())),
            queued: AtomicUsize::new(0),
            wal: Wal::open(&file).map(Arc::new),
            checkpoint,
            restart,
            limits,
        });
        Ok(Self {
            writer,
            reader,
            group,
        })
    }
}

fn parse_record(body: &str) -> Result<Record> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Other(format!("stored record is not valid: {e}")))
}

#[async_trait]
impl super::SyncStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn epoch(&self) -> Result<super::Epoch> {
        let (id, counter, renewed_at): (String, i64, Option<String>) = sqlx::query_as(
            "SELECT (SELECT value FROM meta WHERE name = 'epoch'),
                    (SELECT value FROM counters WHERE name = 'changes'),
                    (SELECT value FROM meta WHERE name = 'renewed_at')",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(super::Epoch {
            id,
            counter: counter as u64,
            renewed_at: renewed_at.and_then(|t| t.parse().ok()),
        })
    }

    async fn renew_epoch(&self, now: i64) -> Result<String> {
        let epoch = super::new_epoch();
        let mut tx = self.writer.begin().await?;
        sqlx::query("UPDATE meta SET value = ? WHERE name = 'epoch'")
            .bind(&epoch)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ('renewed_at', ?)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(now.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE devices SET restored_seq = last_seq")
            .execute(&mut *tx)
            .await?;
        // An office account's edits are numbered by the server, not kept by a phone: the ones
        // the restored database lost may already be on phones, so its next numbers must not
        // be used again. Each account writes under a new device number from here on.
        let users: Vec<(i64, i64)> = sqlx::query_as("SELECT id, device FROM users")
            .fetch_all(&mut *tx)
            .await?;
        for (user, device) in users {
            let successor: i64 = sqlx::query_scalar(
                "INSERT INTO devices (name, communes, created_at, predecessor)
                 SELECT name, communes, ?, id FROM devices WHERE id = ? RETURNING id",
            )
            .bind(now)
            .bind(device)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("UPDATE users SET device = ? WHERE id = ?")
                .bind(successor)
                .bind(user)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(epoch)
    }

    async fn backup(&self, to: &Path) -> Result<()> {
        if to.exists() {
            return Err(StoreError::Other(format!(
                "{} exists already: a backup never overwrites a file",
                to.display()
            )));
        }
        let target = to
            .to_str()
            .ok_or_else(|| StoreError::Other(format!("{} is not a UTF-8 path", to.display())))?;
        // From a reader: one snapshot, while the writer goes on committing.
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.reader)
            .await?;
        std::fs::File::open(to)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::Other(format!("cannot flush {}: {e}", to.display())))?;
        Ok(())
    }

    async fn touch_devices(&self, seen: &[(DeviceId, i64)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        for (device, at) in seen {
            let at = *at;
            sqlx::query("UPDATE devices SET last_sync_at = ? WHERE id = ? AND (last_sync_at IS NULL OR last_sync_at < ?)")
                .bind(at)
                .bind(*device as i64)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn begin_sync(&self) -> Result<Box<dyn SyncTx>> {
        let mut queued = Queued::new(&self.group);
        let mut state = self.group.state.clone().lock_owned().await;
        queued.holding = true;
        drop(queued);
        let opened = async {
            if state.conn.is_none() {
                let mut conn = self.writer.acquire().await?;
                self.group.restart_wal(&mut conn).await;
                // The write lock at once: a push never has to upgrade a read snapshot that
                // another process (a `mam` command) has made stale.
                let begin = match self.group.wal {
                    Some(_) => "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE",
                    None => "BEGIN IMMEDIATE",
                };
                if let Err(e) = sqlx::query(begin).execute(&mut *conn).await {
                    conn.close_on_drop();
                    return Err(e.into());
                }
                state.conn = Some(conn);
                state.opened_at = Some(std::time::Instant::now());
            }
            sqlx::query("SAVEPOINT push")
                .execute(&mut **state.conn())
                .await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = opened {
            // Pushes that left the commit to this one must not be left waiting.
            self.group.close_if_idle(state);
            return Err(e);
        }
        Ok(Box::new(SqliteSyncTx {
            state: Some(state),
            group: self.group.clone(),
            changes: 0,
        }))
    }

    async fn pull(
        &self,
        communes: &[CommuneCode],
        cursor: u64,
        max_bytes: u64,
        max_records: usize,
    ) -> Result<Pull> {
        if communes.is_empty() {
            return Ok(Pull {
                records: vec![],
                evicted: vec![],
                cursor,
                more: false,
            });
        }
        // One read transaction: the watermark and the rows come from the same snapshot.
        let mut tx = self.reader.begin().await?;
        let watermark: i64 =
            sqlx::query_scalar("SELECT value FROM counters WHERE name = 'changes'")
                .fetch_one(&mut *tx)
                .await?;
        // The snapshot is taken: a group that committed into it is listed as unflushed by now.
        if let Some(wal) = &self.group.wal {
            wal.wait_flushed(watermark as u64).await;
        }
        let mut q =
            QueryBuilder::<Sqlite>::new("SELECT body, changed_at FROM records WHERE commune IN (");
        let mut list = q.separated(", ");
        for c in communes {
            list.push_bind(c.as_str());
        }
        q.push(") AND changed_at > ")
            .push_bind(cursor as i64)
            .push(" ORDER BY changed_at LIMIT ")
            .push_bind(max_records as i64 + 1);
        let rows = q.build().fetch_all(&mut *tx).await?;
        let (records, last, more) = page(
            rows.into_iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)? as u64))),
            max_bytes,
            max_records,
        )?;
        let next = if more {
            last
        } else {
            last.max(watermark as u64).max(cursor)
        };
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT DISTINCT m.record FROM moves m JOIN records r ON r.id = m.record WHERE m.at > ",
        );
        q.push_bind(cursor as i64)
            .push(" AND m.at <= ")
            .push_bind(next as i64);
        q.push(" AND m.from_commune IN (");
        let mut list = q.separated(", ");
        for c in communes {
            list.push_bind(c.as_str());
        }
        q.push(") AND r.commune NOT IN (");
        let mut list = q.separated(", ");
        for c in communes {
            list.push_bind(c.as_str());
        }
        q.push(")");
        let evicted = q
            .build()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| {
                let id: String = r.try_get(0)?;
                RecordId::parse(&id).map_err(StoreError::Other)
            })
            .collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok(Pull {
            records,
            evicted,
            cursor: next,
            more,
        })
    }

    async fn rejections(
        &self,
        devices: Option<&[DeviceId]>,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<StoredRejection>> {
        let sql = format!(
            "SELECT device, seq, code, field, rule, message, message_vi, body, received_at
             FROM rejections{} ORDER BY id DESC LIMIT ? OFFSET ?",
            super::of_devices(devices)
        );
        let rows = sqlx::query_as::<_, StoredRejectionRow>(&sql)
            .bind(limit as i64)
            .bind(offset as i64)
            .fetch_all(&self.reader)
            .await?;
        rows.into_iter().map(StoredRejection::try_from).collect()
    }

    async fn count_rejections(&self, devices: Option<&[DeviceId]>) -> Result<u64> {
        let sql = format!(
            "SELECT COUNT(*) FROM rejections{}",
            super::of_devices(devices)
        );
        let n: i64 = sqlx::query_scalar(&sql).fetch_one(&self.reader).await?;
        Ok(n as u64)
    }

    async fn rejections_between(
        &self,
        device: DeviceId,
        from: u64,
        to: u64,
    ) -> Result<Vec<Rejection>> {
        let rows = sqlx::query_as::<_, RejectionRow>(
            "SELECT seq, code, field, message, message_vi, rule FROM rejections
             WHERE device = ? AND seq >= ? AND seq <= ? AND code <> 'seq_reused' ORDER BY seq",
        )
        .bind(device as i64)
        .bind(from as i64)
        .bind(to as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(Rejection::from).collect())
    }
}

#[async_trait]
impl super::DeviceStore for SqliteStore {
    async fn add_device(
        &self,
        name: &str,
        communes: &[CommuneCode],
        code_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<DeviceId> {
        let mut tx = self.writer.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO devices (name, communes, created_at) VALUES (?, ?, ?) RETURNING id",
        )
        .bind(name)
        .bind(communes_text(communes))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO enrollments (code_hash, device, expires_at) VALUES (?, ?, ?)")
            .bind(code_hash)
            .bind(id)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id as DeviceId)
    }

    async fn enroll(&self, code_hash: &str, token_hash: &str, now: i64) -> Result<Device> {
        let mut tx = self.writer.begin().await?;
        let device: Option<i64> = sqlx::query_scalar(
            "UPDATE enrollments SET used_at = ?
             WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?
             RETURNING device",
        )
        .bind(now)
        .bind(code_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let device = device.ok_or(StoreError::NotFound)?;
        let row = sqlx::query_as::<_, DeviceRow>(
            "UPDATE devices SET token_hash = ?, enrolled_at = ?
             WHERE id = ? AND revoked_at IS NULL
             RETURNING id, name, communes, revoked_at, last_seq",
        )
        .bind(token_hash)
        .bind(now)
        .bind(device)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let device = Device::from(row);
        tx.commit().await?;
        Ok(device)
    }

    async fn device_by_token(&self, token_hash: &str) -> Result<Option<Device>> {
        let row = sqlx::query_as::<_, DeviceRow>(
            "SELECT id, name, communes, revoked_at, last_seq FROM devices WHERE token_hash = ?",
        )
        .bind(token_hash)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(Device::from))
    }

    async fn devices(&self) -> Result<Vec<DeviceSummary>> {
        let rows = sqlx::query_as::<_, SummaryRow>(
            "SELECT d.id, d.name, d.communes, d.token_hash IS NOT NULL AS enrolled,
                    d.revoked_at IS NOT NULL AS revoked, d.last_seq, d.last_sync_at,
                    (SELECT COUNT(*) FROM rejections r WHERE r.device = d.id) AS rejected,
                    d.predecessor, d.restored_seq,
                    (SELECT COUNT(*) FROM rejections r WHERE r.device = d.id AND r.code = 'lost')
                        AS lost
             FROM devices d ORDER BY d.id",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(DeviceSummary::from).collect())
    }

    async fn revoke(&self, device: DeviceId, now: i64) -> Result<()> {
        let done =
            sqlx::query("UPDATE devices SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
                .bind(now)
                .bind(device as i64)
                .execute(&self.writer)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn add_successor(
        &self,
        old: DeviceId,
        request: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<Device> {
        let mut tx = self.writer.begin().await?;
        let again = sqlx::query_as::<_, DeviceRow>(
            "UPDATE devices SET token_hash = ? WHERE predecessor = ? AND successor_request = ?
               AND revoked_at IS NULL
             RETURNING id, name, communes, revoked_at, last_seq",
        )
        .bind(token_hash)
        .bind(old as i64)
        .bind(request)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = again {
            tx.commit().await?;
            return Ok(Device::from(row));
        }
        let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE predecessor = ?")
            .bind(old as i64)
            .fetch_one(&mut *tx)
            .await?;
        if taken >= super::MAX_SUCCESSORS {
            return Err(StoreError::Other(format!(
                "device {old} has taken {taken} successor numbers already; enrol the phone again"
            )));
        }
        let row = sqlx::query_as::<_, DeviceRow>(
            "INSERT INTO devices (name, communes, token_hash, created_at, enrolled_at,
                                  predecessor, successor_request)
             SELECT name, communes, ?, ?, ?, id, ? FROM devices
             WHERE id = ? AND revoked_at IS NULL
             RETURNING id, name, communes, revoked_at, last_seq",
        )
        .bind(token_hash)
        .bind(now)
        .bind(now)
        .bind(request)
        .bind(old as i64)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(Device::from(row))
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>> {
        let row = sqlx::query_as::<_, DeviceRow>(
            "SELECT id, name, communes, revoked_at, last_seq FROM devices WHERE id = ?",
        )
        .bind(id as i64)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(Device::from))
    }
}

#[async_trait]
impl super::AccountStore for SqliteStore {
    async fn add_api_token(
        &self,
        name: &str,
        token_hash: &str,
        scope: &str,
        now: i64,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO api_tokens (name, token_hash, scope, created_at) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(name)
        .bind(token_hash)
        .bind(scope)
        .bind(now)
        .fetch_one(&self.writer)
        .await?)
    }

    async fn api_token_scope(&self, token_hash: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT scope FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.reader)
        .await?)
    }

    async fn add_user(&self, user: &NewUser<'_>, now: i64) -> Result<User> {
        let mut tx = self.writer.begin().await?;
        let device: i64 = sqlx::query_scalar(
            "INSERT INTO devices (name, communes, created_at) VALUES (?, ?, ?) RETURNING id",
        )
        .bind(format!("{} (office)", user.name))
        .bind(communes_text(user.communes))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let added = sqlx::query_as::<_, User>(
            "INSERT INTO users (name, role, area, password_hash, device, created_at)
             VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(user.name)
        .bind(user.role)
        .bind(user.area)
        .bind(user.password_hash)
        .bind(device)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(added)
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        Ok(
            sqlx::query_as::<_, User>("SELECT * FROM users WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    async fn users(&self) -> Result<Vec<User>> {
        Ok(
            sqlx::query_as::<_, User>("SELECT * FROM users ORDER BY name")
                .fetch_all(&self.reader)
                .await?,
        )
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = ?, failed_logins = 0, locked_until = NULL WHERE name = ?",
        )
        .bind(password_hash)
        .bind(name)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn login_failed(&self, user: i64, lockout: Lockout, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE users SET
                 locked_until = CASE WHEN failed_logins + 1 >= ? THEN ? ELSE locked_until END,
                 failed_logins = CASE WHEN failed_logins + 1 >= ? THEN 0 ELSE failed_logins + 1 END
             WHERE id = ?",
        )
        .bind(lockout.after)
        .bind(now + lockout.for_ms)
        .bind(lockout.after)
        .bind(user)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn login_succeeded(&self, user: i64, now: i64) -> Result<()> {
        sqlx::query("UPDATE users SET failed_logins = 0, last_login_at = ? WHERE id = ?")
            .bind(now)
            .bind(user)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn openrosa(&self, kind: &str, key: &str) -> Result<Option<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT record, body FROM openrosa WHERE kind = ? AND key = ?")
                .bind(kind)
                .bind(key)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    async fn put_openrosa(&self, rows: &[(&str, String, String, String)]) -> Result<()> {
        // The last of a key wins, as one statement may name a key once.
        let mut last = std::collections::HashMap::new();
        for (i, (kind, key, _, _)) in rows.iter().enumerate() {
            last.insert((*kind, key.as_str()), i);
        }
        let mut kept: Vec<usize> = last.into_values().collect();
        kept.sort_unstable();
        let mut tx = self.writer.begin().await?;
        for chunk in kept.chunks(500) {
            let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO openrosa (kind, key, record, body) ",
            );
            q.push_values(chunk, |mut b, &i| {
                let (kind, key, record, body) = &rows[i];
                b.push_bind(*kind)
                    .push_bind(key.as_str())
                    .push_bind(record.as_str())
                    .push_bind(body.as_str());
            });
            q.push(
                " ON CONFLICT (kind, key) DO UPDATE SET record = excluded.record, body = excluded.body",
            );
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn openrosa_of(&self, kind: &str, record: &str) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT key, body FROM openrosa WHERE record = ? AND kind = ? ORDER BY key",
        )
        .bind(record)
        .bind(kind)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn openrosa_all(&self, kind: &str) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT key, body FROM openrosa WHERE kind = ?")
                .bind(kind)
                .fetch_all(&self.reader)
                .await?,
        )
    }

    async fn add_upload_refusal(
        &self,
        device: DeviceId,
        sha256: &str,
        code: &str,
        message: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO upload_refusals (device, sha256, code, message, at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(i64::from(device))
        .bind(sha256)
        .bind(code)
        .bind(message)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn upload_refusals(
        &self,
        devices: Option<&[DeviceId]>,
        limit: u32,
    ) -> Result<Vec<UploadRefusal>> {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT device, sha256, code, message, at FROM upload_refusals",
        );
        if let Some(devices) = devices {
            if devices.is_empty() {
                return Ok(Vec::new());
            }
            q.push(" WHERE device IN (");
            let mut each = q.separated(", ");
            for d in devices {
                each.push_bind(i64::from(*d));
            }
            q.push(")");
        }
        q.push(" ORDER BY at DESC, id DESC LIMIT ");
        q.push_bind(i64::from(limit));
        Ok(q.build_query_as::<UploadRefusal>()
            .fetch_all(&self.reader)
            .await?)
    }

    async fn log_login(&self, name: &str, reason: Option<&str>, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO logins (name, succeeded, reason, at) VALUES (?, ?, ?, ?)")
            .bind(name)
            .bind(reason.is_none())
            .bind(reason)
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn logins_of(&self, name: &str, limit: u32) -> Result<Vec<(Option<String>, i64)>> {
        Ok(sqlx::query_as(
            "SELECT reason, at FROM logins WHERE name = ? ORDER BY at DESC, id DESC LIMIT ?",
        )
        .bind(name)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn refused_logins(&self, limit: u32) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT name, COALESCE(reason, ''), at FROM logins WHERE NOT succeeded ORDER BY at DESC, id DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn add_session(
        &self,
        token_hash: &str,
        user: i64,
        csrf: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.writer)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(token_hash)
        .bind(user)
        .bind(csrf)
        .bind(now)
        .bind(expires_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn session(&self, token_hash: &str, now: i64) -> Result<Option<(User, String)>> {
        let row = sqlx::query(
            "SELECT s.csrf, u.* FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ? AND s.expires_at > ?",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| Ok((User::from_row(&r)?, r.try_get("csrf")?)))
            .transpose()
    }

    async fn end_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl super::FormStore for SqliteStore {
    async fn published_forms(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT body FROM forms ORDER BY id, version")
                .fetch_all(&self.reader)
                .await?,
        )
    }

    async fn publish_form(&self, id: &str, version: u32, body: &str, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO forms (id, version, body, published_at) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(version as i64)
            .bind(body)
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn set_villages(&self, commune: &CommuneCode, names: &[String]) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM villages WHERE commune = ?")
            .bind(commune.as_str())
            .execute(&mut *tx)
            .await?;
        if !names.is_empty() {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO villages (commune, position, name) ");
            q.push_values(names.iter().enumerate(), |mut b, (i, name)| {
                b.push_bind(commune.as_str())
                    .push_bind(i as i64)
                    .push_bind(name.as_str());
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn villages(&self, communes: &[CommuneCode]) -> Result<BTreeMap<String, Vec<String>>> {
        let mut out: BTreeMap<String, Vec<String>> =
            communes.iter().map(|c| (c.to_string(), vec![])).collect();
        if communes.is_empty() {
            return Ok(out);
        }
        let mut q =
            QueryBuilder::<Sqlite>::new("SELECT commune, name FROM villages WHERE commune IN (");
        let mut list = q.separated(", ");
        for c in communes {
            list.push_bind(c.as_str());
        }
        q.push(") ORDER BY commune, position");
        for row in q.build().fetch_all(&self.reader).await? {
            out.entry(row.try_get(0)?)
                .or_default()
                .push(row.try_get(1)?);
        }
        Ok(out)
    }
}

#[async_trait]
impl super::RecordStore for SqliteStore {
    async fn record(&self, id: RecordId) -> Result<Option<Record>> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM records WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        body.as_deref().map(parse_record).transpose()
    }

    async fn all_records(&self) -> Result<Vec<Record>> {
        let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM records ORDER BY id")
            .fetch_all(&self.reader)
            .await?;
        bodies.iter().map(|b| parse_record(b)).collect()
    }

    async fn records_of(&self, forms: &[String], communes: &[String]) -> Result<Vec<Record>> {
        if forms.is_empty() || communes.is_empty() {
            return Ok(vec![]);
        }
        let mut q = QueryBuilder::<Sqlite>::new("SELECT body FROM records WHERE form IN (");
        let mut list = q.separated(", ");
        for f in forms {
            list.push_bind(f.as_str());
        }
        q.push(") AND commune IN (");
        let mut list = q.separated(", ");
        for c in communes {
            list.push_bind(c.as_str());
        }
        q.push(") ORDER BY id");
        let rows = q.build().fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| parse_record(r.try_get::<&str, _>(0)?))
            .collect()
    }

    async fn find_records(&self, query: &RecordQuery) -> Result<(Vec<Record>, u64)> {
        if query.is_empty() {
            return Ok((vec![], 0));
        }
        let mut count = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM records");
        query.push_filter(&mut count, false);
        let total: i64 = count.build_query_scalar().fetch_one(&self.reader).await?;
        Ok((self.list_records(query).await?, total as u64))
    }

    async fn list_records(&self, query: &RecordQuery) -> Result<Vec<Record>> {
        if query.is_empty() {
            return Ok(vec![]);
        }
        let mut q = QueryBuilder::<Sqlite>::new("SELECT body FROM records");
        query.push_filter(&mut q, true);
        q.push(" ORDER BY id DESC");
        if let Some((limit, offset)) = query.page {
            q.push(format!(" LIMIT {limit} OFFSET {offset}"));
        }
        let bodies: Vec<String> = q.build_query_scalar().fetch_all(&self.reader).await?;
        bodies.iter().map(|b| parse_record(b)).collect()
    }

    async fn unnamed_records(&self, limit: u32) -> Result<Vec<Record>> {
        let bodies: Vec<String> =
            sqlx::query_scalar("SELECT body FROM records WHERE name IS NULL LIMIT ?")
                .bind(limit as i64)
                .fetch_all(&self.writer)
                .await?;
        bodies.iter().map(|b| parse_record(b)).collect()
    }

    async fn set_names(&self, names: &[(RecordId, String)]) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        let mut filled = 0;
        for (id, name) in names {
            filled += sqlx::query("UPDATE records SET name = ? WHERE id = ? AND name IS NULL")
                .bind(name)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(filled)
    }

    async fn record_edits(&self, record: RecordId) -> Result<Vec<EditLog>> {
        let mut tx = self.reader.begin().await?;
        super::read_history::<Sqlite>(&mut tx, record, |_| "?".to_owned()).await
    }
}

#[async_trait]
impl super::CellStore for SqliteStore {
    async fn cells(&self, period: Option<&str>) -> Result<Vec<(CellKey, Amount)>> {
        let bounds = period.and_then(super::cells::days_of);
        let rows = sqlx::query_as::<_, CellRow>(
            "SELECT indicator, part, commune, period, value, records, conflicted FROM indicator_cells
             WHERE records <> 0 AND (?1 IS NULL OR period = ?1
                   OR (part = 'u' AND period >= ?2 AND period <= ?3))
             ORDER BY indicator, part, commune, period",
        )
        .bind(period)
        .bind(bounds.as_ref().map(|b| b.0.clone()))
        .bind(bounds.as_ref().map(|b| b.1.clone()))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn replace_cells(&self, cells: &[(CellKey, Amount)]) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM indicator_cells")
            .execute(&mut *tx)
            .await?;
        for chunk in cells.chunks(CHUNK) {
            let mut q = QueryBuilder::new("");
            push_cells(&mut q, chunk);
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn rebuild_cells(
        &self,
        derive: &super::Rederive<'_>,
        build: &super::CellBuilder<'_>,
    ) -> Result<super::Rebuilt> {
        let mut conn = self.writer.acquire().await?;
        // IMMEDIATE: the write lock before the read, so no other process's push commits
        // between the records read and the cells written.
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = async {
            let mut total = BTreeMap::new();
            let (mut read, mut rederived) = (0, 0);
            let mut after = String::new();
            loop {
                let rows: Vec<(String, String)> =
                    sqlx::query_as("SELECT id, body FROM records WHERE id > ? ORDER BY id LIMIT ?")
                        .bind(&after)
                        .bind(super::REBUILD_CHUNK)
                        .fetch_all(&mut *conn)
                        .await?;
                let Some((last, _)) = rows.last() else {
                    break;
                };
                after = last.clone();
                let mut records = rows
                    .iter()
                    .map(|(_, b)| parse_record(b))
                    .collect::<Result<Vec<_>>>()?;
                drop(rows);
                for record in &mut records {
                    if derive(record) {
                        rederived += 1;
                        sqlx::query("UPDATE records SET body = ? WHERE id = ?")
                            .bind(super::encode_record(record))
                            .bind(record.id.to_string())
                            .execute(&mut *conn)
                            .await?;
                    }
                }
                read += records.len();
                super::add_chunk_cells(&mut total, build(&records));
            }
            let cells: Vec<_> = total.into_iter().collect();
            sqlx::query("DELETE FROM indicator_cells")
                .execute(&mut *conn)
                .await?;
            for chunk in cells.chunks(CHUNK) {
                let mut q = QueryBuilder::new("");
                push_cells(&mut q, chunk);
                q.build().execute(&mut *conn).await?;
            }
            Ok::<_, StoreError>(super::Rebuilt {
                records: read,
                rederived,
                cells: cells.len(),
            })
        }
        .await;
        match result {
            Ok(counts) => {
                sqlx::query("COMMIT").execute(&mut *conn).await?;
                Ok(counts)
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(e)
            }
        }
    }

    async fn meta(&self, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES (?, ?)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl super::BenchStore for SqliteStore {
    async fn bench_upsert(&self, rows: &[RecordRow]) -> Result<()> {
        // The writer as the pushes use it, with the WAL kept as short.
        let mut conn = self.writer.acquire().await?;
        self.group.restart_wal(&mut conn).await;
        let mut tx = conn.begin().await?;
        for chunk in rows.chunks(CHUNK / 2) {
            let mut q = QueryBuilder::new("");
            push_records(&mut q, chunk, 0, 0);
            q.build().execute(&mut *tx).await?;
        }
        // The counter covers the rows' change numbers, as a push's would: a phone's cursor
        // past it would read as a server restored from an older backup.
        sqlx::query(
            "UPDATE counters SET value = MAX(value, (SELECT COALESCE(MAX(changed_at), 0) FROM records))
             WHERE name = 'changes'",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.group.checkpoint.notify_one();
        Ok(())
    }

    async fn bench_clear(&self) -> Result<()> {
        sqlx::query("DELETE FROM records")
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn bench_settle(&self) -> Result<()> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn bench_analyze(&self) -> Result<()> {
        Ok(())
    }
}

/// Upsert statements for record rows; their change seqs are `first + changed_at`.
fn push_records(q: &mut QueryBuilder<'static, Sqlite>, rows: &[RecordRow], first: u64, now: i64) {
    for chunk in rows.chunks(CHUNK / 2) {
        q.push(
            "INSERT INTO records (id, form, version, commune, body, changed_at, conflicted, deleted, created_at, updated_at, edits, name) ",
        );
        q.push_values(chunk, |mut b, row| {
            b.push_bind(row.id.to_string())
                .push_bind(row.form.clone())
                .push_bind(row.version as i64)
                .push_bind(row.commune.clone())
                .push_bind(row.body.to_string())
                .push_bind((first + row.changed_at) as i64)
                .push_bind(row.conflicted)
                .push_bind(row.deleted)
                .push_bind(now)
                .push_bind(now)
                .push_bind(row.edits.clone())
                .push_bind(row.name.clone());
        });
        q.push(
            " ON CONFLICT (id) DO UPDATE SET version = excluded.version, commune = excluded.commune,
              body = excluded.body, changed_at = excluded.changed_at, conflicted = excluded.conflicted,
              deleted = excluded.deleted, updated_at = excluded.updated_at,
              edits = records.edits || ',' || excluded.edits, name = excluded.name; ",
        );
    }
}

/// A statement adding amounts to cells, creating them as needed.
fn push_cells(q: &mut QueryBuilder<'static, Sqlite>, cells: &[(CellKey, Amount)]) {
    if cells.is_empty() {
        return;
    }
    q.push(
        "INSERT INTO indicator_cells (indicator, part, commune, period, value, records, conflicted) ",
    );
    q.push_values(cells, |mut b, (key, amount)| {
        b.push_bind(key.indicator.clone())
            .push_bind(key.part)
            .push_bind(key.commune.clone())
            .push_bind(key.period.clone())
            .push_bind(amount.value)
            .push_bind(amount.records)
            .push_bind(amount.conflicted);
    });
    q.push(
        " ON CONFLICT (indicator, part, commune, period) DO UPDATE SET
           value = indicator_cells.value + excluded.value,
           records = indicator_cells.records + excluded.records,
           conflicted = indicator_cells.conflicted + excluded.conflicted; ",
    );
}

/// A push inside the group transaction, in its own savepoint. Its writes travel to SQLite's
/// thread as one batch of statements, because the other pushes wait while it holds the writer.
struct SqliteSyncTx {
    state: Option<OwnedMutexGuard<GroupState>>,
    group: Arc<GroupCommit>,
    /// The change counter as this push found it. The writer is single and held, so it stays
    /// put until this push writes.
    changes: u64,
}

impl SqliteSyncTx {
    fn conn(&mut self) -> &mut PoolConnection<Sqlite> {
        self.state
            .as_mut()
            .expect("the push holds the writer until it commits")
            .conn()
    }
}

impl Drop for SqliteSyncTx {
    /// A push that ends without committing (an error, a cancelled request) is rolled back to
    /// its savepoint; the pushes before it in the group stay, and are committed if nobody else
    /// is coming.
    fn drop(&mut self) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        let group = self.group.clone();
        tokio::spawn(async move {
            group.undo_push(&mut state).await;
            group.close_if_idle(state);
        });
    }
}

#[async_trait]
impl SyncTx for SqliteSyncTx {
    async fn lock_device(&mut self, device: DeviceId) -> Result<u64> {
        // The single writer connection is the lock; the change counter comes along.
        let (seq, changes): (i64, i64) = sqlx::query_as(
            "SELECT last_seq, (SELECT value FROM counters WHERE name = 'changes') FROM devices WHERE id = ?",
        )
        .bind(device as i64)
        .fetch_one(&mut **self.conn())
        .await?;
        self.changes = changes as u64;
        Ok(seq as u64)
    }

    async fn stored_edits(
        &mut self,
        device: DeviceId,
        seqs: &[u64],
    ) -> Result<HashMap<u64, String>> {
        super::stored_edits::<Sqlite>(&mut **self.conn(), device, seqs, |_| "?".to_owned()).await
    }

    async fn device_seqs(&mut self, devices: &[DeviceId]) -> Result<HashMap<DeviceId, u64>> {
        let mut out = HashMap::new();
        for chunk in devices.chunks(CHUNK) {
            let mut q = QueryBuilder::new("SELECT id, last_seq FROM devices WHERE id IN (");
            let mut list = q.separated(", ");
            for d in chunk {
                list.push_bind(*d as i64);
            }
            q.push(")");
            for row in q.build().fetch_all(&mut **self.conn()).await? {
                out.insert(
                    row.try_get::<i64, _>(0)? as DeviceId,
                    row.try_get::<i64, _>(1)? as u64,
                );
            }
        }
        Ok(out)
    }

    async fn load_records(&mut self, ids: &[RecordId]) -> Result<HashMap<RecordId, Record>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let mut q = QueryBuilder::new("SELECT body FROM records WHERE id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.to_string());
            }
            q.push(")");
            for row in q.build().fetch_all(&mut **self.conn()).await? {
                let record = parse_record(row.try_get::<&str, _>(0)?)?;
                out.insert(record.id, record);
            }
        }
        Ok(out)
    }

    async fn record_moves(&mut self, ids: &[RecordId]) -> Result<HashMap<RecordId, Vec<Move>>> {
        let mut out: HashMap<RecordId, Vec<Move>> = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            let mut q = QueryBuilder::new(
                "SELECT record, from_commune, to_commune, at FROM moves WHERE record IN (",
            );
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.to_string());
            }
            q.push(") ORDER BY at");
            for row in q.build().fetch_all(&mut **self.conn()).await? {
                let (record, from, to, at): (String, String, String, i64) = (
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                );
                out.entry(parse_id(&record)?)
                    .or_default()
                    .push(parse_move(&from, &to, at)?);
            }
        }
        Ok(out)
    }

    async fn write(&mut self, batch: &WriteBatch) -> Result<()> {
        let first = self.changes + 1;
        if let (Some(wal), false) = (&self.group.wal, batch.records.is_empty()) {
            let state = self.state.as_mut().expect("the push holds the writer");
            if state.first_change.is_none() {
                // Listed before the commit can show these changes to anyone.
                state.first_change = Some(first);
                wal.unflushed().insert(first);
            }
        }
        let mut q = QueryBuilder::new("");
        push_records(&mut q, &batch.records, first, batch.now);
        if let Some(log) = &batch.log {
            q.push("INSERT INTO pushes (device, first_seq, last_seq, edits, packed, refused, received_at) VALUES (")
                .push_bind(batch.device as i64)
                .push(", ")
                .push_bind(log.first_seq() as i64)
                .push(", ")
                .push_bind(log.last_seq() as i64)
                .push(", '', ")
                .push_bind(log.edits.bytes.clone())
                .push(", ")
                .push_bind(log.refused.clone())
                .push(", ")
                .push_bind(batch.now)
                .push("); ");
        }
        for chunk in batch.rejections.chunks(CHUNK) {
            push_rejections(&mut q, batch.device, chunk, batch.now);
            q.push("; ");
        }
        for chunk in batch.cells.chunks(CHUNK) {
            push_cells(&mut q, chunk);
        }
        for chunk in batch.moves.chunks(CHUNK) {
            q.push("INSERT INTO moves (record, from_commune, to_commune, at) ");
            q.push_values(chunk, |mut b, (record, from, to, at)| {
                b.push_bind(record.to_string())
                    .push_bind(from.to_string())
                    .push_bind(to.to_string())
                    .push_bind((first + at) as i64);
            });
            q.push("; ");
        }
        q.push("UPDATE devices SET last_seq = ")
            .push_bind(batch.last_seq as i64)
            .push(", last_sync_at = ")
            .push_bind(batch.now)
            .push(" WHERE id = ")
            .push_bind(batch.device as i64);
        if !batch.records.is_empty() {
            q.push("; UPDATE counters SET value = value + ")
                .push_bind(batch.records.len() as i64)
                .push(" WHERE name = 'changes'");
        }
        q.build().execute(&mut **self.conn()).await?;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let mut state = self.state.take().expect("a push commits once");
        let group = self.group.clone();
        let (done, outcome) = oneshot::channel();
        // From here on the push's end runs in a task of its own, so that a request cancelled
        // while it waits for the commit leaves neither the group nor the flush half done.
        tokio::spawn(async move {
            match sqlx::query("RELEASE push")
                .execute(&mut **state.conn())
                .await
            {
                Ok(_) => state.waiters.push(done),
                Err(e) => {
                    group.undo_push(&mut state).await;
                    let _ = done.send(Err(e.to_string()));
                }
            }
            group.close_if_idle(state);
        });
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Other(format!("group commit failed: {e}"))),
            Err(_) => Err(StoreError::Unavailable(
                "the group commit was abandoned".into(),
            )),
        }
    }
}
