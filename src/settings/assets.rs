//! The page's one stylesheet and one script, compiled into the binary and served from `/settings/assets/`:
//! nothing is loaded from another site.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::SettingsError;

const STYLE: &str = include_str!("../../assets/style.css");
const SCRIPT: &str = include_str!("../../assets/settings.js");

pub async fn get_asset(Path(name): Path<String>) -> Result<Response, SettingsError> {
    let (body, content_type) = match name.as_str() {
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        "settings.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return Err(SettingsError::NotFound("file")),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Short: a new version of the binary may change them, and their URLs carry no version.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(response)
}
