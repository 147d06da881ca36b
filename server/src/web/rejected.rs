//! Refused edits of the area, and for the provincial office the refused sign-ins.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::Uri;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use sync_protocol::RecordId;

use super::common::*;
use super::{local_time, Lang, Officer, PageError};
use crate::report::Scope;
use crate::state::AppState;
use crate::store::DeviceSummary;

pub struct RejectedLine {
    pub when: String,
    pub who: String,
    pub seq: u64,
    pub code: String,
    pub code_label: String,
    pub field: String,
    pub field_label: String,
    pub rule: String,
    pub rule_label: String,
    pub message: String,
    pub edit: String,
    pub record_href: Option<String>,
}

/// A refused attachment upload.
pub struct UploadLine {
    pub when: String,
    pub who: String,
    pub code: String,
    pub code_label: String,
    pub sha256: String,
    pub message: String,
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
    total: u64,
    page: u64,
    pages: u64,
    /// The phone the list is narrowed to, by name and number.
    phone: Option<String>,
    prev_href: Option<String>,
    next_href: Option<String>,
    logins: Option<Vec<LoginLine>>,
    uploads: Vec<UploadLine>,
}

/// A refusal's message without the machine name of its field in front (`sex: …`).
fn strip_field(message: String) -> String {
    match message.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && !rest.is_empty() => rest.to_owned(),
        _ => message,
    }
}

/// Refusals on one page.
const PER_PAGE: u32 = 100;

#[derive(Deserialize)]
pub struct RejectedParams {
    page: Option<u64>,
    device: Option<u32>,
}

/// A refusal belongs to the phone that sent it: an office sees the refusals of the phones
/// whose communes lie in its area (whatever commune an edit named), paged in the database.
pub async fn rejected(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    uri: Uri,
    Query(q): Query<RejectedParams>,
) -> Result<Response, PageError> {
    let lang = officer.lang;
    let forms = state.forms();
    let devices: HashMap<u32, DeviceSummary> = state
        .store
        .devices()
        .await?
        .into_iter()
        .filter(|d| {
            officer.scope == Scope::Province
                || d.communes
                    .iter()
                    .any(|c| officer.scope.allows(c, &state.units))
        })
        .map(|d| (d.id, d))
        .collect();
    let ours: Vec<u32> = devices.keys().copied().collect();
    let filter: Option<Vec<u32>> = match q.device {
        // Another area's phone is not found, as on every other page.
        Some(id) if !devices.contains_key(&id) => return Err(PageError::NotFound),
        Some(id) => Some(vec![id]),
        None if officer.scope == Scope::Province => None,
        None => Some(ours),
    };
    let total = state.store.count_rejections(filter.as_deref()).await?;
    let pages = total.div_ceil(u64::from(PER_PAGE)).max(1);
    let page_no = q.page.unwrap_or(1).clamp(1, pages);
    let offset = (page_no - 1) * u64::from(PER_PAGE);
    let lines = state
        .store
        .rejections(filter.as_deref(), offset, PER_PAGE)
        .await?
        .into_iter()
        .map(|r| {
            let edit: Value = serde_json::from_str(r.edit.get()).unwrap_or(Value::Null);
            // The field by its label in the form the edit named; the machine name stays beside.
            let form = edit
                .get("form")
                .and_then(Value::as_str)
                .and_then(|f| sync_protocol::FormId::parse(f).ok())
                .and_then(|id| {
                    let version = edit.get("version").and_then(Value::as_u64).unwrap_or(0) as u32;
                    forms
                        .get(&id, version)
                        .or_else(|| forms.latest(&id))
                        .cloned()
                });
            let field_label = r.field.as_deref().map(|name| {
                let top = name.split('[').next().unwrap_or(name);
                form.as_ref()
                    .and_then(|f| f.field(top))
                    .map(|f| lang.pick(f.label_vi(), f.label_en()).to_owned())
                    .unwrap_or_else(|| name.to_owned())
            });
            RejectedLine {
                when: local_time(r.received_at),
                who: devices
                    .get(&r.device)
                    .map(|d| d.name.clone())
                    .unwrap_or_else(|| format!("#{}", r.device)),
                seq: r.seq,
                code_label: lang
                    .try_t(&format!("code_{}", r.code))
                    .unwrap_or(&r.code)
                    .to_owned(),
                code: r.code,
                field_label: field_label.unwrap_or_default(),
                field: r.field.unwrap_or_default(),
                rule_label: r
                    .rule
                    .as_deref()
                    .map(|rule| {
                        lang.try_t(&format!("rule_{rule}"))
                            .unwrap_or(rule)
                            .to_owned()
                    })
                    .unwrap_or_default(),
                rule: r.rule.unwrap_or_default(),
                // The sentence for people: the machine name before it is in `field`.
                message: strip_field(match (lang, r.message_vi) {
                    (Lang::Vi, Some(vi)) => vi,
                    _ => r.message,
                }),
                record_href: edit
                    .get("record")
                    .and_then(Value::as_str)
                    .and_then(|id| RecordId::parse(id).ok())
                    .map(|id| format!("/office/records/{id}")),
                edit: serde_json::to_string_pretty(&edit).unwrap_or_default(),
            }
        })
        .collect();
    let page_href = |n: u64| match q.device {
        Some(d) => format!("/office/rejected?device={d}&page={n}"),
        None => format!("/office/rejected?page={n}"),
    };
    let phone = q
        .device
        .and_then(|id| devices.get(&id))
        .map(|d| format!("{} (#{})", d.name, d.id));
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
                        "throttled" => "login_reason_throttled",
                        "busy" => "login_reason_busy",
                        _ => "login_reason_password",
                    }),
                })
                .collect(),
        )
    } else {
        None
    };
    // Photos and files refused, from the same phones.
    let uploads = state
        .store
        .upload_refusals(filter.as_deref(), 200)
        .await?
        .into_iter()
        .map(|r| UploadLine {
            when: local_time(r.at),
            who: u32::try_from(r.device)
                .ok()
                .and_then(|d| devices.get(&d))
                .map(|d| d.name.clone())
                .unwrap_or_else(|| format!("#{}", r.device)),
            code_label: lang
                .try_t(&format!("code_{}", r.code))
                .unwrap_or(&r.code)
                .to_owned(),
            code: r.code,
            sha256: r.sha256,
            message: r.message,
        })
        .collect();
    let c = ctx(
        &state,
        &officer,
        "rejected",
        &uri,
        lang.t("rejected").into(),
    );
    Ok(page(
        RejectedPage {
            c,
            lines,
            total,
            page: page_no,
            pages,
            phone,
            prev_href: (page_no > 1).then(|| page_href(page_no - 1)),
            next_href: (page_no < pages).then(|| page_href(page_no + 1)),
            logins,
            uploads,
        }
        .render()?,
    ))
}
