//! What the pages show: one askama template struct per page (templates in `templates/settings/`, escaped by
//! askama) and the small view models they are filled with. No HTML is written here.

use std::time::Duration;

use askama::Template;
use chrono::{DateTime, Utc};

use crate::domain::call;
use crate::domain::endpoint::EVENT_TYPES;
use crate::domain::interview;
use crate::domain::time::{Millis, format_ms};

/// What every page's frame needs.
pub struct Layout {
    /// The page's `<title>`, before "· Tidings".
    pub title: String,
    /// The session's CSRF token, carried by every form of the page (sign-out included).
    pub csrf: String,
    /// Shows the navigation and the sign-out button.
    pub signed_in: bool,
    /// The navigation entry that is current: `webhooks`, `deliveries` or empty.
    pub section: &'static str,
    /// A one-line confirmation of what the last form did.
    pub notice: Option<&'static str>,
    /// The page updates parts of itself; without script a meta refresh does it.
    pub refreshes: bool,
}

impl Layout {
    pub fn new(title: impl Into<String>, csrf: &str, signed_in: bool, section: &'static str) -> Self {
        Self { title: title.into(), csrf: csrf.to_owned(), signed_in, section, notice: None, refreshes: false }
    }
}

/// A moment, written for people: UTC in the page (and on hover); the script shows it in local time.
pub struct Time {
    /// RFC 3339 in UTC, for `<time datetime>`.
    pub iso: String,
    /// `2026-01-02 03:04:05 UTC`.
    pub utc: String,
}

impl Time {
    pub fn at(ms: Millis) -> Self {
        let utc = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        Self { iso: format_ms(ms), utc: utc.format("%Y-%m-%d %H:%M:%S UTC").to_string() }
    }
}

/// A duration written like "24 hours" or "90 seconds".
pub fn describe_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (n, unit) = if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") }
}

/// What a person reads next to an event type.
fn event_note(event_type: &str) -> &'static str {
    match event_type {
        interview::EVENT_TYPE => "an interview changed (interview.updated, with the diff)",
        call::EVENT_TYPE => "a call was completed (deprecated: choose it only if you still need it)",
        _ => "",
    }
}

// -------------------------------------------------------------------------------------------------------------
// Sign in, errors
// -------------------------------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "settings/sign_in.html")]
pub struct SignInPage {
    pub layout: Layout,
    /// Where to go after signing in (already checked to be a settings page).
    pub next: String,
    /// The message next to the key field.
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "settings/error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub title: &'static str,
    pub message: String,
    pub status: u16,
}

// -------------------------------------------------------------------------------------------------------------
// Webhooks
// -------------------------------------------------------------------------------------------------------------

/// Messages next to the fields of the webhook form: the API's own messages for the same input.
#[derive(Default)]
pub struct FieldErrors {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<String>,
}

impl FieldErrors {
    pub fn any(&self) -> bool {
        self.url.is_some() || self.description.is_some() || self.event_types.is_some()
    }
}

/// One event type checkbox.
pub struct EventChoice {
    pub value: &'static str,
    pub note: &'static str,
    pub checked: bool,
}

/// The webhook form's fields, as sent (or as stored), with their messages.
pub struct WebhookFields {
    pub url: String,
    pub description: String,
    pub events: Vec<EventChoice>,
    pub enabled: bool,
    pub errors: FieldErrors,
}

impl WebhookFields {
    pub fn new(url: &str, description: &str, event_types: &[String], enabled: bool, errors: FieldErrors) -> Self {
        let events = EVENT_TYPES
            .iter()
            .map(|&value| EventChoice {
                value,
                note: event_note(value),
                checked: event_types.iter().any(|t| t == value),
            })
            .collect();
        Self { url: url.to_owned(), description: description.to_owned(), events, enabled, errors }
    }
}

/// The last delivery to an endpoint, for the list.
pub struct LastDelivery {
    pub id: String,
    pub status: &'static str,
    pub at: Time,
}

/// One row of the webhooks list.
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub last: Option<LastDelivery>,
}

#[derive(Template)]
#[template(path = "settings/webhooks.html")]
pub struct WebhooksPage {
    pub layout: Layout,
    pub rows: Vec<WebhookRow>,
    /// The link to the next page, when there is one.
    pub more: Option<String>,
}

#[derive(Template)]
#[template(path = "settings/webhook_new.html")]
pub struct NewWebhookPage {
    pub layout: Layout,
    pub fields: WebhookFields,
}

/// An endpoint as its page heads it.
pub struct EndpointSummary {
    pub id: String,
    pub url: String,
    pub enabled: bool,
    pub created: Time,
}

#[derive(Template)]
#[template(path = "settings/webhook.html")]
pub struct WebhookPage {
    pub layout: Layout,
    pub endpoint: EndpointSummary,
    pub fields: WebhookFields,
    /// The signing secret, only when asked to reveal it.
    pub secret: Option<String>,
    /// Until when the secret before the last rotation still signs, while it does.
    pub previous_until: Option<Time>,
    /// How long a rotated-out secret keeps signing.
    pub grace: String,
    /// What the last form did to the secret (added with it, rotated).
    pub secret_notice: Option<&'static str>,
    /// Why a test event could not be sent.
    pub test_error: Option<String>,
}

#[derive(Template)]
#[template(path = "settings/webhook_delete.html")]
pub struct DeleteWebhookPage {
    pub layout: Layout,
    pub id: String,
    pub url: String,
    pub description: String,
}

// -------------------------------------------------------------------------------------------------------------
// Deliveries
// -------------------------------------------------------------------------------------------------------------

/// One choice of a filter's `<select>`.
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// One row of the deliveries list.
pub struct DeliveryRow {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_label: String,
    pub status: &'static str,
    pub attempts: i64,
    pub created: Time,
    pub next: Option<Time>,
}

#[derive(Template)]
#[template(path = "settings/deliveries.html")]
pub struct DeliveriesPage {
    pub layout: Layout,
    pub endpoints: Vec<Choice>,
    pub statuses: Vec<Choice>,
    /// The event filter as typed (`evt_…`), empty for none.
    pub event_id: String,
    pub filter_error: Option<String>,
    /// Some filter is set.
    pub filtered: bool,
    pub rows: Vec<DeliveryRow>,
    pub older: Option<String>,
    pub now: Time,
}

/// One attempt of a delivery.
pub struct AttemptRow {
    pub number: i64,
    pub manual: bool,
    pub started: Time,
    pub duration_ms: i64,
    /// `HTTP 200`, `HTTP 500`, `timeout`, `connect`…
    pub result: String,
    pub ok: bool,
    /// The first bytes of the response body.
    pub response: String,
}

#[derive(Template)]
#[template(path = "settings/delivery.html")]
pub struct DeliveryPage {
    pub layout: Layout,
    pub id: String,
    pub status: &'static str,
    pub endpoint_id: String,
    pub endpoint_label: String,
    /// Its webhook is disabled: its deliveries wait, and a retry is refused.
    pub endpoint_disabled: bool,
    pub event_id: String,
    pub event_type: String,
    pub created: Time,
    pub attempt_count: i64,
    pub next: Option<Time>,
    pub attempts: Vec<AttemptRow>,
    /// The event body, indented for reading.
    pub body: String,
    /// Still pending: the page refreshes its status and attempts.
    pub refreshing: bool,
    /// Why "Retry now" did nothing.
    pub retry_error: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(describe_duration(Duration::from_secs(24 * 3600)), "24 hours");
        assert_eq!(describe_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(describe_duration(Duration::from_secs(300)), "5 minutes");
        assert_eq!(describe_duration(Duration::from_secs(90)), "90 seconds");
    }

    #[test]
    fn times_are_utc() {
        let t = Time::at(0);
        assert_eq!(t.iso, "1970-01-01T00:00:00.000Z");
        assert_eq!(t.utc, "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn pages_escape_what_users_typed() {
        let fields = WebhookFields::new(
            "https://example.com/?a=<b>",
            "<script>alert(1)</script>",
            &[interview::EVENT_TYPE.to_owned()],
            true,
            FieldErrors::default(),
        );
        let page = NewWebhookPage { layout: Layout::new("Add", "tok", true, "webhooks"), fields };
        let html = page.render().unwrap();
        assert!(!html.contains("<script>alert(1)</script>"), "{html}");
        assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{html}");
    }
}
