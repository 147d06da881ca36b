//! Forms: published versions and their fields; the provincial office publishes new ones.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use sync_protocol::{Form as SurveyForm, FormId};

use super::common::*;
use super::{Lang, Officer, PageError};
use crate::accounts::Role;
use crate::forms::{self, Publication};
use crate::report::Scope;
use crate::state::AppState;
use crate::{auth, now_ms};

pub struct FormView {
    pub id: String,
    pub title: String,
    pub current: u32,
    pub versions: Vec<u32>,
    pub fields: Vec<FormFieldView>,
}

pub struct FormFieldView {
    pub name: String,
    pub label: String,
    pub kind: String,
    pub required: bool,
    pub retired: bool,
}

#[derive(Template)]
#[template(path = "forms.html")]
struct FormsPage {
    c: Ctx,
    forms: Vec<FormView>,
    may_publish: bool,
    notice: Option<String>,
    error: Option<String>,
}

async fn forms_page(
    state: &AppState,
    officer: &Officer,
    uri: &Uri,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let lang = officer.lang;
    let registry = state.forms();
    let forms = registry
        .current()
        .iter()
        .filter_map(|(id, current)| {
            let id = FormId::parse(id).ok()?;
            let form = registry.get(&id, *current)?;
            Some(FormView {
                id: id.to_string(),
                title: form_title(state, &id, lang),
                current: *current,
                versions: (1..=*current)
                    .filter(|v| registry.get(&id, *v).is_some())
                    .collect(),
                fields: form
                    .fields
                    .iter()
                    .map(|f| FormFieldView {
                        name: f.name.clone(),
                        label: f
                            .label
                            .as_ref()
                            .map(|l| lang.pick(&l.vi, &l.en).to_owned())
                            .unwrap_or_default(),
                        kind: serde_json::to_value(f.kind)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        required: f.required,
                        retired: f.retired,
                    })
                    .collect(),
            })
        })
        .collect();
    let c = ctx(state, officer, "forms", uri, lang.t("forms").into());
    let html = FormsPage {
        c,
        forms,
        may_publish: officer.scope == Scope::Province,
        notice,
        error,
    }
    .render()?;
    Ok((status, Html(html)).into_response())
}

pub async fn forms(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    uri: Uri,
) -> Result<Response, PageError> {
    forms_page(&state, &officer, &uri, None, None, StatusCode::OK).await
}

pub async fn publish(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    uri: Uri,
    mut multipart: Multipart,
) -> Result<Response, PageError> {
    let lang = officer.lang;
    let mut csrf = String::new();
    let mut file: Option<(String, Vec<u8>)> = None;
    while let Some(part) = multipart
        .next_field()
        .await
        .map_err(|e| PageError::BadRequest(format!("upload: {e}")))?
    {
        match part.name() {
            Some("csrf") => {
                csrf = part
                    .text()
                    .await
                    .map_err(|e| PageError::BadRequest(format!("csrf: {e}")))?
            }
            Some("file") => {
                let name = part.file_name().unwrap_or("form.json").to_owned();
                let bytes = part
                    .bytes()
                    .await
                    .map_err(|e| PageError::BadRequest(format!("file: {e}")))?;
                file = Some((name, bytes.to_vec()));
            }
            _ => {}
        }
    }
    officer.check_csrf(&csrf)?;
    if officer.user.role != Role::Province.as_str() {
        return Err(PageError::Forbidden);
    }
    let Some((name, bytes)) = file.filter(|(_, b)| !b.is_empty()) else {
        return forms_page(
            &state,
            &officer,
            &uri,
            None,
            Some(lang.pick("Chưa chọn tệp", "file: no file chosen").into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let parsed = read_form_file(&name, &bytes, lang);
    let outcome = match parsed {
        Ok(form) => {
            let label = format!("{} v{}", form.id, form.version);
            forms::publish(state.store.as_ref(), form, now_ms())
                .await
                .map(|p| (p, label))
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok((publication, label)) => {
            if let Err(e) = state.refresh_forms().await {
                tracing::warn!(error = %e, "could not reload the published forms");
            }
            tracing::info!(user = %officer.user.name, form = %label, "form published from the office");
            let notice = match publication {
                Publication::Published => format!("{}: {label}", lang.t("published")),
                Publication::AlreadyPublished => lang.t("unchanged").to_owned(),
            };
            forms_page(&state, &officer, &uri, Some(notice), None, StatusCode::OK).await
        }
        Err(e) => {
            forms_page(
                &state,
                &officer,
                &uri,
                None,
                Some(format!("{name}: {e:#}")),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

/// A form from an uploaded file: JSON as in schemas/forms, or an XLSForm workbook (whose
/// report of what it could not convert is told in the officer's language).
fn read_form_file(name: &str, bytes: &[u8], lang: Lang) -> anyhow::Result<SurveyForm> {
    let lower = name.to_lowercase();
    if lower.ends_with(".xlsx") || lower.ends_with(".xls") {
        let dir = std::env::temp_dir().join(format!("mam-upload-{}", auth::new_token()));
        std::fs::create_dir_all(&dir)?;
        let stem: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        let path = dir.join(if stem.is_empty() {
            if lower.ends_with(".xls") {
                "form.xls".into()
            } else {
                "form.xlsx".into()
            }
        } else {
            stem
        });
        std::fs::write(&path, bytes)?;
        let import = crate::xlsform::convert(&path);
        let _ = std::fs::remove_dir_all(&dir);
        let import = import?;
        if !import.not_converted.is_empty() {
            let items = |vi: bool| {
                import
                    .not_converted
                    .iter()
                    .map(|n| if vi { n.vi.as_str() } else { n.en.as_str() })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let n = import.not_converted.len();
            let vi = format!(
                "chưa công bố: {n} mục chưa chuyển được (sửa bảng tính rồi tải lên lại): {}",
                items(true)
            );
            let en = format!("not published: {n} not converted: {}", items(false));
            anyhow::bail!("{}", lang.pick(&vi, &en));
        }
        return Ok(import.form);
    }
    serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("not a form in JSON: {e}"))
}
