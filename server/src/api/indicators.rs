//! `GET /v1/indicators`, `GET /v1/indicators/{id}/records` and `GET /v1/reports/{period}.xlsx`:
//! the indicator tables, the records behind a number, and the report workbooks.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::api::auth::reader_scope;
use crate::api::error::{bad, ApiError};
use crate::query::{self, indicator_rows, period_and_geography, records_behind};
use crate::report::{self, Level, Scope};
use crate::respond::Client;
use crate::state::AppState;

#[derive(serde::Deserialize)]
pub(crate) struct TableParams {
    period: Option<String>,
    level: Option<String>,
    geography: Option<String>,
    format: Option<String>,
}

/// `GET /v1/indicators?period=2020-H1&level=district[&geography=2020][&format=csv]`
pub(crate) async fn indicator_table(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Extension(client): Extension<Client>,
    Query(params): Query<TableParams>,
) -> Result<Response, ApiError> {
    let scope = reader_scope(&state, &headers, &client).await?;
    let (period, geography) = period_and_geography(
        &state.tables(),
        params.period.as_deref(),
        params.geography.as_deref(),
    )?;
    let level_text = params.level.as_deref().unwrap_or("province");
    let level = Level::parse(level_text).ok_or_else(|| {
        bad(
            "level",
            format!("{level_text:?} is not commune, district or province"),
        )
    })?;
    let rows = indicator_rows(&state.tables(), &scope, &period, level, &geography)
        .await?
        .map_err(|m| bad("level", m))?;
    if params.format.as_deref() == Some("csv") {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            report::csv(&rows),
        )
            .into_response());
    }
    Ok(Json(serde_json::json!({
        "period": period, "level": level_text, "geography": geography, "rows": rows,
    }))
    .into_response())
}

/// `GET /v1/reports/{period}.xlsx`: the six-month or annual report.
pub(crate) async fn report_workbook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Extension(client): Extension<Client>,
    Path(file): Path<String>,
    Query(params): Query<TableParams>,
) -> Result<Response, ApiError> {
    let scope = reader_scope(&state, &headers, &client).await?;
    let period = file
        .strip_suffix(".xlsx")
        .ok_or_else(|| ApiError::NotFound(format!("no report {file:?}: ask for PERIOD.xlsx")))?;
    workbook_response(&state, &scope, period, params.geography.as_deref()).await
}

/// The report workbook of a period, as a download, over the cells `scope` allows.
pub(crate) async fn workbook_response(
    state: &AppState,
    scope: &Scope,
    period: &str,
    geography: Option<&str>,
) -> Result<Response, ApiError> {
    let book = query::workbook(&state.tables(), scope, period, geography, "API").await?;
    Ok(crate::respond::download(book))
}

#[derive(serde::Deserialize)]
pub(crate) struct RecordsParams {
    area: Option<String>,
    period: Option<String>,
    geography: Option<String>,
}

/// `GET /v1/indicators/{id}/records?area=CODE&period=…`: the records behind a number.
pub(crate) async fn indicator_records(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
    Query(params): Query<RecordsParams>,
) -> Result<Response, ApiError> {
    let scope = reader_scope(&state, &headers, &client).await?;
    let indicator = state
        .indicators
        .iter()
        .find(|i| i.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no indicator {id:?}")))?;
    let area = params.area.as_deref().ok_or_else(|| {
        bad(
            "area",
            "required: a commune, district or province code".into(),
        )
    })?;
    let behind = records_behind(
        &state.tables(),
        &scope,
        indicator,
        area,
        params.period.as_deref(),
        params.geography.as_deref(),
    )
    .await?;
    let rows: Vec<serde_json::Value> = behind
        .records
        .iter()
        .map(|b| {
            serde_json::json!({
                "record": b.record.id,
                "form": b.record.form,
                "commune": b.record.commune,
                "part": if b.numerator { "numerator" } else { "denominator" },
                "value": b.value,
                "conflicted": b.conflicted,
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "indicator": id, "area": area, "period": behind.period, "records": rows }),
    )
    .into_response())
}
