//! Extractors: the caller's organization from the API key, JSON bodies, path ids and list parameters, each
//! failing with an [`ApiError`] that says what to fix.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::AppState;
use super::error::ApiError;
use crate::domain::{Invalid, apikey};
use crate::store::PageRequest;

/// The organization whose API key signed the request. Every `/v1` handler takes one, and every query it
/// makes is scoped by it.
pub struct Org(pub String);

impl FromRequestParts<AppState> for Org {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(ApiError::Unauthorized)?;
        let (scheme, key) = header.trim_start().split_once(' ').ok_or(ApiError::Unauthorized)?;
        // Authentication schemes are case-insensitive (RFC 9110 §11.1): `bearer` is as good as `Bearer`.
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unauthorized);
        }
        let hash = apikey::hash_of_presented(key).ok_or(ApiError::Unauthorized)?;
        let org = state.org_for_key_hash(&hash).await?.ok_or(ApiError::Unauthorized)?;
        Ok(Org(org))
    }
}

/// Whether a declared media type is JSON: `application/json` or any `application/…+json`, in any case, whatever
/// its parameters (`; charset=utf-8`).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else { return false };
    let json_suffix = subtype.len() > "+json".len()
        && subtype.get(subtype.len() - "+json".len()..).is_some_and(|tail| tail.eq_ignore_ascii_case("+json"));
    kind.eq_ignore_ascii_case("application") && (subtype.eq_ignore_ascii_case("json") || json_suffix)
}

/// Why a request body could not be read.
pub enum Unread {
    /// Over `--max-body-bytes`.
    TooLarge,
    /// Not all there within `--client-timeout`.
    TimedOut,
    /// Broken off or malformed; axum's words for it.
    Broken(String),
}

/// Reads a request body whole, within the size limit and the client timeout: the one way the API's JSON bodies
/// and the settings pages' forms are read.
pub async fn read_body(req: Request, state: &AppState) -> Result<Bytes, Unread> {
    let read = tokio::time::timeout(state.config.client_timeout, Bytes::from_request(req, state));
    match read.await {
        Err(_) => Err(Unread::TimedOut),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Unread::TooLarge),
        Ok(Err(rejection)) => Err(Unread::Broken(rejection.body_text())),
    }
}

/// A JSON request body, parsed but not yet validated. Declared as anything but JSON it answers 415; over the
/// size limit, 413; not all there within the client timeout, 408; not JSON, 400. A body without a `content-type` is read as JSON: clients that leave the header
/// out mean nothing else, and refusing them would break callers that worked before the header was checked.
pub struct JsonBody {
    pub value: Value,
    /// The bytes as received, for payloads that are sent on exactly as they came.
    pub raw: Bytes,
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        // A value that is not visible ASCII cannot name JSON.
        if let Some(declared) = req.headers().get(CONTENT_TYPE)
            && !declared.to_str().is_ok_and(is_json)
        {
            return Err(ApiError::UnsupportedMediaType(shown(String::from_utf8_lossy(declared.as_bytes()).trim())));
        }
        let raw = read_body(req, state).await.map_err(|unread| match unread {
            Unread::TooLarge => ApiError::TooLarge(state.config.max_body_bytes),
            Unread::TimedOut => ApiError::BodyTimeout(state.config.client_timeout),
            Unread::Broken(text) => ApiError::BadRequest(text),
        })?;
        let value = serde_json::from_slice(&raw).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
        Ok(Self { value, raw })
    }
}

/// The one `{id}` of a path. A path that cannot be decoded names nothing that exists.
pub struct PathId(pub String);

impl FromRequestParts<AppState> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Path(id) =
            Path::<String>::from_request_parts(parts, state).await.map_err(|_| ApiError::NotFound("resource"))?;
        Ok(Self(id))
    }
}

/// The query parameters of one list: the names it takes, so any other answers 400 instead of being ignored
/// (a misspelled filter that silently matched everything would be worse than an error).
pub trait ListQuery: DeserializeOwned {
    /// Every parameter this list reads; a unit test holds it to the struct's fields.
    const NAMES: &'static [&'static str];
}

/// `?cursor=&limit=`: all that `GET /v1/endpoints` and `GET /v1/events` take.
#[derive(Debug, Deserialize, Default)]
pub struct PageQuery {
    pub cursor: Option<String>,
    pub limit: Option<String>,
}

impl ListQuery for PageQuery {
    const NAMES: &'static [&'static str] = &["cursor", "limit"];
}

/// `GET /v1/deliveries`: a page, and filters that combine.
#[derive(Debug, Deserialize, Default)]
pub struct DeliveryQuery {
    #[serde(flatten)]
    pub page: PageQuery,
    pub endpoint_id: Option<String>,
    pub event_id: Option<String>,
    pub status: Option<String>,
}

impl ListQuery for DeliveryQuery {
    const NAMES: &'static [&'static str] = &["cursor", "limit", "endpoint_id", "event_id", "status"];
}

impl PageQuery {
    /// The page asked for, checked.
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| Invalid::new("limit", format!("must be a whole number from 1 to {MAX_LIMIT}")))?,
        };
        let before = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| Invalid::new("cursor", "is not a cursor this API gave out"))?,
            ),
        };
        Ok(PageRequest { limit, before })
    }
}

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_LIMIT: u32 = 250;

/// A list's parameters from the query string. A parameter the list does not take, or a query string that
/// cannot be read, answers 400.
pub struct List<Q>(pub Q);

impl<Q: ListQuery> FromRequestParts<AppState> for List<Q> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        if let Some((name, _)) =
            url::form_urlencoded::parse(query.as_bytes()).find(|(name, _)| !Q::NAMES.contains(&name.as_ref()))
        {
            return Err(ApiError::BadRequest(format!(
                "`{}` is not a query parameter of this list; it takes {}",
                shown(&name),
                Q::NAMES.join(", ")
            )));
        }
        let Query(params) =
            Query::<Q>::from_request_parts(parts, state).await.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        Ok(Self(params))
    }
}

/// Caller text quoted in a message, cut short so a huge value does not make a huge answer.
fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 100;
    match text.char_indices().nth(MAX_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A JSON object body read field by field, so each wrong field is named in the answer.
pub struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// Accepts an object whose keys are all in `allowed`.
    pub fn new(value: &'a Value, allowed: &[&str]) -> Result<Self, Invalid> {
        let object = value.as_object().ok_or_else(|| Invalid::new("body", "must be a JSON object"))?;
        if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(Invalid::new(
                unknown.as_str(),
                format!("is not a known field; the fields are {}", allowed.join(", ")),
            ));
        }
        Ok(Self(object))
    }

    /// A string field that must be present and not `null`.
    pub fn required_string(&self, name: &str) -> Result<String, Invalid> {
        match self.0.get(name) {
            None | Some(Value::Null) => Err(Invalid::new(name, "is required")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Invalid::new(name, "must be a string")),
        }
    }

    /// A string field. `null` is refused rather than read as absent: a field whose only way to say "none" is to
    /// be left out would otherwise take a `null` meant as "clear it" as "leave it", and say nothing.
    pub fn string(&self, name: &str) -> Result<Option<String>, Invalid> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Null) => Err(cannot_be_null(name, "a string")),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Invalid::new(name, "must be a string")),
        }
    }

    /// A string field whose `null` means the empty string.
    pub fn clearable_string(&self, name: &str) -> Result<Option<String>, Invalid> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(String::new())),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Invalid::new(name, "must be a string or null")),
        }
    }

    /// A boolean field; `null` is refused, as for [`Fields::string`].
    pub fn bool(&self, name: &str) -> Result<Option<bool>, Invalid> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Null) => Err(cannot_be_null(name, "true or false")),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(Invalid::new(name, "must be true or false")),
        }
    }

    /// An array-of-strings field; `null` is refused, as for [`Fields::string`].
    pub fn strings(&self, name: &str) -> Result<Option<Vec<String>>, Invalid> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Null) => Err(cannot_be_null(name, "an array of strings")),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| Invalid::new(name, "must be an array of strings")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(Invalid::new(name, "must be an array of strings")),
        }
    }
}

fn cannot_be_null(name: &str, kind: &str) -> Invalid {
    Invalid::new(name, format!("cannot be null; send {kind}, or leave the field out"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        for json in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            " application/json ",
            "application/merge-patch+json",
            "application/vnd.api+json; ext=x",
        ] {
            assert!(is_json(json), "{json:?} is JSON");
        }
        for other in [
            "",
            "text/plain",
            "text/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/+json",
            "application/jsonp",
            "application/json-seq",
            "application",
            "json",
        ] {
            assert!(!is_json(other), "{other:?} is not JSON");
        }
    }

    #[test]
    fn quoted_caller_text_is_cut_short() {
        assert_eq!(shown("status"), "status");
        let long = "é".repeat(300);
        let cut = shown(&long);
        assert_eq!(cut.chars().count(), 101, "100 characters and an ellipsis");
        assert!(cut.ends_with('…'));
    }
}
