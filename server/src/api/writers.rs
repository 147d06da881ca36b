//! `GET /v1/writers`: who wrote the values a phone shows, by name. A conflict then says
//! "Lan" and "Cán bộ xã", not "device 5": the names of the phones that share a commune with
//! this one, and of the office accounts whose area holds one of its communes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
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
