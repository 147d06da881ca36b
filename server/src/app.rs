//! The server: every surface joined into one router (the v1 API, the office pages, the phone
//! app), limits, gzip, timeouts, request metrics, and a server that drains on shutdown.
//!
//! `app(state)` builds the router; `serve(listener, state, shutdown)` runs it until the
//! shutdown future resolves, then lets in-flight requests finish for the drain timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sync_protocol::{ErrorBody, ErrorCode};
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::TraceLayer;
use tracing::{info, info_span, warn};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};

use crate::api::error::ApiError;
use crate::listen::{PeerAddr, TlsListener};
use crate::respond::Client;
use crate::state::AppState;

pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.settings.server.body_limit_bytes;
    let mut router = Router::new()
        .merge(crate::api::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    // With a listen address of its own, `/metrics` is served there and nowhere else.
    if state.settings.server.metrics_listen.is_none() {
        router = router.route("/metrics", get(metrics));
    }
    router
        .merge(crate::web::routes())
        .merge(crate::phone::routes())
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestDecompressionLayer::new())
        .layer(middleware::map_response(unsupported_encoding))
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
            info_span!("request", method = %req.method(), route = route.as_deref().unwrap_or("unmatched"))
        }))
        .with_state(state)
}

/// `/metrics` alone on a listener of its own (`[server] metrics_listen`), until the process
/// stops.
pub async fn serve_metrics(listener: TcpListener, state: Arc<AppState>) {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state);
    if let Err(e) = axum::serve(listener, router).await {
        warn!(error = %e, "the metrics listener stopped");
    }
}

/// Time limit, who the client is, and request counting for every route.
async fn guard(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let client = Client::of(&state, &req);
    req.extensions_mut().insert(client);
    // Served over HTTPS by this process: say so as a proxy in front would (secure cookies,
    // https links), whatever the request claims.
    if state.settings.server.tls_cert.is_some() {
        req.headers_mut().insert(
            "x-forwarded-proto",
            header::HeaderValue::from_static("https"),
        );
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let mut secs = state.settings.server.request_timeout_secs;
    if route.ends_with("/submission") {
        // ODK Collect sends a submission and its photos in one request, on a slow uplink.
        secs = secs.max(600);
    }
    let response = match tokio::time::timeout(Duration::from_secs(secs), next.run(req)).await {
        Ok(response) => response,
        // Dropping the handler rolls back its transaction: the phone retries safely.
        Err(_) => ApiError::Timeout(secs).into_response(),
    };
    state
        .metrics
        .request_done(&route, response.status().as_u16());
    response
}

/// The decompression layer refuses encodings other than gzip with an empty 415: say why.
async fn unsupported_encoding(response: Response) -> Response {
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(ErrorBody {
                code: ErrorCode::UnsupportedEncoding,
                message: "request bodies may be plain or gzip (Content-Encoding: gzip)".into(),
                field: None,
            }),
        )
            .into_response();
    }
    response
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return ApiError::Unavailable("shutting down".into()).into_response();
    }
    match state.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

/// Serve until `shutdown` resolves, then stop accepting and give in-flight requests the drain
/// timeout to finish. Clients are known by their address ([`Client`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(listener, state, shutdown).await
}

/// [`serve`], over HTTPS.
pub async fn serve_tls(
    listener: TlsListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(listener, state, shutdown).await
}

async fn serve_on<L>(
    listener: L,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
    L::Io: Send,
    for<'a> PeerAddr: Connected<IncomingStream<'a, L>>,
{
    let drain = Duration::from_secs(state.settings.server.drain_timeout_secs);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signal_state = state.clone();
    // When idle phones were last seen, written in batches.
    let flusher = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every =
                tokio::time::interval(Duration::from_secs(crate::state::SEEN_FLUSH_SECS));
            every.tick().await;
            loop {
                every.tick().await;
                state.flush_seen().await;
            }
        })
    };
    let last_state = state.clone();
    let service = app(state).into_make_service_with_connect_info::<PeerAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown.await;
        signal_state.draining.store(true, Ordering::Relaxed);
        info!("shutting down: draining in-flight requests");
        let _ = tx.send(true);
    });
    let mut rx = rx;
    let result = tokio::select! {
        result = server => result,
        _ = async move {
            let _ = rx.wait_for(|done| *done).await;
            tokio::time::sleep(drain).await;
        } => {
            warn!("drain timeout passed; stopping with requests still in flight");
            Ok(())
        }
    };
    flusher.abort();
    last_state.flush_seen().await;
    result
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
