//! Phones: the area's devices, enrolment with a one-time code and QR code, revocation.

use std::collections::BTreeSet;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use sync_protocol::CommuneCode;

use super::common::*;
use super::{local_time, Officer, PageError};
use crate::state::AppState;
use crate::{auth, now_ms};

pub struct PhoneLine {
    pub id: u32,
    pub name: String,
    pub communes: String,
    pub state: &'static str,
    pub state_label: &'static str,
    pub last_sync: String,
    pub last_seq: u64,
    pub rejected: u64,
    /// "follows #7": the device this one took over from (a phone restored from a backup).
    pub follows: Option<String>,
    /// What came back from the phone after the database was restored, and what was lost.
    pub restore: Option<String>,
    pub revoke_action: Option<String>,
}

pub struct Enrolled {
    /// A phone with ODK Collect: `code` is empty, the QR code holds Collect's settings and
    /// `link` is the server URL with the phone's key.
    pub odk: bool,
    pub name: String,
    pub code: String,
    pub expires: String,
    pub qr_svg: String,
    pub link: String,
    /// Why a phone may not be able to use the link.
    pub warning: Option<String>,
}

#[derive(Template)]
#[template(path = "phones.html")]
struct PhonesPage {
    c: Ctx,
    phones: Vec<PhoneLine>,
    communes: Vec<Choice>,
    enrolled: Option<Enrolled>,
    error: Option<String>,
}

async fn phones_page(
    state: &AppState,
    officer: &Officer,
    uri: &Uri,
    enrolled: Option<Enrolled>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let lang = officer.lang;
    let office = office_devices(state).await?;
    let phones = state
        .store
        .devices()
        .await?
        .into_iter()
        .filter(|d| !office.contains(&(d.id as i64)))
        .filter(|d| {
            d.communes
                .iter()
                .any(|c| officer.scope.allows(c, &state.units))
        })
        .map(|d| {
            let all_ours = d
                .communes
                .iter()
                .all(|c| officer.scope.allows(c, &state.units));
            let (state_key, label) = if d.revoked {
                ("revoked", "revoked")
            } else if d.enrolled {
                ("enrolled", "enrolled")
            } else {
                ("waiting", "waiting")
            };
            PhoneLine {
                id: d.id,
                communes: d
                    .communes
                    .iter()
                    .map(|c| commune_name(state, c))
                    .collect::<Vec<_>>()
                    .join(", "),
                name: d.name,
                state: state_key,
                state_label: lang.t(label),
                last_sync: d
                    .last_sync_at
                    .max(state.seen_lately(d.id))
                    .map(local_time)
                    .unwrap_or_else(|| lang.t("never").into()),
                last_seq: d.last_seq,
                rejected: d.rejected,
                follows: d.predecessor.map(|p| format!("{} #{p}", lang.t("follows"))),
                // After a restore: the seqs that came back from the phone since, and how many
                // it no longer held.
                restore: d.restored_seq.map(|from| {
                    let back = match d.last_seq > from {
                        true => format!("{} {}–{}", lang.t("came_back"), from + 1, d.last_seq),
                        false => lang.t("nothing_back_yet").to_owned(),
                    };
                    match d.lost {
                        0 => back,
                        n => format!("{back}; {n} {}", lang.t("lost_for_good")),
                    }
                }),
                revoke_action: (!d.revoked && all_ours)
                    .then(|| format!("/office/phones/{}/revoke", d.id)),
            }
        })
        .collect();
    let communes = scope_communes(state, &officer.scope)
        .into_iter()
        .map(|(value, label)| Choice {
            selected: false,
            value,
            label,
        })
        .collect();
    let c = ctx(state, officer, "phones", uri, lang.t("phones").into());
    let html = PhonesPage {
        c,
        phones,
        communes,
        enrolled,
        error,
    }
    .render()?;
    Ok((status, Html(html)).into_response())
}

pub async fn phones(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    uri: Uri,
) -> Result<Response, PageError> {
    phones_page(&state, &officer, &uri, None, None, StatusCode::OK).await
}

pub async fn enrol(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    uri: Uri,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let lang = officer.lang;
    let csrf = pairs
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    officer.check_csrf(csrf)?;
    let name = pairs
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let mut communes: Vec<CommuneCode> = Vec::new();
    let mut error = None;
    for (_, code) in pairs.iter().filter(|(k, _)| k == "commune") {
        match CommuneCode::parse(code) {
            Ok(c) if officer.scope.allows(c.as_str(), &state.units) => communes.push(c),
            _ => error = Some(format!("commune: {code:?} is not a commune of your area")),
        }
    }
    if name.is_empty() || name.chars().count() > 100 {
        error = Some(
            lang.pick(
                "Tên cộng tác viên: 1 đến 100 ký tự",
                "collaborator: 1 to 100 characters",
            )
            .into(),
        );
    } else if communes.is_empty() && error.is_none() {
        error = Some(
            lang.pick("Chọn ít nhất một xã", "communes: choose at least one")
                .into(),
        );
    }
    if error.is_some() {
        return phones_page(
            &state,
            &officer,
            &uri,
            None,
            error,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    communes.sort();
    communes.dedup();
    let odk = pairs.iter().any(|(k, v)| k == "odk" && v == "1");
    if odk {
        let (id, token) = crate::openrosa::enroll(state.store.as_ref(), &name, &communes).await?;
        tracing::info!(user = %officer.user.name, device = id, "ODK Collect phone enrolled");
        let base = crate::respond::public_base(&state, &headers);
        let server_url = crate::openrosa::server_url(&base, &token);
        let settings = crate::openrosa::qr_settings(&server_url, &name);
        let enrolled = Enrolled {
            odk: true,
            name,
            code: String::new(),
            expires: String::new(),
            qr_svg: qr_svg(&settings),
            warning: reach_warning(&officer, &base),
            link: server_url,
        };
        return phones_page(&state, &officer, &uri, Some(enrolled), None, StatusCode::OK).await;
    }
    let code = auth::new_code();
    let hours = state.settings.sync.enroll_code_hours;
    let expires = now_ms() + hours as i64 * 3_600_000;
    let id = state
        .store
        .add_device(&name, &communes, &auth::code_hash(&code), expires, now_ms())
        .await?;
    tracing::info!(user = %officer.user.name, device = id, "phone enrolment code created");
    // The link phones open: the public address when one is set, else the one this browser
    // used (which a phone can reach only if it is not this machine's own).
    let base = crate::respond::public_base(&state, &headers);
    let link = format!("{base}/app/#code={code}");
    let enrolled = Enrolled {
        odk: false,
        name,
        code,
        expires: local_time(expires),
        qr_svg: qr_svg(&link),
        warning: reach_warning(&officer, &base),
        link,
    };
    phones_page(&state, &officer, &uri, Some(enrolled), None, StatusCode::OK).await
}

/// A QR code of `text`, as SVG.
fn qr_svg(text: &str) -> String {
    qrcode::QrCode::new(text.as_bytes())
        .map(|q| {
            q.render::<qrcode::render::svg::Color>()
                .min_dimensions(200, 200)
                .quiet_zone(true)
                .build()
        })
        .unwrap_or_default()
}

/// Why a phone may not be able to use an address.
fn reach_warning(officer: &Officer, base: &str) -> Option<String> {
    let host = base
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    let unreachable =
        matches!(host, "localhost" | "127.0.0.1" | "[" | "") || host.starts_with("127.");
    if unreachable {
        Some(officer.lang.t("qr_unreachable").to_owned())
    } else if base.starts_with("http://") {
        Some(officer.lang.t("qr_insecure").to_owned())
    } else {
        None
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

/// A phone this officer may revoke: not an office account's number, and every one of its
/// communes in the officer's area.
async fn revocable(
    state: &AppState,
    officer: &Officer,
    id: u32,
) -> Result<crate::store::Device, PageError> {
    let device = state.store.device(id).await?.ok_or(PageError::NotFound)?;
    let office = office_devices(state).await?;
    let ours = !office.contains(&(id as i64))
        && !device.communes.is_empty()
        && device
            .communes
            .iter()
            .all(|c| officer.scope.allows(c.as_str(), &state.units));
    if !ours {
        return Err(PageError::NotFound);
    }
    Ok(device)
}

#[derive(Template)]
#[template(path = "revoke.html")]
struct RevokePage {
    c: Ctx,
    id: u32,
    name: String,
    communes: String,
    action: String,
}

/// `GET /office/phones/{id}/revoke`: what revoking does, and the button that does it.
pub async fn confirm_revoke(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    uri: Uri,
    Path(id): Path<u32>,
) -> Result<Response, PageError> {
    let device = revocable(&state, &officer, id).await?;
    if device.revoked {
        return Ok(Redirect::to("/office/phones").into_response());
    }
    let lang = officer.lang;
    let c = ctx(
        &state,
        &officer,
        "phones",
        &uri,
        lang.t("revoke_title").into(),
    );
    Ok(page(
        RevokePage {
            c,
            id,
            name: device.name.clone(),
            communes: device
                .communes
                .iter()
                .map(|c| commune_name(&state, c.as_str()))
                .collect::<Vec<_>>()
                .join(", "),
            action: format!("/office/phones/{id}/revoke"),
        }
        .render()?,
    ))
}

pub async fn revoke(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    Path(id): Path<u32>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    officer.check_csrf(&form.csrf)?;
    revocable(&state, &officer, id).await?;
    state.store.revoke(id, now_ms()).await?;
    tracing::info!(user = %officer.user.name, device = id, "phone revoked");
    Ok(Redirect::to("/office/phones").into_response())
}

/// The device numbers of office accounts: not phones, never listed or revoked here. With
/// those an account wrote under before a restore gave it a new one (its predecessors).
async fn office_devices(state: &AppState) -> Result<BTreeSet<i64>, PageError> {
    let mut office: BTreeSet<i64> = state
        .store
        .users()
        .await?
        .iter()
        .map(|u| u.device)
        .collect();
    let predecessor: std::collections::BTreeMap<i64, i64> = state
        .store
        .devices()
        .await?
        .iter()
        .filter_map(|d| Some((i64::from(d.id), i64::from(d.predecessor?))))
        .collect();
    let mut next: Vec<i64> = office.iter().copied().collect();
    while let Some(d) = next.pop() {
        if let Some(&p) = predecessor.get(&d) {
            if office.insert(p) {
                next.push(p);
            }
        }
    }
    Ok(office)
}
