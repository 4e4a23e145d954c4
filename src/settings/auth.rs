//! Signing in with an API key and signing out.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::form::Form;
use super::session::{Issuer, Session, SignedInAs, Visitor, safe_next};
use super::views::{Layout, SignInPage};
use super::{SettingsError, render, see_other};
use crate::domain::apikey;
use crate::domain::time::now_ms;
use crate::http::AppState;

#[derive(Deserialize, Default)]
pub struct SignInQuery {
    next: Option<String>,
    done: Option<String>,
}

fn sign_in_page(session: &Session, next: String, error: Option<String>) -> SignInPage {
    SignInPage { layout: Layout::new("Sign in", &session.token, false, ""), next, error }
}

pub async fn show_sign_in(
    State(state): State<AppState>,
    Visitor(session): Visitor,
    Query(query): Query<SignInQuery>,
) -> Result<Response, SettingsError> {
    let next = safe_next(query.next.as_deref());
    // Already signed in with a key that still works: nothing to do here.
    if let Some(user) = &session.user
        && user.is_current(&state).await?
    {
        return Ok(see_other(next));
    }
    let mut page = sign_in_page(&session, next, None);
    if query.done.as_deref() == Some("signed-out") {
        page.layout.notice = Some("You are signed out.");
    }
    render(StatusCode::OK, &page)
}

pub async fn sign_in(
    State(state): State<AppState>,
    Visitor(session): Visitor,
    issuer: Issuer,
    form: Form,
) -> Result<Response, SettingsError> {
    let next = safe_next(form.get("next"));
    let key = form.get("api_key").unwrap_or_default().trim();
    if key.is_empty() {
        let page = sign_in_page(&session, next, Some("api_key is required".into()));
        return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    let user = match apikey::hash_of_presented(key) {
        Some(key_hash) => state.org_for_key_hash(&key_hash).await?.map(|org| SignedInAs { org, key_hash }),
        None => None,
    };
    let Some(user) = user else {
        let message = format!("api_key is not a key of any organization; keys start with {}", apikey::PREFIX);
        return render(StatusCode::UNAUTHORIZED, &sign_in_page(&session, next, Some(message)));
    };
    let signed_in = Session::signed_in(user, now_ms());
    let mut response = see_other(next);
    response.headers_mut().insert(SET_COOKIE, issuer.cookie(&signed_in));
    Ok(response)
}

pub async fn sign_out(Visitor(session): Visitor, issuer: Issuer, _form: Form) -> Result<Response, SettingsError> {
    issuer.end(&session);
    let mut response = see_other("/settings/sign-in?done=signed-out");
    response.headers_mut().insert(SET_COOKIE, issuer.cookie(&Session::anonymous(now_ms())));
    Ok(response.into_response())
}
