//! Records: the filtered list, one record with its history, and settling conflicts (one
//! record at a time or from the queue). Settling is an ordinary edit from the officer's device.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::Value;
use sync_protocol::who::{Class, Score};
use sync_protocol::{
    Dot, Edit, FieldEdit, FieldType, Form as SurveyForm, FormField, FormId, Record, RecordId,
    COMMUNE_FIELD, DELETED_FIELD,
};

use super::common::*;
use super::{encode_query, local_time, Lang, Officer, PageError};
use crate::accounts::{self};
use crate::state::AppState;
use crate::store::{EditLog, RecordQuery};
use crate::{now_ms, sync};

#[derive(Deserialize, Default)]
pub struct RecordFilter {
    form: Option<String>,
    /// A name, found without its marks ("nguyen thi lan").
    name: Option<String>,
    commune: Option<String>,
    village: Option<String>,
    from: Option<String>,
    to: Option<String>,
    status: Option<String>,
    page: Option<usize>,
}

pub struct RecordLine {
    pub href: String,
    pub short: String,
    pub form: String,
    pub summary: String,
    pub commune: String,
    pub village: String,
    pub date: String,
    pub badges: Vec<(&'static str, &'static str)>,
}

#[derive(Template)]
#[template(path = "records.html")]
struct RecordsPage {
    c: Ctx,
    forms: Vec<Choice>,
    communes: Vec<Choice>,
    statuses: Vec<Choice>,
    village: String,
    name: String,
    from: String,
    to: String,
    total: usize,
    page: usize,
    pages: usize,
    lines: Vec<RecordLine>,
    prev_href: Option<String>,
    next_href: Option<String>,
    /// The export links' query, once a form is chosen.
    export_query: Option<String>,
}

/// Every record of the officer's area, of every current form: what a list narrows down.
fn in_area(state: &AppState, officer: &Officer) -> RecordQuery {
    RecordQuery {
        forms: state.forms().current().keys().cloned().collect(),
        communes: accounts::communes_in(&officer.scope, &state.units)
            .iter()
            .map(|c| c.to_string())
            .collect(),
        ..RecordQuery::default()
    }
}

pub async fn records(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    uri: Uri,
    Query(filter): Query<RecordFilter>,
) -> Result<Response, PageError> {
    let lang = officer.lang;
    let registry = state.forms();
    let form_ids: Vec<String> = registry.current().keys().cloned().collect();
    let mut query = in_area(&state, &officer);
    query
        .forms
        .retain(|id| given(&filter.form).is_none_or(|want| want == id));
    query
        .communes
        .retain(|c| given(&filter.commune).is_none_or(|want| want == c));
    // A commune outside the area is not found, as its records are.
    if given(&filter.commune).is_some() && query.communes.is_empty() {
        return Err(PageError::NotFound);
    }
    let status = given(&filter.status);
    match status {
        Some("conflict") => query.conflicted = Some(true),
        Some("deleted") => query.deleted = Some(true),
        Some("ok") => {
            query.conflicted = Some(false);
            query.deleted = Some(false);
        }
        Some("rejected") => query.refused_edit = true,
        _ => {}
    }
    // "Có ảnh": records whose values name a photo (read in the records, as the village).
    let photo = status == Some("photo");
    let village = given(&filter.village).map(str::to_lowercase);
    // The name is looked for in the database, in the name kept beside each record.
    query.name = given(&filter.name)
        .map(folded)
        .filter(|n| !n.trim().is_empty());
    let (from, to) = (given(&filter.from), given(&filter.to));
    let wanted_page = filter.page.unwrap_or(1).max(1);
    // Form, commune, state and name page in the database; village and date live inside the
    // records, so those filters read the candidates here, a chunk at a time (memory stays
    // bounded however many there are), keeping only the page shown.
    let (found, total): (Vec<(String, Record)>, usize) =
        if photo || village.is_some() || from.is_some() || to.is_some() {
            let matches = |r: &Record, date: &str| {
                village.as_ref().is_none_or(|v| {
                    r.value("village")
                        .and_then(Value::as_str)
                        .is_some_and(|have| have.to_lowercase().contains(v.as_str()))
                }) && (!photo || has_photo(r))
                    && from.is_none_or(|f| date >= f)
                    && to.is_none_or(|t| !date.is_empty() && date <= t)
            };
            let skip = (wanted_page - 1) * PAGE;
            let (mut page, mut total) = (Vec::new(), 0);
            let mut scan = RecordQuery {
                page: Some((SCAN_CHUNK, 0)),
                ..query.clone()
            };
            loop {
                let chunk = state.store.list_records(&scan).await?;
                let done = chunk.len() < SCAN_CHUNK as usize;
                scan.before = chunk.last().map(|r| r.id.to_string());
                for r in chunk {
                    let date = collected_on(&r, registry.latest(&r.form));
                    if matches(&r, &date) {
                        if total >= skip && page.len() < PAGE {
                            page.push((date, r));
                        }
                        total += 1;
                    }
                }
                if done {
                    break;
                }
            }
            (page, total)
        } else {
            query.page = Some((PAGE as u32, ((wanted_page - 1) * PAGE) as u32));
            let (page, total) = state.store.find_records(&query).await?;
            let dated = page
                .into_iter()
                .map(|r| (collected_on(&r, registry.latest(&r.form)), r))
                .collect();
            (dated, total as usize)
        };
    let pages = total.div_ceil(PAGE).max(1);
    let page_no = wanted_page.min(pages);
    let lines = found
        .iter()
        .map(|(_, r)| RecordLine {
            href: format!("/office/records/{}", r.id),
            short: short_id(&r.id),
            form: form_title(&state, &r.form, lang),
            summary: summary(r, registry.latest(&r.form), lang),
            commune: record_commune(&state, r),
            village: r
                .value("village")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            date: dated(r, registry.latest(&r.form), lang),
            badges: badges(r, lang),
        })
        .collect();
    let page_href = |n: usize| {
        let q = uri.query().unwrap_or("");
        let rest: Vec<&str> = q
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("page="))
            .collect();
        let mut out = format!("/office/records?page={n}");
        for p in rest {
            out.push('&');
            out.push_str(p);
        }
        out
    };
    let choices = |items: Vec<(String, String)>, selected: Option<&str>| {
        let mut out = vec![Choice {
            value: String::new(),
            label: lang.t("all").into(),
            selected: selected.is_none(),
        }];
        out.extend(items.into_iter().map(|(value, label)| Choice {
            selected: selected == Some(value.as_str()),
            value,
            label,
        }));
        out
    };
    let form_choices = choices(
        form_ids
            .iter()
            .filter_map(|id| FormId::parse(id).ok())
            .map(|id| (id.to_string(), form_title(&state, &id, lang)))
            .collect(),
        given(&filter.form),
    );
    let commune_choices = choices(
        scope_communes(&state, &officer.scope),
        given(&filter.commune),
    );
    let status_choices = choices(
        [
            ("conflict", "status_conflict"),
            ("rejected", "status_rejected"),
            ("deleted", "status_deleted"),
            ("ok", "status_ok"),
            ("photo", "has_photo"),
        ]
        .iter()
        .map(|(v, k)| (v.to_string(), lang.t(k).to_owned()))
        .collect(),
        status,
    );
    let c = ctx(&state, &officer, "records", &uri, lang.t("records").into());
    Ok(page(
        RecordsPage {
            c,
            forms: form_choices,
            communes: commune_choices,
            statuses: status_choices,
            village: given(&filter.village).unwrap_or("").into(),
            name: given(&filter.name).unwrap_or("").into(),
            from: from.unwrap_or("").into(),
            to: to.unwrap_or("").into(),
            total,
            page: page_no,
            pages,
            lines,
            prev_href: (page_no > 1).then(|| page_href(page_no - 1)),
            next_href: (page_no < pages).then(|| page_href(page_no + 1)),
            export_query: given(&filter.form).map(|form| {
                let commune = given(&filter.commune)
                    .map(|c| format!("&commune={}", encode_query(c)))
                    .unwrap_or_default();
                format!("form={}{commune}", encode_query(form))
            }),
        }
        .render()?,
    ))
}

/// Records a filtered list reads from the database at a time.
const SCAN_CHUNK: u32 = 2000;

/// Most records one workbook holds (it is made in memory); past it, the office narrows by
/// commune or takes the CSV, which streams any number.
const MAX_XLSX: u32 = 100_000;

/// Records a streamed CSV reads from the database at a time.
const CSV_CHUNK: u32 = 1000;

#[derive(Deserialize)]
pub struct ExportParams {
    form: Option<String>,
    commune: Option<String>,
    lang: Option<String>,
}

/// `/office/records.csv?form=…` and `/office/records.xlsx?form=…`: a form's records in the
/// officer's area (or one commune of it), codes and labels, deleted ones marked.
pub async fn export_csv(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    Query(q): Query<ExportParams>,
) -> Result<Response, PageError> {
    export(state, &officer, &q, false).await
}

pub async fn export_xlsx(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    Query(q): Query<ExportParams>,
) -> Result<Response, PageError> {
    export(state, &officer, &q, true).await
}

async fn export(
    state: Arc<AppState>,
    officer: &Officer,
    q: &ExportParams,
    xlsx: bool,
) -> Result<Response, PageError> {
    let registry = state.forms();
    let form_id = given(&q.form)
        .and_then(|f| sync_protocol::FormId::parse(f).ok())
        .ok_or_else(|| {
            PageError::BadRequest("form: required, e.g. form=birth-registration".into())
        })?;
    if registry.latest(&form_id).is_none() {
        return Err(PageError::NotFound);
    }
    let mut query = in_area(&state, officer);
    query.forms = vec![form_id.to_string()];
    if let Some(want) = given(&q.commune) {
        query.communes.retain(|c| c == want);
        if query.communes.is_empty() {
            return Err(PageError::NotFound);
        }
    }
    let english = match q.lang.as_deref() {
        Some("en") => true,
        Some("vi") => false,
        _ => officer.lang == Lang::En,
    };
    let geography = current_geography(&state);
    let name = format!("mam-{form_id}-{}", crate::today());
    let disposition = |file: String| {
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        )
    };
    if !xlsx {
        let body = stream_csv(state.clone(), form_id, query, geography, english);
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                disposition(format!("{name}.csv")),
            ],
            body,
        )
            .into_response());
    }
    query.page = Some((MAX_XLSX, 0));
    let (records, total) = state.store.find_records(&query).await?;
    if total > u64::from(MAX_XLSX) {
        return Err(PageError::BadRequest(format!(
            "{total} records: a workbook holds at most {MAX_XLSX}; choose a commune, or take the CSV"
        )));
    }
    let form = registry.latest(&form_id).ok_or(PageError::NotFound)?;
    let bytes = crate::export::records_xlsx(form, &records, &state.units, &geography, english)
        .map_err(PageError::Internal)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".to_owned(),
            ),
            disposition(format!("{name}.xlsx")),
        ],
        bytes,
    )
        .into_response())
}

/// The CSV of the records a query matches, streamed: read a chunk at a time by id (each chunk
/// goes on below the last id of the one before, so a deep chunk costs what the first does) and
/// written out as it is read, so memory stays bounded whatever the number of records. A
/// failure half-way ends the body short (the browser shows the download failed) and is logged.
fn stream_csv(
    state: Arc<AppState>,
    form_id: FormId,
    mut query: RecordQuery,
    geography: String,
    english: bool,
) -> axum::body::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(2);
    tokio::spawn(async move {
        let registry = state.forms();
        let Some(form) = registry.latest(&form_id) else {
            return;
        };
        let lines = crate::export::CsvLines::new(form, &state.units, &geography, english);
        if tx.send(Ok(lines.header())).await.is_err() {
            return;
        }
        query.page = Some((CSV_CHUNK, 0));
        loop {
            let records = match state.store.list_records(&query).await {
                Ok(records) => records,
                Err(e) => {
                    tracing::error!(error = %e, form = %form_id, "a records export stopped half-way");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let mut chunk = String::with_capacity(records.len() * 256);
            for record in &records {
                lines.push(&mut chunk, record);
            }
            let done = records.len() < CSV_CHUNK as usize;
            query.before = records.last().map(|r| r.id.to_string());
            // The office closed the download: stop reading.
            if tx.send(Ok(chunk)).await.is_err() || done {
                return;
            }
        }
    });
    axum::body::Body::from_stream(Chunks(rx))
}

/// The chunks a streamed export sends, as they come off its channel; the end once the sender
/// is gone (and again if asked again).
struct Chunks(tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>);

impl futures_util::Stream for Chunks {
    type Item = Result<String, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// One record, its history, and settling its conflicts

pub struct SiblingView {
    /// The sibling's dot, `device:seq`: what the office's choice names.
    pub dot: String,
    pub value: String,
    pub who: String,
    pub when: String,
    /// A photo, a sound, a video or a file the value names.
    pub media: Option<MediaView>,
    /// A place on a map (OpenStreetMap), with the reading's accuracy.
    pub map: Option<String>,
}

/// The attachments a record names that the server holds (here, or in the object store).
async fn arrived_of(state: &AppState, record: &Record) -> HashSet<String> {
    let mut out = HashSet::new();
    for a in crate::attachments::named_by(record) {
        if state.attachments.arrived(&a.sha256).await {
            out.insert(a.sha256);
        }
    }
    out
}

/// Whether a record's values name a photo.
fn has_photo(record: &Record) -> bool {
    crate::attachments::named_by(record)
        .iter()
        .any(|a| a.media_type.starts_with("image/"))
}

/// An attachment on the record page.
pub struct MediaView {
    /// `image`, `audio`, `video` or `file`.
    pub kind: &'static str,
    pub href: String,
    /// The small photo the server made, for a photo that has arrived.
    pub thumb: Option<String>,
    pub name: String,
    /// Named by the record, not arrived from the phone yet.
    pub waiting: bool,
}

/// The attachment a value names, as the record page shows it.
fn media_view(
    arrived: &HashSet<String>,
    record: &Record,
    kind: FieldType,
    value: &Value,
) -> Option<MediaView> {
    let a = sync_protocol::media::Attachment::of(value)?;
    let href = format!("/office/records/{}/attachments/{}", record.id, a.sha256);
    let arrived = arrived.contains(&a.sha256);
    let kind = match kind {
        FieldType::Image => "image",
        FieldType::Audio => "audio",
        FieldType::Video => "video",
        _ => "file",
    };
    Some(MediaView {
        kind,
        thumb: (arrived && kind == "image").then(|| format!("{href}?size=thumb")),
        href,
        name: a.name.unwrap_or_else(|| a.media_type.clone()),
        waiting: !arrived,
    })
}

/// A link to open a place on a map.
fn map_link(value: &Value) -> Option<String> {
    let (lat, lon) = (value.get("lat")?.as_f64()?, value.get("lon")?.as_f64()?);
    Some(format!(
        "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=18/{lat}/{lon}"
    ))
}

pub struct FieldView {
    pub name: String,
    pub label: String,
    pub siblings: Vec<SiblingView>,
    pub conflict: bool,
    /// A box to type another value in, for fields whose type allows it.
    pub typed: bool,
}

pub struct HistoryLine {
    pub when: String,
    pub who: String,
    pub seq: i64,
    pub fields: String,
    pub rejected: bool,
}

/// A record's conflicts and the form to settle them.
pub struct ConflictCard {
    pub id: String,
    /// Every field's dots as the page shows them (JSON `{"field": [[device, seq], …]}`): a
    /// settle supersedes exactly these, and writes nothing if the record holds others by then.
    pub shown: String,
    pub href: String,
    pub action: String,
    pub title: String,
    pub commune: String,
    pub fields: Vec<FieldView>,
    pub delete_conflict: bool,
    /// Rules linking fields that only a merge of concurrent edits broke, in the officer's
    /// language: settled by correcting one of the fields shown.
    pub broken: Vec<String>,
}

#[derive(Template)]
#[template(path = "record.html")]
struct RecordPage {
    c: Ctx,
    title: String,
    id: String,
    commune: String,
    version: u32,
    badges: Vec<(&'static str, &'static str)>,
    fields: Vec<FieldView>,
    derived: Vec<(String, String)>,
    history: Vec<HistoryLine>,
    card: Option<ConflictCard>,
    notice: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct AttachmentParams {
    size: Option<String>,
}

/// An attachment of a record of the officer's scope that names it (`?size=thumb`: the small
/// photo); "not found" for anything else, as for records.
pub async fn attachment(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    Path((id, sha)): Path<(String, String)>,
    Query(q): Query<AttachmentParams>,
    headers: axum::http::HeaderMap,
) -> Result<Response, PageError> {
    let record = scoped_record(&state, &officer, &id).await?;
    if !crate::attachments::names(&record, &sha) {
        return Err(PageError::NotFound);
    }
    if q.size.as_deref() == Some("thumb") {
        // Read from the object store first when this process has not got it.
        let _ = state.attachments.fetch(&sha).await;
        let made = {
            let state = state.clone();
            let sha = sha.clone();
            tokio::task::spawn_blocking(move || state.attachments.thumbnail(&sha))
                .await
                .map_err(|e| PageError::Internal(e.to_string()))?
        };
        if let Some(path) = made {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| PageError::Internal(e.to_string()))?;
            return Ok((
                [
                    (axum::http::header::CONTENT_TYPE, "image/jpeg"),
                    (axum::http::header::CACHE_CONTROL, "no-store"),
                ],
                bytes,
            )
                .into_response());
        }
    }
    let stored = state
        .attachments
        .fetch(&sha)
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?
        .ok_or(PageError::NotFound)?;
    crate::respond::attachment(&sha, &stored, &headers)
        .await
        .map_err(|e| PageError::Internal(e.to_string()))
}

/// A record of the officer's scope, or "not found" whatever the reason.
async fn scoped_record(state: &AppState, officer: &Officer, id: &str) -> Result<Record, PageError> {
    let id = RecordId::parse(id).map_err(|_| PageError::NotFound)?;
    let record = state.store.record(id).await?.ok_or(PageError::NotFound)?;
    if !officer.scope.allows(record.commune.as_str(), &state.units) {
        tracing::warn!(user = %officer.user.name, record = %id, "record outside the account's scope asked for");
        return Err(PageError::NotFound);
    }
    Ok(record)
}

type Authors = HashMap<(u32, u64), (String, i64)>;

/// Who made an edit: the collaborator (or officer) and the device number.
fn author(e: &EditLog) -> String {
    match &e.device_name {
        Some(name) => format!("{name} (#{})", e.device),
        None => format!("#{}", e.device),
    }
}

fn authors(edits: &[EditLog]) -> Authors {
    edits
        .iter()
        .map(|e| ((e.device as u32, e.seq as u64), (author(e), e.received_at)))
        .collect()
}

fn field_views(
    state: &AppState,
    record: &Record,
    form: Option<&SurveyForm>,
    authors: &Authors,
    arrived: &HashSet<String>,
    lang: Lang,
) -> Vec<FieldView> {
    let mut names: Vec<String> = form
        .map(|f| f.fields.iter().map(|x| x.name.clone()).collect())
        .unwrap_or_default();
    for name in record.fields.keys() {
        if name != DELETED_FIELD && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            let register = record.fields.get(&name)?;
            let def = form.and_then(|f| f.field(&name));
            let siblings = register
                .siblings()
                .iter()
                .map(|s| {
                    let (who, when) = authors
                        .get(&(s.dot.device, s.dot.seq))
                        .map(|(w, t)| (w.clone(), local_time(*t)))
                        .unwrap_or_else(|| (format!("#{}", s.dot.device), String::new()));
                    let value = match (name == COMMUNE_FIELD, s.value.as_str()) {
                        (true, Some(code)) => format!("{} ({code})", commune_name(state, code)),
                        _ => show(&s.value, def, lang),
                    };
                    SiblingView {
                        dot: format!("{}:{}", s.dot.device, s.dot.seq),
                        media: def
                            .filter(|d| d.kind.is_media())
                            .and_then(|d| media_view(arrived, record, d.kind, &s.value)),
                        map: def
                            .filter(|d| d.kind == FieldType::Geopoint)
                            .and_then(|_| map_link(&s.value)),
                        value,
                        who,
                        when,
                    }
                })
                .collect();
            let label = match def.and_then(|d| d.label.as_ref()) {
                Some(l) => lang.pick(&l.vi, &l.en).to_owned(),
                None if name == COMMUNE_FIELD => lang.t("commune").to_owned(),
                None => name.clone(),
            };
            Some(FieldView {
                label,
                conflict: register.is_conflict(),
                // A commune is chosen among the moves, never typed.
                typed: name != COMMUNE_FIELD
                    && def.is_none_or(|d| {
                        !matches!(
                            d.kind,
                            FieldType::Repeat
                                | FieldType::Geopoint
                                | FieldType::SelectMany
                                | FieldType::Rank
                        )
                    }),
                name,
                siblings,
            })
        })
        .collect()
}

fn conflict_card(
    state: &AppState,
    record: &Record,
    form: Option<&SurveyForm>,
    authors: &Authors,
    arrived: &HashSet<String>,
    lang: Lang,
) -> Option<ConflictCard> {
    if !record.is_conflicted() {
        return None;
    }
    // The fields in conflict, and those a broken rule reads, to be corrected.
    let ruled: BTreeSet<String> = record
        .broken
        .iter()
        .flat_map(|b| form.map(|f| f.rule_fields(b)).unwrap_or_default())
        .collect();
    let fields: Vec<FieldView> = field_views(state, record, form, authors, arrived, lang)
        .into_iter()
        .filter(|f| f.conflict || ruled.contains(&f.name))
        .collect();
    let broken = record
        .broken
        .iter()
        .map(|b| {
            let label = form
                .and_then(|f| f.field(&b.field))
                .and_then(|d| d.label.as_ref())
                .map(|l| format!("{} ({})", lang.pick(&l.vi, &l.en), b.field))
                .unwrap_or_else(|| b.field.clone());
            format!("{label}: {}", lang.pick(&b.vi, &b.en))
        })
        .collect();
    let shown: BTreeMap<&str, Vec<Dot>> = record
        .fields
        .keys()
        .map(|name| (name.as_str(), record.dots(name)))
        .collect();
    Some(ConflictCard {
        id: record.id.to_string(),
        shown: serde_json::to_string(&shown).expect("dots always serialize"),
        href: format!("/office/records/{}", record.id),
        action: format!("/office/records/{}/settle", record.id),
        title: format!(
            "{} — {}",
            form_title(state, &record.form, lang),
            summary(record, form, lang)
        ),
        commune: record_commune(state, record),
        fields,
        // A delete against an edit, or a delete against a restore: either way the choice is
        // whether the record stays.
        delete_conflict: record.has_delete_conflict()
            || record
                .fields
                .get(DELETED_FIELD)
                .is_some_and(|r| r.is_conflict()),
        broken,
    })
}

#[derive(Deserialize)]
pub struct RecordParams {
    settled: Option<String>,
}

pub async fn record(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    uri: Uri,
    Path(id): Path<String>,
    Query(q): Query<RecordParams>,
) -> Result<Response, PageError> {
    let record = scoped_record(&state, &officer, &id).await?;
    let notice = q.settled.map(|_| officer.lang.t("settled").to_owned());
    render_record(&state, &officer, &uri, record, notice, None, StatusCode::OK).await
}

async fn render_record(
    state: &AppState,
    officer: &Officer,
    uri: &Uri,
    record: Record,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let lang = officer.lang;
    let registry = state.forms();
    let form = registry
        .get(&record.form, record.version)
        .or_else(|| registry.latest(&record.form));
    let edits = state.store.record_edits(record.id).await?;
    let who = authors(&edits);
    // Each edit by its fields' labels, old → new: the old values are those of the edits it
    // superseded (what its author saw), so concurrent edits read right.
    let mut by_dot: HashMap<(i64, i64), serde_json::Map<String, Value>> = HashMap::new();
    let mut history = Vec::new();
    for e in &edits {
        let body: Value = serde_json::from_str(&e.body).unwrap_or(Value::Null);
        let fields = body.get("fields").and_then(Value::as_object);
        let mut changes = Vec::new();
        let mut written = serde_json::Map::new();
        for (name, change) in fields.into_iter().flatten() {
            let field = form.and_then(|f| f.field(name));
            let label = match (field, name.as_str()) {
                (Some(f), _) => lang.pick(f.label_vi(), f.label_en()).to_owned(),
                (None, COMMUNE_FIELD) => lang.t("commune").to_owned(),
                (None, DELETED_FIELD) => lang.t("status_deleted").to_owned(),
                _ => name.clone(),
            };
            let value = change.get("value").cloned().unwrap_or(Value::Null);
            let old: Vec<String> = change
                .get("supersedes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|dot| {
                    let d = dot.as_array()?;
                    let key = (d.first()?.as_i64()?, d.get(1)?.as_i64()?);
                    by_dot.get(&key)?.get(name).map(|v| show(v, field, lang))
                })
                .collect();
            let old = if old.is_empty() {
                lang.t("empty").to_owned()
            } else {
                old.join(" / ")
            };
            changes.push(format!("{label}: {old} → {}", show(&value, field, lang)));
            written.insert(name.clone(), value);
        }
        if !e.rejected {
            by_dot.insert((e.device, e.seq), written);
        }
        history.push(HistoryLine {
            when: local_time(e.received_at),
            who: author(e),
            seq: e.seq,
            fields: changes.join("; "),
            rejected: e.rejected,
        });
    }
    // In the form's order (inputs before what is worked out from them).
    let mut ordered: Vec<(&String, &Value)> = record.derived.iter().collect();
    let position = |name: &str| {
        form.and_then(|f| f.derived.iter().position(|d| d.name == name))
            .unwrap_or(usize::MAX)
    };
    ordered.sort_by_key(|(name, _)| position(name));
    let derived = ordered
        .into_iter()
        .map(|(name, value)| {
            let label = form
                .and_then(|f| f.derived.iter().find(|d| &d.name == name))
                .and_then(|d| d.label.as_ref())
                .map(|l| lang.pick(&l.vi, &l.en).to_owned())
                .unwrap_or_else(|| name.clone());
            let mut text = show(value, None, lang);
            if let (Some(score), Some(z)) = (Score::from_name(name), value.as_f64()) {
                // A z-score with what it says of the child, and WHO's flag where it has one.
                let flagged = [format!("{name}_flag"), format!("{name}_implausible")]
                    .iter()
                    .any(|f| record.derived.get(f) == Some(&Value::Bool(true)));
                text = if flagged {
                    format!("{text} · {}", lang.t("z_flagged"))
                } else {
                    let class = match score.classify(z) {
                        Class::Severe => "z_severe",
                        Class::Moderate => "z_moderate",
                        Class::Normal => "z_normal",
                        Class::Overweight => "z_overweight",
                    };
                    format!("{text} · {}", lang.t(class))
                };
            }
            (label, text)
        })
        .collect();
    // The record by its name (the child's), the form beside; the id where it has none.
    let title = match record_name(&record, state.forms().latest(&record.form)) {
        Some(name) => format!("{name} · {}", form_title(state, &record.form, lang)),
        None => format!(
            "{} {}",
            form_title(state, &record.form, lang),
            short_id(&record.id)
        ),
    };
    let arrived = arrived_of(state, &record).await;
    let c = ctx(state, officer, "records", uri, title.clone());
    let html = RecordPage {
        c,
        title,
        id: record.id.to_string(),
        commune: record_commune(state, &record),
        version: record.version,
        badges: badges(&record, lang),
        fields: field_views(state, &record, form, &who, &arrived, lang),
        derived,
        history,
        card: conflict_card(state, &record, form, &who, &arrived, lang),
        notice,
        error,
    }
    .render()?;
    Ok((status, Html(html)).into_response())
}

/// Turn what an officer typed into a value of the field's type.
fn typed_value(text: &str, field: Option<&FormField>) -> Result<Value, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Value::Null);
    }
    let Some(field) = field else {
        return Ok(Value::String(text.to_owned()));
    };
    let bad = |what: &str| format!("{}: {text:?} is not {what}", field.name);
    Ok(match field.kind {
        FieldType::Integer => Value::from(text.parse::<i64>().map_err(|_| bad("a whole number"))?),
        FieldType::Decimal => {
            let n: f64 = text
                .replace(',', ".")
                .parse()
                .map_err(|_| bad("a number"))?;
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .ok_or_else(|| bad("a number"))?
        }
        FieldType::Boolean => match text.to_lowercase().as_str() {
            "true" | "yes" | "có" | "co" | "1" => Value::Bool(true),
            "false" | "no" | "không" | "khong" | "0" => Value::Bool(false),
            _ => return Err(bad("yes or no (có / không)")),
        },
        FieldType::SelectOne => {
            let lower = text.to_lowercase();
            let choice = field.choices.iter().find(|c| {
                c.code == text
                    || c.label.as_ref().is_some_and(|l| {
                        l.vi.to_lowercase() == lower || l.en.to_lowercase() == lower
                    })
            });
            Value::String(
                choice
                    .map(|c| c.code.clone())
                    .ok_or_else(|| bad("one of the field's choices"))?,
            )
        }
        _ => Value::String(text.to_owned()),
    })
}

/// Write an edit as the officer's own device, through the same path phone edits take.
async fn write_edit(state: &AppState, officer: &Officer, edit: Edit) -> Result<(), String> {
    let device = state
        .store
        .device(officer.user.device as u32)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("this account has no device")?;
    let edit = Edit {
        seq: device.last_seq + 1,
        ..edit
    };
    let forms = state.forms();
    let catalog = sync::Catalog {
        forms: &forms,
        units: &state.units,
        indicators: &state.indicators,
    };
    let today = crate::today();
    let prepared = sync::prepare(vec![edit.into()], catalog, &device, &today);
    let outcome = sync::push(
        state.store.as_ref(),
        catalog,
        &device,
        &prepared,
        now_ms(),
        &today,
    )
    .await
    .map_err(|e| e.to_string())?;
    match outcome.rejected.into_iter().next() {
        None => Ok(()),
        Some(r) => Err(match (officer.lang, r.message_vi) {
            (Lang::Vi, Some(vi)) => vi,
            _ => r.message,
        }),
    }
}

pub async fn settle(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    uri: Uri,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let form: HashMap<String, String> = pairs.into_iter().collect();
    officer.check_csrf(form.get("csrf").map(String::as_str).unwrap_or(""))?;
    let record = scoped_record(&state, &officer, &id).await?;
    let registry = state.forms();
    let survey = registry
        .get(&record.form, record.version)
        .or_else(|| registry.latest(&record.form));
    // What the page showed, per field. A form without it (an old page) showed nothing that
    // can be trusted: it is treated as showing nothing, so any value makes it stale.
    let shown: BTreeMap<String, Vec<Dot>> = form
        .get("shown")
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let shown_of = |name: &str| shown.get(name).cloned().unwrap_or_default();
    // Fields whose values are not the ones the page showed.
    let mut stale: BTreeSet<String> = BTreeSet::new();
    let check_shown = |name: &str, stale: &mut BTreeSet<String>| {
        let now: BTreeSet<Dot> = record.dots(name).into_iter().collect();
        let then: BTreeSet<Dot> = shown_of(name).into_iter().collect();
        if now != then {
            stale.insert(name.to_owned());
        }
    };
    let mut fields: BTreeMap<String, FieldEdit> = BTreeMap::new();
    let mut problem: Option<String> = None;
    match form.get("delete").map(String::as_str) {
        Some("keep") => {
            // Deleted again, over everything shown: every field and the delete itself (the
            // commune stays: it says where the deleted record is kept).
            for name in record.fields.keys().filter(|n| *n != COMMUNE_FIELD) {
                check_shown(name, &mut stale);
                let value = if name == DELETED_FIELD {
                    Value::Bool(true)
                } else {
                    Value::Null
                };
                fields.insert(
                    name.clone(),
                    FieldEdit {
                        value,
                        supersedes: shown_of(name),
                    },
                );
            }
        }
        Some("restore") => {
            check_shown(DELETED_FIELD, &mut stale);
            fields.insert(
                DELETED_FIELD.to_owned(),
                FieldEdit {
                    value: Value::Bool(false),
                    supersedes: shown_of(DELETED_FIELD),
                },
            );
        }
        _ => {}
    }
    let picked: Vec<&str> = form
        .keys()
        .filter_map(|k| k.strip_prefix("pick:"))
        .filter(|name| !fields.contains_key(*name))
        .collect();
    for name in picked {
        let pick = &form[&format!("pick:{name}")];
        check_shown(name, &mut stale);
        let value = if pick == "other" {
            let text = form
                .get(&format!("other:{name}"))
                .map(String::as_str)
                .unwrap_or("");
            match typed_value(text, survey.and_then(|f| f.field(name))) {
                Ok(v) => v,
                Err(e) => {
                    problem = Some(e);
                    continue;
                }
            }
        } else {
            // The choice names the value by its dot, never by its place in a list.
            let dot = pick
                .split_once(':')
                .and_then(|(d, s)| Some(Dot::new(d.parse().ok()?, s.parse().ok()?)));
            let sibling = dot.and_then(|dot| {
                record
                    .fields
                    .get(name)?
                    .siblings()
                    .iter()
                    .find(|s| s.dot == dot)
            });
            match (dot, sibling) {
                (Some(_), Some(s)) => s.value.clone(),
                (Some(_), None) => {
                    stale.insert(name.to_owned());
                    continue;
                }
                (None, _) => {
                    problem = Some(format!("{name}: no value {pick:?}"));
                    continue;
                }
            }
        };
        fields.insert(
            name.to_owned(),
            FieldEdit {
                value,
                supersedes: shown_of(name),
            },
        );
    }
    if !stale.is_empty() {
        tracing::info!(user = %officer.user.name, record = %record.id, fields = ?stale,
            "settle not saved: the record changed while the page was open");
        let labels: Vec<String> = stale
            .iter()
            .map(|name| {
                survey
                    .and_then(|f| f.field(name))
                    .and_then(|d| d.label.as_ref())
                    .map(|l| format!("{} ({name})", officer.lang.pick(&l.vi, &l.en)))
                    .unwrap_or_else(|| name.to_owned())
            })
            .collect();
        let error = format!("{} {}", officer.lang.t("settle_stale"), labels.join(", "));
        return render_record(
            &state,
            &officer,
            &uri,
            record,
            None,
            Some(error),
            StatusCode::CONFLICT,
        )
        .await;
    }
    if problem.is_none() && fields.is_empty() {
        problem = Some(officer.lang.t("settle").to_owned() + ": ?");
    }
    if let Some(error) = problem {
        return render_record(
            &state,
            &officer,
            &uri,
            record,
            None,
            Some(error),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    // Settling the commune moves the record to the one chosen.
    let commune = fields
        .get(COMMUNE_FIELD)
        .and_then(|f| f.value.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| record.commune.to_string());
    let edit = Edit {
        seq: 0,
        record: record.id.to_string(),
        form: record.form.to_string(),
        version: record.version,
        commune,
        fields,
    };
    match write_edit(&state, &officer, edit).await {
        Ok(()) => {
            tracing::info!(user = %officer.user.name, record = %record.id, "conflict settled");
            let back = match form.get("back").map(String::as_str) {
                Some("conflicts") => "/office/conflicts?settled=1".to_owned(),
                _ => format!("/office/records/{}?settled=1", record.id),
            };
            Ok(Redirect::to(&back).into_response())
        }
        Err(error) => {
            render_record(
                &state,
                &officer,
                &uri,
                record,
                None,
                Some(error),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Conflicts

#[derive(Deserialize)]
pub struct ConflictParams {
    page: Option<usize>,
    settled: Option<String>,
}

#[derive(Template)]
#[template(path = "conflicts.html")]
struct ConflictsPage {
    c: Ctx,
    cards: Vec<ConflictCard>,
    total: usize,
    page: usize,
    pages: usize,
    prev_href: Option<String>,
    next_href: Option<String>,
    notice: Option<String>,
}

pub async fn conflicts(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    uri: Uri,
    Query(q): Query<ConflictParams>,
) -> Result<Response, PageError> {
    let lang = officer.lang;
    let registry = state.forms();
    let wanted_page = q.page.unwrap_or(1).max(1);
    let query = RecordQuery {
        conflicted: Some(true),
        page: Some((
            CONFLICT_PAGE as u32,
            ((wanted_page - 1) * CONFLICT_PAGE) as u32,
        )),
        ..in_area(&state, &officer)
    };
    let (conflicted, total) = state.store.find_records(&query).await?;
    let total = total as usize;
    let pages = total.div_ceil(CONFLICT_PAGE).max(1);
    let page_no = wanted_page.min(pages);
    let mut cards = Vec::new();
    for record in &conflicted {
        let edits = state.store.record_edits(record.id).await?;
        let form = registry
            .get(&record.form, record.version)
            .or_else(|| registry.latest(&record.form));
        let arrived = arrived_of(&state, record).await;
        if let Some(card) = conflict_card(&state, record, form, &authors(&edits), &arrived, lang) {
            cards.push(card);
        }
    }
    let c = ctx(
        &state,
        &officer,
        "conflicts",
        &uri,
        lang.t("conflicts").into(),
    );
    Ok(page(
        ConflictsPage {
            c,
            cards,
            total,
            page: page_no,
            pages,
            prev_href: (page_no > 1).then(|| format!("/office/conflicts?page={}", page_no - 1)),
            next_href: (page_no < pages).then(|| format!("/office/conflicts?page={}", page_no + 1)),
            notice: q.settled.map(|_| lang.t("settled").to_owned()),
        }
        .render()?,
    ))
}
