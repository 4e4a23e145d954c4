//! The OpenAPI 3.1 description of the HTTP API, served at `GET /openapi.json` and pinned by `docs/openapi.json`.
//! Answers are described by derives on the types that produce them. Request bodies are read field by field
//! rather than into structs, so their schemas are built here from the domain's own field lists and limits, and
//! error examples are made by [`ApiError`] itself: the document follows the code instead of restating it.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, ArrayBuilder, KnownFormat, Object, ObjectBuilder, Ref, Schema, SchemaFormat,
    SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Deprecated, RefOr, Required};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, PartialSchema, ToResponse, ToSchema};

use super::actions::TEST_ON_DISABLED;
use super::error::{ApiError, ErrorEnvelope};
use super::extract::DEFAULT_LIMIT;
use super::{calls, deliveries, endpoints, events, health, interviews};
use crate::domain::call::{self, Kind};
use crate::domain::endpoint::{EVENT_TYPES, MAX_DESCRIPTION_CHARS, MAX_URL_BYTES};
use crate::domain::interview::{self, Interview, InterviewPatch};
use crate::domain::{Invalid, signing};
use crate::store::{DeliveryStatus, StoreError, Trigger};

/// The whole document: every route the router serves, gathered from the handlers' `#[utoipa::path]`s.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tidings",
        description = "Webhook delivery. Tidings keeps each candidate's interview, turns every change into a \
            `candidate.interview.updated` event carrying a diff of what changed, and delivers events to the \
            endpoints you registered: signed (Standard Webhooks), retried, and with every attempt logged.\n\n\
            Every `/v1` call takes an API key and sees only its own organization's rows: another organization's \
            ids answer 404. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}` (`field` on 422 only); \
            a method a path does not answer is 405 `method_not_allowed`, with an `Allow` header. Request bodies \
            are JSON: send `content-type: application/json` (or any `application/*+json`); a body declared as \
            anything else answers 415, and one without a `content-type` is read as JSON. Lists answer \
            `{\"data\": [...], \"next_cursor\"}`, newest first, and take only the query parameters they describe: \
            any other answers 400.\n\n\
            `webhooks` describes the POSTs your endpoints receive."
    ),
    paths(
        endpoints::create_endpoint,
        endpoints::list_endpoints,
        endpoints::get_endpoint,
        endpoints::update_endpoint,
        endpoints::delete_endpoint,
        endpoints::get_secret,
        endpoints::rotate_secret,
        endpoints::test_endpoint,
        interviews::update_interview,
        interviews::get_interview,
        calls::create_call,
        events::list_events,
        events::get_event,
        deliveries::list_deliveries,
        deliveries::get_delivery,
        deliveries::retry_delivery,
        health::healthz,
        health::readyz,
        health::metrics,
        get_openapi,
    ),
    components(
        schemas(ErrorEnvelope, InterviewUpdated, CallObject),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            Conflict,
            RequestTimeout,
            TooLarge,
            UnsupportedMediaType,
            Unprocessable,
            Internal,
        ),
    ),
    modifiers(&NoLicense, &ApiKey, &Webhooks),
    tags(
        (name = "endpoints", description = "The webhook URLs your organization registered, and their secrets"),
        (name = "interviews", description = "Candidates' interviews; every change is an event"),
        (name = "calls", description = "Completed calls (the deprecated `call_completed` event)"),
        (name = "events", description = "What happened, with the exact bodies sent"),
        (name = "deliveries", description = "Each event's way to each endpoint, with every attempt"),
        (name = "operations", description = "For operators: health, metrics and this document; no API key"),
    ),
)]
pub struct ApiDoc;

/// The document as served: serialized once when the router is built, so a request costs a reference count.
#[derive(Clone)]
pub struct Document(Bytes);

impl Document {
    pub fn new() -> Self {
        // Serializing fails only for maps with non-string keys, which the document has none of.
        let mut text = ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes");
        // Pretty-printed with a final newline, so the snapshot in docs/ is these bytes exactly.
        text.push('\n');
        Self(Bytes::from(text))
    }
}

impl Default for Document {
    fn default() -> Self {
        Self::new()
    }
}

/// This document
///
/// The API described in OpenAPI 3.1.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json")),
)]
pub async fn get_openapi(State(document): State<Document>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], document.0)
}

// ---------------------------------------------------------------------------------------------------------
// Errors: one reusable response per status, with an example made by `ApiError`
// ---------------------------------------------------------------------------------------------------------

fn error_response(description: &str, example: ApiError) -> RefOr<Response> {
    let (_, envelope) = example.envelope();
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(ErrorEnvelope::name())))
        .example(serde_json::to_value(envelope).ok())
        .build();
    ResponseBuilder::new().description(description).content("application/json", content).build().into()
}

macro_rules! error_responses {
    ($($name:ident: $description:literal, $example:expr;)*) => {$(
        #[doc = $description]
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error_response($description, $example))
            }
        }
    )*};
}

error_responses! {
    BadRequest: "The body is not JSON, or the query string cannot be read or names a parameter the operation does \
        not take.",
        ApiError::BadRequest("malformed JSON: expected value at line 1 column 1".into());
    Unauthorized: "No `Authorization: Bearer tdk_…` header, or a key that is not known.",
        ApiError::Unauthorized;
    NotFound: "Nothing with that id in your organization (another organization's ids answer this too), or a path \
        that cannot be decoded.",
        ApiError::NotFound("endpoint");
    Conflict: "The endpoint is disabled; enable it to send a test event or retry one of its deliveries.",
        ApiError::Conflict("endpoint_disabled", TEST_ON_DISABLED.into());
    RequestTimeout: "The body did not all arrive within the service's `--client-timeout`.",
        ApiError::BodyTimeout(std::time::Duration::from_secs(30));
    // The example shows the default limit; the service answers with its own.
    TooLarge: "The body is larger than the service's `--max-body-bytes`.",
        ApiError::TooLarge(crate::config::defaults::MAX_BODY_BYTES);
    UnsupportedMediaType: "The body is declared as something other than JSON: send `content-type: application/json`.",
        ApiError::UnsupportedMediaType("text/plain".into());
    Unprocessable: "A field breaks a rule: `field` names it and `message` says what to fix.",
        ApiError::Invalid(Invalid::new("url", "must use http or https"));
    Internal: "The service failed; the details are in its log, not in the answer.",
        ApiError::Internal(StoreError::Closed);
}

/// The error answers shared by a family of operations, each named once: one that looks up an id can answer
/// 401, 404 and 500, a list also 400 and 422, and one that reads a JSON body 400, 413, 415 and 422 besides
/// 401 and 500. An operation adds what only it can answer.
macro_rules! error_sets {
    ($($name:ident: $description:literal [$($status:literal => $response:ident),*];)*) => {$(
        #[doc = $description]
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                [$(($status.to_owned(), RefOr::Ref(Ref::from_response_name(stringify!($response))))),*]
                    .into_iter()
                    .collect()
            }
        }
    )*};
}

error_sets! {
    IdErrors: "An operation on one row by its id." ["401" => Unauthorized, "404" => NotFound, "500" => Internal];
    ListErrors: "A list with query parameters."
        ["400" => BadRequest, "401" => Unauthorized, "422" => Unprocessable, "500" => Internal];
    BodyErrors: "An operation that reads a JSON body." [
        "400" => BadRequest,
        "401" => Unauthorized,
        "408" => RequestTimeout,
        "413" => TooLarge,
        "415" => UnsupportedMediaType,
        "422" => Unprocessable,
        "500" => Internal
    ];
}

// ---------------------------------------------------------------------------------------------------------
// The API key, and the webhooks receivers get
// ---------------------------------------------------------------------------------------------------------

/// Cargo.toml names no license, which the derive would write as a license with an empty name.
struct NoLicense;

impl Modify for NoLicense {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.info.license = None;
    }
}

/// The `api_key` scheme every `/v1` operation names.
struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("tdk_…")
            .description(Some(
                "An API key from `tidings org create`, sent as `Authorization: Bearer tdk_…`. It names your \
                 organization; only its SHA-256 hash is stored, so a lost key cannot be shown again.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("api_key", SecurityScheme::Http(scheme));
    }
}

/// The POSTs endpoints receive, one per event type, under the document's `webhooks`.
struct Webhooks;

impl Modify for Webhooks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let header = |name: &str, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .required(Required::True)
                .description(Some(description))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build()
        };
        let signature = format!(
            "`v1,` and the base64 HMAC-SHA256 of `{{webhook-id}}.{{webhook-timestamp}}.{{body}}`, keyed with the \
             base64-decoded part of the endpoint's `{}…` secret. While a rotated-out secret is in its grace period \
             there are two, separated by a space; accept the request if either matches.",
            signing::SECRET_PREFIX
        );
        let headers = [
            header("webhook-id", "The event's id (`evt_…`), the same on every retry: deduplicate on it."),
            header("webhook-timestamp", "When this attempt was signed, in Unix seconds."),
            header("webhook-signature", &signature),
        ];
        let kinds = [
            (
                interview::EVENT_TYPE,
                InterviewUpdated::name(),
                "An interview changed",
                "Sent for every interview update that changed at least one field, and by \
                 `POST /v1/endpoints/{id}/test` with the documentation's example body.",
                false,
            ),
            (
                call::EVENT_TYPE,
                CallObject::name(),
                "A call was completed (deprecated)",
                "Sent to endpoints that chose `call_completed` in `event_types`; the body is the call object as \
                 it was posted to `/v1/calls`.",
                true,
            ),
        ];
        let mut webhooks = PathsBuilder::new();
        for (event_type, body, summary, description, deprecated) in kinds {
            let request = RequestBodyBuilder::new()
                .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(body))).build())
                .required(Some(Required::True))
                .build();
            let operation = OperationBuilder::new()
                .summary(Some(summary))
                .description(Some(format!(
                    "{description} The request also carries `content-type: application/json` and \
                     `user-agent: tidings/<version>`."
                )))
                .parameters(Some(headers.clone()))
                .request_body(Some(request))
                .response(
                    "2XX",
                    ResponseBuilder::new().description("Acknowledged: any 2xx within the attempt timeout.").build(),
                )
                .response(
                    "default",
                    ResponseBuilder::new()
                        .description(
                            "Anything else is a failure, as are a timeout and a network error; redirects are not \
                             followed. The delivery is retried on the service's retry schedule, then marked \
                             `undeliverable`.",
                        )
                        .build(),
                )
                .deprecated(deprecated.then_some(Deprecated::True))
                .build();
            webhooks = webhooks.path(event_type, PathItem::new(HttpMethod::Post, operation));
        }
        openapi.webhooks = Some(webhooks.build());
    }
}

// ---------------------------------------------------------------------------------------------------------
// List parameters
// ---------------------------------------------------------------------------------------------------------

/// `?cursor=&limit=` of every list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "described, never built: handlers read `extract::PageQuery` and `DeliveryQuery`")]
pub struct PageParams {
    /// The `next_cursor` of the page before; leave it out for the first page.
    cursor: Option<String>,
    /// How many items a page holds at most.
    #[param(minimum = 1, maximum = 250, default = json!(DEFAULT_LIMIT))]
    limit: Option<u32>,
}

/// The filters of `GET /v1/deliveries`; they combine.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "described, never built: handlers read `extract::PageQuery` and `DeliveryQuery`")]
pub struct DeliveryFilters {
    /// Only deliveries to this endpoint (`ep_…`).
    endpoint_id: Option<String>,
    /// Only deliveries of this event (`evt_…`).
    event_id: Option<String>,
    /// Only deliveries in this state.
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
}

// ---------------------------------------------------------------------------------------------------------
// Schemas built from the domain's lists
// ---------------------------------------------------------------------------------------------------------

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn or_null(kind: Type) -> SchemaType {
    SchemaType::from_iter([kind, Type::Null])
}

fn date_time() -> Option<SchemaFormat> {
    Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))
}

/// An event type endpoints can subscribe to.
pub struct EventType;

impl PartialSchema for EventType {
    fn schema() -> RefOr<Schema> {
        string()
            .enum_values(Some(EVENT_TYPES))
            .description(Some(
                "`candidate.interview.updated`, or `call_completed` (deprecated, delivered only to endpoints that \
                 name it).",
            ))
            .into()
    }
}

impl ToSchema for EventType {}

impl PartialSchema for DeliveryStatus {
    fn schema() -> RefOr<Schema> {
        let all = DeliveryStatus::ALL;
        string()
            .enum_values(Some(all.map(DeliveryStatus::as_str)))
            .description(Some(
                "`pending` until an attempt is acknowledged (`succeeded`) or the retries run out (`undeliverable`).",
            ))
            .into()
    }
}

impl ToSchema for DeliveryStatus {}

impl PartialSchema for Trigger {
    fn schema() -> RefOr<Schema> {
        string()
            .enum_values(Some(Trigger::ALL.map(Trigger::as_str)))
            .description(Some(
                "`scheduled`: the first attempt or a retry of the schedule; `manual`: asked for with \
                 `POST /v1/deliveries/{id}/retry`.",
            ))
            .into()
    }
}

impl ToSchema for Trigger {
    fn name() -> std::borrow::Cow<'static, str> {
        "AttemptTrigger".into()
    }
}

/// The schema of one interview field, the same in `data`, in an update and in `changes`; `None` for a name
/// that is not a field (a unit test keeps this in step with `interview::FIELDS`).
fn interview_field(name: &str, input: bool) -> Option<Object> {
    let when = |what: &str| {
        let form = if input { "RFC 3339 with any offset; stored and sent in UTC" } else { "RFC 3339 in UTC" };
        ObjectBuilder::new()
            .schema_type(or_null(Type::String))
            .format(date_time())
            .description(Some(format!("When the interview was {what}: {form}, e.g. `2025-04-15T16:00:00Z`.")))
    };
    let field = match name {
        "interview_completed_at" => when("completed"),
        "interview_sent_at" => when("sent to the candidate"),
        "interview_outcome" => ObjectBuilder::new()
            .schema_type(or_null(Type::String))
            .enum_values(Some(interview::OUTCOMES.iter().map(|o| json!(o)).chain([Value::Null])))
            .description(Some("How the interview ended.")),
        "interview_summary" => ObjectBuilder::new().schema_type(or_null(Type::String)).description(Some("Free text.")),
        "interview_custom_data" => ObjectBuilder::new()
            .schema_type(or_null(Type::Object))
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .description(Some("Your own keys and values, replaced whole by an update.")),
        _ => return None,
    };
    Some(field.build())
}

fn interview_fields(input: bool) -> impl Iterator<Item = (&'static str, Object)> {
    interview::FIELDS.into_iter().filter_map(move |name| interview_field(name, input).map(|schema| (name, schema)))
}

impl PartialSchema for Interview {
    fn schema() -> RefOr<Schema> {
        let mut object = ObjectBuilder::new()
            .description(Some(
                "The current state of one candidate's interview: the `data` of `interview.updated`. Every field \
                 is present, `null` when unknown.",
            ))
            .property("candidate_id", string().description(Some("Your id of the candidate.")))
            .required("candidate_id");
        for (name, schema) in interview_fields(false) {
            object = object.property(name, schema).required(name);
        }
        object.into()
    }
}

impl ToSchema for Interview {}

impl PartialSchema for InterviewPatch {
    fn schema() -> RefOr<Schema> {
        let mut object = ObjectBuilder::new()
            .description(Some(
                "A merge update: a field left out keeps its value, `null` clears it, and any other value \
                 replaces it (`interview_custom_data` too, whole, not key by key). Any other field is refused \
                 with 422.",
            ))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .examples([json!({
                "interview_completed_at": "2025-04-15T16:00:00Z",
                "interview_outcome": "completed"
            })]);
        for (name, schema) in interview_fields(true) {
            object = object.property(name, schema);
        }
        object.into()
    }
}

impl ToSchema for InterviewPatch {}

/// The body of a `candidate.interview.updated` webhook.
pub struct InterviewUpdated;

impl PartialSchema for InterviewUpdated {
    fn schema() -> RefOr<Schema> {
        let mut changes = ObjectBuilder::new()
            .description(Some("Exactly the fields whose value changed, each with its value before and after."))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .min_properties(Some(1));
        for (name, schema) in interview_fields(false) {
            let change = ObjectBuilder::new()
                .property("from", schema.clone())
                .property("to", schema)
                .required("from")
                .required("to");
            changes = changes.property(name, change);
        }
        ObjectBuilder::new()
            .property("event", string().enum_values(Some([interview::BODY_EVENT])))
            .required("event")
            .property("changes", changes)
            .required("changes")
            .property("data", Ref::from_schema_name(Interview::name()))
            .required("data")
            .examples(serde_json::from_str::<Value>(interview::EXAMPLE_BODY).ok())
            .into()
    }
}

impl ToSchema for InterviewUpdated {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Interview::name().into(), Interview::schema()));
    }
}

/// The call object of `POST /v1/calls` and of the `call_completed` webhook.
pub struct CallObject;

/// An object of the call's documented fields: each typed, none required, unknown ones kept.
fn call_fields<'a>(
    fields: impl IntoIterator<Item = (&'a str, Kind)>,
    nested: impl Fn(&str) -> Option<Object>,
) -> ObjectBuilder {
    let mut object = ObjectBuilder::new();
    for (name, kind) in fields {
        let schema = nested(name).unwrap_or_else(|| {
            ObjectBuilder::new()
                .schema_type(or_null(match kind {
                    Kind::String => Type::String,
                    Kind::Number => Type::Number,
                    Kind::Array => Type::Array,
                    Kind::Object => Type::Object,
                }))
                .build()
        });
        object = object.property(name, schema);
    }
    object
}

impl PartialSchema for CallObject {
    fn schema() -> RefOr<Schema> {
        let analysis = call_fields(call::ANALYSIS.map(|name| (name, Kind::String)), |_| None)
            .schema_type(or_null(Type::Object))
            .build();
        let details = call_fields(call::DETAILS, |name| (name == "call_analysis").then(|| analysis.clone()))
            .schema_type(or_null(Type::Object))
            .build();
        let mut object = call_fields(call::TOP, |name| {
            if name == "call_details" {
                Some(details.clone())
            } else if call::REQUIRED.contains(&name) {
                Some(string().min_length(Some(1)).build())
            } else {
                None
            }
        })
        .description(Some(
            "A completed call, as in the documentation's Call Completed example. Documented fields must have \
             their documented types (or be null) when present; `candidate_id` and `call_id` are required strings; \
             any other field is kept, and the body is sent to receivers exactly as it was posted.",
        ))
        .examples([json!({
            "candidate_id": "12345",
            "call_id": "abcdef123456",
            "call_status": "call_completed",
            "call_details": {"duration": 300, "start_time": 1737073800, "end_time": 1737074100}
        })]);
        for name in call::REQUIRED {
            object = object.required(name);
        }
        object.into()
    }
}

impl ToSchema for CallObject {
    fn name() -> std::borrow::Cow<'static, str> {
        "Call".into()
    }
}

/// An event's body, exactly as its deliveries send it.
pub struct EventPayload;

impl PartialSchema for EventPayload {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(InterviewUpdated::name()))
            .item(Ref::from_schema_name(CallObject::name()))
            .description(Some(
                "The exact body sent: an `interview.updated` body for `candidate.interview.updated`, the call object \
                 for `call_completed`.",
            ))
            .into()
    }
}

impl ToSchema for EventPayload {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((InterviewUpdated::name().into(), InterviewUpdated::schema()));
        InterviewUpdated::schemas(schemas);
        schemas.push((CallObject::name().into(), CallObject::schema()));
    }
}

/// The body of `POST /v1/endpoints`; checked against the handler's field list by a unit test.
pub struct NewEndpointBody;

/// The body of `PATCH /v1/endpoints/{id}`.
pub struct EndpointPatchBody;

/// The four endpoint fields; `patch` says how each reads in an edit rather than a registration. Only
/// `description` has a "none" to set, so only it takes `null`; the handler refuses `null` for the others.
fn endpoint_fields(patch: bool) -> ObjectBuilder {
    let unchanged = if patch { " Left out: unchanged." } else { "" };
    let url = string().format(Some(SchemaFormat::Custom("uri".into()))).max_length(Some(MAX_URL_BYTES)).description(
        Some(format!(
            "Absolute `http` or `https`, at most {MAX_URL_BYTES} bytes, without a user name or password. Loopback, \
             private and link-local addresses are refused unless the service allows them.{unchanged}"
        )),
    );
    let description = ObjectBuilder::new()
        .schema_type(or_null(Type::String))
        .max_length(Some(MAX_DESCRIPTION_CHARS))
        .description(Some(if patch {
            "Free text for people. `null` clears it (as `\"\"` does); left out: unchanged."
        } else {
            "Free text for people; `null` or left out means none."
        }));
    let description = if patch { description } else { description.default(Some(json!(""))) };
    let event_types = ArrayBuilder::new()
        .items(Ref::from_schema_name(EventType::name()))
        .min_items(Some(1))
        .description(Some(if patch {
            "Replaces the whole list; duplicates are dropped. Left out: unchanged."
        } else {
            "Duplicates are dropped. Left out: `[\"candidate.interview.updated\"]`."
        }));
    let event_types = if patch { event_types } else { event_types.default(Some(json!([interview::EVENT_TYPE]))) };
    let enabled = ObjectBuilder::new().schema_type(Type::Boolean).description(Some(if patch {
        "Disabling keeps pending deliveries until enabled again. Left out: unchanged."
    } else {
        "Left out: `true`."
    }));
    let enabled = if patch { enabled } else { enabled.default(Some(json!(true))) };
    ObjectBuilder::new()
        .property("url", url)
        .property("description", description)
        .property("event_types", event_types)
        .property("enabled", enabled)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
}

/// Told in both bodies' descriptions, since a `null` meaning "unchanged" or "the default" is a common guess.
const NULLS: &str = "Only `description` takes `null`; `null` for any other field is refused with 422 naming it: \
    leave the field out instead.";

impl PartialSchema for NewEndpointBody {
    fn schema() -> RefOr<Schema> {
        endpoint_fields(false)
            .required("url")
            .description(Some(format!("A webhook URL to register. {NULLS} Any other field is refused with 422.")))
            .examples([json!({"url": "https://example.com/webhooks", "description": "production"})])
            .into()
    }
}

impl ToSchema for NewEndpointBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "NewEndpoint".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((EventType::name().into(), EventType::schema()));
    }
}

impl PartialSchema for EndpointPatchBody {
    fn schema() -> RefOr<Schema> {
        endpoint_fields(true)
            .description(Some(format!(
                "Any subset of an endpoint's fields. {NULLS} Any other field is refused with 422."
            )))
            .examples([json!({"enabled": false})])
            .into()
    }
}

impl ToSchema for EndpointPatchBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "EndpointPatch".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((EventType::name().into(), EventType::schema()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::extract::{DeliveryQuery, ListQuery, MAX_LIMIT, PageQuery};

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    fn property_names(schema: &Value) -> Vec<String> {
        schema["properties"].as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn every_interview_field_is_described() {
        for name in interview::FIELDS {
            assert!(interview_field(name, false).is_some(), "{name} has no schema");
        }
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let mut data = vec!["candidate_id".to_owned()];
        data.extend(interview::FIELDS.map(str::to_owned));
        assert_eq!(property_names(&schemas["Interview"]), data);
        assert_eq!(property_names(&schemas["InterviewPatch"]), interview::FIELDS.map(str::to_owned));
    }

    #[test]
    fn endpoint_bodies_name_the_fields_the_handler_reads() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        for schema in ["NewEndpoint", "EndpointPatch"] {
            assert_eq!(property_names(&schemas[schema]), endpoints::FIELDS.map(str::to_owned), "{schema}");
        }
    }

    #[test]
    fn page_limits_are_the_ones_enforced() {
        let doc = document();
        let parameters = doc["paths"]["/v1/events"]["get"]["parameters"].as_array().unwrap();
        let limit = parameters.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], MAX_LIMIT);
        assert_eq!(limit["schema"]["default"], DEFAULT_LIMIT);
    }

    #[test]
    fn list_parameters_are_the_ones_read() {
        let doc = document();
        let names = |path: &str| -> Vec<String> {
            let mut names: Vec<String> = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            names
        };
        let taken = |names: &[&str]| -> Vec<String> {
            let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            names.sort();
            names
        };
        assert_eq!(names("/v1/endpoints"), taken(PageQuery::NAMES));
        assert_eq!(names("/v1/events"), taken(PageQuery::NAMES));
        assert_eq!(names("/v1/deliveries"), taken(DeliveryQuery::NAMES));
    }

    /// Each list's `NAMES` is what lets a parameter through, so it must name every field the struct reads.
    #[test]
    fn list_names_are_the_fields_read() {
        fn parse<Q: ListQuery>() -> Q {
            let query: Vec<String> = Q::NAMES.iter().map(|name| format!("{name}=x")).collect();
            let uri: axum::http::Uri = format!("/?{}", query.join("&")).parse().unwrap();
            axum::extract::Query::<Q>::try_from_uri(&uri).unwrap().0
        }
        let PageQuery { cursor, limit } = parse::<PageQuery>();
        assert!(cursor.is_some() && limit.is_some());
        let DeliveryQuery { page: PageQuery { cursor, limit }, endpoint_id, event_id, status } =
            parse::<DeliveryQuery>();
        for (name, value) in [
            ("cursor", cursor),
            ("limit", limit),
            ("endpoint_id", endpoint_id),
            ("event_id", event_id),
            ("status", status),
        ] {
            assert!(value.is_some(), "the deliveries list reads `{name}`, which its NAMES leave out");
        }
    }

    /// 415 is what a body declared as anything but JSON answers, so exactly the operations with a body describe it.
    #[test]
    fn operations_with_a_body_describe_415() {
        let doc = document();
        let mut with_body = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let has_body = operation.get("requestBody").is_some();
                with_body += usize::from(has_body);
                assert_eq!(operation["responses"].get("415").is_some(), has_body, "{method} {path}");
            }
        }
        assert_eq!(with_body, 4, "POST and PATCH of endpoints, PATCH of interviews, POST of calls");
    }

    #[test]
    fn each_error_status_has_one_response_with_its_code() {
        let doc = document();
        let responses = &doc["components"]["responses"];
        for (name, status, code) in [
            ("BadRequest", 400, "bad_request"),
            ("Unauthorized", 401, "unauthorized"),
            ("NotFound", 404, "not_found"),
            ("Conflict", 409, "endpoint_disabled"),
            ("RequestTimeout", 408, "request_timeout"),
            ("TooLarge", 413, "payload_too_large"),
            ("UnsupportedMediaType", 415, "unsupported_media_type"),
            ("Unprocessable", 422, "invalid"),
            ("Internal", 500, "internal"),
        ] {
            let example = &responses[name]["content"]["application/json"]["example"];
            assert_eq!(example["error"]["code"], code, "{name}: {example}");
            let operations =
                doc["paths"].as_object().unwrap().values().flat_map(|item| item.as_object().unwrap().values());
            // Every operation's answer with this status, inline or not, must be the shared one.
            let answers: Vec<&serde_json::Value> =
                operations.filter_map(|op| op["responses"].get(status.to_string())).collect();
            assert!(!answers.is_empty(), "some operation answers {status}");
            for answer in answers {
                assert_eq!(answer["$ref"], format!("#/components/responses/{name}"), "every {status} is {name}");
            }
        }
    }
}
