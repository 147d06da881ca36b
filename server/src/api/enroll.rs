//! `POST /v1/enroll` and `POST /v1/successor`: a phone gets its device number and token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Extension;
use axum::Json;
use sync_protocol::{EnrollRequest, EnrollResponse, SuccessorRequest, PROTOCOL_VERSION};
use tracing::{info, instrument};

use crate::api::auth::authenticate;
use crate::api::error::{parse, ApiError};
use crate::limits::Kind;
use crate::respond::Client;
use crate::state::AppState;
use crate::store::StoreError;
use crate::{auth, now_ms};

#[instrument(skip_all)]
pub(crate) async fn enroll(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let request: EnrollRequest = parse(body, state.settings.server.body_limit_bytes)?;
    // A guess costs the client and the code named; an enrolment that works gives the client's
    // back, so that an office enrolling a room of phones on one network is not held up.
    let code_hash = auth::code_hash(&request.code);
    let limiter = &state.limiter;
    limiter
        .take(Kind::Enrol, &client.0)
        .map_err(ApiError::RateLimited)?;
    if let Err(wait) = limiter.take(Kind::EnrolCode, &code_hash) {
        limiter.give_back(Kind::Enrol, &client.0);
        return Err(ApiError::RateLimited(wait));
    }
    let token = auth::new_token();
    let device = state
        .store
        .enroll(&code_hash, &auth::hash(&token), now_ms())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                tracing::warn!(client = %client.0, "enrolment refused: the code is not valid");
                ApiError::InvalidCode
            }
            other => other.into(),
        })?;
    limiter.give_back(Kind::Enrol, &client.0);
    info!(device = device.id, "phone enrolled");
    Ok(Json(EnrollResponse {
        device: device.id,
        token,
        communes: device.communes.iter().map(|c| c.to_string()).collect(),
        predecessor: None,
    }))
}

/// A new device number for a phone whose seqs another history used: same collaborator, same
/// communes, linked to the old number on the office's Phones page.
#[instrument(skip_all, fields(device))]
pub(crate) async fn successor(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let old = authenticate(&state, &headers).await?;
    tracing::Span::current().record("device", old.id);
    let request: SuccessorRequest = parse(body, state.settings.server.body_limit_bytes)?;
    if request.protocol != PROTOCOL_VERSION {
        return Err(ApiError::UnsupportedProtocol(request.protocol));
    }
    let id = request.request.trim();
    if id.is_empty() || id.len() > 64 {
        return Err(ApiError::Malformed(
            "request: an id of 1 to 64 characters, made once per successor".into(),
        ));
    }
    let token = auth::new_token();
    let device = state
        .store
        .add_successor(old.id, id, &auth::hash(&token), now_ms())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::Unauthorized,
            StoreError::Other(message) if message.contains("successor numbers") => {
                ApiError::Forbidden(message)
            }
            other => other.into(),
        })?;
    info!(
        device = device.id,
        predecessor = old.id,
        "phone took a successor number"
    );
    Ok(Json(EnrollResponse {
        device: device.id,
        token,
        communes: device.communes.iter().map(|c| c.to_string()).collect(),
        predecessor: Some(old.id),
    }))
}
