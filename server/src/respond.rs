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

/// A stored attachment's bytes, or the one range of them the request asks for (`Range:
/// bytes=A-B`, `A-`, `-N`: what a video player seeks with; `206`, or `416` for a range past the
/// end). Not kept by the browser's cache: a child's photo must not stay on a shared office
/// computer after sign-out (the phone keeps what it opens itself).
pub async fn attachment(
    sha: &str,
    stored: &crate::attachments::Stored,
    headers: &HeaderMap,
) -> std::io::Result<Response> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let size = stored.size;
    let wanted = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| byte_range(r, size));
    let common = [
        (header::CONTENT_TYPE, stored.media_type.clone()),
        (header::ETAG, format!("\"{sha}\"")),
        (header::CACHE_CONTROL, "no-store".to_owned()),
        (
            header::CONTENT_SECURITY_POLICY,
            "sandbox; default-src 'none'; img-src 'self'; media-src 'self'".to_owned(),
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        (header::CONTENT_DISPOSITION, "inline".to_owned()),
        (header::ACCEPT_RANGES, "bytes".to_owned()),
    ];
    match wanted {
        None if headers.contains_key(header::RANGE) => Ok((
            axum::http::StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{size}"))],
        )
            .into_response()),
        None => {
            let bytes = tokio::fs::read(&stored.path).await?;
            Ok((common, axum::body::Body::from(bytes)).into_response())
        }
        Some((start, end)) => {
            let mut file = tokio::fs::File::open(&stored.path).await?;
            file.seek(std::io::SeekFrom::Start(start)).await?;
            let mut bytes = vec![0; (end - start + 1) as usize];
            file.read_exact(&mut bytes).await?;
            Ok((
                axum::http::StatusCode::PARTIAL_CONTENT,
                common,
                [(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))],
                axum::body::Body::from(bytes),
            )
                .into_response())
        }
    }
}

/// One range of a `Range: bytes=…` header within `size` bytes, as (first, last) included;
/// `None` for anything else (several ranges, other units, past the end).
fn byte_range(text: &str, size: u64) -> Option<(u64, u64)> {
    let spec = text.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().ok()?, size - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

/// The address phones reach the server by: `[server] public_url` when set, else the one this
/// request used (which a phone can reach only if it is not this machine's own).
pub(crate) fn public_base(state: &crate::state::AppState, headers: &HeaderMap) -> String {
    match &state.settings.server.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(axum::http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("localhost");
            let https = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.eq_ignore_ascii_case("https"));
            let scheme = if https { "https" } else { "http" };
            format!("{scheme}://{host}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn ranges_read_as_browsers_send_them() {
        assert_eq!(byte_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(byte_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(byte_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(byte_range("bytes=950-2000", 1000), Some((950, 999)));
        assert_eq!(byte_range("bytes=1000-", 1000), None);
        assert_eq!(byte_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(byte_range("items=0-1", 1000), None);
    }
}
