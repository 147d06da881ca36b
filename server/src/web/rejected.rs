//! Refused edits of the area, and for the provincial office the refused sign-ins.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use serde_json::Value;
use sync_protocol::RecordId;

use super::common::*;
use super::{local_time, Lang, Officer, PageError};
use crate::report::Scope;
use crate::state::AppState;

pub struct RejectedLine {
    pub when: String,
    pub who: String,
    pub seq: u64,
    pub code: String,
    pub field: String,
    pub rule: String,
    pub message: String,
    pub edit: String,
    pub record_href: Option<String>,
}

/// A refused sign-in, for the provincial office.
pub struct LoginLine {
    pub when: String,
    pub name: String,
    pub reason: &'static str,
}

#[derive(Template)]
#[template(path = "rejected.html")]
struct RejectedPage {
    c: Ctx,
    lines: Vec<RejectedLine>,
    logins: Option<Vec<LoginLine>>,
}

pub async fn rejected(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    uri: Uri,
) -> Result<Response, PageError> {
    let lang = officer.lang;
    let devices: HashMap<u32, (String, Vec<String>)> = state
        .store
        .devices()
        .await?
        .into_iter()
        .map(|d| (d.id, (d.name, d.communes)))
        .collect();
    let lines = state
        .store
        .rejections(None, 1000)
        .await?
        .into_iter()
        .filter_map(|r| {
            let (who, communes) = devices.get(&r.device)?;
            let edit: Value = serde_json::from_str(r.edit.get()).unwrap_or(Value::Null);
            // The edit's own commune when it names one, else the phone's.
            let visible = match edit.get("commune").and_then(Value::as_str) {
                Some(c) => officer.scope.allows(c, &state.units),
                None => communes
                    .iter()
                    .any(|c| officer.scope.allows(c, &state.units)),
            };
            if !visible {
                return None;
            }
            Some(RejectedLine {
                when: local_time(r.received_at),
                who: who.clone(),
                seq: r.seq,
                code: r.code,
                field: r.field.unwrap_or_default(),
                rule: r.rule.unwrap_or_default(),
                message: match (lang, r.message_vi) {
                    (Lang::Vi, Some(vi)) => vi,
                    _ => r.message,
                },
                record_href: edit
                    .get("record")
                    .and_then(Value::as_str)
                    .and_then(|id| RecordId::parse(id).ok())
                    .map(|id| format!("/office/records/{id}")),
                edit: serde_json::to_string_pretty(&edit).unwrap_or_default(),
            })
        })
        .collect();
    // Accounts are the province's: only its officers see who failed to sign in.
    let logins = if officer.scope == Scope::Province {
        Some(
            state
                .store
                .refused_logins(200)
                .await?
                .into_iter()
                .map(|(name, reason, at)| LoginLine {
                    when: local_time(at),
                    name,
                    reason: lang.t(match reason.as_str() {
                        "locked" => "login_reason_locked",
                        "unknown" => "login_reason_unknown",
                        _ => "login_reason_password",
                    }),
                })
                .collect(),
        )
    } else {
        None
    };
    let c = ctx(
        &state,
        &officer,
        "rejected",
        &uri,
        lang.t("rejected").into(),
    );
    Ok(page(RejectedPage { c, lines, logins }.render()?))
}
