//! The v1 JSON API for phones and tools: enrolment, sync, forms, indicators and reports.
//! Handlers read the request, call a service, and answer; errors share one JSON shape.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

pub mod attachments;
pub mod auth;
pub mod enroll;
pub mod error;
pub mod forms;
pub mod indicators;
pub mod openrosa;
pub mod sync;
pub mod writers;

pub use error::ApiError;

/// The `/v1` routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/enroll", post(enroll::enroll))
        .route("/v1/sync", post(sync::sync_handler))
        .route("/v1/successor", post(enroll::successor))
        .route("/v1/forms", get(forms::forms_manifest))
        .route("/v1/writers", get(writers::writers))
        .route("/v1/records/{id}/writes", get(writers::writes))
        .route(
            "/v1/uploads/{sha256}",
            get(attachments::upload_status)
                .put(attachments::upload_chunk)
                .layer(
                    // A chunk is read no further than a chunk may be.
                    axum::extract::DefaultBodyLimit::max(crate::attachments::MAX_CHUNK + 1),
                ),
        )
        .route(
            "/v1/records/{id}/attachments/{sha256}",
            get(attachments::record_attachment),
        )
        .route("/v1/indicators", get(indicators::indicator_table))
        .route(
            "/v1/indicators/{id}/records",
            get(indicators::indicator_records),
        )
        .route("/v1/reports/{file}", get(indicators::report_workbook))
        .route("/v1/forms/{id}/{version}", get(forms::form_version))
        .merge(openrosa::routes())
}
