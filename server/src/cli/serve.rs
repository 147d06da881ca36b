//! `mam serve`: the server, with its forms published and its schemas named.

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::info;

use crate::app;
use crate::config::Settings;
use crate::forms::{self, FormRegistry};
use crate::state::AppState;
use crate::units::Units;
use crate::{now_ms, store};

pub(super) async fn serve(settings: Settings) -> anyhow::Result<()> {
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
    // Attachments: in the object store when one is configured (its bucket made if missing),
    // else in the folder.
    match settings.attachments.s3() {
        Some(objects) => {
            objects.create_bucket().await?;
            info!(
                "attachments: {objects:?} (uploads under way in {})",
                settings.attachments_dir().display()
            );
        }
        None => info!("attachments: {}", settings.attachments_dir().display()),
    }
    let published = forms::publish_all(store.as_ref(), &form_files, now_ms()).await?;
    let registry = FormRegistry::from_store(store.as_ref()).await?;
    let named = forms::fill_search_names(store.as_ref(), &registry).await?;
    if named > 0 {
        info!(
            records = named,
            "records' names kept for the office's search"
        );
    }
    // Derived fields and cells follow today's rules: after an upgrade or new form versions,
    // the stored records are derived again and the cells rebuilt, once.
    if let Some(r) =
        crate::indicators::refresh(store.as_ref(), &registry, &indicators, false).await?
    {
        info!(
            records = r.records,
            rederived = r.rederived,
            cells = r.cells,
            "records derived again by today's rules; indicator cells rebuilt"
        );
    }
    let tls = match (&settings.server.tls_cert, &settings.server.tls_key) {
        (Some(cert), Some(key)) => Some(crate::listen::tls_config(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("server.tls_cert and server.tls_key: set both, or neither"),
    };
    if let Some(url) = &settings.server.public_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!("server.public_url: {url:?} is not an http:// or https:// address");
        }
    }
    let listener = TcpListener::bind(&settings.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.server.listen))?;
    let addr = listener.local_addr()?;
    crate::limits::trusted_proxies(&settings.limits)?;
    let metrics_listener = match &settings.server.metrics_listen {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (server.metrics_listen)"))?,
        ),
        None => None,
    };
    info!(backend = store.backend(), forms = registry.len(), published, %addr, "Mầm started");
    let where_ = match &settings.database.url {
        Some(_) => "PostgreSQL".to_owned(),
        None => format!("SQLite in {}", settings.storage.data_dir.display()),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "Mầm is listening on {scheme}://{addr} ({where_}, {} form versions)",
        registry.len()
    );
    println!("Office: {scheme}://{addr}/office   (create an account first: mam user add --name NAME --role province --area 46)");
    println!("Phone app: {scheme}://{addr}/app/");
    match &settings.server.public_url {
        Some(url) => println!(
            "Phones and QR codes use: {}/app/",
            url.trim_end_matches('/')
        ),
        None => {
            let reachable = crate::listen::reachable(addr);
            if reachable.is_empty() {
                println!(
                    "Phones cannot reach {}: to serve phones on this network, listen on every interface (--listen 0.0.0.0:{})",
                    addr.ip(),
                    addr.port()
                );
            }
            for a in reachable {
                println!("Phones on this network: {scheme}://{a}/app/");
            }
        }
    }
    if tls.is_none() {
        println!("Without HTTPS, phones other than this machine cannot work offline or take a location: see README, \"Serving phones\".");
    }
    println!("Enrol a phone: mam device enroll --name \"NAME\" --commune 19753   (then POST the code to /v1/enroll)");
    if let Some(l) = &metrics_listener {
        println!("Metrics: http://{}/metrics", l.local_addr()?);
    }
    let state = AppState::new(store, registry, units, indicators, settings);
    if let Some(listener) = metrics_listener {
        tokio::spawn(app::serve_metrics(listener, state.clone()));
    }
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
    match tls {
        Some(config) => {
            let listener = crate::listen::TlsListener::new(listener, config)?;
            app::serve_tls(listener, state, app::shutdown_signal()).await?
        }
        None => app::serve(listener, state, app::shutdown_signal()).await?,
    }
    info!("stopped");
    Ok(())
}
