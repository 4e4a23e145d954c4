//! Sessions of the settings page: a signed cookie that names the organization and the API key it was opened
//! with, the sign-in check of every page, and the CSRF token every form of the session carries.
//!
//! Every visitor gets a session, signed in or not, so the sign-in form has a CSRF token too. The cookie is
//! `HttpOnly` (no script reads it), `SameSite=Lax` (another site's form posts do not carry it; a link followed
//! from elsewhere, an email say, does, or the visit would replace the session with an anonymous one), `Path=/settings`,
//! and `Secure` when the request came over TLS (as told by a TLS-terminating proxy's `X-Forwarded-Proto` or
//! `Forwarded` header, since `tidings serve` itself speaks plain HTTP).
//!
//! The signing key comes from `--session-key`, so every API process behind one load balancer accepts the same
//! sessions and a restart keeps them. Without it, each process makes its own key at start: a restart signs
//! everyone out, and each process accepts only its own sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::http::header::{CACHE_CONTROL, COOKIE, REFERER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use cookie::{Cookie, CookieJar, Key, SameSite};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use super::SettingsError;
use crate::domain::time::{Millis, now_ms};
use crate::http::AppState;

/// The cookie's name.
pub const COOKIE_NAME: &str = "tidings_session";
/// How long a session lasts, signed in or not. Fixed from its start: a stolen cookie is not good for long.
const LIFETIME_MS: Millis = 12 * 60 * 60 * 1000;
/// Signed-out sessions remembered at most per organization (about 100 kB): more of its sign-outs than this
/// within one session lifetime let its oldest cookies back in until they expire. Counted per organization, so
/// no one else's sign-outs can push its own out.
const MAX_ENDED: usize = 1_000;

/// The process's session authority: signs and checks cookies, and remembers sessions signed out early.
#[derive(Clone)]
pub struct Sessions(Arc<Inner>);

struct Inner {
    /// Signs every session cookie (HMAC-SHA256), so a client cannot make one up or change the organization
    /// in it.
    key: Key,
    /// Tokens of sessions signed out before they expired, with their expiry, by organization: a signed cookie
    /// stays valid by itself, so a sign-out has to be remembered here until the cookie would have expired anyway.
    ended: Mutex<HashMap<String, HashMap<String, Millis>>>,
}

/// Who signed in: the organization, and the hash of the API key used, checked again on every request so a
/// session ends with its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedInAs {
    pub org: String,
    pub key_hash: String,
}

impl SignedInAs {
    /// Whether the key signed in with still belongs to the organization (read the way the API reads keys).
    pub async fn is_current(&self, state: &AppState) -> Result<bool, crate::store::StoreError> {
        Ok(state.org_for_key_hash(&self.key_hash).await?.as_deref() == Some(self.org.as_str()))
    }
}

/// One browser's session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Random and unique to this session; also the CSRF token its forms must send back.
    pub token: String,
    /// Set once an API key was accepted.
    pub user: Option<SignedInAs>,
    pub expires_at: Millis,
}

impl Session {
    /// A new session, not signed in.
    pub fn anonymous(now: Millis) -> Self {
        Self { token: random_token(), user: None, expires_at: now + LIFETIME_MS }
    }

    /// A new session signed in as `user`. The token is new, so a token seen before sign-in is worth nothing
    /// after it (no session fixation).
    pub fn signed_in(user: SignedInAs, now: Millis) -> Self {
        Self { token: random_token(), user: Some(user), expires_at: now + LIFETIME_MS }
    }

    /// `token~org~key_hash~expires_at`: none of the parts can contain `~`.
    fn encode(&self) -> String {
        let (org, key_hash) = match &self.user {
            Some(user) => (user.org.as_str(), user.key_hash.as_str()),
            None => ("", ""),
        };
        format!("{}~{org}~{key_hash}~{}", self.token, self.expires_at)
    }

    fn decode(value: &str) -> Option<Self> {
        let mut parts = value.split('~');
        let (token, org, key_hash, expires_at) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || token.is_empty() {
            return None;
        }
        let user = match (org, key_hash) {
            ("", "") => None,
            ("", _) | (_, "") => return None,
            (org, key_hash) => Some(SignedInAs { org: org.to_owned(), key_hash: key_hash.to_owned() }),
        };
        Some(Self { token: token.to_owned(), user, expires_at: expires_at.parse().ok()? })
    }

    /// Whether `sent` is this session's CSRF token, compared in constant time.
    pub fn accepts_token(&self, sent: &str) -> bool {
        let (a, b) = (self.token.as_bytes(), sent.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// 128 random bits, hex.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    /// A new authority with a fresh random key: sessions last as long as this process.
    pub fn new() -> Self {
        Self(Arc::new(Inner { key: Key::generate(), ended: Mutex::new(HashMap::new()) }))
    }

    /// An authority whose key is derived from the operator's `--session-key`, so every process configured
    /// with it accepts the others' sessions and they survive restarts.
    pub fn with_secret(secret: &SecretString) -> Self {
        use sha2::Digest;
        let master = sha2::Sha512::digest(secret.expose_secret().as_bytes());
        Self(Arc::new(Inner { key: Key::from(&master), ended: Mutex::new(HashMap::new()) }))
    }

    /// The valid, unexpired session the request's cookie holds, if any.
    pub fn read(&self, headers: &HeaderMap, now: Millis) -> Option<Session> {
        let mut jar = CookieJar::new();
        for header in headers.get_all(COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            for cookie in Cookie::split_parse(text.to_owned()).flatten() {
                if cookie.name() == COOKIE_NAME {
                    jar.add_original(cookie);
                }
            }
        }
        let cookie = jar.signed(&self.0.key).get(COOKIE_NAME)?;
        let session = Session::decode(cookie.value())?;
        let ended = |user: &SignedInAs| self.ended().get(&user.org).is_some_and(|m| m.contains_key(&session.token));
        if session.expires_at <= now || session.user.as_ref().is_some_and(ended) {
            return None;
        }
        Some(session)
    }

    /// The `Set-Cookie` header value that gives the browser `session`.
    pub fn cookie(&self, session: &Session, secure: bool, now: Millis) -> HeaderValue {
        let max_age = cookie::time::Duration::milliseconds((session.expires_at - now).max(0));
        let cookie = Cookie::build((COOKIE_NAME, session.encode()))
            .path("/settings")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(secure)
            .max_age(max_age);
        let mut jar = CookieJar::new();
        jar.signed_mut(&self.0.key).add(cookie);
        let signed = jar.get(COOKIE_NAME).map(|c| c.to_string()).unwrap_or_default();
        // The value is hex, `~`, `org_`, digits and base64: all valid in a header.
        HeaderValue::from_str(&signed).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Remembers that a signed-in `session` was signed out, so its cookie is refused until it expires. An
    /// anonymous session grants nothing, so it is not remembered (anyone may make one). At most
    /// [`MAX_ENDED`] are kept per organization: past that, its one closest to expiring is forgotten first.
    pub fn end(&self, session: &Session, now: Millis) {
        let Some(user) = &session.user else { return };
        let mut all = self.ended();
        let ended = all.entry(user.org.clone()).or_default();
        if ended.len() >= MAX_ENDED {
            ended.retain(|_, expires_at| *expires_at > now);
        }
        if ended.len() >= MAX_ENDED
            && let Some(soonest) = ended.iter().min_by_key(|(_, expires_at)| **expires_at).map(|(t, _)| t.clone())
        {
            ended.remove(&soonest);
        }
        ended.insert(session.token.clone(), session.expires_at);
    }

    #[cfg(test)]
    fn ended_count(&self) -> usize {
        self.ended().values().map(HashMap::len).sum()
    }

    fn ended(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Millis>>> {
        // A panic elsewhere while holding the lock leaves the map usable: it is only a set of tokens.
        self.0.ended.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a handler needs to give the browser a new session (sign-in, sign-out).
#[derive(Clone)]
pub struct Issuer {
    sessions: Sessions,
    /// The request came over TLS: the cookie gets `Secure`.
    secure: bool,
}

impl Issuer {
    /// The `Set-Cookie` value for `session`.
    pub fn cookie(&self, session: &Session) -> HeaderValue {
        self.sessions.cookie(session, self.secure, now_ms())
    }

    /// Forgets `session` for good.
    pub fn end(&self, session: &Session) {
        self.sessions.end(session, now_ms());
    }
}

/// Whether the browser reached us over TLS, as told by the proxy that terminated it.
fn came_over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split([';', ',']).any(|pair| pair.trim().eq_ignore_ascii_case("proto=https")));
    forwarded_proto || forwarded
}

/// The layer around every page: finds the request's session (or starts one and sends its cookie), and adds
/// the headers every settings page wants.
pub async fn with_session(State(sessions): State<Sessions>, mut request: Request, next: Next) -> Response {
    let now = now_ms();
    let secure = came_over_tls(request.headers());
    let (session, fresh) = match sessions.read(request.headers(), now) {
        Some(session) => (session, false),
        None => (Session::anonymous(now), true),
    };
    request.extensions_mut().insert(Issuer { sessions: sessions.clone(), secure });
    request.extensions_mut().insert(session.clone());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // A handler that set its own session cookie (sign-in, sign-out) has the last word.
    if fresh && !headers.contains_key(SET_COOKIE) {
        headers.append(SET_COOKIE, sessions.cookie(&session, secure, now));
    }
    // Pages show secrets and per-organization data: never keep them in a cache.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

/// The request's session, signed in or not.
pub struct Visitor(pub Session);

impl<S: Send + Sync> FromRequestParts<S> for Visitor {
    type Rejection = SettingsError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .map(Visitor)
            .ok_or_else(|| SettingsError::Internal("no session layer around a settings page".into()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Issuer {
    type Rejection = SettingsError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Issuer>()
            .cloned()
            .ok_or_else(|| SettingsError::Internal("no session layer around a settings page".into()))
    }
}

/// A signed-in session whose API key still belongs to its organization. Anything else is sent to the sign-in
/// page (and, for a page view, back here afterwards).
pub struct SignedIn {
    /// The organization every query of the request is scoped by.
    pub org: String,
    pub session: Session,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = SettingsError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Visitor(session) = Visitor::from_request_parts(parts, state).await?;
        // Back to this page after signing in; for a form (sent after the session ran out, say), to the page it
        // was sent from (see [`form_page`]). [`safe_next`] takes settings pages alone.
        let next = if parts.method == Method::GET {
            let uri = parts.extensions.get::<OriginalUri>().map(|o| &o.0).unwrap_or(&parts.uri);
            uri.path_and_query().map(|p| p.as_str().to_owned())
        } else {
            parts.headers.get(REFERER).and_then(|v| v.to_str().ok()).and_then(form_page)
        };
        let Some(user) = &session.user else {
            return Err(SettingsError::SignInRequired { next });
        };
        if !user.is_current(state).await? {
            return Err(SettingsError::SignInRequired { next });
        }
        Ok(Self { org: user.org.clone(), session })
    }
}

/// The page a form was sent from, by the form's `Referer`: its path alone (a query would carry the notice of
/// an earlier action, which this form's was not), and the page itself when the form was on the answer to an
/// action (a refused retry, a test event), whose address takes only POST.
fn form_page(referer: &str) -> Option<String> {
    let url = url::Url::parse(referer).ok()?;
    let path = url.path();
    let page = ["/retry", "/test", "/rotate-secret", "/delete"]
        .iter()
        .find_map(|action| path.strip_suffix(action))
        .unwrap_or(path);
    Some(page.to_owned())
}

/// Where to go after signing in: a settings page, never another site.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with("/settings/")
                && !next.starts_with("/settings/sign-")
                && !next.contains(['\\', '\r', '\n'])
                && !next.contains("//") =>
        {
            next.to_owned()
        }
        _ => "/settings/webhooks".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_with(cookie: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
        headers
    }

    /// The `name=value` part of a `Set-Cookie` value.
    fn pair(set_cookie: &HeaderValue) -> String {
        set_cookie.to_str().unwrap().split(';').next().unwrap().to_owned()
    }

    #[test]
    fn only_signed_in_sessions_are_remembered_when_ended_and_only_so_many() {
        let sessions = Sessions::new();
        sessions.end(&Session::anonymous(1_000), 1_000);
        assert_eq!(sessions.ended_count(), 0, "an anonymous session is not remembered");
        let user = SignedInAs { org: "org_1".into(), key_hash: "ab".repeat(32) };
        let first = Session::signed_in(user.clone(), 1_000);
        sessions.end(&first, 1_000);
        for n in 1..MAX_ENDED + 5 {
            sessions.end(&Session::signed_in(user.clone(), 1_000 + n as Millis), 1_000 + n as Millis);
        }
        assert_eq!(sessions.ended_count(), MAX_ENDED);
        // Another organization's sign-outs are counted apart: they push none of these out.
        let other = SignedInAs { org: "org_2".into(), key_hash: "cd".repeat(32) };
        let kept = Session::signed_in(user.clone(), 1_500_000);
        sessions.end(&kept, 1_500_000);
        for n in 0..MAX_ENDED + 5 {
            sessions.end(&Session::signed_in(other.clone(), 1_000 + n as Millis), 1_000 + n as Millis);
        }
        let kept_cookie = sessions.cookie(&kept, false, 1_500_000);
        assert!(sessions.read(&headers_with(&pair(&kept_cookie)), 2_000_001).is_none(), "still signed out");
        let cookie = sessions.cookie(&first, false, 1_000);
        let last = Session::signed_in(user, 2_000_000);
        sessions.end(&last, 2_000_000);
        let last_cookie = sessions.cookie(&last, false, 2_000_000);
        assert!(sessions.read(&headers_with(&pair(&last_cookie)), 2_000_001).is_none(), "the newest is remembered");
        assert!(sessions.read(&headers_with(&pair(&cookie)), 2_000_001).is_some(), "the soonest to expire went first");
    }

    #[test]
    fn a_session_survives_its_cookie_and_nothing_else_does() {
        let sessions = Sessions::new();
        let user = SignedInAs { org: "org_1".into(), key_hash: "ab".repeat(32) };
        let session = Session::signed_in(user.clone(), 1_000);
        let set_cookie = sessions.cookie(&session, false, 1_000);
        let text = set_cookie.to_str().unwrap();
        assert!(text.contains("HttpOnly") && text.contains("SameSite=Lax") && text.contains("Path=/settings"));
        assert!(!text.contains("Secure"));
        assert!(sessions.cookie(&session, true, 1_000).to_str().unwrap().contains("Secure"));

        let read = sessions.read(&headers_with(&format!("other=1; {}", pair(&set_cookie))), 2_000).unwrap();
        assert_eq!(read.user, Some(user));
        assert_eq!(read.token, session.token);

        // Expired, signed by another process, or changed by the client: no session.
        assert!(sessions.read(&headers_with(&pair(&set_cookie)), session.expires_at).is_none());
        assert!(Sessions::new().read(&headers_with(&pair(&set_cookie)), 2_000).is_none());
        let forged = pair(&set_cookie).replace("org_1", "org_2");
        assert!(sessions.read(&headers_with(&forged), 2_000).is_none());

        // Signed out: refused from then on.
        sessions.end(&session, 2_000);
        assert!(sessions.read(&headers_with(&pair(&set_cookie)), 3_000).is_none());
    }

    #[test]
    fn a_shared_session_key_makes_sessions_good_in_every_process() {
        let key = SecretString::from("a session key of at least thirty-two characters".to_owned());
        let (one, other) = (Sessions::with_secret(&key), Sessions::with_secret(&key));
        let stranger = Sessions::with_secret(&SecretString::from("another key, also thirty-two characters".to_owned()));
        let user = SignedInAs { org: "org_1".into(), key_hash: "ab".repeat(32) };
        let session = Session::signed_in(user.clone(), 1_000);
        let cookie = headers_with(&pair(&one.cookie(&session, false, 1_000)));
        assert_eq!(other.read(&cookie, 2_000).and_then(|s| s.user), Some(user));
        assert!(stranger.read(&cookie, 2_000).is_none());
        assert!(Sessions::new().read(&cookie, 2_000).is_none());
    }

    #[test]
    fn tokens_compare_exactly() {
        let session = Session::anonymous(0);
        assert!(session.accepts_token(&session.token.clone()));
        assert!(!session.accepts_token(""));
        assert!(!session.accepts_token(&Session::anonymous(0).token));
    }

    #[test]
    fn after_sign_in_only_settings_pages() {
        assert_eq!(safe_next(Some("/settings/deliveries?status=pending")), "/settings/deliveries?status=pending");
        for bad in ["https://evil.example/", "//evil.example/", "/settings//evil", "/v1/endpoints", "/settings/sign-in"]
        {
            assert_eq!(safe_next(Some(bad)), "/settings/webhooks", "{bad}");
        }
        assert_eq!(safe_next(None), "/settings/webhooks");
    }

    #[test]
    fn tls_is_told_by_the_proxy() {
        let mut headers = HeaderMap::new();
        assert!(!came_over_tls(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(came_over_tls(&headers));
        let mut headers = HeaderMap::new();
        headers.insert("forwarded", HeaderValue::from_static("for=1.2.3.4;proto=https"));
        assert!(came_over_tls(&headers));
    }
}
