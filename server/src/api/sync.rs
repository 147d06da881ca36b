//! `POST /v1/sync`: read the request off the async threads, push through the sync service,
//! answer with the pull.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use sync_protocol::{FormId, Rejection, PROTOCOL_VERSION};
use tracing::{info, instrument, warn};

use crate::api::auth::authenticate;
use crate::api::error::{read_body, ApiError};
use crate::state::AppState;
use crate::{now_ms, sync};

/// `POST /v1/sync` as read: the keys of `sync_protocol::SyncRequest`, each pushed edit still
/// text.
#[derive(serde::Deserialize)]
pub(crate) struct IncomingSync<'a> {
    protocol: u32,
    #[serde(default, borrow)]
    push: Vec<&'a serde_json::value::RawValue>,
    #[serde(default)]
    cursor: u64,
    #[serde(default = "default_max_bytes")]
    max_bytes: u64,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    lost_through: Option<u64>,
}

pub(crate) fn default_max_bytes() -> u64 {
    sync_protocol::wire::DEFAULT_MAX_BYTES
}

/// Writes the sync response. Records go out as stored (the store wrote them as wire JSON),
/// spliced in without being parsed and encoded again.
/// What a sync answers, besides the records' JSON that the pull carries as stored.
pub(crate) struct Reply<'a> {
    acked_through: u64,
    rejected: &'a [Rejection],
    pull: &'a crate::store::Pull,
    forms: &'a std::collections::BTreeMap<String, u32>,
    epoch: &'a str,
    reset: bool,
}

pub(crate) fn sync_reply(reply: Reply<'_>) -> Response {
    let Reply {
        acked_through,
        rejected,
        pull,
        forms,
        epoch,
        reset,
    } = reply;
    let records_len: usize = pull.records.iter().map(|r| r.len() + 1).sum();
    let mut body = String::with_capacity(records_len + 320);
    body.push_str(&format!(
        "{{\"protocol\":{PROTOCOL_VERSION},\"acked_through\":{acked_through},\"rejected\":{},\"records\":[",
        json(rejected)
    ));
    for (i, record) in pull.records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(record);
    }
    body.push_str(&format!(
        "],\"evicted\":{},\"cursor\":{},\"more\":{},\"forms\":{},\"epoch\":{},\"next_seq\":{}{}}}",
        json(&pull.evicted),
        pull.cursor,
        pull.more,
        json(forms),
        json(epoch),
        acked_through + 1,
        if reset { ",\"reset\":true" } else { "" },
    ));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data always serializes")
}

#[instrument(skip_all, fields(device))]
pub(crate) async fn sync_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let device = authenticate(&state, &headers).await?;
    tracing::Span::current().record("device", device.id);
    let limits = &state.settings.sync;
    // Parsing and checking a large push is CPU work: off the async threads, so that the
    // write transactions of other phones are never kept waiting for a worker.
    let (cursor, requested_bytes, their_epoch, mut prepared) = {
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
            let request: IncomingSync = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::Malformed(format!("the body is not valid JSON for this request: {e}"))
            })?;
            if request.protocol != PROTOCOL_VERSION {
                return Err(ApiError::UnsupportedProtocol(request.protocol));
            }
            let limit = state.settings.sync.max_push;
            if request.push.len() > limit {
                return Err(ApiError::BatchTooLarge {
                    limit,
                    got: request.push.len(),
                });
            }
            // Each edit keeps the text the phone sent: the edit log stores it as received.
            let push = request
                .push
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    let edit: sync_protocol::Edit =
                        serde_json::from_str(raw.get()).map_err(|e| {
                            ApiError::Malformed(format!("push[{i}] is not a valid edit: {e}"))
                        })?;
                    Ok(sync::Received {
                        edit,
                        text: raw.get().into(),
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            // A form version published since the last reload: reload now rather than refuse.
            let forms = state.forms();
            let unknown = push.iter().any(|r| {
                FormId::parse(r.edit.form.as_str())
                    .is_ok_and(|id| forms.get(&id, r.edit.version).is_none())
            });
            if unknown && state.may_refresh_forms() {
                if let Err(e) = handle.block_on(state.refresh_forms()) {
                    warn!(error = %e, "could not reload the published forms");
                }
            }
            let forms = state.forms();
            let catalog = sync::Catalog {
                forms: &forms,
                units: &state.units,
                indicators: &state.indicators,
            };
            let mut prepared = sync::prepare(push, catalog, &device, &crate::today());
            prepared.lost_through = request.lost_through;
            Ok((request.cursor, request.max_bytes, request.epoch, prepared))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("request parsing task failed: {e}")))??
    };
    let epoch = state.store.epoch().await?;
    prepared.recovering = epoch.recovering(now_ms());
    // What the phone had pulled: from another life of the database, nothing that can be trusted.
    let same_life = their_epoch.as_ref().is_none_or(|e| *e == epoch.id) && cursor <= epoch.counter;
    prepared.cursor = if same_life { cursor } else { 0 };
    let pushed = prepared.len();
    let outcome = if prepared.is_empty() {
        sync::PushOutcome::default()
    } else {
        let forms = state.forms();
        let catalog = sync::Catalog {
            forms: &forms,
            units: &state.units,
            indicators: &state.indicators,
        };
        sync::push(
            state.store.as_ref(),
            catalog,
            &device,
            &prepared,
            now_ms(),
            &crate::today(),
        )
        .await?
    };
    // The records were freed as they were prepared: what is left is their rows and texts.
    drop(prepared);
    let acked_through = if pushed == 0 {
        device.last_seq
    } else {
        outcome.acked_through
    };
    let max_bytes = requested_bytes.clamp(1024, limits.max_page_bytes);
    // A cursor of another life of the database, or one ahead of anything it handed out (it was
    // restored, or failed over to a replica that missed commits): what the phone pulled may be
    // gone or renumbered, so the pull starts again from the beginning.
    let reset = their_epoch.is_some_and(|e| e != epoch.id) || cursor > epoch.counter;
    if reset {
        info!(
            cursor,
            counter = epoch.counter,
            "the phone's cursor is of another epoch or ahead of the database: pulling from the start"
        );
    }
    let from = if reset { 0 } else { cursor };
    let pull = state
        .store
        .pull(&device.communes, from, max_bytes, limits.max_page_records)
        .await?;
    if pushed == 0 {
        state.store.touch_device(device.id, now_ms()).await?;
    }
    state.metrics.sync_done(
        outcome.applied,
        &outcome.rejected,
        pull.records.len(),
        started.elapsed(),
    );
    info!(
        pushed,
        applied = outcome.applied,
        rejected = outcome.rejected.len(),
        acked_through,
        pulled = pull.records.len(),
        more = pull.more,
        "sync"
    );
    Ok(sync_reply(Reply {
        acked_through,
        rejected: &outcome.rejected,
        pull: &pull,
        forms: state.forms().current(),
        epoch: &epoch.id,
        reset,
    }))
}
