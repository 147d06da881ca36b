//! Who is calling: a phone's bearer token, or a reader's API token and its scope.

use axum::http::{header, HeaderMap};

use crate::api::error::ApiError;
use crate::auth;
use crate::limits::Kind;
use crate::report::Scope;
use crate::respond::Client;
use crate::state::AppState;
use crate::store::Device;

pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Device, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    match state.store.device_by_token(&auth::hash(token)).await? {
        Some(device) if !device.revoked => Ok(device),
        _ => Err(ApiError::Unauthorized),
    }
}

/// Whose figures a reader may see: a read token's scope (`mam token create`), or the scope of
/// the office account signed in on this browser. Requests with a token count against the
/// client's `read_per_minute`, whether the token is right or not.
pub(crate) async fn reader_scope(
    state: &AppState,
    headers: &HeaderMap,
    client: &Client,
) -> Result<Scope, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = bearer else {
        return match crate::respond::session_of(state, headers).await {
            Ok(Some((user, _))) => Ok(crate::accounts::user_scope(&user, &state.units)),
            _ => Err(ApiError::Unauthorized),
        };
    };
    state
        .limiter
        .take(Kind::Read, &client.0)
        .map_err(ApiError::RateLimited)?;
    let scope = state
        .store
        .api_token_scope(&auth::hash(token))
        .await?
        .ok_or(ApiError::Unauthorized)?;
    serde_json::from_str(&scope).map_err(|e| ApiError::Internal(format!("stored token scope: {e}")))
}
