//! Settings: defaults → file → environment → flags.
//!
//! The file is TOML (`--config FILE`, or `MAM_CONFIG`, or `./mam.toml` when present). The
//! environment overrides any key as `MAM__SECTION__KEY` (`MAM__DATABASE__URL`,
//! `MAM__SERVER__LISTEN`, …). Flags win over everything. The database URL may hold a password:
//! it is never logged, and `Debug` prints it redacted.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::schemas::Source;

/// Pushes a SQLite group commit takes at most, by default (measured: README, "Group commit").
pub const DEFAULT_GROUP_PUSHES: usize = 32;
/// How long a SQLite group commit stays open at most, by default, in milliseconds.
pub const DEFAULT_GROUP_MS: u64 = 25;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub storage: StorageSettings,
    pub sync: SyncSettings,
    pub forms: FormsSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
    pub attachments: AttachmentSettings,
}

/// Photos, sound and files (see `attachments.rs`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttachmentSettings {
    /// Where they are kept: by default `attachments/` in the data directory; with PostgreSQL,
    /// a folder every `mam` process shares. With an object store, uploads under way and a
    /// cache of what was read.
    pub dir: Option<PathBuf>,
    /// The largest attachment taken, in bytes.
    pub max_bytes: u64,
    /// The media types taken: a type, or a family as `image/*`.
    pub types: Vec<String>,
    /// An S3-compatible object store to keep them in (e.g. `http://127.0.0.1:9000`).
    pub s3_endpoint: Option<String>,
    pub s3_bucket: String,
    pub s3_region: String,
    pub s3_access_key: Option<String>,
    /// Never printed.
    pub s3_secret_key: Option<String>,
}

impl std::fmt::Debug for AttachmentSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentSettings")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .field("types", &self.types)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key", &self.s3_access_key)
            .field(
                "s3_credentials",
                &self.s3_secret_key.as_ref().map(|_| "(set, not shown)"),
            )
            .finish()
    }
}

impl Default for AttachmentSettings {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: 10 * 1024 * 1024,
            types: [
                "image/*",
                "audio/*",
                "video/*",
                "application/pdf",
                "text/csv",
            ]
            .map(String::from)
            .to_vec(),
            s3_endpoint: None,
            s3_bucket: "mam-attachments".into(),
            s3_region: "us-east-1".into(),
            s3_access_key: None,
            s3_secret_key: None,
        }
    }
}

impl AttachmentSettings {
    /// The object store, when one is configured.
    pub fn s3(&self) -> Option<crate::objects::S3> {
        let endpoint = self.s3_endpoint.as_deref()?;
        Some(crate::objects::S3::new(
            endpoint,
            &self.s3_bucket,
            &self.s3_region,
            self.s3_access_key.as_deref().unwrap_or_default(),
            self.s3_secret_key.as_deref().unwrap_or_default(),
        ))
    }
}

impl Settings {
    /// The folder attachments are kept in.
    pub fn attachments_dir(&self) -> PathBuf {
        self.attachments
            .dir
            .clone()
            .unwrap_or_else(|| self.storage.data_dir.join("attachments"))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port (printed at start).
    pub listen: String,
    /// Largest request body, after gzip decompression.
    pub body_limit_bytes: usize,
    /// A request running longer is answered 408 and its transaction rolled back.
    pub request_timeout_secs: u64,
    /// On SIGTERM, in-flight requests get this long to finish.
    pub drain_timeout_secs: u64,
    /// Where `/metrics` is served. Unset: on `listen`, beside everything else. Set (e.g.
    /// `127.0.0.1:9090`): there alone, and not on `listen`.
    pub metrics_listen: Option<String>,
    /// The address phones and browsers use to reach this server, as QR codes and links carry
    /// it (`https://mam.example.vn`, `https://192.168.1.20:8443`). Unset: the address the
    /// office's browser used.
    pub public_url: Option<String>,
    /// HTTPS: a certificate chain (PEM) and its private key (PEM). Both set: `listen` serves
    /// HTTPS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 4 * 1024 * 1024,
            request_timeout_secs: 30,
            drain_timeout_secs: 20,
            metrics_listen: None,
            public_url: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…` for PostgreSQL, `sqlite:…` for a given SQLite file; unset: SQLite in
    /// the data directory.
    pub url: Option<String>,
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
        }
    }
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.url.as_ref().map(|_| "[redacted]"))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Where the SQLite database lives when no database URL is set.
    pub data_dir: PathBuf,
    /// SQLite group commit: pushes one commit takes at most while more keep coming.
    pub group_max_pushes: usize,
    /// SQLite group commit: how long, in milliseconds, a group stays open at most while more
    /// pushes keep coming.
    pub group_max_ms: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("mam-data"),
            group_max_pushes: DEFAULT_GROUP_PUSHES,
            group_max_ms: DEFAULT_GROUP_MS,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSettings {
    /// Most edits one sync request may push.
    pub max_push: usize,
    /// Largest page a phone may ask for with `max_bytes`.
    pub max_page_bytes: u64,
    /// Most records in one page.
    pub max_page_records: usize,
    /// How long an enrolment code stays valid.
    pub enroll_code_hours: u64,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            max_push: 1000,
            max_page_bytes: 1024 * 1024,
            max_page_records: 2000,
            enroll_code_hours: 72,
        }
    }
}

/// Where forms, admin units and indicators are read from. Each is built into the binary (the
/// files under `schemas/` when it was compiled); a folder set here replaces that copy.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FormsSettings {
    /// Directory of form files (`*.json`).
    pub dir: Option<PathBuf>,
    /// Directory of the admin-unit versions (`versions.json` and its CSV files).
    pub units_dir: Option<PathBuf>,
    /// Directory of the indicator definitions.
    pub indicators_dir: Option<PathBuf>,
}

impl FormsSettings {
    pub fn forms(&self) -> Source {
        Source::new("forms", self.dir.as_deref())
    }

    pub fn units(&self) -> Source {
        Source::new("admin-units", self.units_dir.as_deref())
    }

    pub fn indicators(&self) -> Source {
        Source::new("indicators", self.indicators_dir.as_deref())
    }
}

/// How often one client may try what can be guessed, per minute (0: no limit). A client is its
/// address (an IPv6 address by its /64), or the address a trusted proxy names.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Failed office sign-ins per client address.
    pub sign_in_failures_per_minute: u32,
    /// Failed enrolments (`POST /v1/enroll` with a code that is not valid) per client address.
    pub enrol_failures_per_minute: u32,
    /// Enrolment attempts naming one code, from anywhere.
    pub enrol_per_code_per_minute: u32,
    /// Requests with a read token (`/v1/indicators`, `/v1/reports`) per client address.
    pub read_per_minute: u32,
    /// Reverse proxies whose `X-Forwarded-For` names the client (IP addresses). Requests from
    /// any other address are that address's own, whatever they claim. In the environment: a
    /// comma-separated list.
    #[serde(deserialize_with = "list_or_commas")]
    pub trusted_proxies: Vec<String>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            sign_in_failures_per_minute: 10,
            enrol_failures_per_minute: 10,
            enrol_per_code_per_minute: 5,
            read_per_minute: 300,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing` filter, e.g. `info` or `mam=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl Settings {
    /// Defaults, then the file, then `MAM__…` variables from `env`. Flags are applied by the
    /// caller on the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Settings> {
        let mut tree = toml::Value::try_from(Settings::default())?;
        let file = file.map(Path::to_path_buf).or_else(|| {
            let local = PathBuf::from("mam.toml");
            local.exists().then_some(local)
        });
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let overlay: toml::Value = toml::from_str(&text)
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
            merge(&mut tree, overlay);
        }
        for (key, value) in env {
            let Some(path) = key.strip_prefix("MAM__") else {
                continue;
            };
            let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
            if parts.len() != 2 {
                anyhow::bail!("environment variable {key}: expected MAM__SECTION__KEY");
            }
            let table = tree
                .as_table_mut()
                .and_then(|t| t.get_mut(&parts[0]))
                .and_then(|s| s.as_table_mut())
                .with_context(|| {
                    format!("environment variable {key}: no section {:?}", parts[0])
                })?;
            table.insert(parts[1].clone(), scalar(&value));
        }
        tree.try_into().context("invalid settings")
    }
}

/// A list, or (from the environment) one string of comma-separated items.
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Given::deserialize(d)? {
        Given::List(list) => list,
        Given::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// An environment value as the TOML scalar it looks like.
fn scalar(text: &str) -> toml::Value {
    if let Ok(i) = text.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(b) = text.parse::<bool>() {
        toml::Value::Boolean(b)
    } else {
        toml::Value::String(text.to_owned())
    }
}

fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(base), toml::Value::Table(overlay)) => {
            for (k, v) in overlay {
                match base.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = std::env::temp_dir().join(format!("mam-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mam.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"0.0.0.0:9000\"\nbody_limit_bytes = 1000\n",
        )
        .unwrap();
        let env = [
            (
                "MAM__SERVER__BODY_LIMIT_BYTES".to_string(),
                "2000".to_string(),
            ),
            (
                "MAM__DATABASE__URL".to_string(),
                "postgres://u:secret@h/db".to_string(),
            ),
            (
                "MAM__ATTACHMENTS__S3_SECRET_KEY".to_string(),
                "secret".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let s = Settings::load(Some(&file), env).unwrap();
        assert_eq!(s.server.listen, "0.0.0.0:9000");
        assert_eq!(s.server.body_limit_bytes, 2000);
        assert_eq!(s.server.request_timeout_secs, 30);
        assert!(
            !format!("{s:?}").contains("secret"),
            "the database password and the object store's secret must not print"
        );
        let bad = Settings::load(None, [("MAM__SERVER__NOPE".to_string(), "1".to_string())]);
        assert!(bad.is_err());
    }

    #[test]
    fn schemas_are_built_in_unless_a_folder_is_set() {
        let s = Settings::load(None, []).unwrap();
        assert_eq!(s.forms.forms(), Source::built_in("forms"));
        assert_eq!(s.forms.units(), Source::built_in("admin-units"));
        assert_eq!(s.forms.indicators(), Source::built_in("indicators"));
        let env = [(
            "MAM__FORMS__UNITS_DIR".to_string(),
            "/srv/mam/admin-units".to_string(),
        )];
        let s = Settings::load(None, env).unwrap();
        assert_eq!(s.forms.units().to_string(), "/srv/mam/admin-units");
        assert_eq!(s.forms.forms(), Source::built_in("forms"));
    }
}
