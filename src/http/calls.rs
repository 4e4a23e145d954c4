//! `/v1/calls`: a completed call becomes a `call_completed` event whose body is the call object as received.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Org};
use super::openapi::{BodyErrors, CallObject};
use super::views::EventView;
use crate::domain::call;
use crate::store::Fanout;

/// The event a recorded call became.
#[derive(Serialize, ToSchema)]
pub struct RecordedCall {
    event: EventView,
}

/// Record a completed call
///
/// Emits a `call_completed` event (deprecated) whose body is the call object exactly as received, unknown
/// fields included, to the endpoints that chose `call_completed` in their `event_types`.
#[utoipa::path(
    post,
    path = "/v1/calls",
    tag = "calls",
    security(("api_key" = [])),
    request_body = CallObject,
    responses(
        (status = 201, description = "The event emitted", body = RecordedCall),
        BodyErrors,
    ),
)]
pub async fn create_call(
    State(state): State<AppState>,
    Org(org): Org,
    body: JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    call::validate(&body.value)?;
    // The parser accepted it, so it is UTF-8; checked again rather than assumed.
    let payload = std::str::from_utf8(&body.raw).map_err(|_| ApiError::BadRequest("body is not UTF-8".into()))?;
    let (event, _) = state.store.create_event(&org, call::EVENT_TYPE, payload.trim(), Fanout::Subscribed).await?;
    state.event_written(call::EVENT_TYPE);
    Ok((StatusCode::CREATED, Json(RecordedCall { event: EventView::from(&event) })))
}
