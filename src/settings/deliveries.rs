//! The deliveries pages: the list (newest first, filtered by endpoint and status, refreshing itself) and one
//! delivery with its event body, every attempt, the next scheduled attempt and "Retry now".

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::form::{Form, encode};
use super::session::SignedIn;
use super::views::{AttemptRow, Choice, DeliveriesPage, DeliveryPage, DeliveryRow, Layout, Time};
use super::{SettingsError, render, see_other};
use crate::domain::time::now_ms;
use crate::http::AppState;
use crate::http::actions::{RETRY_ON_DISABLED, Retry};
use crate::http::extract::MAX_LIMIT;
use crate::store::{AttemptRecord, DeliveryFilter, DeliveryStatus, EndpointRecord, PageRequest, Trigger};

/// Deliveries per page of the list.
const PAGE_SIZE: u32 = 50;
/// The longest response snippet shown per attempt (the store keeps the first 4 KiB).
const SNIPPET_CHARS: usize = 1000;

#[derive(Deserialize, Default)]
pub struct DeliveriesQuery {
    endpoint_id: Option<String>,
    event_id: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct DeliveryQuery {
    done: Option<String>,
}

/// The organization's endpoints (up to the API's largest page), to name each delivery's endpoint and fill
/// the filter.
async fn endpoints_of(state: &AppState, org: &str) -> Result<Vec<EndpointRecord>, SettingsError> {
    Ok(state.store.list_endpoints(org, PageRequest { limit: MAX_LIMIT, before: None }).await?.items)
}

/// An endpoint as a person recognizes it: its description when it has one, and its URL.
fn endpoint_label(endpoint: &EndpointRecord) -> String {
    if endpoint.description.is_empty() {
        endpoint.url.clone()
    } else {
        format!("{} ({})", endpoint.url, endpoint.description)
    }
}

pub async fn list_deliveries(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(query): Query<DeliveriesQuery>,
) -> Result<Response, SettingsError> {
    let endpoint_id = query.endpoint_id.filter(|s| !s.is_empty());
    let event_id = query.event_id.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let status_text = query.status.filter(|s| !s.is_empty());
    // The API's message for the same mistake.
    let (status, filter_error) = match status_text.as_deref().map(DeliveryStatus::parse_filter) {
        None => (None, None),
        Some(Ok(status)) => (Some(status), None),
        Some(Err(invalid)) => (None, Some(invalid.caller_message())),
    };
    let before = super::cursor(query.cursor.as_deref());

    let endpoints = endpoints_of(&state, &signed_in.org).await?;
    let (items, next_cursor) = if filter_error.is_some() {
        (Vec::new(), None)
    } else {
        let filter = DeliveryFilter { endpoint_id: endpoint_id.clone(), event_id: event_id.clone(), status };
        let page = state.deliveries(&signed_in.org, &filter, PageRequest { limit: PAGE_SIZE, before }).await?;
        (page.items, page.next_cursor)
    };
    // Each row names its event's type: one query for the page.
    let event_ids: Vec<String> = items.iter().map(|d| d.event_id.clone()).collect();
    let event_types = state.store.event_types(&signed_in.org, &event_ids).await?;
    let labels: HashMap<&str, String> = endpoints.iter().map(|e| (e.id.as_str(), endpoint_label(e))).collect();
    let rows = items
        .iter()
        .map(|d| DeliveryRow {
            id: d.id.clone(),
            event_id: d.event_id.clone(),
            event_type: event_types.get(&d.event_id).cloned().unwrap_or_default(),
            endpoint_label: labels.get(d.endpoint_id.as_str()).cloned().unwrap_or_else(|| d.endpoint_id.clone()),
            status: d.status.as_str(),
            attempts: d.attempt_count,
            created: Time::at(d.created_at),
            next: d.next_attempt_at.map(Time::at),
        })
        .collect();

    let older = next_cursor.map(|cursor| {
        let mut href = format!("/settings/deliveries?cursor={cursor}");
        if let Some(id) = &endpoint_id {
            href.push_str(&format!("&endpoint_id={}", encode(id)));
        }
        if let Some(id) = &event_id {
            href.push_str(&format!("&event_id={}", encode(id)));
        }
        if let Some(status) = &status_text {
            href.push_str(&format!("&status={}", encode(status)));
        }
        href
    });
    let endpoints = endpoints
        .iter()
        .map(|e| Choice {
            value: e.id.clone(),
            label: labels.get(e.id.as_str()).cloned().unwrap_or_default(),
            selected: endpoint_id.as_deref() == Some(e.id.as_str()),
        })
        .collect();
    let statuses = DeliveryStatus::ALL
        .iter()
        .map(|s| Choice {
            value: s.as_str().to_owned(),
            label: s.as_str().to_owned(),
            selected: status_text.as_deref() == Some(s.as_str()),
        })
        .collect();
    let mut layout = Layout::new("Deliveries", &signed_in.session.token, true, "deliveries");
    layout.refreshes = true;
    let http_status = if filter_error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = DeliveriesPage {
        layout,
        endpoints,
        statuses,
        filtered: endpoint_id.is_some() || event_id.is_some() || status_text.is_some(),
        event_id: event_id.unwrap_or_default(),
        filter_error,
        rows,
        older,
        now: Time::at(now_ms()),
    };
    render(http_status, &page)
}

/// `HTTP 200`, `HTTP 500`, `Timed out`…: the status code when there was an answer (a redirect said to be one
/// that is not followed), what went wrong in words otherwise.
fn attempt_result(attempt: &AttemptRecord) -> String {
    match (attempt.status_code, attempt.error.as_deref()) {
        (Some(code @ (301 | 302 | 303 | 307 | 308)), _) => format!("HTTP {code} (redirects are not followed)"),
        (Some(code), _) => format!("HTTP {code}"),
        (None, Some("timeout")) => "Timed out".to_owned(),
        (None, Some("connect")) => "Could not connect".to_owned(),
        (None, Some("dns")) => "Host name not found".to_owned(),
        (None, Some("blocked")) => "Refused: a private or local address".to_owned(),
        (None, Some("url")) => "The URL cannot be requested".to_owned(),
        (None, Some("request")) => "The exchange broke off".to_owned(),
        (None, Some("signing")) => "Not sent: the signing secret is unreadable".to_owned(),
        (None, Some(other)) => other.to_owned(),
        (None, None) => "—".to_owned(),
    }
}

/// The body indented for reading; as stored when it is not JSON.
fn indent_json(payload: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| payload.to_owned())
}

fn snippet(body: &str) -> String {
    match body.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None => body.to_owned(),
    }
}

pub async fn show_delivery(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Query(query): Query<DeliveryQuery>,
) -> Result<Response, SettingsError> {
    let mut page = delivery_page(&state, &signed_in, &id).await?;
    page.layout.notice = match query.done.as_deref() {
        Some("test-sent") => Some("Test event queued for this webhook: it is sent at once."),
        Some("retried") => Some("Retry asked for: one more attempt is being made now."),
        _ => None,
    };
    render(StatusCode::OK, &page)
}

/// The page of the organization's delivery `id`, with every attempt.
async fn delivery_page(state: &AppState, signed_in: &SignedIn, id: &str) -> Result<DeliveryPage, SettingsError> {
    let org = &signed_in.org;
    let (delivery, attempts) = state.delivery(org, id).await?.ok_or(SettingsError::NotFound("delivery"))?;
    let event = state.store.get_event(org, &delivery.event_id).await?;
    let endpoint = state.store.get_endpoint(org, &delivery.endpoint_id).await?;
    let mut layout = Layout::new(format!("Delivery {id}"), &signed_in.session.token, true, "deliveries");
    let refreshing = delivery.status == DeliveryStatus::Pending;
    layout.refreshes = refreshing;
    Ok(DeliveryPage {
        layout,
        id: delivery.id.clone(),
        status: delivery.status.as_str(),
        endpoint_label: endpoint.as_ref().map(endpoint_label).unwrap_or_else(|| delivery.endpoint_id.clone()),
        endpoint_disabled: endpoint.as_ref().is_some_and(|e| !e.enabled),
        endpoint_id: delivery.endpoint_id.clone(),
        event_id: delivery.event_id.clone(),
        event_type: event.as_ref().map(|e| e.event_type.clone()).unwrap_or_default(),
        created: Time::at(delivery.created_at),
        attempt_count: delivery.attempt_count,
        next: delivery.next_attempt_at.map(Time::at),
        attempts: attempts
            .iter()
            .map(|a| AttemptRow {
                number: a.number,
                manual: a.trigger == Trigger::Manual,
                started: Time::at(a.started_at),
                duration_ms: a.duration_ms,
                result: attempt_result(a),
                ok: a.error.is_none(),
                response: snippet(&a.response_body),
            })
            .collect(),
        body: event.as_ref().map(|e| indent_json(&e.payload)).unwrap_or_default(),
        refreshing,
        retry_error: None,
    })
}

pub async fn retry_delivery(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    _form: Form,
) -> Result<Response, SettingsError> {
    match state.retry_delivery(&signed_in.org, &id).await? {
        Retry::Queued(_) => Ok(see_other(format!("/settings/deliveries/{id}?done=retried"))),
        Retry::Disabled => {
            let mut page = delivery_page(&state, &signed_in, &id).await?;
            // The API's message for the same refusal (409 endpoint_disabled).
            page.retry_error = Some(RETRY_ON_DISABLED);
            // This answers a POST: a refresh would fetch an address that takes none but POST.
            page.refreshing = false;
            page.layout.refreshes = false;
            render(StatusCode::CONFLICT, &page)
        }
        Retry::Gone => Err(SettingsError::NotFound("delivery")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_read_as_status_or_error() {
        let mut attempt = AttemptRecord {
            number: 1,
            trigger: Trigger::Scheduled,
            started_at: 0,
            duration_ms: 5,
            status_code: Some(500),
            error: Some("status".into()),
            response_body: String::new(),
        };
        assert_eq!(attempt_result(&attempt), "HTTP 500");
        attempt.status_code = Some(302);
        assert_eq!(attempt_result(&attempt), "HTTP 302 (redirects are not followed)");
        attempt.status_code = None;
        attempt.error = Some("timeout".into());
        assert_eq!(attempt_result(&attempt), "Timed out");
        attempt.error = Some("blocked".into());
        assert_eq!(attempt_result(&attempt), "Refused: a private or local address");
    }

    #[test]
    fn bodies_are_indented_and_snippets_cut() {
        assert_eq!(indent_json(r#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(indent_json("not json"), "not json");
        let long = "é".repeat(SNIPPET_CHARS + 5);
        assert_eq!(snippet(&long).chars().count(), SNIPPET_CHARS + 1);
        assert_eq!(snippet("short"), "short");
    }
}
