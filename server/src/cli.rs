//! The `mam` command line. Every command takes the same `--data-dir` / `--database-url` as
//! `serve`, so an officer's command reaches the database the server uses.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sync_protocol::CommuneCode;
use tokio::net::TcpListener;
use tracing::info;
use unicode_normalization::UnicodeNormalization;

use crate::app;
use crate::config::Settings;
use crate::forms::{self, FormRegistry};
use crate::report::Scope;
use crate::state::AppState;
use crate::units::Units;
use crate::{auth, bench, now_ms, store};

#[derive(Parser, Debug)]
#[command(
    name = "mam",
    version,
    about = "Mầm: offline-first field data collection and sync for child protection and care"
)]
pub struct Cli {
    /// Settings file (TOML). Default: ./mam.toml when present.
    #[arg(long, global = true, env = "MAM_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
pub struct DbArgs {
    /// Directory of the SQLite database (used when no database URL is given).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// `postgres://…` to use PostgreSQL (or set MAM__DATABASE__URL).
    #[arg(long)]
    pub database_url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the sync server.
    Serve {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long)]
        listen: Option<String>,
        /// Directory of form files, instead of the built-in forms.
        #[arg(long)]
        forms_dir: Option<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Enrol, list and revoke phones.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Office accounts: commune, district and provincial officers.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Edits the server refused, kept for review.
    Rejected {
        #[command(subcommand)]
        command: RejectedCommand,
    },
    /// Publish and list form versions.
    Form {
        #[command(subcommand)]
        command: FormCommand,
    },
    /// The province's administrative units over time.
    Units {
        #[command(subcommand)]
        command: UnitsCommand,
    },
    /// Each commune's list of villages.
    Villages {
        #[command(subcommand)]
        command: VillagesCommand,
    },
    /// Read tokens for indicators and reports.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The indicator tables.
    Indicators {
        #[command(subcommand)]
        command: IndicatorsCommand,
    },
    /// Copy the SQLite database to FILE while the server runs (one consistent snapshot).
    Backup {
        /// The new file (never overwritten).
        file: PathBuf,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Put a backup made by `mam backup` in place of the SQLite database (server stopped). The
    /// database it replaces is kept beside it; the restored one gets a new epoch.
    Restore {
        file: PathBuf,
        #[command(flatten)]
        db: DbArgs,
    },
    /// The database's epoch: phones whose cursor is of another epoch pull from the start.
    Epoch {
        #[command(subcommand)]
        command: EpochCommand,
    },
    /// Measurements.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum EpochCommand {
    /// Print the epoch and the change counter.
    Show {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Give the database a new epoch: after restoring PostgreSQL from a dump, or promoting a
    /// replica that may have missed the last commits.
    Renew {
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an office account. The password is read from --password, or else from the first
    /// line of standard input (so that it stays out of the shell history).
    Add {
        /// The name to sign in with.
        #[arg(long)]
        name: String,
        /// province (everything), district (its communes) or commune (one commune).
        #[arg(long)]
        role: String,
        /// The province (46), district or commune code the role covers.
        #[arg(long)]
        area: String,
        /// The password (at least 10 characters). Prefer standard input.
        #[arg(long)]
        password: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List the accounts, with failed sign-ins and lockouts.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Set a new password (read like `user add`) and lift a lockout.
    Password {
        #[arg(long)]
        name: String,
        #[arg(long)]
        password: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// A password from the flag, or the first line of standard input.
fn read_password(flag: Option<String>) -> anyhow::Result<String> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("Password: ");
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Create a phone and print its one-time enrolment code.
    Enroll {
        /// Who carries the phone, e.g. "Nguyễn Thị Hoa, thôn 3".
        #[arg(long)]
        name: String,
        /// A commune the phone may read and write (5-digit code); repeat for several.
        #[arg(long = "commune", required = true)]
        communes: Vec<String>,
        /// Print `{"code": …}` instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List phones.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a phone: its token stops working at once.
    Revoke {
        id: u32,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum RejectedCommand {
    /// List refused edits, newest first.
    List {
        #[arg(long)]
        device: Option<u32>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum FormCommand {
    /// Publish a form version (JSON). A new version may add fields and choices and retire
    /// fields; it may not change a field's type or drop a choice that records use.
    Publish {
        file: PathBuf,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Convert an XLSForm spreadsheet (.xlsx) into a form file, naming every construct it
    /// cannot convert.
    Import {
        file: PathBuf,
        /// Where to write the form (default: `<id>.v<version>.json` here).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Publish it too (needs a complete conversion).
        #[arg(long)]
        publish: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List the published form versions.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum UnitsCommand {
    /// List the communes in force on a date (default: today).
    List {
        /// A date, YYYY-MM-DD.
        #[arg(long)]
        on: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum VillagesCommand {
    /// Replace communes' village lists from a CSV with the columns `commune,village`.
    Import {
        file: PathBuf,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token that reads indicators and reports of a scope; printed once, stored hashed.
    Create {
        /// `province` for the whole province.
        #[arg(long)]
        scope: Option<String>,
        /// A district code: its communes.
        #[arg(long)]
        district: Option<String>,
        /// A commune code; repeat for several.
        #[arg(long = "commune")]
        communes: Vec<String>,
        /// Who the token is for.
        #[arg(long, default_value = "office")]
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum IndicatorsCommand {
    /// Recompute every indicator cell from the records (the tables are kept current by every
    /// sync; this proves it, or repairs after a definition changed).
    Rebuild {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print the stored cells.
    Cells {
        #[arg(long)]
        period: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Raw batched upserts against the same records pushed through /v1/sync. Without a
    /// database URL it works in a scratch SQLite directory; with one, it writes its records
    /// there: give it an empty database made for the purpose.
    Ingest {
        #[command(flatten)]
        db: DbArgs,
        /// Concurrent simulated phones.
        #[arg(long, default_value_t = 8)]
        phones: usize,
        /// Records to write in each of the two runs.
        #[arg(long, default_value_t = 20_000)]
        records: usize,
        /// Records per batch (per upsert, per sync request).
        #[arg(long, default_value_t = 250)]
        batch: usize,
        /// Rounds of (a) then (b), each on an emptied store; with more than one, the median
        /// ratio is printed too (a machine's speed drifts: rounds pair close measurements).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// The indicator tables: full rebuild time, and their extra cost per edit.
    Indicators {
        #[command(flatten)]
        db: DbArgs,
        /// Birth records to load first.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Single-edit pushes to time (half with the tables, half without).
        #[arg(long, default_value_t = 2000)]
        edits: usize,
    },
}

fn settings(cli_config: Option<&PathBuf>, db: &DbArgs) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(cli_config.map(PathBuf::as_path), std::env::vars())?;
    if let Some(dir) = &db.data_dir {
        settings.storage.data_dir = dir.clone();
    }
    if let Some(url) = &db.database_url {
        settings.database.url = Some(url.clone());
    }
    Ok(settings)
}

/// Settings for a command other than `serve`, with logs kept to warnings.
fn command_settings(cli_config: Option<&PathBuf>, db: &DbArgs) -> anyhow::Result<Settings> {
    let settings = settings(cli_config, db)?;
    init_tracing(&settings, "warn");
    Ok(settings)
}

fn init_tracing(settings: &Settings, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let level = if settings.log.level == "info" {
        default_level
    } else {
        &settings.log.level
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if settings.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config.as_ref();
    match cli.command {
        Command::Serve {
            listen,
            forms_dir,
            db,
        } => {
            let mut settings = settings(config, &db)?;
            if let Some(listen) = listen {
                settings.server.listen = listen;
            }
            if let Some(dir) = forms_dir {
                settings.forms.dir = Some(dir);
            }
            init_tracing(&settings, "info");
            serve(settings).await
        }
        Command::Device { command } => device(config, command).await,
        Command::Rejected {
            command:
                RejectedCommand::List {
                    device,
                    limit,
                    json,
                    db,
                },
        } => {
            let settings = command_settings(config, &db)?;
            let store = store::open(&settings).await?;
            let rows = store.rejections(device, limit.min(10_000)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("No refused edits.");
            } else {
                for r in rows {
                    println!(
                        "device {} seq {}: {}{} — {}",
                        r.device,
                        r.seq,
                        r.code,
                        r.field.map(|f| format!(" ({f})")).unwrap_or_default(),
                        r.message
                    );
                }
            }
            Ok(())
        }
        Command::Form { command } => form(config, command).await,
        Command::Backup { file, db } => {
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
            Ok(())
        }
        Command::Restore { file, db } => {
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
            let store = store::open(&settings).await?;
            let epoch = store.renew_epoch(now_ms()).await?;
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
        Command::Epoch { command } => {
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
        Command::Bench {
            command: BenchCommand::Indicators { db, records, edits },
        } => {
            let settings = command_settings(config, &db)?;
            bench::indicators(settings, records.max(1), edits.max(2)).await
        }
        Command::User {
            command:
                UserCommand::Add {
                    name,
                    role,
                    area,
                    password,
                    db,
                },
        } => {
            let settings = command_settings(config, &db)?;
            let units = Units::load(&settings.forms.units())?;
            let password = read_password(password)?;
            let store = store::open(&settings).await?;
            let user = crate::accounts::add_user(
                store.as_ref(),
                &units,
                &name,
                &role,
                &area,
                password,
                now_ms(),
            )
            .await?;
            println!(
                "Account {} created: {} {}. Sign in at /login.",
                user.name, user.role, user.area
            );
            Ok(())
        }
        Command::User {
            command: UserCommand::List { db },
        } => {
            let settings = command_settings(config, &db)?;
            let store = store::open(&settings).await?;
            let now = now_ms();
            for u in store.users().await? {
                let locked = match u.locked_until {
                    Some(t) if t > now => {
                        format!(", locked for {} more min", (t - now) / 60_000 + 1)
                    }
                    _ => String::new(),
                };
                println!(
                    "{}\t{} {}\tfailed sign-ins: {}{locked}",
                    u.name, u.role, u.area, u.failed_logins
                );
            }
            Ok(())
        }
        Command::User {
            command: UserCommand::Password { name, password, db },
        } => {
            let settings = command_settings(config, &db)?;
            let password = read_password(password)?;
            crate::accounts::check_password_rules(&password).map_err(anyhow::Error::msg)?;
            let store = store::open(&settings).await?;
            let hash = crate::accounts::hash_password(password).await?;
            store
                .set_password(&name, &hash)
                .await
                .map_err(|e| match e {
                    crate::store::StoreError::NotFound => {
                        anyhow::anyhow!("name: no account {name:?}")
                    }
                    other => other.into(),
                })?;
            println!("Password of {name} changed; any lockout is lifted.");
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    scope,
                    district,
                    communes,
                    name,
                    json,
                    db,
                },
        } => {
            let settings = command_settings(config, &db)?;
            let scope = match (scope.as_deref(), district, communes.is_empty()) {
                (Some("province"), None, true) => Scope::Province,
                (None, Some(d), true) => Scope::District(d),
                (None, None, false) => {
                    for c in &communes {
                        CommuneCode::parse(c.as_str()).map_err(anyhow::Error::msg)?;
                    }
                    Scope::Communes(communes)
                }
                _ => anyhow::bail!(
                    "give exactly one of --scope province, --district CODE or --commune CODE…"
                ),
            };
            let store = store::open(&settings).await?;
            let token = auth::new_token();
            let id = store
                .add_api_token(
                    &name,
                    &auth::hash(&token),
                    &serde_json::to_string(&scope)?,
                    now_ms(),
                )
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "id": id, "token": token, "scope": scope })
                );
            } else {
                println!(
                    "Read token {id} for {name} ({scope:?}), shown this once:\n\n    {token}\n"
                );
            }
            Ok(())
        }
        Command::Indicators { command } => {
            let db = match &command {
                IndicatorsCommand::Rebuild { db } | IndicatorsCommand::Cells { db, .. } => {
                    db.clone()
                }
            };
            let settings = command_settings(config, &db)?;
            let store = store::open(&settings).await?;
            match command {
                IndicatorsCommand::Rebuild { .. } => {
                    let defs = crate::indicators::load(&settings.forms.indicators())?;
                    let started = std::time::Instant::now();
                    let count = defs.len();
                    let build = move |records: &[sync_protocol::Record]| {
                        crate::indicators::rebuild(&defs, records)
                            .into_iter()
                            .collect::<Vec<_>>()
                    };
                    let (records, cells) = store.rebuild_cells(&build).await?;
                    println!(
                        "Rebuilt {cells} cells of {count} indicators from {records} records in {:.2} s.",
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
        Command::Units {
            command: UnitsCommand::List { on, json, db },
        } => {
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
                for c in version.communes.values() {
                    let district = c
                        .district_name
                        .as_deref()
                        .map(|d| format!("  ({d})"))
                        .unwrap_or_default();
                    let successor = units
                        .successor(&c.code)
                        .filter(|s| *s != c.code)
                        .map(|s| format!("  → {s} from 2025-07-01"))
                        .unwrap_or_default();
                    println!("{}  {} {}{district}{successor}", c.code, c.kind, c.name);
                }
            }
            Ok(())
        }
        Command::Villages {
            command: VillagesCommand::Import { file, db },
        } => {
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
        Command::Bench {
            command:
                BenchCommand::Ingest {
                    db,
                    phones,
                    records,
                    batch,
                    rounds,
                },
        } => {
            let settings = command_settings(config, &db)?;
            let (phones, records, batch) = (phones.max(1), records.max(1), batch.max(1));
            bench::ingest(settings, phones, records, batch, rounds.max(1)).await
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let _lock = match settings.database.url {
        None => Some(crate::backup::DataDirLock::take(
            &settings.storage.data_dir,
            "starting another",
        )?),
        Some(_) => None,
    };
    let (form_files, unit_files, indicator_files) = (
        settings.forms.forms(),
        settings.forms.units(),
        settings.forms.indicators(),
    );
    info!(source = %form_files, "forms: {form_files}");
    info!(source = %unit_files, "admin units: {unit_files}");
    info!(source = %indicator_files, "indicators: {indicator_files}");
    let units = Units::load(&unit_files)?;
    let indicators = crate::indicators::load(&indicator_files)?;
    let store = store::open(&settings).await?;
    let published = forms::publish_all(store.as_ref(), &form_files, now_ms()).await?;
    let registry = FormRegistry::from_store(store.as_ref()).await?;
    let listener = TcpListener::bind(&settings.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
    let addr = listener.local_addr()?;
    info!(backend = store.backend(), forms = registry.len(), published, %addr, "Mầm started");
    let where_ = match &settings.database.url {
        Some(_) => "PostgreSQL".to_owned(),
        None => format!("SQLite in {}", settings.storage.data_dir.display()),
    };
    println!(
        "Mầm is listening on http://{addr} ({where_}, {} form versions)",
        registry.len()
    );
    println!("Office: http://{addr}/office   (create an account first: mam user add --name NAME --role province --area 46)");
    println!("Phone app: http://{addr}/app/");
    println!("Enrol a phone: mam device enroll --name \"NAME\" --commune 19753   (then POST the code to /v1/enroll)");
    let state = AppState::new(store, registry, units, indicators, settings);
    let refresher = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(forms::REFRESH);
        loop {
            tick.tick().await;
            if let Err(e) = refresher.refresh_forms().await {
                tracing::warn!(error = %e, "could not reload the published forms");
            }
        }
    });
    app::serve(listener, state, app::shutdown_signal()).await?;
    info!("stopped");
    Ok(())
}

async fn form(config: Option<&PathBuf>, command: FormCommand) -> anyhow::Result<()> {
    match command {
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

async fn device(config: Option<&PathBuf>, command: DeviceCommand) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Enroll {
            name,
            communes,
            json,
            db,
        } => {
            let settings = command_settings(config, &db)?;
            let name = name.trim();
            if name.is_empty() {
                anyhow::bail!("--name must not be empty");
            }
            let communes = communes
                .iter()
                .map(|c| CommuneCode::parse(c.trim()).map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let store = store::open(&settings).await?;
            let code = auth::new_code();
            let hours = settings.sync.enroll_code_hours;
            let expires = now_ms() + hours as i64 * 3_600_000;
            let id = store
                .add_device(name, &communes, &auth::code_hash(&code), expires, now_ms())
                .await?;
            if json {
                println!("{}", serde_json::json!({ "code": code, "device": id }));
            } else {
                println!("Device {id} ({name}) created. Enrolment code, valid {hours} hours, usable once:");
                println!();
                println!("    {code}");
                println!();
                println!("On the phone, enter the code; or: curl -X POST URL/v1/enroll -d '{{\"code\":\"{code}\"}}'");
            }
        }
        DeviceCommand::List { json, db } => {
            let settings = command_settings(config, &db)?;
            let store = store::open(&settings).await?;
            let devices = store.devices().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                println!(
                    "{:>5}  {:<28} {:<18} {:<10} {:>8} {:>8}",
                    "id", "name", "communes", "state", "last seq", "refused"
                );
                for d in devices {
                    let state = if d.revoked {
                        "revoked"
                    } else if d.enrolled {
                        "enrolled"
                    } else {
                        "awaiting"
                    };
                    let follows = d
                        .predecessor
                        .map(|p| format!("  (follows #{p})"))
                        .unwrap_or_default();
                    let restore = d
                        .restored_seq
                        .map(|from| match d.last_seq > from {
                            true => format!(
                                "  (since the restore: seqs {}–{}, {} of them lost for good)",
                                from + 1,
                                d.last_seq,
                                d.lost
                            ),
                            false => format!(
                                "  (nothing sent since the restore, {} lost for good)",
                                d.lost
                            ),
                        })
                        .unwrap_or_default();
                    println!(
                        "{:>5}  {:<28} {:<18} {:<10} {:>8} {:>8}{follows}{restore}",
                        d.id,
                        d.name,
                        d.communes.join(","),
                        state,
                        d.last_seq,
                        d.rejected
                    );
                }
            }
        }
        DeviceCommand::Revoke { id, db } => {
            let settings = command_settings(config, &db)?;
            let store = store::open(&settings).await?;
            match store.revoke(id, now_ms()).await {
                Ok(()) => println!("Device {id} revoked."),
                Err(store::StoreError::NotFound) => anyhow::bail!("no device {id}"),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
