//! What the API and the office pages share at the HTTP edge: the office session cookie, who
//! the client is, the workbook download, and an attachment's bytes.

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use crate::listen::PeerAddr;
use crate::query::Workbook;
use crate::state::AppState;
use crate::store::{StoreError, User};
use crate::{auth, now_ms};

/// The office session's cookie.
pub(crate) const SESSION_COOKIE: &str = "mam_session";

/// A cookie's value from the request's headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The office account signed in on this browser, and its session's CSRF token.
pub(crate) async fn session_of(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(User, String)>, StoreError> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    state.store.session(&auth::hash(token), now_ms()).await
}

/// Who sent a request, as the rate limits count clients ([`crate::limits::client`]). Every
/// request carries one (the router's guard puts it there).
#[derive(Clone, Debug)]
pub struct Client(pub String);

impl Client {
    pub(crate) fn of(state: &AppState, req: &Request) -> Client {
        let peer = req
            .extensions()
            .get::<ConnectInfo<PeerAddr>>()
            .map(|c| c.0 .0.ip());
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Client(crate::limits::client(
            peer,
            &forwarded,
            &state.trusted_proxies,
        ))
    }
}

/// A workbook as an attachment.
pub fn download(book: Workbook) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".to_owned(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", book.file_name),
            ),
        ],
        book.bytes,
    )
        .into_response()
}

/// A stored attachment's bytes. Not kept by the browser's cache: a child's photo must not
/// stay on a shared office computer after sign-out (the phone keeps what it opens itself).
pub async fn attachment(
    sha: &str,
    stored: &crate::attachments::Stored,
) -> std::io::Result<Response> {
    let bytes = tokio::fs::read(&stored.path).await?;
    Ok((
        [
            (header::CONTENT_TYPE, stored.media_type.clone()),
            (header::ETAG, format!("\"{sha}\"")),
            (header::CACHE_CONTROL, "no-store".to_owned()),
            (
                header::CONTENT_SECURITY_POLICY,
                "sandbox; default-src 'none'; img-src 'self'; media-src 'self'".to_owned(),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (header::CONTENT_DISPOSITION, "inline".to_owned()),
        ],
        axum::body::Body::from(bytes),
    )
        .into_response())
}
