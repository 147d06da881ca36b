//! Attachments over HTTP: a phone uploads a photo in chunks and asks where an upload stands;
//! a phone reads an attachment of a record of its communes.
//!
//! - `GET /v1/uploads/{sha256}`: `{"received", "complete", "chunk_bytes", "max_bytes"}`.
//! - `PUT /v1/uploads/{sha256}` with `Content-Range: bytes START-END/TOTAL` and the media type
//!   as `Content-Type`, the chunk as the body (at most 256 KiB): `{"received", "complete"}`.
//!   A chunk that does not start where the upload stands is refused `409 upload_offset`
//!   with `received`; one sent again changes nothing. Over the size limit `413`, a type not
//!   taken `415`, bytes that do not hash to the name `422 hash_mismatch`: each refusal is
//!   kept (`upload_refusals`) and shown in the office.
//! - `GET /v1/records/{id}/attachments/{sha256}`: the bytes, for a record of the phone's
//!   communes that names the attachment (any value it has held); anything else is `404`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sync_protocol::media::is_sha256;
use sync_protocol::{ErrorCode, RecordId};

use crate::api::auth::authenticate;
use crate::api::error::ApiError;
use crate::attachments::{content_range, PutError, Refusal, CHUNK, MAX_CHUNK};
use crate::state::AppState;

pub(crate) async fn upload_status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(sha): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let phone = authenticate(&state, &headers).await?;
    if !is_sha256(&sha) {
        return Err(ApiError::Malformed(format!(
            "{sha:?} is not a SHA-256 in lower-case hex"
        )));
    }
    let mut progress = state.attachments.progress(phone.id, &sha);
    // Received by another process: the object store has it.
    if let (false, Some(objects)) = (progress.complete, state.attachments.objects()) {
        if let Ok(Some(head)) = objects.head(&format!("objects/{sha}")).await {
            progress.received = head.size;
            progress.complete = true;
        }
    }
    Ok(Json(json!({
        "received": progress.received,
        "complete": progress.complete,
        "chunk_bytes": CHUNK,
        "max_bytes": state.attachments.max_bytes(),
    })))
}

pub(crate) async fn upload_chunk(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(sha): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let phone = authenticate(&state, &headers).await?;
    if !is_sha256(&sha) {
        return Err(ApiError::Malformed(format!(
            "{sha:?} is not a SHA-256 in lower-case hex"
        )));
    }
    if body.len() > MAX_CHUNK {
        return Err(ApiError::PayloadTooLarge(MAX_CHUNK));
    }
    let refused = |message: String| {
        let state = state.clone();
        let sha = sha.clone();
        async move {
            state
                .store
                .add_upload_refusal(
                    phone.id,
                    &sha,
                    "malformed_request",
                    &message,
                    crate::now_ms(),
                )
                .await?;
            Err::<Response, ApiError>(ApiError::Malformed(message))
        }
    };
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let range = text(header::CONTENT_RANGE);
    let Some((start, end, total)) = content_range(&range) else {
        return refused(format!(
            "Content-Range: {range:?} is not \"bytes START-END/TOTAL\""
        ))
        .await;
    };
    if end - start + 1 != body.len() as u64 {
        return refused(format!(
            "Content-Range: {range:?} names {} bytes, the body holds {}",
            end - start + 1,
            body.len()
        ))
        .await;
    }
    let media_type = text(header::CONTENT_TYPE);
    let media_type = media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let put = {
        let state = state.clone();
        let sha = sha.clone();
        let media_type = media_type.clone();
        tokio::task::spawn_blocking(move || {
            state
                .attachments
                .put(phone.id, &sha, start, total, &media_type, &body)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    };
    match put {
        Ok(progress) => Ok(Json(json!({
            "received": progress.received,
            "complete": progress.complete,
        }))
        .into_response()),
        Err(PutError::Io(e)) => Err(ApiError::Internal(e.to_string())),
        Err(PutError::Refused(refusal)) => {
            let (status, code) = match &refusal {
                Refusal::TooLarge { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
                }
                Refusal::Type(_) => (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    ErrorCode::UnsupportedMediaType,
                ),
                Refusal::Offset { .. } => (StatusCode::CONFLICT, ErrorCode::UploadOffset),
                Refusal::Range(_) => (StatusCode::BAD_REQUEST, ErrorCode::MalformedRequest),
                Refusal::Busy { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
                Refusal::Hash { .. } => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::HashMismatch),
            };
            // Kept for the office, but for a chunk sent at the wrong place: a phone that lost
            // an answer does that as a matter of course, and learns where to go on.
            if !matches!(refusal, Refusal::Offset { .. }) {
                state
                    .store
                    .add_upload_refusal(
                        phone.id,
                        &sha,
                        &code.to_string(),
                        &refusal.to_string(),
                        crate::now_ms(),
                    )
                    .await?;
            }
            let received = state.attachments.progress(phone.id, &sha).received;
            Ok((
                status,
                Json(json!({
                    "code": code,
                    "message": refusal.to_string(),
                    "received": received,
                })),
            )
                .into_response())
        }
    }
}

pub(crate) async fn record_attachment(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, sha)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let phone = authenticate(&state, &headers).await?;
    let unknown = || {
        ApiError::NotFound(format!(
            "no attachment {sha:?} of a record {id:?} in this phone's communes"
        ))
    };
    let record_id = RecordId::parse(&id).map_err(|_| unknown())?;
    let record = state.store.record(record_id).await?.ok_or_else(unknown)?;
    if !phone.communes.contains(&record.commune) || !crate::attachments::names(&record, &sha) {
        return Err(unknown());
    }
    let stored = state
        .attachments
        .fetch(&sha)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("attachment {sha} has not arrived yet")))?;
    crate::respond::attachment(&sha, &stored, &headers)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}
