//! The API's one error type and its JSON envelope: `{"error":{"code","message"[,"field"]}}`.

use axum::Json;
use axum::http::header::ALLOW;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Invalid;
use crate::store::StoreError;

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be read (malformed JSON, a bad query string).
    #[error("{0}")]
    BadRequest(String),
    /// No API key, or one that is not known.
    #[error("missing or unknown API key")]
    Unauthorized,
    /// Nothing of that kind with that id in the caller's organization.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is well formed but breaks a rule; names the field to fix.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The request conflicts with the current state.
    #[error("{1}")]
    Conflict(&'static str, String),
    /// The path exists but does not answer this method. `allow` is the `Allow` header the router computed, also
    /// sent back as the header.
    #[error("{method} is not allowed on this path{}", answers(.allow))]
    MethodNotAllowed { method: String, allow: String },
    /// The body is over the configured limit.
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body did not arrive within the client timeout; holds it.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// The body declares a media type that is not JSON; holds the declared type.
    #[error("the body is declared as `{0}`, which is not JSON; send `content-type: application/json`")]
    UnsupportedMediaType(String),
    /// Our fault: logged here, answered without details.
    #[error("internal error: {0}")]
    Internal(#[from] StoreError),
}

/// The methods of an `Allow` value, for a message; nothing when the router named none.
fn answers(allow: &str) -> String {
    if allow.is_empty() { String::new() } else { format!("; it answers {}", allow.replace(',', ", ")) }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// What went wrong, for the caller's code (`code`, `field`) and for the person reading it (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// For code to branch on: `bad_request`, `unauthorized`, `not_found`, `method_not_allowed`, `invalid`,
    /// `endpoint_disabled`, `request_timeout`, `payload_too_large`, `unsupported_media_type` or `internal`.
    #[schema(value_type = String, example = "invalid")]
    pub code: &'static str,
    /// What to fix, in words.
    pub message: String,
    /// On 422 only: the field to change, dotted for nested fields (`call_details.duration`), `body` for the body
    /// as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
}

impl ApiError {
    /// The status and body this error answers with. Kept apart from [`IntoResponse`] so the OpenAPI document's
    /// examples are made by the same code as real answers.
    pub fn envelope(&self) -> (StatusCode, ErrorEnvelope) {
        let (status, code, field) = match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", None),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            Self::Invalid(invalid) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some(invalid.field.clone())),
            Self::Conflict(code, _) => (StatusCode::CONFLICT, *code, None),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout", None),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        let message = match self {
            Self::Internal(_) => "internal error".to_owned(),
            Self::Invalid(invalid) => invalid.caller_message(),
            other => other.to_string(),
        };
        (status, ErrorEnvelope { error: ErrorBody { code, message, field } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(error) = &self {
            tracing::error!(%error, "request failed");
        }
        let (status, envelope) = self.envelope();
        let mut response = (status, Json(envelope)).into_response();
        // RFC 9110 requires `Allow` on a 405; the value came from a header, so it is one.
        if let Self::MethodNotAllowed { allow, .. } = &self
            && !allow.is_empty()
            && let Ok(value) = HeaderValue::from_str(allow)
        {
            response.headers_mut().insert(ALLOW, value);
        }
        response
    }
}
