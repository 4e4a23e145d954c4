//! The Developer Settings page: server-rendered HTML under `/settings` for managing webhook endpoints and
//! watching their deliveries in a browser.
//!
//! | module | owns |
//! |---|---|
//! | `session` | the signed session cookie, the sign-in check of every page, CSRF tokens of every form |
//! | `auth` | sign in with an API key, sign out |
//! | `webhooks` | the endpoints: list, add, edit, delete, signing secret, test event |
//! | `deliveries` | the deliveries list and one delivery with its attempts, manual retry |
//! | `views` | the askama templates' structs and the small view models they show |
//! | `form` | reading `application/x-www-form-urlencoded` bodies |
//! | `assets` | the stylesheet and the script, compiled into the binary (no CDN) |
//!
//! Handlers follow the API's: extract, validate with the same domain rules (so a page shows the API's
//! messages), call the same store methods, wake the workers the same way, and render. Every query is scoped
//! by the signed-in organization, so another organization's ids answer 404.

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::middleware;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use secrecy::SecretString;

use crate::http::AppState;
use crate::store::StoreError;

mod assets;
mod auth;
mod deliveries;
mod form;
mod session;
mod views;
mod webhooks;

pub use session::Sessions;

/// The pages, to be nested under `/settings` in [`crate::http::router`]. Sessions are signed with a key
/// derived from `session_key` when the operator set one (shared by every process and kept across restarts),
/// otherwise with a key made here, once per process (see [`Sessions`]).
pub fn router(session_key: Option<&SecretString>) -> Router<AppState> {
    let sessions = session_key.map_or_else(Sessions::new, Sessions::with_secret);
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/settings/webhooks") }))
        .route("/sign-in", get(auth::show_sign_in).post(auth::sign_in))
        .route("/sign-out", post(auth::sign_out))
        .route("/webhooks", get(webhooks::list_webhooks).post(webhooks::create_webhook))
        .route("/webhooks/new", get(webhooks::new_webhook))
        .route("/webhooks/{id}", get(webhooks::show_webhook).post(webhooks::update_webhook))
        .route("/webhooks/{id}/delete", get(webhooks::confirm_delete_webhook).post(webhooks::delete_webhook))
        .route("/webhooks/{id}/rotate-secret", post(webhooks::rotate_webhook_secret))
        .route("/webhooks/{id}/test", post(webhooks::test_webhook))
        .route("/deliveries", get(deliveries::list_deliveries))
        .route("/deliveries/{id}", get(deliveries::show_delivery))
        .route("/deliveries/{id}/retry", post(deliveries::retry_delivery))
        .fallback(|| async { SettingsError::NotFound("page") })
        .layer(middleware::from_fn_with_state(sessions, session::with_session));
    // Assets need no session: they are the same for everyone and cacheable.
    Router::new().route("/assets/{name}", get(assets::get_asset)).merge(pages)
}

/// What a settings handler can answer besides its page. Each renders as HTML.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Nothing of that kind with that id in the signed-in organization (or no such page).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Not signed in (or the session ended): go to the sign-in page, then come back to `next`.
    #[error("sign in required")]
    SignInRequired { next: Option<String> },
    /// A form without this session's CSRF token, or sent from another site.
    #[error("form refused: {0}")]
    Forbidden(&'static str),
    /// A request the page cannot read (not a form body, a body over the limit).
    #[error("{0}")]
    BadRequest(String),
    /// Our fault: logged here, answered without details.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for SettingsError {
    fn from(error: StoreError) -> Self {
        Self::Internal(error.to_string())
    }
}

impl From<askama::Error> for SettingsError {
    fn from(error: askama::Error) -> Self {
        Self::Internal(format!("template: {error}"))
    }
}

impl IntoResponse for SettingsError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            Self::SignInRequired { next } => {
                let target = match next {
                    Some(next) => format!("/settings/sign-in?next={}", form::encode(next)),
                    None => "/settings/sign-in".to_owned(),
                };
                return see_other(target);
            }
            Self::NotFound(what) => {
                (StatusCode::NOT_FOUND, "Not found", format!("There is no {what} here in your organization."))
            }
            Self::Forbidden(why) => (
                StatusCode::FORBIDDEN,
                "Form refused",
                format!("{why}. Go back, reload the page and send the form again."),
            ),
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, "Bad request", why.clone()),
            Self::Internal(error) => {
                tracing::error!(%error, "settings page failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "An internal error occurred.".to_owned())
            }
        };
        let page = views::ErrorPage {
            layout: views::Layout::new(title, "", false, ""),
            title,
            message,
            status: status.as_u16(),
        };
        match askama::Template::render(&page) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(error) => {
                tracing::error!(%error, "error page failed to render");
                (status, title).into_response()
            }
        }
    }
}

/// A rendered page with its status.
fn render(status: StatusCode, page: &impl askama::Template) -> Result<Response, SettingsError> {
    Ok((status, Html(page.render()?)).into_response())
}

/// A list page's `?cursor=`: the `seq` a previous page gave out. Anything else shows the first page, as a
/// page's links never carry a bad one.
fn cursor(text: Option<&str>) -> Option<i64> {
    text.and_then(|c| c.parse::<i64>().ok()).filter(|c| *c > 0)
}

/// A `303 See Other` to `location`: what every successful form answers, so a reload does not send it again.
fn see_other(location: impl Into<String>) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, location.into())]).into_response()
}
