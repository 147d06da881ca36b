//! `mam form`, `mam units`, `mam villages`: what phones fill in, and where.

use std::path::PathBuf;

use anyhow::Context;
use sync_protocol::CommuneCode;
use unicode_normalization::UnicodeNormalization;

use super::*;
use crate::forms::{self};
use crate::units::Units;
use crate::{now_ms, store};

pub(super) async fn form(config: Option<&PathBuf>, command: FormCommand) -> anyhow::Result<()> {
    match command {
        FormCommand::Xform { file, communes } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let form: sync_protocol::Form = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid form", file.display()))?;
            let communes: Vec<(String, String)> =
                communes.iter().map(|c| (c.clone(), c.clone())).collect();
            let xml = crate::openrosa::xform::xform(
                &form,
                &crate::openrosa::xform::Context {
                    communes: &communes,
                    entity_list: None,
                    update: false,
                },
            );
            print!("{xml}");
        }
        FormCommand::Publish { file, db } => {
            let settings = command_settings(config, &db)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let form: sync_protocol::Form = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid form", file.display()))?;
            let store = store::open(&settings).await?;
            // The files the server publishes at start come first, so versions line up.
            forms::publish_all(store.as_ref(), &settings.forms.forms(), now_ms()).await?;
            let name = format!("{} version {}", form.id, form.version);
            match forms::publish(store.as_ref(), form, now_ms()).await? {
                forms::Publication::Published => println!("Published {name}."),
                forms::Publication::AlreadyPublished => {
                    println!("{name} is already published, unchanged.")
                }
            }
        }
        FormCommand::Import {
            file,
            out,
            publish,
            db,
        } => {
            let import = crate::xlsform::convert(&file)?;
            let form = import.form;
            let out =
                out.unwrap_or_else(|| PathBuf::from(format!("{}.v{}.json", form.id, form.version)));
            std::fs::write(&out, serde_json::to_string_pretty(&form)? + "\n")
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "{} → {} ({})",
                file.display(),
                out.display(),
                forms::describe(&form)
            );
            if !import.not_converted.is_empty() {
                eprintln!("Not converted ({}):", import.not_converted.len());
                for item in &import.not_converted {
                    eprintln!("  - {item}");
                }
            }
            if publish {
                if !import.not_converted.is_empty() {
                    anyhow::bail!(
                        "not published: {} construct(s) were not converted",
                        import.not_converted.len()
                    );
                }
                let settings = command_settings(config, &db)?;
                let store = store::open(&settings).await?;
                forms::publish_all(store.as_ref(), &settings.forms.forms(), now_ms()).await?;
                let name = format!("{} version {}", form.id, form.version);
                match forms::publish(store.as_ref(), form, now_ms()).await? {
                    forms::Publication::Published => println!("Published {name}."),
                    forms::Publication::AlreadyPublished => {
                        println!("{name} is already published, unchanged.")
                    }
                }
            }
        }
        FormCommand::List { json, db } => {
            let settings = command_settings(config, &db)?;
            let store = store::open(&settings).await?;
            forms::publish_all(store.as_ref(), &settings.forms.forms(), now_ms()).await?;
            let mut all: Vec<sync_protocol::Form> = store
                .published_forms()
                .await?
                .iter()
                .map(|b| serde_json::from_str(b))
                .collect::<Result<_, _>>()?;
            all.sort_by(|a, b| (a.id.as_str(), a.version).cmp(&(b.id.as_str(), b.version)));
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                for f in &all {
                    println!("{}", forms::describe(f));
                }
            }
        }
    }
    Ok(())
}

/// `mam units list`: the communes on a date.
pub(super) async fn units(config: Option<&PathBuf>, command: UnitsCommand) -> anyhow::Result<()> {
    match command {
        UnitsCommand::List { on, json, db } => {
            let settings = command_settings(config, &db)?;
            let units = Units::load(&settings.forms.units())?;
            let date = on.unwrap_or_else(crate::today);
            if sync_protocol::form::parse_date(&date).is_none() {
                anyhow::bail!("--on {date:?} is not a date YYYY-MM-DD");
            }
            let version = units
                .version_on(&date)
                .context("no admin units are loaded")?;
            if json {
                println!("{}", serde_json::to_string_pretty(version)?);
            } else {
                println!(
                    "{} communes on {date} ({}, valid {} to {})",
                    version.communes.len(),
                    version.file,
                    version.valid_from,
                    version.valid_to.as_deref().unwrap_or("today")
                );
                println!("{}", version.province_name);
                for c in version.communes.values() {
                    let district = c
                        .district_full_name()
                        .map(|d| format!("  ({d})"))
                        .unwrap_or_default();
                    let successor = units
                        .successor(&c.code)
                        .filter(|s| *s != c.code)
                        .map(|s| format!("  → {s} from 2025-07-01"))
                        .unwrap_or_default();
                    println!("{}  {}{district}{successor}", c.code, c.full_name);
                }
            }
            Ok(())
        }
    }
}

/// `mam villages import`: village lists from a CSV.
pub(super) async fn villages(
    config: Option<&PathBuf>,
    command: VillagesCommand,
) -> anyhow::Result<()> {
    match command {
        VillagesCommand::Import { file, db } => {
            let settings = command_settings(config, &db)?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let mut lists: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for (n, line) in text.lines().enumerate().skip(1) {
                if line.trim().is_empty() {
                    continue;
                }
                let (commune, village) = line
                    .split_once(',')
                    .with_context(|| format!("line {}: expected commune,village", n + 1))?;
                let commune = CommuneCode::parse(commune.trim())
                    .map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?;
                let village: String = village.trim().trim_matches('"').nfc().collect();
                if village.is_empty() {
                    anyhow::bail!("line {}: the village name is empty", n + 1);
                }
                lists.entry(commune.to_string()).or_default().push(village);
            }
            let store = store::open(&settings).await?;
            for (commune, names) in &lists {
                let code = CommuneCode::parse(commune.as_str()).map_err(anyhow::Error::msg)?;
                store.set_villages(&code, names).await?;
                println!("{commune}: {} villages", names.len());
            }
            Ok(())
        }
    }
}
