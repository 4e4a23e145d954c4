//! Form bodies (`application/x-www-form-urlencoded`), accepted only with the session's CSRF token and never
//! from another site.

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;

use super::SettingsError;
use super::session::Session;
use crate::http::AppState;
use crate::http::extract::{Unread, read_body};

/// The name of the hidden field that carries the CSRF token in every form.
pub const CSRF_FIELD: &str = "csrf";

/// A form sent by this session's own page. Repeated names (checkboxes) keep every value, in order.
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// The first value of `name`, if sent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (checkboxes, multiple selects).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }

    /// A checkbox: sent means on.
    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl FromRequest<AppState> for Form {
    type Rejection = SettingsError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let session = request.extensions().get::<Session>().cloned();
        // Browsers say where a request comes from; a form another site made us send is refused even before
        // its token is looked at.
        let cross_site =
            request.headers().get("sec-fetch-site").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        if cross_site {
            return Err(SettingsError::Forbidden("This form was sent from another site"));
        }
        let is_form = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(SettingsError::BadRequest("Expected a form (application/x-www-form-urlencoded).".into()));
        }
        let body = read_body(request, state).await.map_err(|unread| {
            SettingsError::BadRequest(match unread {
                Unread::TooLarge => format!("The form is larger than {} bytes.", state.config.max_body_bytes),
                Unread::TimedOut => "The form took too long to arrive.".into(),
                Unread::Broken(text) => text,
            })
        })?;
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
        let form = Self { pairs };
        let sent = form.get(CSRF_FIELD).unwrap_or_default();
        match session {
            Some(session) if !sent.is_empty() && session.accepts_token(sent) => Ok(form),
            _ => Err(SettingsError::Forbidden("This form does not carry the token of your session")),
        }
    }
}

/// Percent-encodes a query parameter value.
pub fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
