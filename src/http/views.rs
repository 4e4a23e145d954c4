//! The JSON shapes the API answers with, built from store records, each with its OpenAPI schema next to the
//! fields it describes.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Ref, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::time::format_ms;
use crate::store::{AttemptRecord, DeliveryRecord, EndpointRecord, EventRecord, Page};

/// A registered webhook URL.
#[derive(Serialize, ToSchema)]
#[schema(as = Endpoint)]
pub struct EndpointView {
    /// `ep_` and 24 hex digits.
    #[schema(example = "ep_0196b2c3d4e5f60718293a4b")]
    pub id: String,
    #[schema(format = "uri", example = "https://example.com/webhooks")]
    pub url: String,
    /// Free text for people; empty when none was given.
    pub description: String,
    /// The event types delivered to this URL.
    #[schema(value_type = Vec<super::openapi::EventType>)]
    pub event_types: Vec<String>,
    /// A disabled endpoint keeps its pending deliveries until it is enabled again.
    pub enabled: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
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

/// One thing that happened, with the exact body its deliveries send.
#[derive(Serialize, ToSchema)]
#[schema(as = Event)]
pub struct EventView {
    /// `evt_` and 24 hex digits; receivers get it as `webhook-id`.
    #[schema(example = "evt_0196b2c3d4e5f60718293a4b")]
    pub id: String,
    #[serde(rename = "type")]
    #[schema(value_type = super::openapi::EventType)]
    pub event_type: String,
    /// The stored body itself, not a re-serialization of it.
    #[schema(value_type = super::openapi::EventPayload)]
    pub payload: Box<RawValue>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&EventRecord> for EventView {
    fn from(e: &EventRecord) -> Self {
        let payload = RawValue::from_string(e.payload.clone())
            .unwrap_or_else(|_| RawValue::from_string("null".to_owned()).expect("null is JSON"));
        Self { id: e.id.clone(), event_type: e.event_type.clone(), payload, created_at: format_ms(e.created_at) }
    }
}

/// One event on its way to one endpoint.
#[derive(Serialize, ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryView {
    /// `dlv_` and 24 hex digits.
    #[schema(example = "dlv_0196b2c3d4e5f60718293a4b")]
    pub id: String,
    #[schema(example = "evt_0196b2c3d4e5f60718293a4b")]
    pub event_id: String,
    #[schema(example = "ep_0196b2c3d4e5f60718293a4b")]
    pub endpoint_id: String,
    #[schema(value_type = crate::store::DeliveryStatus)]
    pub status: &'static str,
    /// Attempts made so far, manual ones included.
    pub attempt_count: i64,
    /// When the next attempt is due; `null` once the delivery is finished.
    #[schema(format = DateTime, required = true)]
    pub next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Every attempt, oldest first; only in `GET /v1/deliveries/{id}`, left out of lists to keep pages small.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
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

/// One POST of a delivery, as logged.
#[derive(Serialize, ToSchema)]
#[schema(as = Attempt)]
pub struct AttemptView {
    /// Counts from 1, manual attempts included.
    pub number: i64,
    #[schema(value_type = crate::store::Trigger)]
    pub trigger: &'static str,
    #[schema(format = DateTime)]
    pub started_at: String,
    pub duration_ms: i64,
    /// The receiver's status; `null` when no answer came.
    #[schema(required = true)]
    pub status_code: Option<i64>,
    /// `null` for a 2xx; otherwise why the attempt failed, such as `timeout`, `connect`, `dns`, `blocked` or
    /// `status` (an answer that was not a 2xx).
    #[schema(required = true)]
    pub error: Option<String>,
    /// The first 4 KiB of the receiver's answer.
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

/// The lists the API answers with. Named, not spelled `ListView<…>` where the document is described, because
/// the description macro would then compose the list from a copy of its item's schema.
pub type EndpointList = ListView<EndpointView>;
pub type EventList = ListView<EventView>;
pub type DeliveryList = ListView<DeliveryView>;

// Written out rather than derived, so a list refers to its item's schema instead of copying it: the document
// holds one `Endpoint`, `Event` and `Delivery`.
impl<T: ToSchema> PartialSchema for ListView<T> {
    fn schema() -> RefOr<Schema> {
        let data = ArrayBuilder::new().items(Ref::from_schema_name(T::name())).description(Some("Newest first."));
        let next_cursor = ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .description(Some("Pass as `?cursor=` for the next page; `null` on the last page."));
        ObjectBuilder::new()
            .description(Some(format!("One page of `{}` objects.", T::name())))
            .property("data", data)
            .required("data")
            .property("next_cursor", next_cursor)
            .required("next_cursor")
            .into()
    }
}

impl<T: ToSchema> ToSchema for ListView<T> {
    fn name() -> Cow<'static, str> {
        format!("{}List", T::name()).into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((T::name().into(), T::schema()));
        T::schemas(schemas);
    }
}

impl<T> ListView<T> {
    pub fn from_page<R>(page: &Page<R>) -> Self
    where
        T: for<'a> From<&'a R>,
    {
        Self { data: page.items.iter().map(T::from).collect(), next_cursor: page.next_cursor.map(|c| c.to_string()) }
    }
}
