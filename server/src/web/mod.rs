//! The office web app: server-rendered pages in Vietnamese (English on request), for the
//! commune, district and provincial offices. Sessions live in a cookie (HttpOnly,
//! SameSite=Strict, Secure behind HTTPS); every form carries the session's CSRF token; every
//! page, export and record is filtered by the account's scope, and an id from another area
//! answers "not found".

mod common;
mod dashboard;
mod forms;
mod i18n;
mod phones;
mod records;
mod rejected;

use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;

pub use i18n::Lang;

use crate::accounts::{self, LoginError};
use crate::limits::Kind;
use crate::report::Scope;
use crate::respond::{cookie, session_of, Client, SESSION_COOKIE};
use crate::state::AppState;
use crate::store::User;
use crate::{auth, now_ms};

const LANG_COOKIE: &str = "mam_lang";
const LOGIN_CSRF_COOKIE: &str = "mam_login";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/office") }))
        .route("/login", get(login_page).post(login_submit))
        .route("/logout", post(logout))
        .route("/lang", get(set_lang))
        .route("/office", get(dashboard::dashboard))
        .route("/office/targets.csv", get(dashboard::targets_csv))
        .route("/office/reports/{file}", get(dashboard::report_xlsx))
        .route("/office/targets/{id}/records", get(dashboard::behind))
        .route("/office/records", get(records::records))
        .route("/office/records/{id}", get(records::record))
        .route("/office/records.csv", get(records::export_csv))
        .route("/office/records.xlsx", get(records::export_xlsx))
        .route("/office/records/{id}/settle", post(records::settle))
        .route(
            "/office/records/{id}/attachments/{sha256}",
            get(records::attachment),
        )
        .route("/office/conflicts", get(records::conflicts))
        .route("/office/phones", get(phones::phones).post(phones::enrol))
        .route(
            "/office/phones/{id}/revoke",
            get(phones::confirm_revoke).post(phones::revoke),
        )
        .route("/office/forms", get(forms::forms).post(forms::publish))
        .route("/office/rejected", get(rejected::rejected))
        .route("/office/assets/office.css", get(stylesheet))
        .layer(middleware::from_fn(page_guard))
}

/// Headers every page gets, and the same-origin rule for anything that changes state.
async fn page_guard(req: Request, next: Next) -> Response {
    if req.method() == Method::POST && !same_origin(req.headers()) {
        return PageError::Forbidden.into_response();
    }
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A browser names the page a form was sent from: it must be this server.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Older browsers send no Origin; the CSRF token still guards the form.
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../assets/office.css"),
    )
        .into_response()
}

/// Whether the browser reached us over HTTPS (through a proxy that says so).
pub(crate) fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// Cookies are `Secure` when the server is reached over HTTPS; a district laptop on plain HTTP
/// in its own office still works.
fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age_secs: i64) -> String {
    let secure = if is_https(headers) { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}")
}

fn lang_of(headers: &HeaderMap) -> Lang {
    cookie(headers, LANG_COOKIE)
        .and_then(Lang::parse)
        .unwrap_or(Lang::Vi)
}

/// A signed-in office user, with the scope every query is filtered by.
pub struct Officer {
    pub user: User,
    pub scope: Scope,
    pub csrf: String,
    pub lang: Lang,
}

impl Officer {
    /// Refuse a form that does not carry this session's CSRF token.
    pub fn check_csrf(&self, token: &str) -> Result<(), PageError> {
        if constant_time_eq(token.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            tracing::warn!(user = %self.user.name, "form refused: missing or wrong CSRF token");
            Err(PageError::Forbidden)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<Arc<AppState>> for Officer {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some((user, csrf)) = session_of(state, &parts.headers).await? else {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/office");
            return Err(PageError::SignIn(next.to_owned()));
        };
        let scope = accounts::user_scope(&user, &state.units);
        Ok(Officer {
            user,
            scope,
            csrf,
            lang: lang_of(&parts.headers),
        })
    }
}

/// What a page can fail with, shown as a page in the reader's language.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("not signed in")]
    SignIn(String),
    #[error("not found")]
    NotFound,
    #[error("forbidden")]
    Forbidden,
    #[error("{0}")]
    BadRequest(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::NotFound => PageError::NotFound,
            other => PageError::Internal(other.to_string()),
        }
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        PageError::Internal(format!("rendering a page failed: {e}"))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    vi: String,
    en: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, vi, en) = match &self {
            PageError::SignIn(next) => {
                let to = format!("/login?next={}", encode_query(next));
                return Redirect::to(&to).into_response();
            }
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                Lang::Vi.t("not_found").to_owned(),
                Lang::En.t("not_found").to_owned(),
            ),
            PageError::Forbidden => (
                StatusCode::FORBIDDEN,
                Lang::Vi.t("forbidden").to_owned(),
                Lang::En.t("forbidden").to_owned(),
            ),
            PageError::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                format!("{}: {m}", Lang::Vi.t("bad_request")),
                format!("{}: {m}", Lang::En.t("bad_request")),
            ),
            PageError::Internal(m) => {
                tracing::error!(error = %m, "page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Lỗi máy chủ".to_owned(),
                    "Server error".to_owned(),
                )
            }
        };
        let page = ErrorPage {
            status: status.as_u16(),
            vi,
            en,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => status.into_response(),
        }
    }
}

/// Percent-encode a query value.
pub(crate) fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Only paths of this server: never `//elsewhere` or `https://elsewhere`. Browsers drop tabs
/// and line breaks from a `Location` (`/\t/elsewhere` is `//elsewhere` to them) and read `\\`
/// as `/`, so a path holding a control character, a space or a backslash is refused too, as is
/// anything a header cannot carry.
fn local_path(next: Option<&str>) -> String {
    let local = |p: &str| {
        p.starts_with('/')
            && !p.starts_with("//")
            && p.len() <= 2048
            && p.chars().all(|c| c.is_ascii_graphic() && c != '\\')
    };
    match next {
        Some(p) if local(p) => p.to_owned(),
        _ => "/office".to_owned(),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    lang: Lang,
    csrf: String,
    next: String,
    name: String,
    error: Option<String>,
}

impl LoginPage {
    fn t(&self, key: &str) -> &'static str {
        self.lang.t(key)
    }
}

#[derive(Deserialize)]
struct NextParam {
    next: Option<String>,
}

fn login_response(
    headers: &HeaderMap,
    status: StatusCode,
    next: &str,
    name: &str,
    error: Option<String>,
) -> Result<Response, PageError> {
    let csrf = auth::new_token();
    let page = LoginPage {
        lang: lang_of(headers),
        csrf: csrf.clone(),
        next: next.to_owned(),
        name: name.to_owned(),
        error,
    };
    Ok((
        status,
        [(
            header::SET_COOKIE,
            set_cookie(headers, LOGIN_CSRF_COOKIE, &csrf, 3600),
        )],
        Html(page.render()?),
    )
        .into_response())
}

async fn login_page(headers: HeaderMap, Query(q): Query<NextParam>) -> Result<Response, PageError> {
    login_response(
        &headers,
        StatusCode::OK,
        &local_path(q.next.as_deref()),
        "",
        None,
    )
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    csrf: String,
    next: Option<String>,
}

async fn login_submit(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let next = local_path(form.next.as_deref());
    // Sign-in forms carry a token of their own (double submit), so that another site cannot
    // sign a browser into an account of its choosing.
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || !constant_time_eq(expected.as_bytes(), form.csrf.as_bytes()) {
        let lang = lang_of(&headers);
        return login_response(
            &headers,
            StatusCode::FORBIDDEN,
            &next,
            &form.name,
            Some(lang.t("login_expired").to_owned()),
        );
    }
    let lang = lang_of(&headers);
    let name = form.name.trim();
    let retry_after = |response: Response, secs: u64| {
        let mut response = response;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        response
    };
    // Failures count against the client's address; a sign-in that works gives its turn back.
    let limiter = &state.limiter;
    if let Err(wait) = limiter.take(Kind::SignIn, &client.0) {
        state
            .store
            .log_login(name, Some("throttled"), now_ms())
            .await?;
        tracing::warn!(client = %client.0, "sign-in refused: too many failures from this client");
        let message = format!("{} {} s.", lang.t("login_throttled"), wait.secs());
        let response = login_response(
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            name,
            Some(message),
        )?;
        return Ok(retry_after(response, wait.secs()));
    }
    let now = now_ms();
    let outcome = accounts::login(state.store.as_ref(), name, &form.password, now).await;
    if matches!(outcome, Ok(_) | Err(LoginError::Busy)) {
        limiter.give_back(Kind::SignIn, &client.0);
    }
    match outcome {
        Ok(user) => {
            let token = accounts::start_session(state.store.as_ref(), &user, now_ms()).await?;
            tracing::info!(user = %user.name, "signed in");
            let mut response = Redirect::to(&next).into_response();
            let cookies = response.headers_mut();
            let max_age = accounts::SESSION_MS / 1000;
            for value in [
                set_cookie(&headers, SESSION_COOKIE, &token, max_age),
                set_cookie(&headers, LOGIN_CSRF_COOKIE, "", 0),
            ] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    cookies.append(header::SET_COOKIE, v);
                }
            }
            Ok(response)
        }
        Err(LoginError::Wrong) => login_response(
            &headers,
            StatusCode::UNAUTHORIZED,
            &next,
            name,
            Some(lang.t("login_wrong").to_owned()),
        ),
        Err(LoginError::Locked(until)) => login_response(
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            name,
            Some(format!("{} {}.", lang.t("login_locked"), local_time(until))),
        )
        .map(|r| retry_after(r, ((until - now) as u64).div_ceil(1000))),
        Err(LoginError::Busy) => login_response(
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            name,
            Some(lang.t("login_busy").to_owned()),
        )
        .map(|r| retry_after(r, 2)),
        Err(LoginError::Store(e)) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    officer: Officer,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    officer.check_csrf(&form.csrf)?;
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state.store.end_session(&auth::hash(token)).await?;
    }
    Ok((
        [(
            header::SET_COOKIE,
            set_cookie(&headers, SESSION_COOKIE, "", 0),
        )],
        Redirect::to("/login"),
    )
        .into_response())
}

#[derive(Deserialize)]
struct LangParams {
    to: String,
    back: Option<String>,
}

async fn set_lang(headers: HeaderMap, Query(q): Query<LangParams>) -> Response {
    let lang = Lang::parse(&q.to).unwrap_or(Lang::Vi);
    (
        [(
            header::SET_COOKIE,
            set_cookie(&headers, LANG_COOKIE, lang.code(), 365 * 24 * 3600),
        )],
        Redirect::to(&local_path(q.back.as_deref())),
    )
        .into_response()
}

/// Unix milliseconds as a time in Vietnam (UTC+7), `2026-11-29 10:15`.
pub fn local_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000) + 7 * 3600;
    let day = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    let date = common::day_label(&sync_protocol::expr::date_of_day(day));
    format!("{date} {:02}:{:02}", rest / 3600, (rest % 3600) / 60)
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_paths_of_this_server_are_followed() {
        for good in [
            "/office",
            "/office/records?form=child&page=2",
            "/office/records/01a2%20x",
        ] {
            assert_eq!(local_path(Some(good)), good);
        }
        for bad in [
            "//evil.example/",
            "/\t/evil.example/",
            "/\n/evil.example/",
            "/\r\nSet-Cookie: x=1",
            "/\\evil.example",
            "https://evil.example/",
            "evil.example",
            "/ /evil.example",
            "/office/\u{7f}",
            "/office/bản-ghi",
            "",
        ] {
            assert_eq!(local_path(Some(bad)), "/office", "{bad:?}");
        }
        assert_eq!(local_path(None), "/office");
    }
}
