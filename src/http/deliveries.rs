//! `/v1/deliveries`: each event's way to each endpoint, with its attempts, and manual retries.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::AppState;
use super::actions::{RETRY_ON_DISABLED, Retry};
use super::error::ApiError;
use super::extract::{DeliveryQuery, List, Org, PathId};
use super::openapi::{Conflict, DeliveryFilters, IdErrors, ListErrors, PageParams};
use super::views::{AttemptView, DeliveryList, DeliveryView, ListView};
use crate::store::{DeliveryFilter, DeliveryStatus};

/// List deliveries
///
/// Newest first, a page at a time, without their attempts; filters combine. Any other query parameter answers
/// 400.
#[utoipa::path(
    get,
    path = "/v1/deliveries",
    tag = "deliveries",
    security(("api_key" = [])),
    params(DeliveryFilters, PageParams),
    responses(
        (status = 200, description = "One page of deliveries", body = DeliveryList),
        ListErrors,
    ),
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Org(org): Org,
    List(params): List<DeliveryQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(DeliveryStatus::parse_filter(text)?),
    };
    let page_request = params.page.page()?;
    let filter = DeliveryFilter {
        endpoint_id: params.endpoint_id.filter(|s| !s.is_empty()),
        event_id: params.event_id.filter(|s| !s.is_empty()),
        status,
    };
    let page = state.deliveries(&org, &filter, page_request).await?;
    Ok(Json(ListView::from_page(&page)))
}

/// Read a delivery with its attempts
#[utoipa::path(
    get,
    path = "/v1/deliveries/{id}",
    tag = "deliveries",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The delivery's id, `dlv_…`")),
    responses(
        (status = 200, description = "The delivery and every attempt", body = DeliveryView),
        IdErrors,
    ),
)]
pub async fn get_delivery(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
) -> Result<Json<DeliveryView>, ApiError> {
    let (delivery, attempts) = state.delivery(&org, &id).await?.ok_or(ApiError::NotFound("delivery"))?;
    let mut view = DeliveryView::from(&delivery);
    view.attempts = Some(attempts.iter().map(AttemptView::from).collect());
    Ok(Json(view))
}

/// Retry a delivery now
///
/// Makes one attempt as soon as a worker is free, whatever the status. If it fails, a delivery that had
/// `succeeded` or was `undeliverable` is so again, and one waiting for a scheduled retry goes on with its
/// schedule. Refused while the delivery's endpoint is disabled. No request body.
#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/retry",
    tag = "deliveries",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The delivery's id, `dlv_…`")),
    responses(
        (status = 202, description = "The delivery, due now", body = DeliveryView),
        (status = 409, response = Conflict),
        IdErrors,
    ),
)]
pub async fn retry_delivery(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    match state.retry_delivery(&org, &id).await? {
        Retry::Queued(delivery) => Ok((StatusCode::ACCEPTED, Json(DeliveryView::from(&delivery)))),
        Retry::Disabled => Err(ApiError::Conflict("endpoint_disabled", RETRY_ON_DISABLED.into())),
        Retry::Gone => Err(ApiError::NotFound("delivery")),
    }
}
