//! `GET /v1/forms` (the manifest of published form versions) and `GET /v1/forms/{id}/{version}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sync_protocol::{FormId, PROTOCOL_VERSION};
use tracing::instrument;

use crate::api::auth::authenticate;
use crate::api::error::ApiError;
use crate::state::AppState;
use crate::units::Units;

/// The forms a phone should hold (current version of each, with the ETag it is cached by) and
/// the village lists of its communes.
#[instrument(skip_all, fields(device))]
pub(crate) async fn forms_manifest(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let device = authenticate(&state, &headers).await?;
    tracing::Span::current().record("device", device.id);
    let forms = state.forms();
    let list: Vec<serde_json::Value> = forms
        .current()
        .iter()
        .filter_map(|(id, version)| {
            let published = forms.published(&FormId::parse(id.as_str()).ok()?, *version)?;
            Some(serde_json::json!({
                "id": id,
                "version": version,
                "title": published.form.title,
                "etag": published.etag,
                "url": format!("/v1/forms/{id}/{version}"),
            }))
        })
        .collect();
    let villages = state.store.villages(&device.communes).await?;
    // The device's communes by today's names, for the phone to show.
    let key = state
        .units
        .version_on(&crate::today())
        .map(Units::key)
        .unwrap_or_default();
    let communes: std::collections::BTreeMap<String, String> = device
        .communes
        .iter()
        .map(|c| (c.to_string(), state.units.commune_in(c.as_str(), &key).1))
        .collect();
    // Every commune of today's map, for a field that names a commune (where a birth was
    // registered) to be picked by name.
    let province: std::collections::BTreeMap<String, String> = state
        .units
        .geography(&key)
        .map(|g| {
            g.communes
                .values()
                .map(|c| (c.code.clone(), c.full_name.clone()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(serde_json::json!({
        "protocol": PROTOCOL_VERSION, "forms": list, "villages": villages, "communes": communes,
        "province_communes": province,
    }))
    .into_response())
}

/// One published form version. Published versions never change, so the answer carries an
/// ETag and `If-None-Match` gets `304 Not Modified`.
pub(crate) async fn form_version(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    authenticate(&state, &headers).await?;
    let forms = state.forms();
    let not_found =
        || ApiError::NotFound(format!("no form {id:?} version {version:?} is published"));
    let form_id = FormId::parse(id.as_str()).map_err(|_| not_found())?;
    let number: u32 = version.parse().map_err(|_| not_found())?;
    let published = forms.published(&form_id, number).ok_or_else(not_found)?;
    let cache = [
        (header::ETAG, published.etag.clone()),
        (
            header::CACHE_CONTROL,
            "private, max-age=31536000, immutable".to_owned(),
        ),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == published.etag || t.trim() == "*")
        });
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    Ok((
        cache,
        [(header::CONTENT_TYPE, "application/json".to_owned())],
        published.body.clone(),
    )
        .into_response())
}
