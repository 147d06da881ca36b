//! The collaborators' phone app, served under `/app/`: plain JavaScript modules, a manifest and
//! a service worker, all built into the binary. The app works offline after its first visit
//! and talks to the server only through the v1 sync API.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// (path under /app/, content type, contents)
const FILES: &[(&str, &str, &str)] = &[
    (
        "",
        "text/html; charset=utf-8",
        include_str!("../app/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../app/app.js"),
    ),
    (
        "protocol.js",
        "text/javascript; charset=utf-8",
        include_str!("../app/protocol.js"),
    ),
    (
        "store.js",
        "text/javascript; charset=utf-8",
        include_str!("../app/store.js"),
    ),
    (
        "media.js",
        "text/javascript; charset=utf-8",
        include_str!("../app/media.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../app/app.css"),
    ),
    (
        "sw.js",
        "text/javascript; charset=utf-8",
        include_str!("../app/sw.js"),
    ),
    (
        "manifest.webmanifest",
        "application/manifest+json",
        include_str!("../app/manifest.webmanifest"),
    ),
    ("icon.svg", "image/svg+xml", include_str!("../app/icon.svg")),
];

/// Every file: the app's own, and under `who/` the WHO tables the server's crate computes from
/// (the phone computes the same scores from the same text).
fn files() -> impl Iterator<Item = (Cow<'static, str>, &'static str, &'static str)> {
    let own = FILES
        .iter()
        .map(|&(p, kind, body)| (Cow::Borrowed(p), kind, body));
    let who = sync_protocol::who::TABLES.iter().map(|&(name, body)| {
        (
            Cow::Owned(format!("who/{name}")),
            "text/csv; charset=utf-8",
            body,
        )
    });
    own.chain(who)
}

/// A hash of every file: a new build gets a new service-worker cache.
fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut hash = Sha256::new();
        for (path, _, body) in files() {
            hash.update(path.as_bytes());
            hash.update(body.as_bytes());
        }
        hash.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/app", get(|| async { Redirect::permanent("/app/") }))
        .route("/app/", get(|| async { file("") }))
        .route(
            "/app/{*path}",
            get(|Path(path): Path<String>| async move { file(&path) }),
        )
}

fn file(path: &str) -> Response {
    let Some((_, kind, body)) = files().find(|(p, _, _)| p == path) else {
        return (StatusCode::NOT_FOUND, "no such file in the app").into_response();
    };
    let body: Cow<'static, str> = if path == "sw.js" {
        Cow::Owned(body.replace("__MAM_APP_VERSION__", version()))
    } else {
        Cow::Borrowed(body)
    };
    let mut response = ([(header::CONTENT_TYPE, kind)], body).into_response();
    let h = response.headers_mut();
    // The service worker decides what is cached; the browser's own cache revalidates.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{}\"", version())).expect("hex is a valid header"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; script-src 'self'; connect-src 'self'; worker-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path == "sw.js" {
        h.insert("service-worker-allowed", HeaderValue::from_static("/app/"));
    }
    response
}
