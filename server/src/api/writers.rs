//! `GET /v1/writers`: who wrote the values a phone shows, by name. A conflict then says
//! "Lan" and "Cán bộ xã", not "device 5": the names of the phones that share a commune with
//! this one, and of the office accounts whose area holds one of its communes.
//!
//! `GET /v1/records/{id}/writes`: when the server received each edit applied to one record of
//! the phone's communes, so that a value another's choice replaced says who chose and when.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use crate::api::auth::authenticate;
use crate::api::error::ApiError;
use crate::state::AppState;

pub(crate) async fn writers(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let phone = authenticate(&state, &headers).await?;
    let ours: Vec<String> = phone.communes.iter().map(|c| c.to_string()).collect();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for d in state.store.devices().await? {
        if d.communes.iter().any(|c| ours.contains(c)) {
            names.insert(d.id.to_string(), d.name);
        }
    }
    for u in state.store.users().await? {
        let scope = crate::accounts::user_scope(&u, &state.units);
        if ours.iter().any(|c| scope.allows(c, &state.units)) {
            let office = match u.role.as_str() {
                "commune" => "Cán bộ xã",
                "district" => "Cán bộ huyện",
                _ => "Cán bộ tỉnh",
            };
            names.insert(u.device.to_string(), format!("{office} ({})", u.name));
        }
    }
    Ok(Json(json!({ "writers": names })))
}

pub(crate) async fn writes(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let phone = authenticate(&state, &headers).await?;
    let unknown = || ApiError::NotFound(format!("no record {id:?} in this phone's communes"));
    let record_id = sync_protocol::RecordId::parse(&id).map_err(|_| unknown())?;
    let record = state.store.record(record_id).await?.ok_or_else(unknown)?;
    if !phone.communes.contains(&record.commune) {
        return Err(unknown());
    }
    let writes: Vec<Value> = state
        .store
        .record_edits(record_id)
        .await?
        .into_iter()
        .filter(|e| !e.rejected)
        .map(|e| json!({ "dot": [e.device, e.seq], "received_at": e.received_at }))
        .collect();
    Ok(Json(json!({ "writes": writes })))
}
