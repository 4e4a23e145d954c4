//! `/v1/events`: what happened, newest first.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::error::ApiError;
use super::extract::{List, Org, PathId};
use super::views::{EventView, ListView};
use crate::domain::ids;

pub async fn list_events(
    State(state): State<AppState>,
    Org(org): Org,
    List(params): List,
) -> Result<Json<ListView<EventView>>, ApiError> {
    let page = state.store.list_events(&org, params.page()?).await?;
    Ok(Json(ListView::from_page(&page)))
}

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
