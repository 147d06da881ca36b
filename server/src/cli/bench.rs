//! `mam bench`: the benchmarks.

use std::path::PathBuf;

use super::*;
use crate::bench;

/// `mam bench ingest|indicators`.
pub(super) async fn bench(config: Option<&PathBuf>, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Indicators { db, records, edits } => {
            let settings = command_settings(config, &db)?;
            bench::indicators(settings, records.max(1), edits.max(2)).await
        }
        BenchCommand::Ingest {
            db,
            phones,
            records,
            batch,
            rounds,
        } => {
            let settings = command_settings(config, &db)?;
            let (phones, records, batch) = (phones.max(1), records.max(1), batch.max(1));
            bench::ingest(settings, phones, records, batch, rounds.max(1)).await
        }
    }
}
