//! `/v1/interviews/{candidate_id}`: merge updates that emit `interview.updated` events, and reads.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Org, PathId};
use super::views::EventView;
use crate::domain::interview::{EVENT_TYPE, Interview, InterviewPatch, validate_candidate_id};

#[derive(Serialize)]
pub struct UpdatedInterview {
    interview: Interview,
    event: Option<EventView>,
}

pub async fn update_interview(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(candidate_id): PathId,
    body: JsonBody,
) -> Result<Json<UpdatedInterview>, ApiError> {
    validate_candidate_id(&candidate_id)?;
    let patch = InterviewPatch::parse(&body.value)?;
    let update = state.store.update_interview(&org, &candidate_id, &patch).await?;
    if update.event.is_some() {
        state.event_written(EVENT_TYPE);
    }
    Ok(Json(UpdatedInterview { interview: update.interview, event: update.event.as_ref().map(EventView::from) }))
}

pub async fn get_interview(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(candidate_id): PathId,
) -> Result<Json<Interview>, ApiError> {
    validate_candidate_id(&candidate_id).map_err(|_| ApiError::NotFound("interview"))?;
    let interview = state.store.get_interview(&org, &candidate_id).await?.ok_or(ApiError::NotFound("interview"))?;
    Ok(Json(interview))
}
