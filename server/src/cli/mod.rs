//! The `mam` command line. Every command takes the same `--data-dir` / `--database-url` as
//! `serve`, so an officer's command reaches the database the server uses.

mod accounts;
mod bench;
mod data;
mod devices;
mod forms;
mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Settings;

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
        /// The address phones use to reach this server, as QR codes and links carry it
        /// (e.g. https://192.168.1.20:8443).
        #[arg(long)]
        public_url: Option<String>,
        /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
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
        /// Print `{"code": …}` instead of text (with `--odk`: `{"device", "server_url",
        /// "qr"}`).
        #[arg(long)]
        json: bool,
        /// A phone with ODK Collect: print the server URL to give it, with its key, and the
        /// QR code that configures it.
        #[arg(long)]
        odk: bool,
        /// The address phones reach the server by, for `--odk` (default: `[server]
        /// public_url`, else the listen address).
        #[arg(long)]
        public_url: Option<String>,
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
    /// List refused attachment uploads (a wrong hash, a type not taken, over the limit),
    /// newest first.
    Uploads {
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
    /// Print the XForm ODK Collect gets of a form file (JSON), for a phone of these communes.
    Xform {
        file: PathBuf,
        /// A commune of the phone (5-digit code); repeat for several.
        #[arg(long = "commune")]
        communes: Vec<String>,
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
    /// Photos through the chunked upload over loopback: MB/s, latency per chunk, and the
    /// bytes sent per photo against its size. Works in a scratch SQLite directory.
    Attachments {
        /// Photos to upload.
        #[arg(long, default_value_t = 200)]
        photos: usize,
        /// Bytes of each photo.
        #[arg(long, default_value_t = 200_000)]
        size: usize,
        /// Bytes of each chunk (the phone's is 65536).
        #[arg(long, default_value_t = 65_536)]
        chunk: usize,
        /// Phones uploading at once.
        #[arg(long, default_value_t = 4)]
        phones: usize,
    },
    /// ODK Collect over OpenRosa: submissions/s of a 20-field form through `POST
    /// /submission` over loopback, and the time to serve an entity list. Without a database
    /// URL it works in a scratch SQLite directory; with one, give it an empty database.
    Openrosa {
        #[command(flatten)]
        db: DbArgs,
        /// Submissions to send.
        #[arg(long, default_value_t = 5000)]
        submissions: usize,
        /// Phones sending at once.
        #[arg(long, default_value_t = 8)]
        phones: usize,
        /// Children in the entity list served.
        #[arg(long, default_value_t = 100_000)]
        entities: usize,
    },
    /// A province's fleet against running servers: simulated phones over communes, each sync
    /// to a random one of the `--url`s, with think time (or none with `--burst`); syncs/s,
    /// edits/s, latency, errors, the servers' memory, then a check that nothing was lost and
    /// every phone converged. Phones are enrolled straight into the servers' database (give
    /// the same `--data-dir` or `--database-url`).
    Fleet {
        #[command(flatten)]
        db: DbArgs,
        /// A server to sync with (repeat for several processes on one database).
        #[arg(long = "url", required = true)]
        urls: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        phones: usize,
        #[arg(long, default_value_t = 50)]
        communes: usize,
        /// Seconds of load before the check.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// No think time between a phone's syncs.
        #[arg(long)]
        burst: bool,
        /// Phones left on: a sync a minute each, with nothing to send.
        #[arg(long, conflicts_with = "burst")]
        idle: bool,
        #[arg(long, default_value_t = 20251203)]
        seed: u64,
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
    /// The phone app with a big commune in headless Chromium at 360×740, its CPU slowed and
    /// a mobile network emulated: the first sync, opening the app, the list, a record, and
    /// what IndexedDB holds. Needs chromium and chromedriver.
    Phone {
        #[command(flatten)]
        db: DbArgs,
        /// Birth records of the commune.
        #[arg(long, default_value_t = 20_000)]
        records: usize,
        /// How many times slower than this machine the phone's CPU is.
        #[arg(long, default_value_t = 4.0)]
        cpu: f64,
        /// The network DevTools emulates.
        #[arg(long, value_enum, default_value = "3g")]
        network: crate::bench::Network,
    },
    /// The office at a year of records: every page timed over HTTP, and the year's CSV
    /// streamed with the process's memory sampled.
    Office {
        #[command(flatten)]
        db: DbArgs,
        /// Birth records to load first.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
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
            public_url,
            tls_cert,
            tls_key,
            db,
        } => {
            let mut settings = settings(config, &db)?;
            if let Some(listen) = listen {
                settings.server.listen = listen;
            }
            if let Some(url) = public_url {
                settings.server.public_url = Some(url);
            }
            if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
                settings.server.tls_cert = Some(cert);
                settings.server.tls_key = Some(key);
            }
            if let Some(dir) = forms_dir {
                settings.forms.dir = Some(dir);
            }
            init_tracing(&settings, "info");
            serve::serve(settings).await
        }
        Command::Device { command } => devices::device(config, command).await,
        Command::Rejected { command } => devices::rejected(config, command).await,
        Command::Token { command } => devices::token(config, command).await,
        Command::Form { command } => forms::form(config, command).await,
        Command::Units { command } => forms::units(config, command).await,
        Command::Villages { command } => forms::villages(config, command).await,
        Command::User { command } => accounts::user(config, command).await,
        Command::Backup { file, db } => data::backup(config, file, db).await,
        Command::Restore { file, db } => data::restore(config, file, db).await,
        Command::Epoch { command } => data::epoch(config, command).await,
        Command::Indicators { command } => data::indicators(config, command).await,
        Command::Bench { command } => bench::bench(config, command).await,
    }
}
