//! `/v1/events`: what happened, newest first.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::error::ApiError;
use super::extract::{List, Org, PageQuery, PathId};
use super::openapi::{IdErrors, ListErrors, PageParams};
use super::views::{EventList, EventView, ListView};
use crate::domain::ids;

/// List events
///
/// Newest first, a page at a time, each with the exact payload its deliveries send. Any query parameter besides
/// `cursor` and `limit` answers 400 (filters are the deliveries list's).
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    security(("api_key" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "One page of events", body = EventList),
        ListErrors,
    ),
)]
pub async fn list_events(
    State(state): State<AppState>,
    Org(org): Org,
    List(params): List<PageQuery>,
) -> Result<Json<EventList>, ApiError> {
    let page = state.store.list_events(&org, params.page()?).await?;
    Ok(Json(ListView::from_page(&page)))
}

/// Read an event
#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    tag = "events",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The event's id, `evt_…`")),
    responses(
        (status = 200, description = "The event", body = EventView),
        IdErrors,
    ),
)]
pub async fn get_event(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
) -> Result<Json<EventView>, ApiError> {
    if !ids::has_prefix(&id, ids::EVENT) {
        return Err(ApiError::NotFound("event"));
    }
    let event = state.store.get_event(&org, &id).await?.ok_or(ApiError::NotFound("event"))?;
    Ok(Json(EventView::from(&event)))
}
