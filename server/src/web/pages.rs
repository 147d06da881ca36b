//! The office pages. Each handler reads within the officer's scope only: a record, phone or
//! figure outside it answers "not found", the same as one that does not exist.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::Value;
use sync_protocol::{
    CommuneCode, Dot, Edit, FieldEdit, FieldType, Form as SurveyForm, FormField, FormId, Record,
    RecordId, DELETED_FIELD,
};

use super::{encode_query, local_time, Lang, Officer, PageError};
use crate::accounts::{self, Role};
use crate::forms::{self, Publication};
use crate::http::{self, AppState};
use crate::indicators;
use crate::report::{self, Level, Scope};
use crate::store::{EditLog, RecordQuery};
use crate::{auth, now_ms, sync};

/// Records on one page of a list.
const PAGE: usize = 50;
/// Conflicts on one page of the queue.
const CONFLICT_PAGE: usize = 20;

/// What every page's frame shows.
pub struct Ctx {
    pub lang: Lang,
    pub user: String,
    pub area_name: String,
    pub csrf: String,
    pub nav: Vec<Nav>,
    pub lang_href: String,
    pub title: String,
}

pub struct Nav {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

impl Ctx {
    pub fn t(&self, key: &str) -> &'static str {
        self.lang.t(key)
    }
}

const MENU: &[(&str, &str)] = &[
    ("/office", "dashboard"),
    ("/office/records", "records"),
    ("/office/conflicts", "conflicts"),
    ("/office/phones", "phones"),
    ("/office/forms", "forms"),
    ("/office/rejected", "rejected"),
];

fn ctx(state: &AppState, officer: &Officer, current: &str, uri: &Uri, title: String) -> Ctx {
    let lang = officer.lang;
    let back = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/office");
    Ctx {
        lang,
        user: officer.user.name.clone(),
        area_name: scope_name(state, &officer.scope, lang),
        csrf: officer.csrf.clone(),
        nav: MENU
            .iter()
            .map(|(href, key)| Nav {
                href,
                label: lang.t(key),
                current: *key == current,
            })
            .collect(),
        lang_href: format!(
            "/lang?to={}&back={}",
            lang.other().code(),
            encode_query(back)
        ),
        title,
    }
}

fn scope_name(state: &AppState, scope: &Scope, lang: Lang) -> String {
    match scope {
        Scope::Province => format!("{} Thừa Thiên Huế", lang.t("province")),
        Scope::District(code) => {
            let mut names: Vec<String> = Vec::new();
            for c in state
                .units
                .versions()
                .iter()
                .flat_map(|v| v.communes.values())
            {
                if c.district_code.as_deref() == Some(code) {
                    if let Some(n) = &c.district_name {
                        if !names.contains(n) {
                            names.push(n.clone());
                        }
                    }
                }
            }
            format!("{} {} ({code})", lang.t("district"), names.join(" / "))
        }
        Scope::Communes(list) => list
            .iter()
            .map(|c| commune_name(state, c))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A record's commune by the name it had on the day the record was collected (the map changed
/// in 2021 and twice in 2025), or today's name when the record has no date.
fn record_commune(state: &AppState, record: &Record) -> String {
    let form = state.forms();
    let date = collected_on(record, form.latest(&record.form));
    match state.units.version_on(&date) {
        Some(v) if !date.is_empty() => {
            state
                .units
                .commune_in(record.commune.as_str(), &crate::units::Units::key(v))
                .1
        }
        _ => commune_name(state, record.commune.as_str()),
    }
}

fn commune_name(state: &AppState, code: &str) -> String {
    let key = current_geography(state);
    state.units.commune_in(code, &key).1
}

fn current_geography(state: &AppState) -> String {
    state
        .units
        .version_on(&crate::today())
        .or_else(|| state.units.versions().last())
        .map(crate::units::Units::key)
        .unwrap_or_default()
}

fn page(html: String) -> Response {
    Html(html).into_response()
}

/// Query values from a form: an empty box means "no filter".
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Targets dashboard

#[derive(Deserialize, Default)]
pub struct DashboardParams {
    period: Option<String>,
    geography: Option<String>,
    level: Option<String>,
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

pub struct TargetView {
    pub id: String,
    pub title: String,
    pub target: String,
    pub rows: Vec<AreaView>,
    pub chart: Chart,
}

/// One line of the overview: an indicator over the officer's whole area.
pub struct OverviewLine {
    pub id: String,
    pub title: String,
    pub value: String,
    pub target: String,
    pub status: &'static str,
    pub status_label: &'static str,
    pub conflicted: i64,
}

pub struct AreaView {
    pub area: String,
    pub name: String,
    pub value: String,
    pub fraction: String,
    pub status: &'static str,
    pub status_label: &'static str,
    pub conflicted: i64,
    pub records: i64,
    pub href: String,
}

pub struct Chart {
    pub height: usize,
    pub bars: Vec<Bar>,
    /// The target line's x position, when there is a numeric target.
    pub target_x: Option<f64>,
    pub label: String,
}

pub struct Bar {
    pub y: usize,
    pub text_y: usize,
    pub width: f64,
    pub name: String,
    pub value: String,
    pub status: &'static str,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    c: Ctx,
    periods: Vec<Choice>,
    geographies: Vec<Choice>,
    levels: Vec<Choice>,
    overview: Vec<OverviewLine>,
    targets: Vec<TargetView>,
    csv_href: String,
    xlsx_href: String,
}

/// Periods offered: every half-year and year from 2019 to this year.
fn period_choices(selected: &str) -> Vec<Choice> {
    let year: i32 = crate::today()[..4].parse().unwrap_or(2026);
    let mut out = Vec::new();
    for y in (2019..=year).rev() {
        for p in [format!("{y}"), format!("{y}-H2"), format!("{y}-H1")] {
            out.push(Choice {
                selected: p == selected,
                label: p.clone(),
                value: p,
            });
        }
    }
    out
}

/// The default period: the newest half-year that has figures in scope, else the current one.
async fn default_period(state: &AppState) -> Result<String, PageError> {
    let cells = state.store.cells(None).await?;
    let newest = cells
        .iter()
        .map(|(k, _)| k.period.as_str())
        .filter(|p| p.contains("-H"))
        .max()
        .map(str::to_owned);
    Ok(newest.unwrap_or_else(|| {
        let today = crate::today();
        let half = if today[5..7] <= *"06" { "H1" } else { "H2" };
        format!("{}-{half}", &today[..4])
    }))
}

struct Table {
    /// The whole area of the officer, one row per indicator.
    whole: Vec<report::Row>,
    period: String,
    geography: String,
    level: Level,
    level_text: &'static str,
    rows: Vec<report::Row>,
}

async fn read_table(
    state: &AppState,
    officer: &Officer,
    params: &DashboardParams,
) -> Result<Table, PageError> {
    let period = match given(&params.period) {
        Some(p) => p.to_owned(),
        None => default_period(state).await?,
    };
    let (period, geography) =
        http::period_and_geography(state, Some(&period), given(&params.geography))
            .map_err(|e| PageError::BadRequest(e.to_string()))?;
    let has_districts = state
        .units
        .geography(&geography)
        .is_some_and(|g| g.communes.values().any(|c| c.district_code.is_some()));
    let default_level = match (&officer.scope, has_districts) {
        (Scope::Province, true) => "district",
        _ => "commune",
    };
    let level_text = match given(&params.level).unwrap_or(default_level) {
        "district" if has_districts => "district",
        "province" => "province",
        _ => "commune",
    };
    let level = Level::parse(level_text).unwrap_or(Level::Commune);
    let rows = |level| http::indicator_rows(state, &officer.scope, &period, level, &geography);
    let whole = rows(Level::Province)
        .await?
        .map_err(PageError::BadRequest)?;
    let rows = rows(level).await?.map_err(PageError::BadRequest)?;
    Ok(Table {
        whole,
        period,
        geography,
        level,
        level_text,
        rows,
    })
}

/// A figure as people write it: at most two decimals, a decimal comma in Vietnamese.
fn number(v: f64, lang: Lang) -> String {
    let text = format!("{v:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    match lang {
        Lang::Vi => text.replace('.', ","),
        Lang::En => text.to_owned(),
    }
}

fn unit_suffix(unit: &str) -> &'static str {
    match unit {
        "percent" => " %",
        "per_100000" => " /100.000",
        _ => "",
    }
}

fn status_of(row: &report::Row) -> (&'static str, &'static str) {
    if row.provisional {
        ("provisional", "provisional")
    } else {
        match row.meets_target {
            Some(true) => ("met", "met"),
            Some(false) => ("not-met", "not_met"),
            None => ("none", "no_target"),
        }
    }
}

pub async fn dashboard(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    uri: Uri,
    Query(params): Query<DashboardParams>,
) -> Result<Response, PageError> {
    let lang = officer.lang;
    let table = read_table(&state, &officer, &params).await?;
    let mut targets: Vec<TargetView> = Vec::new();
    let mut overview: Vec<OverviewLine> = Vec::new();
    let mut ordered: Vec<&indicators::Indicator> = state.indicators.iter().collect();
    ordered.sort_by_key(|i| i.order);
    for ind in ordered {
        let rows: Vec<&report::Row> = table
            .rows
            .iter()
            .filter(|r| r.indicator == ind.id)
            .collect();
        let suffix = unit_suffix(&ind.unit);
        let areas: Vec<AreaView> = rows
            .iter()
            .map(|r| {
                let (status, key) = status_of(r);
                AreaView {
                    area: r.area.clone(),
                    name: r.area_name.clone(),
                    value: r
                        .value
                        .map(|v| format!("{}{suffix}", number(v, lang)))
                        .unwrap_or_else(|| "—".into()),
                    fraction: format!("{} / {}", r.numerator, r.denominator),
                    status,
                    status_label: lang.t(key),
                    conflicted: r.conflicted,
                    records: r.records,
                    href: format!(
                        "/office/targets/{}/records?area={}&period={}&geography={}",
                        encode_query(&ind.id),
                        encode_query(&r.area),
                        encode_query(&table.period),
                        encode_query(&table.geography)
                    ),
                }
            })
            .collect();
        let max = rows
            .iter()
            .filter_map(|r| r.value)
            .chain(ind.target)
            .fold(0.0_f64, f64::max)
            .max(1e-9);
        const WIDTH: f64 = 300.0;
        let bars: Vec<Bar> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| Bar {
                y: i * 22,
                text_y: i * 22 + 14,
                width: (r.value.unwrap_or(0.0) / max * WIDTH).max(0.0),
                name: r.area_name.clone(),
                value: r
                    .value
                    .map(|v| format!("{}{suffix}", number(v, lang)))
                    .unwrap_or_else(|| "—".into()),
                status: status_of(r).0,
            })
            .collect();
        let title = lang.pick(&ind.title.vi, &ind.title.en).to_owned();
        let target = match ind.target {
            Some(t) => format!(
                "{} {}{suffix}",
                direction_word(&ind.direction, lang),
                number(t, lang)
            ),
            None => direction_word(&ind.direction, lang).to_owned(),
        };
        let whole = table.whole.iter().find(|r| r.indicator == ind.id);
        let (status, key) = whole.map(status_of).unwrap_or(("none", "no_data_short"));
        overview.push(OverviewLine {
            id: ind.id.clone(),
            title: title.clone(),
            value: whole
                .and_then(|r| r.value)
                .map(|v| format!("{}{suffix}", number(v, lang)))
                .unwrap_or_else(|| "—".into()),
            target: target.clone(),
            status,
            status_label: lang.t(key),
            conflicted: whole.map(|r| r.conflicted).unwrap_or(0),
        });
        targets.push(TargetView {
            id: ind.id.clone(),
            target,
            chart: Chart {
                height: bars.len() * 22 + 4,
                target_x: ind.target.map(|t| 170.0 + t / max * WIDTH),
                label: format!("{}: {title}", lang.t("chart")),
                bars,
            },
            title,
            rows: areas,
        });
    }
    let has_districts = state
        .units
        .geography(&table.geography)
        .is_some_and(|g| g.communes.values().any(|c| c.district_code.is_some()));
    let mut levels = Vec::new();
    for (value, key) in [
        ("province", "province"),
        ("district", "district"),
        ("commune", "commune"),
    ] {
        if value == "district" && !has_districts {
            continue;
        }
        levels.push(Choice {
            value: value.into(),
            label: lang.t(key).into(),
            selected: value == table.level_text,
        });
    }
    let _ = table.level;
    let geographies = state
        .units
        .versions()
        .iter()
        .map(|v| {
            let key = crate::units::Units::key(v);
            Choice {
                selected: key == table.geography,
                label: key.clone(),
                value: key,
            }
        })
        .collect();
    let q = format!(
        "period={}&level={}&geography={}",
        encode_query(&table.period),
        table.level_text,
        encode_query(&table.geography)
    );
    let c = ctx(
        &state,
        &officer,
        "dashboard",
        &uri,
        format!("{} {}", lang.t("dashboard"), table.period),
    );
    Ok(page(
        DashboardPage {
            c,
            periods: period_choices(&table.period),
            geographies,
            levels,
            overview,
            targets,
            csv_href: format!("/office/targets.csv?{q}"),
            xlsx_href: format!(
                "/office/reports/{}.xlsx?geography={}",
                encode_query(&table.period),
                encode_query(&table.geography)
            ),
        }
        .render()?,
    ))
}

fn direction_word(direction: &str, lang: Lang) -> &'static str {
    match direction {
        "at_least" => lang.pick("≥", "≥"),
        "above" => lang.pick(">", ">"),
        "at_most" => lang.pick("≤", "≤"),
        "below" => lang.pick("<", "<"),
        _ => lang.pick("tăng so với kỳ trước", "an increase on the previous period"),
    }
}

pub async fn targets_csv(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    Query(params): Query<DashboardParams>,
) -> Result<Response, PageError> {
    let table = read_table(&state, &officer, &params).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"mam-{}-{}.csv\"",
                    table.period, table.level_text
                ),
            ),
        ],
        report::csv(&table.rows),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct GeographyParam {
    geography: Option<String>,
}

pub async fn report_xlsx(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    Path(file): Path<String>,
    Query(q): Query<GeographyParam>,
) -> Result<Response, PageError> {
    let period = file.strip_suffix(".xlsx").ok_or(PageError::NotFound)?;
    http::workbook_response(&state, &officer.scope, period, given(&q.geography))
        .await
        .map_err(|e| PageError::BadRequest(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// The records behind a number

#[derive(Deserialize)]
pub struct BehindParams {
    area: Option<String>,
    period: Option<String>,
    geography: Option<String>,
}

pub struct BehindView {
    pub href: String,
    pub short: String,
    pub summary: String,
    pub commune: String,
    pub part: String,
    pub value: i64,
    pub conflicted: bool,
}

#[derive(Template)]
#[template(path = "behind.html")]
struct BehindPage {
    c: Ctx,
    indicator: String,
    area: String,
    period: String,
    rows: Vec<BehindView>,
    back: String,
}

pub async fn behind(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    uri: Uri,
    Path(id): Path<String>,
    Query(q): Query<BehindParams>,
) -> Result<Response, PageError> {
    let lang = officer.lang;
    let ind = state
        .indicators
        .iter()
        .find(|i| i.id == id)
        .ok_or(PageError::NotFound)?;
    let area = given(&q.area).ok_or_else(|| PageError::BadRequest("area: required".into()))?;
    let behind = http::records_behind(
        &state,
        &officer.scope,
        ind,
        area,
        given(&q.period),
        given(&q.geography),
    )
    .await
    .map_err(|e| PageError::BadRequest(e.to_string()))?;
    let forms = state.forms();
    // One line per record, naming the sides of the fraction it counts in.
    let mut rows: Vec<BehindView> = Vec::new();
    let mut seen: HashMap<RecordId, usize> = HashMap::new();
    for b in &behind.records {
        let part = lang.t(if b.numerator {
            "numerator"
        } else {
            "denominator"
        });
        if let Some(&i) = seen.get(&b.record.id) {
            let row = &mut rows[i];
            row.part = format!("{}, {part}", row.part);
            row.conflicted |= b.conflicted;
            continue;
        }
        seen.insert(b.record.id, rows.len());
        rows.push(BehindView {
            href: format!("/office/records/{}", b.record.id),
            short: short_id(&b.record.id),
            summary: summary(&b.record, forms.latest(&b.record.form), lang),
            commune: record_commune(&state, &b.record),
            part: part.to_owned(),
            value: b.value,
            conflicted: b.conflicted,
        });
    }
    let title = lang.pick(&ind.title.vi, &ind.title.en).to_owned();
    let area_name = behind.area_name.clone();
    let c = ctx(&state, &officer, "dashboard", &uri, title.clone());
    Ok(page(
        BehindPage {
            c,
            indicator: title,
            area: area_name,
            period: behind.period.clone(),
            rows,
            back: format!(
                "/office?period={}&geography={}",
                encode_query(&behind.period),
                encode_query(&behind.geography)
            ),
        }
        .render()?,
    ))
}

fn short_id(id: &RecordId) -> String {
    id.to_string()[..8].to_owned()
}

/// A line that tells a person which record this is: its first text fields.
fn summary(record: &Record, form: Option<&SurveyForm>, lang: Lang) -> String {
    let Some(form) = form else {
        return String::new();
    };
    form.fields
        .iter()
        .filter(|f| {
            matches!(
                f.kind,
                FieldType::Text | FieldType::Date | FieldType::SelectOne
            )
        })
        .filter_map(|f| {
            record
                .value(&f.name)
                .filter(|v| !v.is_null())
                .map(|v| show(v, Some(f), lang))
        })
        .take(2)
        .collect::<Vec<_>>()
        .join(" · ")
}

/// A value as a person reads it: choice labels, yes/no, dates as written.
fn show(value: &Value, field: Option<&FormField>, lang: Lang) -> String {
    let label = |code: &str| {
        field
            .and_then(|f| f.choices.iter().find(|c| c.code == code))
            .and_then(|c| c.label.as_ref())
            .map(|l| lang.pick(&l.vi, &l.en).to_owned())
            .unwrap_or_else(|| code.to_owned())
    };
    match value {
        Value::Null => lang.t("empty").to_owned(),
        Value::Bool(true) => lang.t("yes").to_owned(),
        Value::Bool(false) => lang.t("no").to_owned(),
        Value::String(s) => label(s),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(label)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Records

#[derive(Deserialize, Default)]
pub struct RecordFilter {
    form: Option<String>,
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
    from: String,
    to: String,
    total: usize,
    page: usize,
    pages: usize,
    lines: Vec<RecordLine>,
    prev_href: Option<String>,
    next_href: Option<String>,
}

/// The communes of the officer's scope on today's map, (code, name), for pickers.
fn scope_communes(state: &AppState, scope: &Scope) -> Vec<(String, String)> {
    let key = current_geography(state);
    let mut list: Vec<(String, String)> = state
        .units
        .geography(&key)
        .map(|g| {
            g.communes
                .values()
                .filter(|c| scope.allows(&c.code, &state.units))
                .map(|c| (c.code.clone(), c.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    list.sort_by(|a, b| a.1.cmp(&b.1));
    list
}

/// Record ids that have at least one refused edit.
async fn rejected_records(state: &AppState) -> Result<BTreeSet<String>, PageError> {
    Ok(state
        .store
        .rejections(None, 100_000)
        .await?
        .iter()
        .filter_map(|r| {
            serde_json::from_str::<Value>(r.edit.get())
                .ok()?
                .get("record")?
                .as_str()
                .map(str::to_owned)
        })
        .collect())
}

fn form_title(state: &AppState, form: &FormId, lang: Lang) -> String {
    state
        .forms()
        .latest(form)
        .and_then(|f| f.title.as_ref())
        .map(|t| lang.pick(&t.vi, &t.en).to_owned())
        .unwrap_or_else(|| form.to_string())
}

fn collected_on(record: &Record, form: Option<&SurveyForm>) -> String {
    form.and_then(|f| f.collected_on.as_deref())
        .and_then(|field| record.value(field))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
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
    let wanted_forms: Vec<String> = match given(&filter.form) {
        Some(f) => form_ids.iter().filter(|id| *id == f).cloned().collect(),
        None => form_ids.clone(),
    };
    let in_scope = accounts::communes_in(&officer.scope, &state.units);
    let communes: Vec<String> = in_scope
        .iter()
        .map(|c| c.to_string())
        .filter(|c| given(&filter.commune).is_none_or(|want| want == c))
        .collect();
    let status = given(&filter.status);
    let mut query = RecordQuery {
        forms: wanted_forms,
        communes,
        ..RecordQuery::default()
    };
    match status {
        Some("conflict") => query.conflicted = Some(true),
        Some("deleted") => query.deleted = Some(true),
        Some("ok") => {
            query.conflicted = Some(false);
            query.deleted = Some(false);
        }
        Some("rejected") => {
            query.ids = Some(rejected_records(&state).await?.into_iter().collect());
        }
        _ => {}
    }
    let village = given(&filter.village).map(str::to_lowercase);
    let (from, to) = (given(&filter.from), given(&filter.to));
    let wanted_page = filter.page.unwrap_or(1).max(1);
    // Form, commune and state page in the database; village and date live inside the records,
    // so those filters read the candidates here.
    let (found, total): (Vec<(String, Record)>, usize) =
        if village.is_some() || from.is_some() || to.is_some() {
            let (candidates, _) = state.store.find_records(&query).await?;
            let matching: Vec<(String, Record)> = candidates
                .into_iter()
                .filter(|r| {
                    village.as_ref().is_none_or(|v| {
                        r.value("village")
                            .and_then(Value::as_str)
                            .is_some_and(|have| have.to_lowercase().contains(v.as_str()))
                    })
                })
                .map(|r| (collected_on(&r, registry.latest(&r.form)), r))
                .filter(|(date, _)| from.is_none_or(|f| date.as_str() >= f))
                .filter(|(date, _)| to.is_none_or(|t| !date.is_empty() && date.as_str() <= t))
                .collect();
            let total = matching.len();
            let skip = (wanted_page - 1) * PAGE;
            (matching.into_iter().skip(skip).take(PAGE).collect(), total)
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
        .map(|(date, r)| RecordLine {
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
            date: date.clone(),
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
            from: from.unwrap_or("").into(),
            to: to.unwrap_or("").into(),
            total,
            page: page_no,
            pages,
            lines,
            prev_href: (page_no > 1).then(|| page_href(page_no - 1)),
            next_href: (page_no < pages).then(|| page_href(page_no + 1)),
        }
        .render()?,
    ))
}

fn badges(r: &Record, lang: Lang) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if r.is_conflicted() {
        out.push(("conflict", lang.t("status_conflict")));
    }
    if r.is_deleted() {
        out.push(("deleted", lang.t("status_deleted")));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// One record, its history, and settling its conflicts

pub struct SiblingView {
    pub index: usize,
    pub value: String,
    pub who: String,
    pub when: String,
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
    pub href: String,
    pub action: String,
    pub title: String,
    pub commune: String,
    pub fields: Vec<FieldView>,
    pub delete_conflict: bool,
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
    record: &Record,
    form: Option<&SurveyForm>,
    authors: &Authors,
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
                .enumerate()
                .map(|(index, s)| {
                    let (who, when) = authors
                        .get(&(s.dot.device, s.dot.seq))
                        .map(|(w, t)| (w.clone(), local_time(*t)))
                        .unwrap_or_else(|| (format!("#{}", s.dot.device), String::new()));
                    SiblingView {
                        index,
                        value: show(&s.value, def, lang),
                        who,
                        when,
                    }
                })
                .collect();
            Some(FieldView {
                label: def
                    .and_then(|d| d.label.as_ref())
                    .map(|l| lang.pick(&l.vi, &l.en).to_owned())
                    .unwrap_or_else(|| name.clone()),
                conflict: register.is_conflict(),
                typed: def.is_none_or(|d| {
                    !matches!(
                        d.kind,
                        FieldType::Repeat | FieldType::Geopoint | FieldType::SelectMany
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
    lang: Lang,
) -> Option<ConflictCard> {
    if !record.is_conflicted() {
        return None;
    }
    let fields: Vec<FieldView> = field_views(record, form, authors, lang)
        .into_iter()
        .filter(|f| f.conflict)
        .collect();
    Some(ConflictCard {
        id: record.id.to_string(),
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
    let history = edits
        .iter()
        .map(|e| HistoryLine {
            when: local_time(e.received_at),
            who: author(e),
            seq: e.seq,
            fields: serde_json::from_str::<Value>(&e.body)
                .ok()
                .and_then(|b| {
                    b.get("fields")?
                        .as_object()
                        .map(|f| f.keys().cloned().collect::<Vec<_>>().join(", "))
                })
                .unwrap_or_default(),
            rejected: e.rejected,
        })
        .collect();
    let derived = record
        .derived
        .iter()
        .map(|(name, value)| {
            let label = form
                .and_then(|f| f.derived.iter().find(|d| &d.name == name))
                .and_then(|d| d.label.as_ref())
                .map(|l| lang.pick(&l.vi, &l.en).to_owned())
                .unwrap_or_else(|| name.clone());
            (label, show(value, None, lang))
        })
        .collect();
    let title = format!(
        "{} {}",
        form_title(state, &record.form, lang),
        short_id(&record.id)
    );
    let c = ctx(state, officer, "records", uri, title.clone());
    let html = RecordPage {
        c,
        title,
        id: record.id.to_string(),
        commune: record_commune(state, &record),
        version: record.version,
        badges: badges(&record, lang),
        fields: field_views(&record, form, &who, lang),
        derived,
        history,
        card: conflict_card(state, &record, form, &who, lang),
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
    let prepared = sync::prepare(vec![edit], catalog, &device, &today);
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
    let mut fields: BTreeMap<String, FieldEdit> = BTreeMap::new();
    let mut problem: Option<String> = None;
    match form.get("delete").map(String::as_str) {
        Some("keep") => {
            // Deleted again, over everything shown: every field and the delete itself.
            for name in record.fields.keys() {
                let value = if name == DELETED_FIELD {
                    Value::Bool(true)
                } else {
                    Value::Null
                };
                fields.insert(
                    name.clone(),
                    FieldEdit {
                        value,
                        supersedes: record.dots(name),
                    },
                );
            }
        }
        Some("restore") => {
            fields.insert(
                DELETED_FIELD.to_owned(),
                FieldEdit {
                    value: Value::Bool(false),
                    supersedes: record.dots(DELETED_FIELD),
                },
            );
        }
        _ => {}
    }
    for name in record.conflicted_fields() {
        if fields.contains_key(name) {
            continue;
        }
        let Some(pick) = form.get(&format!("pick:{name}")) else {
            continue;
        };
        let register = &record.fields[name];
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
            match pick
                .parse::<usize>()
                .ok()
                .and_then(|i| register.siblings().get(i))
            {
                Some(s) => s.value.clone(),
                None => {
                    problem = Some(format!("{name}: no value number {pick:?}"));
                    continue;
                }
            }
        };
        let supersedes: Vec<Dot> = record.dots(name);
        fields.insert(name.to_owned(), FieldEdit { value, supersedes });
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
    let edit = Edit {
        seq: 0,
        record: record.id.to_string(),
        form: record.form.to_string(),
        version: record.version,
        commune: record.commune.to_string(),
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
    let forms: Vec<String> = registry.current().keys().cloned().collect();
    let communes: Vec<String> = accounts::communes_in(&officer.scope, &state.units)
        .iter()
        .map(|c| c.to_string())
        .collect();
    let wanted_page = q.page.unwrap_or(1).max(1);
    let query = RecordQuery {
        forms,
        communes,
        conflicted: Some(true),
        page: Some((
            CONFLICT_PAGE as u32,
            ((wanted_page - 1) * CONFLICT_PAGE) as u32,
        )),
        ..RecordQuery::default()
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
        if let Some(card) = conflict_card(&state, record, form, &authors(&edits), lang) {
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

// ---------------------------------------------------------------------------------------------
// Phones

pub struct PhoneLine {
    pub id: u32,
    pub name: String,
    pub communes: String,
    pub state: &'static str,
    pub state_label: &'static str,
    pub last_sync: String,
    pub last_seq: u64,
    pub rejected: u64,
    pub revoke_action: Option<String>,
}

pub struct Enrolled {
    pub name: String,
    pub code: String,
    pub expires: String,
    pub qr_svg: String,
    pub link: String,
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
    let office: BTreeSet<i64> = state
        .store
        .users()
        .await?
        .iter()
        .map(|u| u.device)
        .collect();
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
                    .map(local_time)
                    .unwrap_or_else(|| lang.t("never").into()),
                last_seq: d.last_seq,
                rejected: d.rejected,
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
    let code = auth::new_code();
    let hours = state.settings.sync.enroll_code_hours;
    let expires = now_ms() + hours as i64 * 3_600_000;
    let id = state
        .store
        .add_device(&name, &communes, &auth::code_hash(&code), expires, now_ms())
        .await?;
    tracing::info!(user = %officer.user.name, device = id, "phone enrolment code created");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if super::is_https(&headers) {
        "https"
    } else {
        "http"
    };
    let link = format!("{scheme}://{host}/app/#code={code}");
    let qr_svg = qrcode::QrCode::new(link.as_bytes())
        .map(|q| {
            q.render::<qrcode::render::svg::Color>()
                .min_dimensions(200, 200)
                .quiet_zone(true)
                .build()
        })
        .unwrap_or_default();
    let enrolled = Enrolled {
        name,
        code,
        expires: local_time(expires),
        qr_svg,
        link,
    };
    phones_page(&state, &officer, &uri, Some(enrolled), None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

pub async fn revoke(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    Path(id): Path<u32>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    officer.check_csrf(&form.csrf)?;
    let device = state.store.device(id).await?.ok_or(PageError::NotFound)?;
    let office: BTreeSet<i64> = state
        .store
        .users()
        .await?
        .iter()
        .map(|u| u.device)
        .collect();
    let ours = !office.contains(&(id as i64))
        && !device.communes.is_empty()
        && device
            .communes
            .iter()
            .all(|c| officer.scope.allows(c.as_str(), &state.units));
    if !ours {
        return Err(PageError::NotFound);
    }
    state.store.revoke(id, now_ms()).await?;
    tracing::info!(user = %officer.user.name, device = id, "phone revoked");
    Ok(Redirect::to("/office/phones").into_response())
}

// ---------------------------------------------------------------------------------------------
// Forms

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
    let parsed = read_form_file(&name, &bytes);
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

/// A form from an uploaded file: JSON as in schemas/forms, or an XLSForm workbook.
fn read_form_file(name: &str, bytes: &[u8]) -> anyhow::Result<SurveyForm> {
    if name.to_lowercase().ends_with(".xlsx") {
        let dir = std::env::temp_dir().join(format!("mam-upload-{}", auth::new_token()));
        std::fs::create_dir_all(&dir)?;
        let stem: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        let path = dir.join(if stem.is_empty() {
            "form.xlsx".into()
        } else {
            stem
        });
        std::fs::write(&path, bytes)?;
        let import = crate::xlsform::convert(&path);
        let _ = std::fs::remove_dir_all(&dir);
        let import = import?;
        if !import.not_converted.is_empty() {
            anyhow::bail!("not converted: {}", import.not_converted.join("; "));
        }
        return Ok(import.form);
    }
    serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("not a form in JSON: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Rejected edits

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
