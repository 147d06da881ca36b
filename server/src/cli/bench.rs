//! `mam bench`: the benchmarks.

use std::path::PathBuf;

use super::*;
use crate::bench;

/// `mam bench ingest|indicators|office|fleet|attachments|openrosa`.
pub(super) async fn bench(config: Option<&PathBuf>, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Attachments {
            photos,
            size,
            chunk,
            phones,
        } => {
            let settings = Settings::load(config.map(PathBuf::as_path), std::env::vars())?;
            bench::attachments(
                settings,
                photos.max(1),
                size.max(1),
                chunk.clamp(1, crate::attachments::MAX_CHUNK),
                phones.max(1),
            )
            .await
        }
        BenchCommand::Openrosa {
            db,
            submissions,
            phones,
            entities,
        } => {
            let settings = command_settings(config, &db)?;
            bench::openrosa(settings, submissions.max(1), phones.max(1), entities.max(1)).await
        }
        BenchCommand::Fleet {
            db,
            urls,
            phones,
            communes,
            duration,
            burst,
            idle,
            seed,
        } => {
            let settings = command_settings(config, &db)?;
            let urls = urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect();
            bench::fleet(
                settings,
                urls,
                phones.max(1),
                communes,
                duration,
                match (burst, idle) {
                    (true, _) => bench::Pace::Burst,
                    (_, true) => bench::Pace::Idle,
                    _ => bench::Pace::Field,
                },
                seed,
            )
            .await
        }
        BenchCommand::Phone {
            db,
            records,
            cpu,
            network,
        } => {
            let settings = command_settings(config, &db)?;
            bench::phone(settings, records.max(1), cpu.max(1.0), network).await
        }
        BenchCommand::Office { db, records } => {
            let settings = command_settings(config, &db)?;
            bench::office(settings, records.max(1)).await
        }
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
