//! `/v1/endpoints`: register, list, read, edit and delete webhook URLs; their secrets; test events.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::actions::{TEST_ON_DISABLED, TestEvent};
use super::error::ApiError;
use super::extract::{Fields, JsonBody, List, Org, PageQuery, PathId};
use super::openapi::{
    BodyErrors, Conflict, EndpointPatchBody, IdErrors, ListErrors, NewEndpointBody, NotFound, PageParams,
};
use super::views::{DeliveryView, EndpointList, EndpointView, ListView};
use crate::domain::endpoint::{EndpointUrl, parse_event_types, validate_description};
use crate::domain::interview::EVENT_TYPE;
use crate::domain::signing;
use crate::store::{EndpointChanges, EndpointRecord, NewEndpoint};

/// The fields of an endpoint a caller writes; the document's request schemas are checked against it.
pub(super) const FIELDS: [&str; 4] = ["url", "description", "event_types", "enabled"];

/// A new endpoint, with the secret its deliveries are signed with.
#[derive(Serialize, ToSchema)]
#[schema(as = CreatedEndpoint)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: EndpointView,
    /// `whsec_` and base64; also readable later with `GET /v1/endpoints/{id}/secret`.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
}

/// An endpoint's current signing secret.
#[derive(Serialize, ToSchema)]
#[schema(as = Secret)]
pub struct SecretView {
    /// `whsec_` and base64: the key of the HMAC-SHA256 in `webhook-signature`.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
}

/// The caller's endpoint with this id, or 404.
async fn find(state: &AppState, org: &str, id: &str) -> Result<EndpointRecord, ApiError> {
    state.endpoint(org, id).await?.ok_or(ApiError::NotFound("endpoint"))
}

/// Register a webhook URL
///
/// Unless `event_types` says otherwise the endpoint subscribes to `candidate.interview.updated`. The answer is
/// the only one that carries the signing secret without asking for it.
#[utoipa::path(
    post,
    path = "/v1/endpoints",
    tag = "endpoints",
    security(("api_key" = [])),
    request_body = NewEndpointBody,
    responses(
        (status = 201, description = "Registered", body = CreatedEndpoint),
        BodyErrors,
    ),
)]
pub async fn create_endpoint(
    State(state): State<AppState>,
    Org(org): Org,
    body: JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let fields = Fields::new(&body.value, &FIELDS)?;
    let url = EndpointUrl::parse(&fields.required_string("url")?, state.config.allow_private_targets)?;
    let description = fields.clearable_string("description")?.unwrap_or_default();
    validate_description(&description)?;
    let event_types = match fields.strings("event_types")? {
        Some(types) => parse_event_types(&types)?,
        None => vec![EVENT_TYPE.to_owned()],
    };
    let new = NewEndpoint {
        url: url.as_str().to_owned(),
        description,
        event_types,
        enabled: fields.bool("enabled")?.unwrap_or(true),
        secret: signing::generate_secret(),
    };
    let endpoint = state.store.create_endpoint(&org, new).await?;
    let created =
        CreatedEndpoint { endpoint: EndpointView::from(&endpoint), secret: endpoint.secret.expose_secret().to_owned() };
    Ok((StatusCode::CREATED, Json(created)))
}

/// List endpoints
///
/// Newest first, a page at a time. Any query parameter besides `cursor` and `limit` answers 400.
#[utoipa::path(
    get,
    path = "/v1/endpoints",
    tag = "endpoints",
    security(("api_key" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "One page of endpoints", body = EndpointList),
        ListErrors,
    ),
)]
pub async fn list_endpoints(
    State(state): State<AppState>,
    Org(org): Org,
    List(params): List<PageQuery>,
) -> Result<Json<EndpointList>, ApiError> {
    let page = state.store.list_endpoints(&org, params.page()?).await?;
    Ok(Json(ListView::from_page(&page)))
}

/// Read an endpoint
#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint's id, `ep_…`")),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        IdErrors,
    ),
)]
pub async fn get_endpoint(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
) -> Result<Json<EndpointView>, ApiError> {
    Ok(Json(EndpointView::from(&find(&state, &org, &id).await?)))
}

/// Edit an endpoint
///
/// Send any subset of the fields; the others keep their values.
#[utoipa::path(
    patch,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint's id, `ep_…`")),
    request_body = EndpointPatchBody,
    responses(
        (status = 200, description = "The endpoint as edited", body = EndpointView),
        BodyErrors,
        (status = 404, response = NotFound),
    ),
)]
pub async fn update_endpoint(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
    body: JsonBody,
) -> Result<Json<EndpointView>, ApiError> {
    find(&state, &org, &id).await?;
    let fields = Fields::new(&body.value, &FIELDS)?;
    let url = match fields.string("url")? {
        Some(url) => Some(EndpointUrl::parse(&url, state.config.allow_private_targets)?.as_str().to_owned()),
        None => None,
    };
    let description = fields.clearable_string("description")?;
    if let Some(text) = &description {
        validate_description(text)?;
    }
    let event_types = fields.strings("event_types")?.map(|t| parse_event_types(&t)).transpose()?;
    let changes = EndpointChanges { url, description, event_types, enabled: fields.bool("enabled")? };
    let endpoint = state.store.update_endpoint(&org, &id, changes).await?.ok_or(ApiError::NotFound("endpoint"))?;
    Ok(Json(EndpointView::from(&endpoint)))
}

/// Delete an endpoint
///
/// Its deliveries are deleted with it: nothing pending is tried again.
#[utoipa::path(
    delete,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint's id, `ep_…`")),
    responses(
        (status = 204, description = "Deleted"),
        IdErrors,
    ),
)]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    if !state.delete_endpoint(&org, &id).await? {
        return Err(ApiError::NotFound("endpoint"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Read an endpoint's signing secret
#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}/secret",
    tag = "endpoints",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint's id, `ep_…`")),
    responses(
        (status = 200, description = "The current secret", body = SecretView),
        IdErrors,
    ),
)]
pub async fn get_secret(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
) -> Result<Json<SecretView>, ApiError> {
    let endpoint = find(&state, &org, &id).await?;
    Ok(Json(SecretView { secret: endpoint.secret.expose_secret().to_owned() }))
}

/// Rotate an endpoint's signing secret
///
/// Deliveries are signed with the new secret from now on, and also with the old one (two signatures in
/// `webhook-signature`) until the grace period set by `--secret-grace` ends, so receivers can switch without
/// missing a webhook. No request body.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/rotate-secret",
    tag = "endpoints",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint's id, `ep_…`")),
    responses(
        (status = 200, description = "The new secret", body = SecretView),
        IdErrors,
    ),
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
) -> Result<Json<SecretView>, ApiError> {
    let endpoint = state.rotate_secret(&org, &id).await?.ok_or(ApiError::NotFound("endpoint"))?;
    Ok(Json(SecretView { secret: endpoint.secret.expose_secret().to_owned() }))
}

/// Send a test event
///
/// Sends the documentation's example `interview.updated` body to this endpoint alone, as a new
/// `candidate.interview.updated` event, whatever the endpoint subscribes to. No request body.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/test",
    tag = "endpoints",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "The endpoint's id, `ep_…`")),
    responses(
        (status = 202, description = "The delivery, due now", body = DeliveryView),
        IdErrors,
        (status = 409, response = Conflict),
    ),
)]
pub async fn test_endpoint(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    let endpoint = find(&state, &org, &id).await?;
    match state.send_test_event(&org, &endpoint).await? {
        TestEvent::Sent(delivery) => Ok((StatusCode::ACCEPTED, Json(DeliveryView::from(&delivery)))),
        TestEvent::Disabled => Err(ApiError::Conflict("endpoint_disabled", TEST_ON_DISABLED.into())),
        TestEvent::Gone => Err(ApiError::NotFound("endpoint")),
    }
}
