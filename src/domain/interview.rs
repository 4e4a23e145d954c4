//! Interviews and their `interview.updated` events: parsing a merge update, applying it, and computing the
//! `changes` diff exactly as the public contract describes.

use serde::{Deserialize, Serialize};
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Its stored form ([`Interview::to_json`]), which the event body carries as its `data`.
    pub data: String,
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

    /// The value of field `FIELDS[index]`, borrowed.
    fn field(&self, index: usize) -> Field<'_> {
        match index {
            0 => Field::Text(self.interview_completed_at.as_deref()),
            1 => Field::Text(self.interview_sent_at.as_deref()),
            2 => Field::Text(self.interview_outcome.as_deref()),
            3 => Field::Text(self.interview_summary.as_deref()),
            _ => Field::Object(self.interview_custom_data.as_ref()),
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
        serde_json::from_str(text).ok()
    }

    /// Applies a merge update and computes the event it causes. `changes` holds exactly the fields whose
    /// value differs, in contract order; an update that changes nothing yields no event.
    pub fn apply(&self, patch: &InterviewPatch) -> Applied {
        let mut next = self.clone();
        for (index, value) in &patch.values {
            next.set(*index, value.clone());
        }
        let changed: Vec<(&str, Change)> = FIELDS
            .iter()
            .enumerate()
            .map(|(index, name)| (*name, Change { from: self.field(index), to: next.field(index) }))
            .filter(|(_, change)| change.from != change.to)
            .collect();
        // Written straight from the two states, with no JSON tree built and copied on the way, and with the
        // interview serialized once for both the store and the body. The keys in the contract's order.
        let data = next.to_json();
        let event_body = (!changed.is_empty()).then(|| {
            let changes = serde_json::to_string(&Changes(&changed)).unwrap_or_default();
            let mut body = String::with_capacity(data.len() + changes.len() + 48);
            body.push_str(r#"{"event":""#);
            body.push_str(BODY_EVENT);
            body.push_str(r#"","changes":"#);
            body.push_str(&changes);
            body.push_str(r#","data":"#);
            body.push_str(&data);
            body.push('}');
            body
        });
        Applied { interview: next, data, event_body }
    }
}

/// One field's value, borrowed: compared and written out without being copied into a JSON value.
#[derive(PartialEq, Serialize)]
#[serde(untagged)]
enum Field<'a> {
    Text(Option<&'a str>),
    Object(Option<&'a Map<String, Value>>),
}

/// One entry of `changes`.
#[derive(Serialize)]
struct Change<'a> {
    from: Field<'a>,
    to: Field<'a>,
}

/// `changes`: the fields that differ, in contract order.
struct Changes<'a>(&'a [(&'a str, Change<'a>)]);

impl Serialize for Changes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, change)| (name, change)))
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
        assert_eq!(applied.data, applied.interview.to_json(), "the stored form");
        let body: Value = serde_json::from_str(&applied.event_body.unwrap()).unwrap();
        assert_eq!(body["changes"], json!({"interview_summary": {"from": null, "to": "hi"}}));
        assert_eq!(body["data"], serde_json::from_str::<Value>(&applied.data).unwrap());
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
        // A field missing from the stored form reads as null; something that is not an interview does not read.
        assert_eq!(Interview::from_json(r#"{"candidate_id":"c2"}"#).unwrap(), Interview::empty("c2"));
        assert!(Interview::from_json(r#"{"interview_outcome":"qualified"}"#).is_none());
        assert!(Interview::from_json("[]").is_none());
    }

    #[test]
    fn candidate_ids_are_bounded() {
        assert!(validate_candidate_id("cand_1").is_ok());
        assert!(validate_candidate_id("").is_err());
        assert!(validate_candidate_id(&"x".repeat(256)).is_err());
        assert!(validate_candidate_id("a\nb").is_err());
    }
}
