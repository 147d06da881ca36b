//! The targets dashboard, its downloads, and the records behind each number.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sync_protocol::RecordId;

use super::common::*;
use super::{encode_query, Lang, Officer, PageError};
use crate::indicators;
use crate::query::{self, QueryError};
use crate::report::{self, Level, Scope};
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub struct DashboardParams {
    period: Option<String>,
    geography: Option<String>,
    level: Option<String>,
    /// The CSV's language (`en` or `vi`).
    lang: Option<String>,
}

pub struct TargetView {
    pub id: String,
    pub title: String,
    pub target: String,
    /// How the indicator is counted, where its definition says.
    pub definition: Option<String>,
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
fn period_choices(selected: &str, lang: Lang) -> Vec<Choice> {
    let year: i32 = crate::today()[..4].parse().unwrap_or(2026);
    let mut out = Vec::new();
    for y in (2019..=year).rev() {
        for p in [format!("{y}"), format!("{y}-H2"), format!("{y}-H1")] {
            out.push(Choice {
                selected: p == selected,
                label: period_label(&p, lang),
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
        query::period_and_geography(&state.tables(), Some(&period), given(&params.geography))
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
    let cells = state.store.cells(Some(&period)).await?;
    let rows = |level| {
        query::rows_of(
            &state.tables(),
            &cells,
            &officer.scope,
            &period,
            level,
            &geography,
        )
        .map_err(PageError::BadRequest)
    };
    let whole = rows(Level::Province)?;
    let rows = rows(level)?;
    Ok(Table {
        whole,
        period,
        geography,
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
                    // Over the outcomes known; those not known yet are named beside.
                    fraction: match r.pending {
                        0 => format!("{} / {}", r.numerator, r.denominator),
                        p => format!(
                            "{} / {} (+{p} {})",
                            r.numerator,
                            r.denominator - p,
                            lang.t("pending_outcome")
                        ),
                    },
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
            _ if ind.target_row.is_none() => lang.t("not_a_plan_target").to_owned(),
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
            definition: ind
                .definition
                .as_ref()
                .map(|d| lang.pick(&d.vi, &d.en).to_owned()),
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
    let geographies = state
        .units
        .versions()
        .iter()
        .map(|v| {
            let key = crate::units::Units::key(v);
            Choice {
                selected: key == table.geography,
                label: geography_label(&v.valid_from, lang),
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
            periods: period_choices(&table.period, lang),
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
    // In the page's language unless the link asks for another (`?lang=en`, `?lang=vi`).
    let english = match params.lang.as_deref() {
        Some("en") => true,
        Some("vi") => false,
        _ => officer.lang == Lang::En,
    };
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
        report::csv_for_people(&table.rows, english),
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
    let by = &officer.user.name;
    query::workbook(
        &state.tables(),
        &officer.scope,
        period,
        given(&q.geography),
        by,
    )
    .await
    .map(crate::respond::download)
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
    let behind = query::records_behind(
        &state.tables(),
        &officer.scope,
        ind,
        area,
        given(&q.period),
        given(&q.geography),
    )
    .await
    .map_err(|e| match e {
        QueryError::NotFound(_) => PageError::NotFound,
        QueryError::Store(e) => e.into(),
        other => PageError::BadRequest(other.to_string()),
    })?;
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
            period: period_label(&behind.period, lang),
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
