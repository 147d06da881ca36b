//! `mam backup`, `mam restore`, `mam epoch`, `mam indicators`: the database itself.

use std::path::PathBuf;

use super::*;
use crate::{now_ms, store};

/// `mam backup FILE`: a consistent copy while the server runs.
pub(super) async fn backup(
    config: Option<&PathBuf>,
    file: PathBuf,
    db: DbArgs,
) -> anyhow::Result<()> {
    let settings = command_settings(config, &db)?;
    let store = store::open(&settings).await?;
    store.backup(&file).await?;
    let records = crate::backup::check_backup(&file).await?;
    let size = std::fs::metadata(&file)?.len();
    println!(
        "Backed up {records} records to {} ({:.1} MB).",
        file.display(),
        size as f64 / 1e6
    );
    // The photos and files, beside it.
    let beside = crate::backup::attachments_beside(&file);
    let (count, bytes) = crate::backup::backup_attachments(&settings.attachments_dir(), &beside)?;
    if count > 0 {
        println!(
            "Backed up {count} attachments to {} ({:.1} MB).",
            beside.display(),
            bytes as f64 / 1e6
        );
    }
    Ok(())
}

/// `mam restore FILE`: put a backup back (server stopped) and renew the epoch.
pub(super) async fn restore(
    config: Option<&PathBuf>,
    file: PathBuf,
    db: DbArgs,
) -> anyhow::Result<()> {
    let settings = command_settings(config, &db)?;
    if settings.database.url.is_some() {
        anyhow::bail!(
            "mam restore puts back a SQLite backup; restore PostgreSQL with its own tools \
                 (pg_restore), then run `mam epoch renew`"
        );
    }
    let dir = settings.storage.data_dir.clone();
    let _lock = crate::backup::DataDirLock::take(&dir, "restoring a backup")?;
    let kept = crate::backup::restore(&file, &dir).await?;
    // The new epoch at once: whatever happens next, phones learn that the database changed.
    let store = store::open(&settings).await?;
    let epoch = store.renew_epoch(now_ms()).await?;
    let beside = crate::backup::attachments_beside(&file);
    let (added, damaged) =
        crate::backup::restore_attachments(&beside, &settings.attachments_dir())?;
    if added > 0 {
        println!(
            "Restored {added} attachments from {} (those already here stay).",
            beside.display()
        );
    }
    for d in &damaged {
        eprintln!("warning: {d} in the backup is damaged (its bytes do not match its name): left out; phones send it again");
    }
    let records = crate::backup::check_backup(&file).await?;
    println!(
        "Restored {records} records from {} into {} (new epoch {epoch}).",
        file.display(),
        crate::backup::database_file(&dir).display()
    );
    if let Some(kept) = kept {
        println!("The database it replaced is kept as {}.", kept.display());
    }
    println!("At their next sync, phones pull again from the start and push every edit they kept that the backup lacks.");
    Ok(())
}

/// `mam epoch show|renew`.
pub(super) async fn epoch(config: Option<&PathBuf>, command: EpochCommand) -> anyhow::Result<()> {
    let (EpochCommand::Show { db } | EpochCommand::Renew { db }) = &command;
    let settings = command_settings(config, db)?;
    let store = store::open(&settings).await?;
    match command {
        EpochCommand::Show { .. } => {
            let epoch = store.epoch().await?;
            println!("epoch {} (change counter {})", epoch.id, epoch.counter);
        }
        EpochCommand::Renew { .. } => {
            let epoch = store.renew_epoch(now_ms()).await?;
            println!("New epoch {epoch}: at their next sync, phones pull again from the start and push every edit they kept that the database lacks.");
        }
    }
    Ok(())
}

/// `mam indicators rebuild|cells`.
pub(super) async fn indicators(
    config: Option<&PathBuf>,
    command: IndicatorsCommand,
) -> anyhow::Result<()> {
    let db = match &command {
        IndicatorsCommand::Rebuild { db } | IndicatorsCommand::Cells { db, .. } => db.clone(),
    };
    let settings = command_settings(config, &db)?;
    let store = store::open(&settings).await?;
    match command {
        IndicatorsCommand::Rebuild { .. } => {
            let defs = crate::indicators::load(&settings.forms.indicators())?;
            let forms = crate::forms::FormRegistry::from_store(store.as_ref()).await?;
            let started = std::time::Instant::now();
            let rebuilt = crate::indicators::refresh(store.as_ref(), &forms, &defs, true)
                .await?
                .expect("a forced refresh rebuilds");
            println!(
                "Rebuilt {} cells of {} indicators from {} records ({} derived again by today's rules) in {:.2} s.",
                rebuilt.cells,
                defs.len(),
                rebuilt.records,
                rebuilt.rederived,
                started.elapsed().as_secs_f64()
            );
        }
        IndicatorsCommand::Cells { period, .. } => {
            let cells = store.cells(period.as_deref()).await?;
            let rows: Vec<_> = cells
                .iter()
                .map(|(k, a)| serde_json::json!({"key": k, "amount": a}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
    }
    Ok(())
}
