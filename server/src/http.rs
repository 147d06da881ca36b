//! HTTP: the v1 routes, errors in one JSON shape, limits, gzip, timeouts, and a server that
//! drains on shutdown.
//!
//! `app(state)` builds the router; `serve(listener, state, shutdown)` runs it until the
//! shutdown future resolves, then lets in-flight requests finish for the drain timeout.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use sync_protocol::{
    EnrollRequest, EnrollResponse, ErrorBody, ErrorCode, FormId, Rejection, SuccessorRequest,
    PROTOCOL_VERSION,
};
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::TraceLayer;
use tracing::{error, info, info_span, instrument, warn};

use crate::config::Settings;
use crate::forms::FormRegistry;
use crate::indicators::{self, Indicator};
use crate::metrics::Metrics;
use crate::report::{self, Level, Scope};
use crate::store::{Device, DynStore, StoreError};
use crate::units::Units;
use crate::{auth, now_ms, sync};

pub struct AppState {
    pub store: DynStore,
    forms: RwLock<Arc<FormRegistry>>,
    pub units: Units,
    pub indicators: Vec<Indicator>,
    pub settings: Settings,
    pub metrics: Metrics,
    draining: AtomicBool,
    forms_loaded_at: AtomicI64,
    /// Pushes parsed and checked at once: one per core. Parsing is CPU work, and a push's
    /// records take a few times its body in memory while they are built; more at once than
    /// there are cores only makes each wait longer and hold more.
    parsers: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(
        store: DynStore,
        forms: FormRegistry,
        units: Units,
        indicators: Vec<Indicator>,
        settings: Settings,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            forms: RwLock::new(Arc::new(forms)),
            units,
            indicators,
            settings,
            metrics: Metrics::default(),
            draining: AtomicBool::new(false),
            forms_loaded_at: AtomicI64::new(0),
            parsers: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
        })
    }
}

impl AppState {
    /// The published forms as of now.
    pub fn forms(&self) -> Arc<FormRegistry> {
        self.forms.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// At most one reload a second on demand, so unknown forms cannot be used to load the
    /// database.
    fn may_refresh_forms(&self) -> bool {
        let now = now_ms();
        let last = self.forms_loaded_at.load(Ordering::Relaxed);
        now - last >= 1000
            && self
                .forms_loaded_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Reload the published forms from the database (new versions published meanwhile).
    pub async fn refresh_forms(&self) -> anyhow::Result<()> {
        let fresh = FormRegistry::from_store(self.store.as_ref()).await?;
        *self.forms.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(())
    }
}

/// Every error a client can get, answered as `{"code", "message", "field"}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Malformed(String),
    #[error("this server speaks protocol {PROTOCOL_VERSION}, the request says {0}")]
    UnsupportedProtocol(u32),
    #[error("the bearer token is missing, wrong or revoked")]
    Unauthorized,
    #[error("the enrolment code is unknown, already used or expired")]
    InvalidCode,
    #[error("the request body is over the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("a push may hold at most {limit} edits, this one holds {got}")]
    BatchTooLarge { limit: usize, got: usize },
    #[error("the request took longer than {0} s")]
    Timeout(u64),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) | ApiError::UnsupportedProtocol(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized | ApiError::InvalidCode => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge(_) | ApiError::BatchTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            ApiError::Malformed(_) => ErrorCode::MalformedRequest,
            ApiError::UnsupportedProtocol(_) => ErrorCode::UnsupportedProtocol,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::InvalidCode => ErrorCode::InvalidCode,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
            ApiError::Timeout(_) => ErrorCode::Timeout,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(detail) => error!(%detail, "internal error"),
            ApiError::Unavailable(detail) => warn!(%detail, "unavailable"),
            other => info!(code = %other.code(), message = %other, "request refused"),
        }
        let mut response = (
            self.status_code(),
            Json(ErrorBody {
                code: self.code(),
                message: self.to_string(),
                field: None,
            }),
        )
            .into_response();
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("valid header"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => {
                ApiError::Unavailable(format!("database unavailable, retry later: {m}"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// A JSON body read within the body limit, with errors in our shape.
fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body(body, limit)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::Malformed(format!("the body is not valid JSON for this request: {e}"))
    })
}

/// `POST /v1/sync` as read: the keys of `sync_protocol::SyncRequest`, each pushed edit still
/// text.
#[derive(serde::Deserialize)]
struct IncomingSync<'a> {
    protocol: u32,
    #[serde(default, borrow)]
    push: Vec<&'a serde_json::value::RawValue>,
    #[serde(default)]
    cursor: u64,
    #[serde(default = "default_max_bytes")]
    max_bytes: u64,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    lost_through: Option<u64>,
}

fn default_max_bytes() -> u64 {
    sync_protocol::wire::DEFAULT_MAX_BYTES
}

fn read_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge(limit)
        }
        other => ApiError::Malformed(format!(
            "cannot read the request body: {}",
            other.body_text()
        )),
    })
}

pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.settings.server.body_limit_bytes;
    Router::new()
        .route("/v1/enroll", post(enroll))
        .route("/v1/sync", post(sync_handler))
        .route("/v1/successor", post(successor))
        .route("/v1/forms", get(forms_manifest))
        .route("/v1/indicators", get(indicator_table))
        .route("/v1/indicators/{id}/records", get(indicator_records))
        .route("/v1/reports/{file}", get(report_workbook))
        .route("/v1/forms/{id}/{version}", get(form_version))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::web::routes())
        .merge(crate::phone::routes())
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestDecompressionLayer::new())
        .layer(middleware::map_response(unsupported_encoding))
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
            info_span!("request", method = %req.method(), route = route.as_deref().unwrap_or("unmatched"))
        }))
        .with_state(state)
}

/// Time limit and request counting for every route.
async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let secs = state.settings.server.request_timeout_secs;
    let response = match tokio::time::timeout(Duration::from_secs(secs), next.run(req)).await {
        Ok(response) => response,
        // Dropping the handler rolls back its transaction: the phone retries safely.
        Err(_) => ApiError::Timeout(secs).into_response(),
    };
    state
        .metrics
        .request_done(&route, response.status().as_u16());
    response
}

/// The decompression layer refuses encodings other than gzip with an empty 415: say why.
async fn unsupported_encoding(response: Response) -> Response {
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(ErrorBody {
                code: ErrorCode::UnsupportedEncoding,
                message: "request bodies may be plain or gzip (Content-Encoding: gzip)".into(),
                field: None,
            }),
        )
            .into_response();
    }
    response
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return ApiError::Unavailable("shutting down".into()).into_response();
    }
    match state.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

#[instrument(skip_all)]
async fn enroll(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let request: EnrollRequest = parse(body, state.settings.server.body_limit_bytes)?;
    let token = auth::new_token();
    let device = state
        .store
        .enroll(
            &auth::code_hash(&request.code),
            &auth::hash(&token),
            now_ms(),
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::InvalidCode,
            other => other.into(),
        })?;
    info!(device = device.id, "phone enrolled");
    Ok(Json(EnrollResponse {
        device: device.id,
        token,
        communes: device.communes.iter().map(|c| c.to_string()).collect(),
        predecessor: None,
    }))
}

/// A new device number for a phone whose seqs another history used: same collaborator, same
/// communes, linked to the old number on the office's Phones page.
#[instrument(skip_all, fields(device))]
async fn successor(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let old = authenticate(&state, &headers).await?;
    tracing::Span::current().record("device", old.id);
    let request: SuccessorRequest = parse(body, state.settings.server.body_limit_bytes)?;
    if request.protocol != PROTOCOL_VERSION {
        return Err(ApiError::UnsupportedProtocol(request.protocol));
    }
    let id = request.request.trim();
    if id.is_empty() || id.len() > 64 {
        return Err(ApiError::Malformed(
            "request: an id of 1 to 64 characters, made once per successor".into(),
        ));
    }
    let token = auth::new_token();
    let device = state
        .store
        .add_successor(old.id, id, &auth::hash(&token), now_ms())
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::Unauthorized,
            StoreError::Other(message) if message.contains("successor numbers") => {
                ApiError::Forbidden(message)
            }
            other => other.into(),
        })?;
    info!(
        device = device.id,
        predecessor = old.id,
        "phone took a successor number"
    );
    Ok(Json(EnrollResponse {
        device: device.id,
        token,
        communes: device.communes.iter().map(|c| c.to_string()).collect(),
        predecessor: Some(old.id),
    }))
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Device, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized)?;
    match state.store.device_by_token(&auth::hash(token)).await? {
        Some(device) if !device.revoked => Ok(device),
        _ => Err(ApiError::Unauthorized),
    }
}

/// The forms a phone should hold (current version of each, with the ETag it is cached by) and
/// the village lists of its communes.
#[instrument(skip_all, fields(device))]
async fn forms_manifest(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let device = authenticate(&state, &headers).await?;
    tracing::Span::current().record("device", device.id);
    let forms = state.forms();
    let list: Vec<serde_json::Value> = forms
        .current()
        .iter()
        .filter_map(|(id, version)| {
            let published = forms.published(&FormId::parse(id.as_str()).ok()?, *version)?;
            Some(serde_json::json!({
                "id": id,
                "version": version,
                "title": published.form.title,
                "etag": published.etag,
                "url": format!("/v1/forms/{id}/{version}"),
            }))
        })
        .collect();
    let villages = state.store.villages(&device.communes).await?;
    // The device's communes by today's names, for the phone to show.
    let key = state
        .units
        .version_on(&crate::today())
        .map(Units::key)
        .unwrap_or_default();
    let communes: std::collections::BTreeMap<String, String> = device
        .communes
        .iter()
        .map(|c| (c.to_string(), state.units.commune_in(c.as_str(), &key).1))
        .collect();
    Ok(Json(serde_json::json!({
        "protocol": PROTOCOL_VERSION, "forms": list, "villages": villages, "communes": communes,
    }))
    .into_response())
}

/// One published form version. Published versions never change, so the answer carries an
/// ETag and `If-None-Match` gets `304 Not Modified`.
async fn form_version(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    authenticate(&state, &headers).await?;
    let forms = state.forms();
    let not_found =
        || ApiError::NotFound(format!("no form {id:?} version {version:?} is published"));
    let form_id = FormId::parse(id.as_str()).map_err(|_| not_found())?;
    let number: u32 = version.parse().map_err(|_| not_found())?;
    let published = forms.published(&form_id, number).ok_or_else(not_found)?;
    let cache = [
        (header::ETAG, published.etag.clone()),
        (
            header::CACHE_CONTROL,
            "private, max-age=31536000, immutable".to_owned(),
        ),
    ];
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == published.etag || t.trim() == "*")
        });
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    Ok((
        cache,
        [(header::CONTENT_TYPE, "application/json".to_owned())],
        published.body.clone(),
    )
        .into_response())
}

/// Whose figures a reader may see: a read token's scope (`mam token create`), or the scope of
/// the office account signed in on this browser.
async fn reader_scope(state: &AppState, headers: &HeaderMap) -> Result<Scope, ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = bearer else {
        return match crate::web::session_of(state, headers).await {
            Ok(Some((user, _))) => Ok(crate::accounts::user_scope(&user, &state.units)),
            _ => Err(ApiError::Unauthorized),
        };
    };
    let scope = state
        .store
        .api_token_scope(&auth::hash(token))
        .await?
        .ok_or(ApiError::Unauthorized)?;
    serde_json::from_str(&scope).map_err(|e| ApiError::Internal(format!("stored token scope: {e}")))
}

#[derive(serde::Deserialize)]
struct TableParams {
    period: Option<String>,
    level: Option<String>,
    geography: Option<String>,
    format: Option<String>,
}

fn bad(field: &str, message: String) -> ApiError {
    ApiError::Malformed(format!("{field}: {message}"))
}

/// Checks the period and picks the geography (default: the map in force when the period began).
pub(crate) fn period_and_geography(
    state: &AppState,
    period: Option<&str>,
    geography: Option<&str>,
) -> Result<(String, String), ApiError> {
    let period = period.ok_or_else(|| bad("period", "required, e.g. 2020-H1 or 2020".into()))?;
    let (start, _) = indicators::period_bounds(period).ok_or_else(|| {
        bad(
            "period",
            format!("{period:?} is not a half-year (2020-H1, 2020-H2) or a year (2020)"),
        )
    })?;
    let geography = match geography {
        Some(g) => state.units.geography(g).map(Units::key).ok_or_else(|| {
            bad(
                "geography",
                format!("{g:?} is not a geography version (2020, 2021-07, 2025-01, 2025-07)"),
            )
        })?,
        None => state
            .units
            .version_on(&start)
            .map(Units::key)
            .unwrap_or_default(),
    };
    Ok((period.to_owned(), geography))
}

/// `GET /v1/indicators?period=2020-H1&level=district[&geography=2020][&format=csv]`
async fn indicator_table(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<TableParams>,
) -> Result<Response, ApiError> {
    let scope = reader_scope(&state, &headers).await?;
    let (period, geography) = period_and_geography(
        &state,
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
    let rows = indicator_rows(&state, &scope, &period, level, &geography)
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

/// The rows of the indicator table for a period at a level, over what `scope` allows. The
/// inner error says why the level does not exist on that map.
pub(crate) async fn indicator_rows(
    state: &AppState,
    scope: &Scope,
    period: &str,
    level: Level,
    geography: &str,
) -> Result<Result<Vec<report::Row>, String>, StoreError> {
    let cells = state.store.cells(Some(period)).await?;
    Ok(rows_of(state, &cells, scope, period, level, geography))
}

/// [`indicator_rows`] over cells already read, for a page that shows several levels.
pub(crate) fn rows_of(
    state: &AppState,
    cells: &[(indicators::CellKey, indicators::Amount)],
    scope: &Scope,
    period: &str,
    level: Level,
    geography: &str,
) -> Result<Vec<report::Row>, String> {
    let today = crate::today();
    let query = report::Query {
        period,
        level,
        geography,
        scope,
        today: &today,
    };
    report::table(&state.indicators, &state.units, cells, &query)
}

/// `GET /v1/reports/{period}.xlsx`: the six-month or annual report.
async fn report_workbook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(file): Path<String>,
    Query(params): Query<TableParams>,
) -> Result<Response, ApiError> {
    let scope = reader_scope(&state, &headers).await?;
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
    let (period, geography) = period_and_geography(state, Some(period), geography)?;
    let has_districts = state
        .units
        .geography(&geography)
        .is_some_and(|g| g.communes.values().any(|c| c.district_code.is_some()));
    let level = if has_districts {
        Level::District
    } else {
        Level::Commune
    };
    let cells = state.store.cells(Some(&period)).await?;
    let today = crate::today();
    let query = report::Query {
        period: &period,
        level,
        geography: &geography,
        scope,
        today: &today,
    };
    let bytes = report::workbook(&state.indicators, &state.units, &cells, &query)
        .map_err(ApiError::Internal)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"mam-{period}.xlsx\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[derive(serde::Deserialize)]
struct RecordsParams {
    area: Option<String>,
    period: Option<String>,
    geography: Option<String>,
}

/// `GET /v1/indicators/{id}/records?area=CODE&period=…`: the records behind a number.
async fn indicator_records(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<RecordsParams>,
) -> Result<Response, ApiError> {
    let scope = reader_scope(&state, &headers).await?;
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
        &state,
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

/// The records behind one number of an indicator table.
pub(crate) struct Behind {
    pub period: String,
    pub geography: String,
    pub area_name: String,
    pub records: Vec<BehindRecord>,
}

pub(crate) struct BehindRecord {
    pub record: sync_protocol::Record,
    pub numerator: bool,
    pub value: i64,
    pub conflicted: bool,
}

/// The records in `scope` that add to `indicator` for `area` (a commune, district or the
/// province) in a period.
pub(crate) async fn records_behind(
    state: &AppState,
    scope: &Scope,
    indicator: &Indicator,
    area: &str,
    period: Option<&str>,
    geography: Option<&str>,
) -> Result<Behind, ApiError> {
    let (period, geography) = period_and_geography(state, period, geography)?;
    let all = state.units.all_codes();
    let level = if area == "46" {
        Level::Province
    } else if all.contains(area) {
        Level::Commune
    } else {
        Level::District
    };
    let mut area_name = area.to_owned();
    let communes: Vec<String> = all
        .into_iter()
        .filter(|c| scope.allows(c, &state.units))
        .filter(
            |c| match report::area_of(&state.units, c, level, &geography) {
                Ok((a, name)) if a == area => {
                    area_name = name;
                    true
                }
                _ => false,
            },
        )
        .collect();
    let forms: Vec<String> = [&indicator.numerator.form, &indicator.denominator.form]
        .into_iter()
        .cloned()
        .collect();
    let found = state.store.records_of(&forms, &communes).await?;
    let one = [indicator.clone()];
    let mut records = Vec::new();
    for record in found {
        for (key, amount) in indicators::contributions(&one, &record) {
            if key.period == period {
                records.push(BehindRecord {
                    record: record.clone(),
                    numerator: key.part == indicators::NUMERATOR,
                    value: amount.value,
                    conflicted: amount.conflicted > 0,
                });
            }
        }
    }
    Ok(Behind {
        period,
        geography,
        area_name,
        records,
    })
}

/// Writes the sync response. Records go out as stored (the store wrote them as wire JSON),
/// spliced in without being parsed and encoded again.
/// What a sync answers, besides the records' JSON that the pull carries as stored.
struct Reply<'a> {
    acked_through: u64,
    rejected: &'a [Rejection],
    pull: &'a crate::store::Pull,
    forms: &'a std::collections::BTreeMap<String, u32>,
    epoch: &'a str,
    reset: bool,
}

fn sync_reply(reply: Reply<'_>) -> Response {
    let Reply {
        acked_through,
        rejected,
        pull,
        forms,
        epoch,
        reset,
    } = reply;
    let records_len: usize = pull.records.iter().map(|r| r.len() + 1).sum();
    let mut body = String::with_capacity(records_len + 320);
    body.push_str(&format!(
        "{{\"protocol\":{PROTOCOL_VERSION},\"acked_through\":{acked_through},\"rejected\":{},\"records\":[",
        json(rejected)
    ));
    for (i, record) in pull.records.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(record);
    }
    body.push_str(&format!(
        "],\"evicted\":{},\"cursor\":{},\"more\":{},\"forms\":{},\"epoch\":{},\"next_seq\":{}{}}}",
        json(&pull.evicted),
        pull.cursor,
        pull.more,
        json(forms),
        json(epoch),
        acked_through + 1,
        if reset { ",\"reset\":true" } else { "" },
    ));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data always serializes")
}

#[instrument(skip_all, fields(device))]
async fn sync_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let device = authenticate(&state, &headers).await?;
    tracing::Span::current().record("device", device.id);
    let limits = &state.settings.sync;
    // Parsing and checking a large push is CPU work: off the async threads, so that the
    // write transactions of other phones are never kept waiting for a worker.
    let (cursor, requested_bytes, their_epoch, mut prepared) = {
        let state = state.clone();
        let device = device.clone();
        let handle = tokio::runtime::Handle::current();
        let permit = state
            .parsers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("the server is shutting down".into()))?;
        tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            let _parsing = permit;
            let bytes = read_body(body, state.settings.server.body_limit_bytes)?;
            let request: IncomingSync = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::Malformed(format!("the body is not valid JSON for this request: {e}"))
            })?;
            if request.protocol != PROTOCOL_VERSION {
                return Err(ApiError::UnsupportedProtocol(request.protocol));
            }
            let limit = state.settings.sync.max_push;
            if request.push.len() > limit {
                return Err(ApiError::BatchTooLarge {
                    limit,
                    got: request.push.len(),
                });
            }
            // Each edit keeps the text the phone sent: the edit log stores it as received.
            let push = request
                .push
                .iter()
                .enumerate()
                .map(|(i, raw)| {
                    let edit: sync_protocol::Edit =
                        serde_json::from_str(raw.get()).map_err(|e| {
                            ApiError::Malformed(format!("push[{i}] is not a valid edit: {e}"))
                        })?;
                    Ok(sync::Received {
                        edit,
                        text: raw.get().into(),
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            // A form version published since the last reload: reload now rather than refuse.
            let forms = state.forms();
            let unknown = push.iter().any(|r| {
                FormId::parse(r.edit.form.as_str())
                    .is_ok_and(|id| forms.get(&id, r.edit.version).is_none())
            });
            if unknown && state.may_refresh_forms() {
                if let Err(e) = handle.block_on(state.refresh_forms()) {
                    warn!(error = %e, "could not reload the published forms");
                }
            }
            let forms = state.forms();
            let catalog = sync::Catalog {
                forms: &forms,
                units: &state.units,
                indicators: &state.indicators,
            };
            let mut prepared = sync::prepare(push, catalog, &device, &crate::today());
            prepared.lost_through = request.lost_through;
            Ok((request.cursor, request.max_bytes, request.epoch, prepared))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("request parsing task failed: {e}")))??
    };
    let epoch = state.store.epoch().await?;
    prepared.recovering = epoch.recovering(now_ms());
    // What the phone had pulled: from another life of the database, nothing that can be trusted.
    let same_life = their_epoch.as_ref().is_none_or(|e| *e == epoch.id) && cursor <= epoch.counter;
    prepared.cursor = if same_life { cursor } else { 0 };
    let pushed = prepared.len();
    let outcome = if prepared.is_empty() {
        sync::PushOutcome::default()
    } else {
        let forms = state.forms();
        let catalog = sync::Catalog {
            forms: &forms,
            units: &state.units,
            indicators: &state.indicators,
        };
        sync::push(
            state.store.as_ref(),
            catalog,
            &device,
            &prepared,
            now_ms(),
            &crate::today(),
        )
        .await?
    };
    // The records were freed as they were prepared: what is left is their rows and texts.
    drop(prepared);
    let acked_through = if pushed == 0 {
        device.last_seq
    } else {
        outcome.acked_through
    };
    let max_bytes = requested_bytes.clamp(1024, limits.max_page_bytes);
    // A cursor of another life of the database, or one ahead of anything it handed out (it was
    // restored, or failed over to a replica that missed commits): what the phone pulled may be
    // gone or renumbered, so the pull starts again from the beginning.
    let reset = their_epoch.is_some_and(|e| e != epoch.id) || cursor > epoch.counter;
    if reset {
        info!(
            cursor,
            counter = epoch.counter,
            "the phone's cursor is of another epoch or ahead of the database: pulling from the start"
        );
    }
    let from = if reset { 0 } else { cursor };
    let pull = state
        .store
        .pull(&device.communes, from, max_bytes, limits.max_page_records)
        .await?;
    if pushed == 0 {
        state.store.touch_device(device.id, now_ms()).await?;
    }
    state.metrics.sync_done(
        outcome.applied,
        &outcome.rejected,
        pull.records.len(),
        started.elapsed(),
    );
    info!(
        pushed,
        applied = outcome.applied,
        rejected = outcome.rejected.len(),
        acked_through,
        pulled = pull.records.len(),
        more = pull.more,
        "sync"
    );
    Ok(sync_reply(Reply {
        acked_through,
        rejected: &outcome.rejected,
        pull: &pull,
        forms: state.forms().current(),
        epoch: &epoch.id,
        reset,
    }))
}

/// Serve until `shutdown` resolves, then stop accepting and give in-flight requests the drain
/// timeout to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let drain = Duration::from_secs(state.settings.server.drain_timeout_secs);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signal_state = state.clone();
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        shutdown.await;
        signal_state.draining.store(true, Ordering::Relaxed);
        info!("shutting down: draining in-flight requests");
        let _ = tx.send(true);
    });
    let mut rx = rx;
    tokio::select! {
        result = server => result,
        _ = async move {
            let _ = rx.wait_for(|done| *done).await;
            tokio::time::sleep(drain).await;
        } => {
            warn!("drain timeout passed; stopping with requests still in flight");
            Ok(())
        }
    }
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
