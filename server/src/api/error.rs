//! Errors of the v1 API in one JSON shape (`{"code", "message", "field"?}`), and reading
//! request bodies within their limits.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use sync_protocol::{ErrorBody, ErrorCode, PROTOCOL_VERSION};
use tracing::{error, info, warn};

use crate::store::StoreError;

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
    #[error("too many attempts; try again in {} s", .0.secs())]
    RateLimited(crate::limits::RetryAfter),
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
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
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
            ApiError::RateLimited(_) => ErrorCode::RateLimited,
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
        match &self {
            ApiError::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    "Bearer".parse().expect("valid header"),
                );
            }
            ApiError::RateLimited(wait) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, wait.secs().into());
            }
            _ => {}
        }
        response
    }
}

impl From<crate::query::QueryError> for ApiError {
    fn from(e: crate::query::QueryError) -> Self {
        match e {
            crate::query::QueryError::Bad { field, message } => bad(field, message),
            crate::query::QueryError::NotFound(m) => ApiError::NotFound(m),
            crate::query::QueryError::Store(e) => e.into(),
            crate::query::QueryError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<crate::sync::request::RequestError> for ApiError {
    fn from(e: crate::sync::request::RequestError) -> Self {
        use crate::sync::request::RequestError as E;
        match e {
            E::Malformed(m) => ApiError::Malformed(m),
            E::UnsupportedProtocol(p) => ApiError::UnsupportedProtocol(p),
            E::BatchTooLarge { limit, got } => ApiError::BatchTooLarge { limit, got },
            E::Store(e) => e.into(),
        }
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
pub(crate) fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body(body, limit)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::Malformed(format!("the body is not valid JSON for this request: {e}"))
    })
}

pub(crate) fn read_body(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
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

pub(crate) fn bad(field: &str, message: String) -> ApiError {
    ApiError::Malformed(format!("{field}: {message}"))
}
