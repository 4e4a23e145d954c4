//! Interviews and their `interview.updated` events: parsing a merge update, applying it, and computing the
//! `changes` diff exactly as the public contract describes.

use serde::Serialize;
use serde_json::{Map, Value};

use super::Invalid;
use super::time::normalize_rfc3339;

/// The event type endpoints subscribe to for interview changes.
pub const EVENT_TYPE: &str = "candidate.interview.updated";
/// The `event` field of the body receivers get.
pub const BODY_EVENT: &str = "interview.updated";

/// The outcomes the contract allows (besides `null`).
pub const OUTCOMES: [&str; 6] =
    ["candidate_not_interested", "ai_opt_out", "qualified", "unqualified", "candidate_not_responsive", "completed"];

/// The updatable fields, in the order the contract lists them; `changes` and `data` keep this order.
pub const FIELDS: [&str; 5] =
    ["interview_completed_at", "interview_sent_at", "interview_outcome", "interview_summary", "interview_custom_data"];

/// Longest candidate id accepted.
pub const MAX_CANDIDATE_ID: usize = 255;

/// The current state of one candidate's interview: the `data` object of the contract. Every field is
/// always present when written out, `null` when unknown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interview {
    pub candidate_id: String,
    /// RFC 3339 in UTC with `Z`.
    pub interview_completed_at: Option<String>,
    /// RFC 3339 in UTC with `Z`.
    pub interview_sent_at: Option<String>,
    /// One of [`OUTCOMES`].
    pub interview_outcome: Option<String>,
    pub interview_summary: Option<String>,
    pub interview_custom_data: Option<Map<String, Value>>,
}

/// A validated merge update: the fields the caller sent (absent = unchanged), each with its new value
/// already normalized (`null` clears).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InterviewPatch {
    values: Vec<(usize, Value)>,
}

/// What applying a patch did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The interview after the update.
    pub interview: Interview,
    /// The body of the `interview.updated` event, or `None` when nothing changed.
    pub event_body: Option<String>,
}

/// Checks a candidate id taken from the URL path.
pub fn validate_candidate_id(id: &str) -> Result<(), Invalid> {
    if id.is_empty() || id.len() > MAX_CANDIDATE_ID {
        return Err(Invalid::new("candidate_id", format!("must be 1 to {MAX_CANDIDATE_ID} bytes long")));
    }
    if id.chars().any(char::is_control) {
        return Err(Invalid::new("candidate_id", "must not contain control characters"));
    }
    Ok(())
}

impl Interview {
    /// A candidate never written before: every field `null`, which is what the first update diffs against.
    pub fn empty(candidate_id: impl Into<String>) -> Self {
        Self {
            candidate_id: candidate_id.into(),
            interview_completed_at: None,
            interview_sent_at: None,
            interview_outcome: None,
            interview_summary: None,
            interview_custom_data: None,
        }
    }

    /// The value of field `FIELDS[index]` as JSON.
    fn value(&self, index: usize) -> Value {
        let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
        match index {
            0 => text(&self.interview_completed_at),
            1 => text(&self.interview_sent_at),
            2 => text(&self.interview_outcome),
            3 => text(&self.interview_summary),
            _ => self.interview_custom_data.clone().map_or(Value::Null, Value::Object),
        }
    }

    /// Sets field `FIELDS[index]` from a value [`InterviewPatch::parse`] has already checked.
    fn set(&mut self, index: usize, value: Value) {
        let text = match &value {
            Value::String(s) => Some(s.clone()),
            _ => None,
        };
        match index {
            0 => self.interview_completed_at = text,
            1 => self.interview_sent_at = text,
            2 => self.interview_outcome = text,
            3 => self.interview_summary = text,
            _ => {
                self.interview_custom_data = match value {
                    Value::Object(map) => Some(map),
                    _ => None,
                }
            }
        }
    }

    /// The stored and sent JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the stored form back; `None` if it is not an interview (which only a damaged store produces).
    pub fn from_json(text: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(text).ok()?;
        let object = value.as_object()?;
        let candidate_id = object.get("candidate_id")?.as_str()?.to_owned();
        let mut interview = Self::empty(candidate_id);
        for (index, name) in FIELDS.iter().enumerate() {
            interview.set(index, object.get(*name).cloned().unwrap_or(Value::Null));
        }
        Some(interview)
    }

    /// Applies a merge update and computes the event it causes. `changes` holds exactly the fields whose
    /// value differs, in contract order; an update that changes nothing yields no event.
    pub fn apply(&self, patch: &InterviewPatch) -> Applied {
        let mut next = self.clone();
        for (index, value) in &patch.values {
            next.set(*index, value.clone());
        }
        let mut changes = Map::new();
        for (index, name) in FIELDS.iter().enumerate() {
            let (from, to) = (self.value(index), next.value(index));
            if from != to {
                let mut change = Map::new();
                change.insert("from".into(), from);
                change.insert("to".into(), to);
                changes.insert((*name).into(), Value::Object(change));
            }
        }
        let event_body = (!changes.is_empty()).then(|| {
            let mut body = Map::new();
            body.insert("event".into(), Value::String(BODY_EVENT.into()));
            body.insert("changes".into(), Value::Object(changes));
            body.insert("data".into(), serde_json::to_value(&next).unwrap_or(Value::Null));
            Value::Object(body).to_string()
        });
        Applied { interview: next, event_body }
    }
}

impl InterviewPatch {
    /// Parses the body of `PATCH /v1/interviews/{candidate_id}`: a JSON object holding any subset of the five
    /// fields. Unknown fields, wrong types and outcomes outside the contract are refused, naming the field.
    pub fn parse(body: &Value) -> Result<Self, Invalid> {
        let Some(object) = body.as_object() else {
            return Err(Invalid::new("body", "must be a JSON object"));
        };
        let mut values = Vec::with_capacity(object.len());
        for (name, value) in object {
            let Some(index) = FIELDS.iter().position(|f| f == name) else {
                return Err(Invalid::new(
                    name.as_str(),
                    format!("is not an interview field; the fields are {}", FIELDS.join(", ")),
                ));
            };
            let value = match (index, value) {
                (_, Value::Null) => Value::Null,
                (0 | 1, Value::String(text)) => match normalize_rfc3339(text) {
                    Some(utc) => Value::String(utc),
                    None => {
                        return Err(Invalid::new(
                            name.as_str(),
                            "must be an RFC 3339 timestamp such as 2025-04-15T16:00:00Z, or null",
                        ));
                    }
                },
                (0 | 1, _) => {
                    return Err(Invalid::new(name.as_str(), "must be an RFC 3339 timestamp string or null"));
                }
                (2, Value::String(outcome)) if OUTCOMES.contains(&outcome.as_str()) => value.clone(),
                (2, _) => {
                    return Err(Invalid::new(name.as_str(), format!("must be one of {} or null", OUTCOMES.join(", "))));
                }
                (3, Value::String(_)) => value.clone(),
                (3, _) => return Err(Invalid::new(name.as_str(), "must be a string or null")),
                (_, Value::Object(_)) => value.clone(),
                (_, _) => return Err(Invalid::new(name.as_str(), "must be a JSON object or null")),
            };
            values.push((index, value));
        }
        Ok(Self { values })
    }
}

/// The document's example `interview.updated` body, byte for byte as `POST /v1/endpoints/{id}/test` sends it.
pub const EXAMPLE_BODY: &str = r#"{"event":"interview.updated","changes":{"interview_completed_at":{"from":null,"to":"2025-04-15T16:00:00Z"},"interview_outcome":{"from":null,"to":"completed"}},"data":{"candidate_id":"cand_12345678","interview_completed_at":"2025-04-15T16:00:00Z","interview_sent_at":"2025-04-14T12:00:00Z","interview_outcome":"completed","interview_summary":"Example of customizable interview summary text","interview_custom_data":{"can_lift_50lbs":true,"eligible_to_work":true}}}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(body: Value) -> InterviewPatch {
        InterviewPatch::parse(&body).unwrap()
    }

    #[test]
    fn the_documents_example_is_what_we_send() {
        let before = patch(json!({
            "interview_sent_at": "2025-04-14T12:00:00Z",
            "interview_summary": "Example of customizable interview summary text",
            "interview_custom_data": {"can_lift_50lbs": true, "eligible_to_work": true}
        }));
        let start = Interview::empty("cand_12345678").apply(&before).interview;
        let update = patch(json!({"interview_completed_at": "2025-04-15T16:00:00Z", "interview_outcome": "completed"}));
        let body = start.apply(&update).event_body.unwrap();
        assert_eq!(body, EXAMPLE_BODY);
    }

    #[test]
    fn first_write_diffs_against_all_null() {
        let applied = Interview::empty("c1").apply(&patch(json!({"interview_summary": "hi"})));
        let body: Value = serde_json::from_str(&applied.event_body.unwrap()).unwrap();
        assert_eq!(body["changes"], json!({"interview_summary": {"from": null, "to": "hi"}}));
        assert_eq!(body["data"]["interview_outcome"], Value::Null);
        assert_eq!(body["data"]["candidate_id"], "c1");
    }

    #[test]
    fn a_no_op_update_emits_nothing() {
        let first = Interview::empty("c1").apply(&patch(json!({"interview_outcome": "qualified"})));
        let again = first.interview.apply(&patch(json!({"interview_outcome": "qualified"})));
        assert!(again.event_body.is_none());
        assert!(first.interview.apply(&InterviewPatch::default()).event_body.is_none());
    }

    #[test]
    fn null_clears_and_absent_keeps() {
        let first = Interview::empty("c1")
            .apply(&patch(json!({"interview_outcome": "qualified", "interview_summary": "s"})))
            .interview;
        let applied = first.apply(&patch(json!({"interview_outcome": null})));
        assert_eq!(applied.interview.interview_outcome, None);
        assert_eq!(applied.interview.interview_summary.as_deref(), Some("s"));
        let body: Value = serde_json::from_str(&applied.event_body.unwrap()).unwrap();
        assert_eq!(body["changes"], json!({"interview_outcome": {"from": "qualified", "to": null}}));
    }

    #[test]
    fn timestamps_are_normalized_before_diffing() {
        let first = Interview::empty("c1").apply(&patch(json!({"interview_sent_at": "2025-04-14T12:00:00Z"})));
        let same = first.interview.apply(&patch(json!({"interview_sent_at": "2025-04-14T14:00:00+02:00"})));
        assert!(same.event_body.is_none());
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = InterviewPatch::parse(&json!({"interview_outcome": "hired"})).unwrap_err();
        assert_eq!(err.field, "interview_outcome");
        assert!(err.message.contains("candidate_not_responsive"));
        assert_eq!(InterviewPatch::parse(&json!({"interview_sent_at": 5})).unwrap_err().field, "interview_sent_at");
        assert_eq!(
            InterviewPatch::parse(&json!({"interview_custom_data": [1]})).unwrap_err().field,
            "interview_custom_data"
        );
        assert_eq!(InterviewPatch::parse(&json!({"nope": 1})).unwrap_err().field, "nope");
        assert_eq!(InterviewPatch::parse(&json!([1])).unwrap_err().field, "body");
    }

    #[test]
    fn stored_form_round_trips() {
        let interview = Interview::empty("c1")
            .apply(&patch(json!({"interview_custom_data": {"a": [1, 2]}, "interview_outcome": "ai_opt_out"})))
            .interview;
        assert_eq!(Interview::from_json(&interview.to_json()).unwrap(), interview);
    }

    #[test]
    fn candidate_ids_are_bounded() {
        assert!(validate_candidate_id("cand_1").is_ok());
        assert!(validate_candidate_id("").is_err());
        assert!(validate_candidate_id(&"x".repeat(256)).is_err());
        assert!(validate_candidate_id("a\nb").is_err());
    }
}
