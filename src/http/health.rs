//! Liveness, readiness and metrics for operators.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

/// How the process is doing, in one word or two.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` (live), `ready`, or `store unreachable` (not ready).
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// Liveness
///
/// Answers as long as the process serves HTTP; needs no API key and no store.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Health, example = json!({"status": "ok"}))),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness
///
/// Ready when the store answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The store answers", body = Health, example = json!({"status": "ready"})),
        (status = 503, description = "The store does not answer", body = Health,
            example = json!({"status": "store unreachable"})),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(Health { status: "ready" })),
        Err(error) => {
            tracing::warn!(%error, "store is not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "store unreachable" }))
        }
    }
}

/// Prometheus metrics
///
/// Counters and histograms of this process in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
        content_type = "text/plain; version=0.0.4")),
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
