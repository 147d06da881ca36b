//! HTTP answers the API and the office pages give alike.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::query::Workbook;

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
