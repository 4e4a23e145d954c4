//! The JSON shapes the API answers with, built from store records.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::domain::time::format_ms;
use crate::store::{AttemptRecord, DeliveryRecord, EndpointRecord, EventRecord, Page};

#[derive(Serialize)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&EndpointRecord> for EndpointView {
    fn from(e: &EndpointRecord) -> Self {
        Self {
            id: e.id.clone(),
            url: e.url.clone(),
            description: e.description.clone(),
            event_types: e.event_types.clone(),
            enabled: e.enabled,
            created_at: format_ms(e.created_at),
            updated_at: format_ms(e.updated_at),
        }
    }
}

#[derive(Serialize)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The stored body itself, not a re-serialization of it.
    pub payload: Box<RawValue>,
    pub created_at: String,
}

impl From<&EventRecord> for EventView {
    fn from(e: &EventRecord) -> Self {
        let payload = RawValue::from_string(e.payload.clone())
            .unwrap_or_else(|_| RawValue::from_string("null".to_owned()).expect("null is JSON"));
        Self { id: e.id.clone(), event_type: e.event_type.clone(), payload, created_at: format_ms(e.created_at) }
    }
}

#[derive(Serialize)]
pub struct DeliveryView {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub status: &'static str,
    pub attempt_count: i64,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
}

impl From<&DeliveryRecord> for DeliveryView {
    fn from(d: &DeliveryRecord) -> Self {
        Self {
            id: d.id.clone(),
            event_id: d.event_id.clone(),
            endpoint_id: d.endpoint_id.clone(),
            status: d.status.as_str(),
            attempt_count: d.attempt_count,
            next_attempt_at: d.next_attempt_at.map(format_ms),
            created_at: format_ms(d.created_at),
            updated_at: format_ms(d.updated_at),
            attempts: None,
        }
    }
}

#[derive(Serialize)]
pub struct AttemptView {
    pub number: i64,
    pub trigger: &'static str,
    pub started_at: String,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub response_body: String,
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> Self {
        Self {
            number: a.number,
            trigger: a.trigger.as_str(),
            started_at: format_ms(a.started_at),
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            error: a.error.clone(),
            response_body: a.response_body.clone(),
        }
    }
}

/// `{"data": [...], "next_cursor": …}`.
#[derive(Serialize)]
pub struct ListView<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> ListView<T> {
    pub fn from_page<R>(page: &Page<R>) -> Self
    where
        T: for<'a> From<&'a R>,
    {
        Self { data: page.items.iter().map(T::from).collect(), next_cursor: page.next_cursor.map(|c| c.to_string()) }
    }
}
