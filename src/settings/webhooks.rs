//! The webhooks pages: the list, add, edit, delete (after a confirmation), the signing secret (reveal, copy,
//! rotate) and "Send test event". Validation is the API's own ([`EndpointUrl::parse`], [`parse_event_types`],
//! [`validate_description`]), so each field shows the message the API would answer.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::form::{Form, encode};
use super::session::SignedIn;
use super::views::{
    DeleteWebhookPage, EndpointSummary, FieldErrors, LastDelivery, Layout, NewWebhookPage, Time, WebhookFields,
    WebhookPage, WebhookRow, WebhooksPage, describe_duration,
};
use super::{SettingsError, render, see_other};
use crate::domain::endpoint::{EndpointUrl, parse_event_types, validate_description};
use crate::domain::interview::EVENT_TYPE;
use crate::domain::time::now_ms;
use crate::domain::{Invalid, signing};
use crate::http::AppState;
use crate::http::actions::{TEST_ON_DISABLED, TestEvent};
use crate::store::{EndpointChanges, EndpointRecord, NewEndpoint, PageRequest};

/// Endpoints per page of the list.
const PAGE_SIZE: u32 = 50;

/// What the last form did, named in the redirect so a reload shows the same page without sending it again.
fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "saved" => "Changes saved.",
        "deleted" => "Webhook deleted.",
        _ => return None,
    })
}

/// What the last form did to the signing secret: shown in the secret's section, where the page opens.
fn secret_notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "created" => "Webhook added. Copy its signing secret now: your receiver needs it to check signatures.",
        "rotated" => "New signing secret made. Give it to your receiver: the previous one keeps signing for now.",
        _ => return None,
    })
}

#[derive(Deserialize, Default)]
pub struct WebhookQuery {
    done: Option<String>,
    reveal: Option<String>,
    cursor: Option<String>,
}

/// The signed-in organization's endpoint with this id, or 404.
async fn find(state: &AppState, org: &str, id: &str) -> Result<EndpointRecord, SettingsError> {
    state.endpoint(org, id).await?.ok_or(SettingsError::NotFound("webhook"))
}

/// The webhook form as sent.
struct WebhookInput {
    url: String,
    description: String,
    event_types: Vec<String>,
    enabled: bool,
}

/// The webhook form checked by the API's rules: every field's message at once, not only the first.
struct ValidWebhook {
    url: String,
    description: String,
    event_types: Vec<String>,
    enabled: bool,
}

impl WebhookInput {
    fn from_form(form: &Form) -> Self {
        Self {
            url: form.get("url").unwrap_or_default().to_owned(),
            description: form.get("description").unwrap_or_default().to_owned(),
            event_types: form.all("event_types"),
            enabled: form.checked("enabled"),
        }
    }

    fn validate(&self, allow_private: bool) -> Result<ValidWebhook, FieldErrors> {
        let mut errors = FieldErrors::default();
        let url = if self.url.is_empty() {
            // The API's message for a missing url.
            errors.url = Some(Invalid::new("url", "is required").caller_message());
            None
        } else {
            EndpointUrl::parse(&self.url, allow_private).map_err(|e| errors.url = Some(e.caller_message())).ok()
        };
        let description_ok =
            validate_description(&self.description).map_err(|e| errors.description = Some(e.caller_message())).is_ok();
        let event_types =
            parse_event_types(&self.event_types).map_err(|e| errors.event_types = Some(e.caller_message())).ok();
        match (url, description_ok, event_types) {
            (Some(url), true, Some(event_types)) => Ok(ValidWebhook {
                url: url.as_str().to_owned(),
                description: self.description.clone(),
                event_types,
                enabled: self.enabled,
            }),
            _ => Err(errors),
        }
    }

    fn fields(&self, errors: FieldErrors) -> WebhookFields {
        WebhookFields::new(&self.url, &self.description, &self.event_types, self.enabled, errors)
    }
}

pub async fn list_webhooks(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(query): Query<WebhookQuery>,
) -> Result<Response, SettingsError> {
    let before = super::cursor(query.cursor.as_deref());
    let page = state.store.list_endpoints(&signed_in.org, PageRequest { limit: PAGE_SIZE, before }).await?;
    let endpoint_ids: Vec<String> = page.items.iter().map(|e| e.id.clone()).collect();
    let mut lasts: HashMap<String, LastDelivery> = state
        .store
        .last_deliveries(&signed_in.org, &endpoint_ids)
        .await?
        .into_iter()
        .map(|d| {
            let last = LastDelivery { id: d.id, status: d.status.as_str(), at: Time::at(d.updated_at) };
            (d.endpoint_id, last)
        })
        .collect();
    let rows = page
        .items
        .iter()
        .map(|endpoint| WebhookRow {
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            description: endpoint.description.clone(),
            event_types: endpoint.event_types.clone(),
            enabled: endpoint.enabled,
            last: lasts.remove(&endpoint.id),
        })
        .collect();
    let mut layout = Layout::new("Webhooks", &signed_in.session.token, true, "webhooks");
    layout.notice = notice(query.done.as_deref());
    let more = page.next_cursor.map(|cursor| format!("/settings/webhooks?cursor={cursor}"));
    render(StatusCode::OK, &WebhooksPage { layout, rows, more })
}

fn new_page(signed_in: &SignedIn, fields: WebhookFields) -> NewWebhookPage {
    NewWebhookPage { layout: Layout::new("Add a webhook", &signed_in.session.token, true, "webhooks"), fields }
}

pub async fn new_webhook(signed_in: SignedIn) -> Result<Response, SettingsError> {
    // New endpoints get interview events only: the deprecated call_completed must be chosen explicitly.
    let fields = WebhookFields::new("", "", &[EVENT_TYPE.to_owned()], true, FieldErrors::default());
    render(StatusCode::OK, &new_page(&signed_in, fields))
}

pub async fn create_webhook(
    State(state): State<AppState>,
    signed_in: SignedIn,
    form: Form,
) -> Result<Response, SettingsError> {
    let input = WebhookInput::from_form(&form);
    let valid = match input.validate(state.config.allow_private_targets) {
        Ok(valid) => valid,
        Err(errors) => return render(StatusCode::UNPROCESSABLE_ENTITY, &new_page(&signed_in, input.fields(errors))),
    };
    let new = NewEndpoint {
        url: valid.url,
        description: valid.description,
        event_types: valid.event_types,
        enabled: valid.enabled,
        secret: signing::generate_secret(),
    };
    let endpoint = state.store.create_endpoint(&signed_in.org, new).await?;
    Ok(see_other(format!("/settings/webhooks/{}?done=created&reveal=1#secret", endpoint.id)))
}

/// The endpoint's page, with `fields` in its form (as stored, or as sent with their messages).
fn webhook_page(
    state: &AppState,
    signed_in: &SignedIn,
    endpoint: &EndpointRecord,
    fields: WebhookFields,
    reveal: bool,
) -> WebhookPage {
    let now = now_ms();
    WebhookPage {
        layout: Layout::new(endpoint.url.clone(), &signed_in.session.token, true, "webhooks"),
        endpoint: EndpointSummary {
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            enabled: endpoint.enabled,
            created: Time::at(endpoint.created_at),
        },
        fields,
        secret: reveal.then(|| endpoint.secret.expose_secret().to_owned()),
        previous_until: endpoint
            .previous_secret
            .as_ref()
            .and(endpoint.previous_secret_until)
            .filter(|until| *until > now)
            .map(Time::at),
        grace: describe_duration(state.config.secret_grace),
        secret_notice: None,
        test_error: None,
    }
}

fn stored_fields(endpoint: &EndpointRecord) -> WebhookFields {
    WebhookFields::new(
        &endpoint.url,
        &endpoint.description,
        &endpoint.event_types,
        endpoint.enabled,
        FieldErrors::default(),
    )
}

pub async fn show_webhook(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Query(query): Query<WebhookQuery>,
) -> Result<Response, SettingsError> {
    let endpoint = find(&state, &signed_in.org, &id).await?;
    let reveal = query.reveal.as_deref().is_some_and(|r| !r.is_empty() && r != "0");
    let mut page = webhook_page(&state, &signed_in, &endpoint, stored_fields(&endpoint), reveal);
    page.layout.notice = notice(query.done.as_deref());
    page.secret_notice = secret_notice(query.done.as_deref());
    render(StatusCode::OK, &page)
}

pub async fn update_webhook(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, SettingsError> {
    let endpoint = find(&state, &signed_in.org, &id).await?;
    let input = WebhookInput::from_form(&form);
    let valid = match input.validate(state.config.allow_private_targets) {
        Ok(valid) => valid,
        Err(errors) => {
            let page = webhook_page(&state, &signed_in, &endpoint, input.fields(errors), false);
            return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    // The form always sends every field, so every field is set.
    let changes = EndpointChanges {
        url: Some(valid.url),
        description: Some(valid.description),
        event_types: Some(valid.event_types),
        enabled: Some(valid.enabled),
    };
    state.store.update_endpoint(&signed_in.org, &id, changes).await?.ok_or(SettingsError::NotFound("webhook"))?;
    Ok(see_other(format!("/settings/webhooks/{id}?done=saved")))
}

pub async fn confirm_delete_webhook(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, SettingsError> {
    let endpoint = find(&state, &signed_in.org, &id).await?;
    let page = DeleteWebhookPage {
        layout: Layout::new("Delete webhook", &signed_in.session.token, true, "webhooks"),
        id: endpoint.id,
        url: endpoint.url,
        description: endpoint.description,
    };
    render(StatusCode::OK, &page)
}

pub async fn delete_webhook(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    _form: Form,
) -> Result<Response, SettingsError> {
    if !state.delete_endpoint(&signed_in.org, &id).await? {
        return Err(SettingsError::NotFound("webhook"));
    }
    Ok(see_other("/settings/webhooks?done=deleted"))
}

pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    _form: Form,
) -> Result<Response, SettingsError> {
    state.rotate_secret(&signed_in.org, &id).await?.ok_or(SettingsError::NotFound("webhook"))?;
    Ok(see_other(format!("/settings/webhooks/{id}?done=rotated&reveal=1#secret")))
}

pub async fn test_webhook(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    _form: Form,
) -> Result<Response, SettingsError> {
    let endpoint = find(&state, &signed_in.org, &id).await?;
    match state.send_test_event(&signed_in.org, &endpoint).await? {
        TestEvent::Sent(delivery) => {
            Ok(see_other(format!("/settings/deliveries/{}?done=test-sent", encode(&delivery.id))))
        }
        TestEvent::Disabled => {
            let mut page = webhook_page(&state, &signed_in, &endpoint, stored_fields(&endpoint), false);
            // The API's message for the same refusal (409 endpoint_disabled).
            page.test_error = Some(TEST_ON_DISABLED.into());
            render(StatusCode::CONFLICT, &page)
        }
        TestEvent::Gone => Err(SettingsError::NotFound("webhook")),
    }
}
