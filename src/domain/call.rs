//! The deprecated `call_completed` event: the call object of the document, type-checked and then sent
//! exactly as it was received.

use serde_json::Value;

use super::Invalid;

/// The event type of a completed call.
pub const EVENT_TYPE: &str = "call_completed";

/// The JSON type a documented field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Number,
    Array,
    Object,
}

impl Kind {
    fn matches(self, value: &Value) -> bool {
        match self {
            Kind::String => value.is_string(),
            Kind::Number => value.is_number(),
            Kind::Array => value.is_array(),
            Kind::Object => value.is_object(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

/// Fields that must be present: a non-empty string each.
pub const REQUIRED: [&str; 2] = ["candidate_id", "call_id"];

/// The call object's documented fields and their types.
pub const TOP: [(&str, Kind); 10] = [
    ("candidate_id", Kind::String),
    ("candidate_phone", Kind::String),
    ("job_id", Kind::String),
    ("job_title", Kind::String),
    ("call_status", Kind::String),
    ("transcript", Kind::Array),
    ("questions", Kind::Array),
    ("call_details", Kind::Object),
    ("call_id", Kind::String),
    ("recording_url", Kind::String),
];

/// The fields of `call_details`.
pub const DETAILS: [(&str, Kind); 6] = [
    ("duration", Kind::Number),
    ("start_time", Kind::Number),
    ("end_time", Kind::Number),
    ("e2e_latency", Kind::Number),
    ("call_analysis", Kind::Object),
    ("org_phone_number", Kind::String),
];

/// The fields of `call_details.call_analysis`, all strings.
pub const ANALYSIS: [&str; 7] = [
    "call_summary",
    "user_sentiment",
    "agent_sentiment",
    "call_completion_rating",
    "agent_task_completion_rating",
    "call_completion_rating_reason",
    "agent_task_completion_rating_reason",
];

fn check(object: &serde_json::Map<String, Value>, prefix: &str, fields: &[(&str, Kind)]) -> Result<(), Invalid> {
    for (name, kind) in fields {
        if let Some(value) = object.get(*name)
            && !value.is_null()
            && !kind.matches(value)
        {
            return Err(Invalid::new(format!("{prefix}{name}"), format!("must be {}", kind.name())));
        }
    }
    Ok(())
}

/// Checks a call object: `candidate_id` and `call_id` are required non-empty strings, every other documented
/// field has its documented type or is `null` (a call without a recording, say) when present, and unknown
/// fields are kept as they are.
pub fn validate(body: &Value) -> Result<(), Invalid> {
    let Some(object) = body.as_object() else {
        return Err(Invalid::new("body", "must be a JSON object"));
    };
    for required in REQUIRED {
        match object.get(required) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(_) => return Err(Invalid::new(required, "must be a non-empty string")),
            None => return Err(Invalid::new(required, "is required")),
        }
    }
    check(object, "", &TOP)?;
    if let Some(Value::Object(details)) = object.get("call_details") {
        check(details, "call_details.", &DETAILS)?;
        if let Some(Value::Object(analysis)) = details.get("call_analysis") {
            let fields: Vec<(&str, Kind)> = ANALYSIS.iter().map(|n| (*n, Kind::String)).collect();
            check(analysis, "call_details.call_analysis.", &fields)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_documents_example_is_valid() {
        let call = json!({
            "candidate_id": "12345", "candidate_phone": "+1234567890", "job_id": "67890",
            "job_title": "CDL Truck Driver", "call_status": "call_completed",
            "transcript": [{"role": "user", "words": [{"start": 0, "end": 0.5, "word": "Hello?"}], "content": "Hello?"}],
            "questions": [{"question": "Are you older than the age of 18?", "answer": "Yes, I am"}],
            "call_details": {"duration": 300, "start_time": 1737073800, "end_time": 1737074100, "e2e_latency": 120,
                "call_analysis": {"call_summary": "s", "user_sentiment": "Positive"}, "org_phone_number": "+1234567890"},
            "call_id": "abcdef123456", "recording_url": "https://example.com/recordings/abcdef123456.mp3",
            "extra": {"kept": true}
        });
        assert_eq!(validate(&call), Ok(()));
    }

    #[test]
    fn wrong_types_name_the_field() {
        assert_eq!(validate(&json!({"call_id": "c"})).unwrap_err().field, "candidate_id");
        assert_eq!(validate(&json!({"candidate_id": "a", "call_id": 1})).unwrap_err().field, "call_id");
        let err = validate(&json!({"candidate_id": "a", "call_id": "c", "transcript": "no"})).unwrap_err();
        assert_eq!(err.field, "transcript");
        let err =
            validate(&json!({"candidate_id": "a", "call_id": "c", "call_details": {"duration": "5"}})).unwrap_err();
        assert_eq!(err.field, "call_details.duration");
        let err = validate(&json!({"candidate_id": "a", "call_id": "c",
            "call_details": {"call_analysis": {"user_sentiment": 3}}}))
        .unwrap_err();
        assert_eq!(err.field, "call_details.call_analysis.user_sentiment");
        assert_eq!(validate(&json!("x")).unwrap_err().field, "body");
    }

    #[test]
    fn documented_fields_may_be_null_but_the_ids_may_not() {
        let call = json!({"candidate_id": "a", "call_id": "c", "recording_url": null, "transcript": null,
            "call_details": {"duration": null, "call_analysis": {"call_summary": null}}});
        assert_eq!(validate(&call), Ok(()));
        assert_eq!(validate(&json!({"candidate_id": "a", "call_id": null})).unwrap_err().field, "call_id");
    }
}
