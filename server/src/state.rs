//! The state every surface shares: settings, the store, the published forms, admin units,
//! indicators, metrics, and whether the server is draining. No HTTP in here.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::Settings;
use crate::forms::FormRegistry;
use crate::indicators::Indicator;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::now_ms;
use crate::store::DynStore;
use crate::units::Units;

pub struct AppState {
    pub store: DynStore,
    forms: RwLock<Arc<FormRegistry>>,
    pub units: Units,
    pub indicators: Vec<Indicator>,
    pub settings: Settings,
    pub metrics: Metrics,
    pub(crate) draining: AtomicBool,
    forms_loaded_at: AtomicI64,
    /// Pushes parsed and checked at once: one per core. Parsing is CPU work, and a push's
    /// records take a few times its body in memory while they are built; more at once than
    /// there are cores only makes each wait longer and hold more.
    pub(crate) parsers: Arc<tokio::sync::Semaphore>,
    /// How often one client may guess (sign-ins, enrolment codes, read tokens).
    pub limiter: Limiter,
    /// The proxies whose `X-Forwarded-For` is believed (`[limits] trusted_proxies`).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Photos, sound and files, by their SHA-256.
    pub attachments: crate::attachments::Attachments,
    /// When phones last synced with nothing to push, not yet written: an idle sync writes
    /// nothing to the database, and these are written in one batch every
    /// [`SEEN_FLUSH_SECS`] and when the server stops.
    last_seen: std::sync::Mutex<std::collections::HashMap<sync_protocol::DeviceId, i64>>,
}

/// How often the idle syncs' "last seen" is written.
pub const SEEN_FLUSH_SECS: u64 = 30;

impl AppState {
    /// What the sync service checks and merges edits with, for the forms given.
    pub fn catalog<'a>(&'a self, forms: &'a FormRegistry) -> crate::sync::Catalog<'a> {
        crate::sync::Catalog {
            forms,
            units: &self.units,
            indicators: &self.indicators,
        }
    }
}

impl AppState {
    /// A phone synced with nothing to push.
    pub fn seen(&self, device: sync_protocol::DeviceId, at: i64) {
        let mut seen = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
        let t = seen.entry(device).or_insert(at);
        *t = (*t).max(at);
    }

    /// When a phone was last seen, as not written yet.
    pub fn seen_lately(&self, device: sync_protocol::DeviceId) -> Option<i64> {
        let seen = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&device).copied()
    }

    /// Writes the "last seen" of idle syncs in one batch (kept for the next try if it fails).
    pub async fn flush_seen(&self) {
        let batch: Vec<(sync_protocol::DeviceId, i64)> = {
            let mut seen = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.drain().collect()
        };
        if let Err(e) = self.store.touch_devices(&batch).await {
            tracing::warn!(error = %e, phones = batch.len(), "could not write when phones were last seen");
            for (device, at) in batch {
                self.seen(device, at);
            }
        }
    }
}

impl AppState {
    /// What the indicator questions ([`crate::query`]) read.
    pub fn tables(&self) -> crate::query::Tables<'_> {
        crate::query::Tables {
            store: self.store.as_ref(),
            units: &self.units,
            indicators: &self.indicators,
        }
    }
}

impl AppState {
    pub fn new(
        store: DynStore,
        forms: FormRegistry,
        units: Units,
        indicators: Vec<Indicator>,
        settings: Settings,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            forms: RwLock::new(Arc::new(forms)),
            units,
            indicators,
            metrics: Metrics::default(),
            draining: AtomicBool::new(false),
            forms_loaded_at: AtomicI64::new(0),
            parsers: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
            limiter: Limiter::new(&settings.limits),
            attachments: crate::attachments::Attachments::new(
                &settings.attachments_dir(),
                settings.attachments.max_bytes,
                settings.attachments.types.clone(),
            )
            .with_objects(settings.attachments.s3()),
            last_seen: std::sync::Mutex::new(std::collections::HashMap::new()),
            // Checked when the server starts (`mam serve`); one that does not parse trusts none.
            trusted_proxies: crate::limits::trusted_proxies(&settings.limits).unwrap_or_default(),
            settings,
        })
    }
}

impl AppState {
    /// The published forms as of now.
    pub fn forms(&self) -> Arc<FormRegistry> {
        self.forms.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// At most one reload a second on demand, so unknown forms cannot be used to load the
    /// database.
    pub(crate) fn may_refresh_forms(&self) -> bool {
        let now = now_ms();
        let last = self.forms_loaded_at.load(Ordering::Relaxed);
        now - last >= 1000
            && self
                .forms_loaded_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Reload the published forms from the database (new versions published meanwhile).
    pub async fn refresh_forms(&self) -> anyhow::Result<()> {
        let fresh = FormRegistry::from_store(self.store.as_ref()).await?;
        *self.forms.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(())
    }
}

impl crate::openrosa::Host for AppState {
    fn store(&self) -> &dyn crate::store::Store {
        self.store.as_ref()
    }

    fn forms(&self) -> Arc<FormRegistry> {
        AppState::forms(self)
    }

    fn units(&self) -> &Units {
        &self.units
    }

    fn catalog<'a>(&'a self, forms: &'a FormRegistry) -> crate::sync::Catalog<'a> {
        AppState::catalog(self, forms)
    }

    fn put_attachment(
        &self,
        device: sync_protocol::DeviceId,
        sha: &str,
        size: u64,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), String> {
        self.attachments
            .put(device, sha, 0, size, media_type, bytes)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
