//! `/v1/interviews/{candidate_id}`: merge updates that emit `interview.updated` events, and reads.

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Org, PathId};
use super::openapi::{BodyErrors, IdErrors, NotFound};
use super::views::EventView;
use crate::domain::interview::{EVENT_TYPE, Interview, InterviewPatch, validate_candidate_id};
use crate::domain::time::format_ms;
use crate::store::EventRecord;

// The documented shape of the answer, which `updated_body` writes from the stored bytes.
/// The interview after a merge update, and the event the update emitted.
#[derive(Serialize, ToSchema)]
#[cfg_attr(not(test), allow(dead_code))]
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
) -> Result<impl IntoResponse, ApiError> {
    validate_candidate_id(&candidate_id)?;
    let patch = InterviewPatch::parse(&body.value)?;
    let update = state.store.update_interview(&org, &candidate_id, &patch).await?;
    if update.event.is_some() {
        state.event_written(EVENT_TYPE);
    }
    Ok(([(CONTENT_TYPE, "application/json")], updated_body(&update.data, update.event.as_ref())))
}

/// The answer to an update, [`UpdatedInterview`], written around the interview's stored form and the event's
/// body as they are: neither is serialized or checked again.
fn updated_body(interview: &str, event: Option<&EventRecord>) -> String {
    let Some(event) = event else {
        return format!(r#"{{"interview":{interview},"event":null}}"#);
    };
    let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut body = String::with_capacity(interview.len() + event.payload.len() + 160);
    body.push_str(r#"{"interview":"#);
    body.push_str(interview);
    body.push_str(r#","event":{"id":"#);
    body.push_str(&text(&event.id));
    body.push_str(r#","type":"#);
    body.push_str(&text(&event.event_type));
    body.push_str(r#","payload":"#);
    body.push_str(&event.payload);
    body.push_str(r#","created_at":"#);
    body.push_str(&text(&format_ms(event.created_at)));
    body.push_str("}}");
    body
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

#[cfg(test)]
mod tests {
    use super::{UpdatedInterview, updated_body};
    use crate::domain::interview::{Interview, InterviewPatch};
    use crate::http::views::EventView;
    use crate::store::EventRecord;

    /// The hand-written answer is the one its documented shape serializes to, byte for byte.
    #[test]
    fn the_answer_to_an_update_is_its_documented_shape() {
        let patch =
            serde_json::json!({"interview_outcome": "completed", "interview_custom_data": {"a\"b": [1, "\u{e9}\n"]}});
        let applied = Interview::empty("cand_\"1").apply(&InterviewPatch::parse(&patch).unwrap());
        let event = EventRecord {
            seq: 7,
            id: "evt_0196b2c3d4e5f60718293a4b".into(),
            event_type: "candidate.interview.updated".into(),
            payload: applied.event_body.clone().unwrap(),
            created_at: 1_744_732_800_123,
        };
        let expected = |event: Option<&EventRecord>| {
            let shape = UpdatedInterview { interview: applied.interview.clone(), event: event.map(EventView::from) };
            serde_json::to_string(&shape).unwrap()
        };
        assert_eq!(updated_body(&applied.data, Some(&event)), expected(Some(&event)));
        assert_eq!(updated_body(&applied.data, None), expected(None));
    }
}
