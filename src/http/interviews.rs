//! `/v1/interviews/{candidate_id}`: merge updates that emit `interview.updated` events, and reads.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Org, PathId};
use super::openapi::{BodyErrors, IdErrors, NotFound};
use super::views::EventView;
use crate::domain::interview::{EVENT_TYPE, Interview, InterviewPatch, validate_candidate_id};

/// The interview after a merge update, and the event the update emitted.
#[derive(Serialize, ToSchema)]
pub struct UpdatedInterview {
    interview: Interview,
    /// `null` when the update changed nothing, so nothing was sent.
    #[schema(required = true)]
    event: Option<EventView>,
}

/// Update an interview
///
/// A merge update: each field sent replaces the stored value, `null` clears it, and a field left out keeps its
/// value. When anything changed, a `candidate.interview.updated` event is emitted whose `changes` hold exactly
/// the fields that changed, and it is on its way to every enabled subscribed endpoint before this answers. A
/// candidate never written before starts with every field `null`.
#[utoipa::path(
    patch,
    path = "/v1/interviews/{candidate_id}",
    tag = "interviews",
    security(("api_key" = [])),
    params(("candidate_id" = String, Path, description = "Your id of the candidate: 1 to 255 bytes, no control characters")),
    request_body = InterviewPatch,
    responses(
        (status = 200, description = "The interview as updated, and the event emitted", body = UpdatedInterview),
        BodyErrors,
        (status = 404, response = NotFound),
    ),
)]
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

/// Read an interview
#[utoipa::path(
    get,
    path = "/v1/interviews/{candidate_id}",
    tag = "interviews",
    security(("api_key" = [])),
    params(("candidate_id" = String, Path, description = "Your id of the candidate")),
    responses(
        (status = 200, description = "The interview's current data", body = Interview),
        IdErrors,
    ),
)]
pub async fn get_interview(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(candidate_id): PathId,
) -> Result<Json<Interview>, ApiError> {
    validate_candidate_id(&candidate_id).map_err(|_| ApiError::NotFound("interview"))?;
    let interview = state.store.get_interview(&org, &candidate_id).await?.ok_or(ApiError::NotFound("interview"))?;
    Ok(Json(interview))
}
