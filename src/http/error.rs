//! The API's one error type and its JSON envelope: `{"error":{"code","message"[,"field"]}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
    /// The body is over the configured limit.
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// Our fault: logged here, answered without details.
    #[error("internal error: {0}")]
    Internal(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = match &self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", None),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            Self::Invalid(invalid) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some(invalid.field.clone())),
            Self::Conflict(code, _) => (StatusCode::CONFLICT, *code, None),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None),
            Self::Internal(error) => {
                tracing::error!(%error, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
            }
        };
        let message = match &self {
            Self::Internal(_) => "internal error".to_owned(),
            Self::Invalid(invalid) => format!("{} {}", invalid.field, invalid.message),
            other => other.to_string(),
        };
        let mut error = json!({"code": code, "message": message});
        if let Some(field) = field {
            error["field"] = json!(field);
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}
