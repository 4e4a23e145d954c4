//! `/v1/endpoints`: register, list, read, edit and delete webhook URLs; their secrets; test events.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;

use super::AppState;
use super::actions::{TEST_ON_DISABLED, TestEvent};
use super::error::ApiError;
use super::extract::{Fields, JsonBody, List, Org, PathId};
use super::views::{DeliveryView, EndpointView, ListView};
use crate::domain::endpoint::{EndpointUrl, parse_event_types, validate_description};
use crate::domain::interview::EVENT_TYPE;
use crate::domain::signing;
use crate::store::{EndpointChanges, EndpointRecord, NewEndpoint};

const FIELDS: [&str; 4] = ["url", "description", "event_types", "enabled"];

#[derive(Serialize)]
struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: EndpointView,
    secret: String,
}

/// The caller's endpoint with this id, or 404.
async fn find(state: &AppState, org: &str, id: &str) -> Result<EndpointRecord, ApiError> {
    state.endpoint(org, id).await?.ok_or(ApiError::NotFound("endpoint"))
}

pub async fn create_endpoint(
    State(state): State<AppState>,
    Org(org): Org,
    body: JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let fields = Fields::new(&body.value, &FIELDS)?;
    let url = fields.string("url")?.ok_or_else(|| crate::domain::Invalid::new("url", "is required"))?;
    let url = EndpointUrl::parse(&url, state.config.allow_private_targets)?;
    let description = fields.string("description")?.unwrap_or_default();
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

pub async fn list_endpoints(
    State(state): State<AppState>,
    Org(org): Org,
    List(params): List,
) -> Result<Json<ListView<EndpointView>>, ApiError> {
    let page = state.store.list_endpoints(&org, params.page()?).await?;
    Ok(Json(ListView::from_page(&page)))
}

pub async fn get_endpoint(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
) -> Result<Json<EndpointView>, ApiError> {
    Ok(Json(EndpointView::from(&find(&state, &org, &id).await?)))
}

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
    // A null description clears it.
    let description = match body.value.get("description") {
        Some(serde_json::Value::Null) => Some(String::new()),
        _ => fields.string("description")?,
    };
    if let Some(text) = &description {
        validate_description(text)?;
    }
    let event_types = fields.strings("event_types")?.map(|t| parse_event_types(&t)).transpose()?;
    let changes = EndpointChanges { url, description, event_types, enabled: fields.bool("enabled")? };
    let endpoint = state.store.update_endpoint(&org, &id, changes).await?.ok_or(ApiError::NotFound("endpoint"))?;
    Ok(Json(EndpointView::from(&endpoint)))
}

pub async fn delete_endpoint(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    find(&state, &org, &id).await?;
    if !state.store.delete_endpoint(&org, &id).await? {
        return Err(ApiError::NotFound("endpoint"));
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get_secret(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
) -> Result<Json<serde_json::Value>, ApiError> {
    let endpoint = find(&state, &org, &id).await?;
    Ok(Json(json!({ "secret": endpoint.secret.expose_secret() })))
}

pub async fn rotate_secret(
    State(state): State<AppState>,
    Org(org): Org,
    PathId(id): PathId,
) -> Result<Json<serde_json::Value>, ApiError> {
    let endpoint = state.rotate_secret(&org, &id).await?.ok_or(ApiError::NotFound("endpoint"))?;
    Ok(Json(json!({ "secret": endpoint.secret.expose_secret() })))
}

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
