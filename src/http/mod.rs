//! The JSON API: routes, shared state, extractors and the one error type. Handlers extract, validate into
//! domain types, call the store, and map the result; they hold no SQL and no HTTP client.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::http::header::ALLOW;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::Notify;

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::store::Store;

pub mod actions;
mod calls;
mod deliveries;
mod endpoints;
pub mod error;
mod events;
pub mod extract;
mod health;
mod interviews;
pub mod keys;
pub mod openapi;
pub mod views;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<ServeConfig>,
    /// Rung after a manual retry so local workers claim it at once. (New deliveries reach them through the
    /// store's handoff, which also tells them of any it had no room for.)
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// Which organization recently seen API keys belong to.
    pub keys: Arc<keys::KeyCache>,
}

impl AppState {
    /// Called after an event and its deliveries are committed.
    pub fn event_written(&self, event_type: &str) {
        self.metrics.event_created(event_type);
    }
}

/// The whole HTTP surface. `api` false serves only health and metrics (a worker-only process), and not the
/// OpenAPI document either, since it describes routes such a process does not have.
pub fn router(state: AppState, api: bool) -> Router {
    let operator = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics));
    let router = if api {
        let document =
            Router::new().route("/openapi.json", get(openapi::get_openapi)).with_state(openapi::Document::new());
        operator
            .merge(document)
            .route("/v1/endpoints", post(endpoints::create_endpoint).get(endpoints::list_endpoints))
            .route(
                "/v1/endpoints/{id}",
                get(endpoints::get_endpoint).patch(endpoints::update_endpoint).delete(endpoints::delete_endpoint),
            )
            .route("/v1/endpoints/{id}/secret", get(endpoints::get_secret))
            .route("/v1/endpoints/{id}/rotate-secret", post(endpoints::rotate_secret))
            .route("/v1/endpoints/{id}/test", post(endpoints::test_endpoint))
            .route("/v1/interviews/{id}", get(interviews::get_interview).patch(interviews::update_interview))
            .route("/v1/calls", post(calls::create_call))
            .route("/v1/events", get(events::list_events))
            .route("/v1/events/{id}", get(events::get_event))
            .route("/v1/deliveries", get(deliveries::list_deliveries))
            .route("/v1/deliveries/{id}", get(deliveries::get_delivery))
            .route("/v1/deliveries/{id}/retry", post(deliveries::retry_delivery))
            .nest("/settings", crate::settings::router(state.config.session_key.as_ref()))
    } else {
        operator
    };
    let limit = state.config.max_body_bytes;
    let app = router
        .fallback(|| async { error::ApiError::NotFound("route") })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state);
    // axum adds `Allow` to its 405 outside every layer of the route, so only a layer around the whole router sees
    // which methods the path answers; hence the router nested as the fallback of another.
    Router::new().fallback_service(app).layer(middleware::from_fn(method_not_allowed))
}

/// Puts axum's empty 405 into the API's envelope, naming the methods the path answers and keeping `Allow`.
/// The settings pages are left alone: they answer HTML, and a browser only sends them what their forms send.
async fn method_not_allowed(request: Request, next: Next) -> Response {
    // Cloning a standard method copies a tag; this runs on every request, so nothing is allocated until a 405.
    let method = request.method().clone();
    let path = request.uri().path();
    let settings = path == "/settings" || path.starts_with("/settings/");
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED || settings {
        return response;
    }
    let allow = response.headers().get(ALLOW).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    error::ApiError::MethodNotAllowed { method: method.to_string(), allow }.into_response()
}
