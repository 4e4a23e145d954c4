//! `/v1/deliveries`: each event's way to each endpoint, with its attempts, and manual retries.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::AppState;
use super::error::ApiError;
use super::extract::{List, Org, PathId};
use super::views::{AttemptView, DeliveryView, ListView};
use crate::domain::Invalid;
use crate::store::{DeliveryFilter, DeliveryStatus};

pub async fn list_deliveries(
    State(state): State<AppState>,
    Org(org): Org,
    List(params): List,
) -> Result<Json<ListView<DeliveryView>>, ApiError> {
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            DeliveryStatus::parse(text)
                .ok_or_else(|| Invalid::new("status", "must be one of pending, succeeded, undeliverable"))?,
        ),
    };
    let filter = DeliveryFilter {
        endpoint_id: params.endpoint_id.clone().filter(|s| !s.is_empty()),
        event_id: params.event_id.clone().filter(|s| !s.is_empty()),
        status,
    };
    let page = state.store.list_deliveries(&org, &filter, params.page()?).await?;
    Ok(Json(ListView::from_page(&page)))
}

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

pub async fn retry_delivery(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    let delivery = state.retry_delivery(&org, &id).await?.ok_or(ApiError::NotFound("delivery"))?;
    Ok((StatusCode::ACCEPTED, Json(DeliveryView::from(&delivery))))
}
