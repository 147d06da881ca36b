//! `POST /v1/sync`: authenticate, read and check the request off the async threads, and let the
//! sync service push, pull and write the answer.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use sync_protocol::FormId;
use tracing::{info, instrument, warn};

use crate::api::auth::authenticate;
use crate::api::error::{read_body, ApiError};
use crate::state::AppState;
use crate::sync::{self, request};

#[instrument(skip_all, fields(device))]
pub(crate) async fn sync_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let device = authenticate(&state, &headers).await?;
    tracing::Span::current().record("device", device.id);
    // Parsing and checking a large push is CPU work: off the async threads, so that the
    // write transactions of other phones are never kept waiting for a worker.
    let (parsed, prepared) = {
        let state = state.clone();
        let device = device.clone();
        let handle = tokio::runtime::Handle::current();
        let permit = state
            .parsers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("the server is shutting down".into()))?;
        tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            let _parsing = permit;
            let bytes = read_body(body, state.settings.server.body_limit_bytes)?;
            let mut parsed = request::parse(&bytes, state.settings.sync.max_push)?;
            // A form version published since the last reload: reload now rather than refuse.
            let forms = state.forms();
            let unknown = parsed.push.iter().any(|r| {
                FormId::parse(r.edit.form.as_str())
                    .is_ok_and(|id| forms.get(&id, r.edit.version).is_none())
            });
            if unknown && state.may_refresh_forms() {
                if let Err(e) = handle.block_on(state.refresh_forms()) {
                    warn!(error = %e, "could not reload the published forms");
                }
            }
            let forms = state.forms();
            let push = std::mem::take(&mut parsed.push);
            let mut prepared = sync::prepare(push, state.catalog(&forms), &device, &crate::today());
            prepared.lost_through = parsed.lost_through;
            Ok((parsed, prepared))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("request parsing task failed: {e}")))??
    };
    let forms = state.forms();
    let limits = request::PageLimits {
        max_page_bytes: state.settings.sync.max_page_bytes,
        max_page_records: state.settings.sync.max_page_records,
    };
    let done = request::run(
        state.store.as_ref(),
        state.catalog(&forms),
        &device,
        prepared,
        parsed.cursor,
        parsed.max_bytes,
        parsed.epoch,
        &limits,
    )
    .await?;
    if done.pushed == 0 {
        // Nothing pushed: nothing written in this request; when it was seen is kept batched.
        state.seen(device.id, crate::now_ms());
    }
    let (outcome, pulled) = (&done.outcome, done.pull.records.len());
    state.metrics.sync_done(
        outcome.applied,
        &outcome.rejected,
        pulled,
        started.elapsed(),
    );
    info!(
        pushed = done.pushed,
        applied = outcome.applied,
        rejected = outcome.rejected.len(),
        acked_through = done.acked_through,
        pulled,
        more = done.pull.more,
        "sync"
    );
    let body = request::encode(&done, forms.current());
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
