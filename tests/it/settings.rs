//! The Developer Settings page, request by request: sessions and their cookie, CSRF refusal, every page and
//! form with good and bad input (the API's messages next to the fields), and organization isolation. The
//! same things in a real browser are in `browser`.

use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::on_both_stores;

// ---------------------------------------------------------------------------------------------------------
// A cookie-keeping HTML client
// ---------------------------------------------------------------------------------------------------------

/// One answer of a page.
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn set_cookie(&self) -> Option<&str> {
        self.headers.get(header::SET_COOKIE).and_then(|v| v.to_str().ok())
    }

    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self.body.find(marker).unwrap_or_else(|| panic!("no CSRF field in:\n{}", self.body)) + marker.len();
        let end = start + self.body[start..].find('"').expect("end of the CSRF value");
        self.body[start..end].to_owned()
    }

    #[track_caller]
    fn expect(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "body:\n{}", self.body);
        self
    }

    #[track_caller]
    fn redirects_to(&self, prefix: &str) -> String {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "expected a redirect to {prefix}; body:\n{}", self.body);
        assert!(self.location().starts_with(prefix), "redirected to {} instead of {prefix}", self.location());
        self.location().to_owned()
    }

    #[track_caller]
    fn shows(&self, text: &str) -> &Self {
        assert!(self.body.contains(text), "the page should show {text:?}:\n{}", self.body);
        self
    }

    #[track_caller]
    fn hides(&self, text: &str) -> &Self {
        assert!(!self.body.contains(text), "the page should not show {text:?}:\n{}", self.body);
        self
    }
}

/// A browser as far as the server can tell: keeps the session cookie, sends forms, follows no redirect (so
/// each answer can be checked).
struct Visitor {
    base: String,
    http: reqwest::Client,
    cookie: Mutex<Option<String>>,
}

impl Visitor {
    fn new(app: &TestApp) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        Self { base: app.base.clone(), http, cookie: Mutex::new(None) }
    }

    /// Signed in with organization A's (or B's) key.
    async fn signed_in(app: &TestApp, api: &Api) -> Self {
        let visitor = Self::new(app);
        visitor.sign_in(api.key.as_deref().expect("a key")).await.redirects_to("/settings/webhooks");
        visitor
    }

    async fn sign_in(&self, key: &str) -> Page {
        let csrf = self.get("/settings/sign-in").await.expect(StatusCode::OK).csrf();
        self.post("/settings/sign-in", &[("csrf", &csrf), ("api_key", key)]).await
    }

    fn cookie(&self) -> Option<String> {
        self.cookie.lock().unwrap().clone()
    }

    fn set_cookie_header(&self, cookie: Option<String>) {
        *self.cookie.lock().unwrap() = cookie;
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let request = match self.cookie() {
            Some(cookie) => request.header(header::COOKIE, cookie),
            None => request,
        };
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        if let Some(set) = headers.get(header::SET_COOKIE).and_then(|v| v.to_str().ok()) {
            let pair = set.split(';').next().unwrap().to_owned();
            assert!(pair.starts_with("tidings_session="), "unexpected cookie {set}");
            self.set_cookie_header(Some(pair));
        }
        let body = response.text().await.expect("body");
        Page { status, headers, body }
    }

    async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn get_with(&self, path: &str, name: &str, value: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base)).header(name, value)).await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.send(self.http.post(format!("{}{path}", self.base)).form(fields)).await
    }

    /// POSTs a form with this page's CSRF token added.
    async fn submit(&self, page: &Page, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = page.csrf();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(path, &all).await
    }

    /// GETs `page_path` for its token, then POSTs `fields` to `path`.
    async fn submit_from(&self, page_path: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get(page_path).await;
        page.expect(StatusCode::OK);
        self.submit(&page, path, fields).await
    }

    /// Adds an enabled webhook for interview updates to `url` through the form; answers its id.
    async fn add_webhook(&self, url: &str) -> String {
        let fields = [("url", url), ("event_types", INTERVIEW), ("enabled", "on")];
        let created = self.submit_from("/settings/webhooks/new", "/settings/webhooks", &fields).await;
        id_in(&created.redirects_to("/settings/webhooks/ep_"))
    }
}

/// HTML-escapes text the way the templates (askama) do, to look for it in a page.
fn escaped(text: &str) -> String {
    text.replace('&', "&#38;").replace('<', "&#60;").replace('>', "&#62;").replace('"', "&#34;").replace('\'', "&#39;")
}

fn id(value: &Value) -> String {
    value["id"].as_str().unwrap_or_else(|| panic!("no id in {value}")).to_owned()
}

/// The id in `/settings/webhooks/ep_…?…` or `/settings/deliveries/dlv_…?…`.
fn id_in(location: &str) -> String {
    let last = location.trim_start_matches('/').split('/').nth(2).unwrap_or_else(|| panic!("no id in {location}"));
    last.split(['?', '#']).next().unwrap().to_owned()
}

/// The API's `error.message` for creating an endpoint with `body`.
async fn api_message(api: &Api, body: Value) -> String {
    let (status, answer) = api.post("/v1/endpoints", body.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} answered {answer}");
    answer["error"]["message"].as_str().unwrap().to_owned()
}

const INTERVIEW: &str = "candidate.interview.updated";

/// A webhook form with a mistake: the field that is wrong, the form sent, the same input sent to the API, and
/// the id prefix of the field's message.
type BadForm<'a> = (&'a str, Vec<(&'a str, &'a str)>, Value, &'a str);

// ---------------------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------------------

on_both_stores! {
    async fn pages_need_a_session_whose_cookie_is_lax() {
        let app = TestApp::spawn().await;
        let visitor = Visitor::new(&app);

        let page = visitor.get("/settings/webhooks").await;
        assert_eq!(page.redirects_to("/settings/sign-in"), "/settings/sign-in?next=%2Fsettings%2Fwebhooks");
        visitor.get("/settings").await.redirects_to("/settings/webhooks");
        for path in [
            "/settings/webhooks/new",
            "/settings/webhooks/ep_000000000000000000000000",
            "/settings/deliveries",
            "/settings/deliveries/dlv_000000000000000000000000",
        ] {
            visitor.get(path).await.redirects_to("/settings/sign-in?next=");
        }
        // A form sent without a session (it ran out, say) comes back to the page it was sent from.
        let edit = "/settings/webhooks/ep_000000000000000000000000";
        let referer = format!("{}{edit}?done=saved", app.base);
        let sent = visitor.send(visitor.http.post(format!("{}{edit}", app.base)).header("referer", referer)).await;
        let next = "/settings/sign-in?next=%2Fsettings%2Fwebhooks%2Fep_000000000000000000000000";
        assert_eq!(sent.redirects_to("/settings/sign-in"), next, "the page, without an earlier action's notice");
        // A form on the answer to an action (a refused retry, say) comes back to the page the action is of.
        let retry = "/settings/deliveries/dlv_000000000000000000000000/retry";
        let referer = format!("{}{retry}", app.base);
        let sent = visitor.send(visitor.http.post(format!("{}{retry}", app.base)).header("referer", referer)).await;
        let next = "/settings/sign-in?next=%2Fsettings%2Fdeliveries%2Fdlv_000000000000000000000000";
        assert_eq!(sent.redirects_to("/settings/sign-in"), next);

        let page = Visitor::new(&app).get("/settings/sign-in").await;
        page.expect(StatusCode::OK).shows("<label for=\"api_key\">API key</label>").hides("Sign out");
        let cookie = page.set_cookie().expect("a session cookie for the sign-in form");
        for part in ["tidings_session=", "HttpOnly", "SameSite=Lax", "Path=/settings", "Max-Age="] {
            assert!(cookie.contains(part), "{part} in {cookie}");
        }
        assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag: {cookie}");
        assert_eq!(page.headers["cache-control"], "no-store");
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));

        // Behind a TLS-terminating proxy the cookie is Secure.
        let tls = Visitor::new(&app).get_with("/settings/sign-in", "x-forwarded-proto", "https").await;
        assert!(tls.set_cookie().unwrap().contains("Secure"), "{:?}", tls.set_cookie());

        // A form without a session cannot do anything: not signed in, sent to sign in.
        let anonymous = Visitor::new(&app);
        anonymous
            .post("/settings/webhooks", &[("url", "http://127.0.0.1:9/"), ("csrf", "x")])
            .await
            .redirects_to("/settings/sign-in");
        assert!(app.a.list("/v1/endpoints").await.is_empty());

        // Assets are served by the binary; unknown pages are HTML 404s.
        let css = visitor.get("/settings/assets/style.css").await;
        css.expect(StatusCode::OK);
        assert!(css.headers["content-type"].to_str().unwrap().starts_with("text/css"));
        let js = visitor.get("/settings/assets/settings.js").await;
        js.expect(StatusCode::OK).shows("data-refresh");
        visitor.get("/settings/assets/nothing.js").await.expect(StatusCode::NOT_FOUND);
        visitor.get("/settings/no-such-page").await.expect(StatusCode::NOT_FOUND).shows("<h1>Not found</h1>");
    }
}

on_both_stores! {
    async fn sign_in_checks_the_key_and_sign_out_ends_the_session() {
        let app = TestApp::spawn().await;
        let visitor = Visitor::new(&app);
        let page = visitor.get("/settings/sign-in?next=%2Fsettings%2Fdeliveries%3Fstatus%3Dpending").await;
        page.expect(StatusCode::OK).shows(r#"name="next" value="/settings/deliveries?status=pending""#);
        let anonymous_token = page.csrf();

        let empty = visitor.submit(&page, "/settings/sign-in", &[("api_key", "  ")]).await;
        empty.expect(StatusCode::UNPROCESSABLE_ENTITY).shows("api_key is required").shows(r#"aria-invalid="true""#);
        let unknown = visitor.submit(&page, "/settings/sign-in", &[("api_key", "tdk_not-a-key")]).await;
        unknown.expect(StatusCode::UNAUTHORIZED).shows("api_key is not a key of any organization");
        visitor
            .submit(&page, "/settings/sign-in", &[("api_key", "whsec_wrong-kind")])
            .await
            .expect(StatusCode::UNAUTHORIZED);

        let key = app.a.key.clone().unwrap();
        let next = "/settings/deliveries?status=pending";
        let signed_in = visitor.submit(&page, "/settings/sign-in", &[("api_key", &key), ("next", next)]).await;
        assert_eq!(signed_in.redirects_to("/settings/deliveries"), next);
        assert!(signed_in.set_cookie().unwrap().contains("HttpOnly"));
        let list = visitor.get("/settings/webhooks").await;
        list.expect(StatusCode::OK).shows("Sign out").shows(r#"aria-current="page">Webhooks"#);
        assert_ne!(list.csrf(), anonymous_token, "signing in starts a new session with a new token");
        // The token of the page before sign-in is worth nothing now.
        let stale = visitor
            .post(
                "/settings/webhooks",
                &[("csrf", &anonymous_token), ("url", "http://127.0.0.1:9/"), ("enabled", "on")],
            )
            .await;
        stale.expect(StatusCode::FORBIDDEN);
        visitor.get("/settings/sign-in").await.redirects_to("/settings/webhooks");

        // Another site cannot be the place sign-in sends the browser to.
        let other = Visitor::new(&app);
        for evil in ["https://evil.example/", "//evil.example/x", "/v1/endpoints"] {
            let page = other.get("/settings/sign-in").await;
            let answer = other.submit(&page, "/settings/sign-in", &[("api_key", &key), ("next", evil)]).await;
            assert_eq!(answer.redirects_to("/settings/"), "/settings/webhooks", "next={evil}");
            other.set_cookie_header(None);
        }

        // A cookie changed by hand is no session.
        let cookie = visitor.cookie().unwrap();
        let b_org_cookie = cookie.replacen("org_", "org_f", 1);
        visitor.set_cookie_header(Some(b_org_cookie));
        visitor.get("/settings/webhooks").await.redirects_to("/settings/sign-in");
        visitor.set_cookie_header(Some(cookie.clone()));

        // Sign-out ends the session for good, even for a copy of the cookie.
        let list = visitor.get("/settings/webhooks").await;
        visitor.submit(&list, "/settings/sign-out", &[]).await.redirects_to("/settings/sign-in?done=signed-out");
        visitor.get("/settings/sign-in?done=signed-out").await.shows("You are signed out.");
        visitor.get("/settings/webhooks").await.redirects_to("/settings/sign-in");
        let copy = Visitor::new(&app);
        copy.set_cookie_header(Some(cookie));
        copy.get("/settings/webhooks").await.redirects_to("/settings/sign-in");
    }
}

on_both_stores! {
    async fn forms_without_the_session_token_are_refused() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let endpoint = app.a.create_endpoint(&receiver.url()).await;
        let ep = id(&endpoint);
        let answer = app.a.patch_interview("cand_csrf", json!({ "interview_outcome": "qualified" })).await;
        let delivery = app.a.delivery_of_event(answer["event"]["id"].as_str().unwrap()).await;
        let dlv = id(&delivery);
        app.a.wait_delivery_status(&dlv, "succeeded").await;
        let (_, secret_before) = app.a.get(&format!("/v1/endpoints/{ep}/secret")).await;

        let a = Visitor::signed_in(&app, &app.a).await;
        let b = Visitor::signed_in(&app, &app.b).await;
        let a_token = a.get("/settings/webhooks").await.csrf();
        let b_token = b.get("/settings/webhooks").await.csrf();
        let fields = [("url", receiver.url_for("/other")), ("event_types", INTERVIEW.into()), ("enabled", "on".into())];
        let forms: Vec<(String, Vec<(&str, String)>)> = vec![
            ("/settings/webhooks".into(), fields.to_vec()),
            (format!("/settings/webhooks/{ep}"), fields.to_vec()),
            (format!("/settings/webhooks/{ep}/rotate-secret"), vec![]),
            (format!("/settings/webhooks/{ep}/test"), vec![]),
            (format!("/settings/webhooks/{ep}/delete"), vec![]),
            (format!("/settings/deliveries/{dlv}/retry"), vec![]),
            ("/settings/sign-out".into(), vec![]),
        ];
        fn with<'a>(fields: &'a [(&'a str, String)], csrf: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
            let mut all: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            all.extend(csrf.map(|csrf| ("csrf", csrf)));
            all
        }
        let wrong = "0".repeat(32);
        for (path, fields) in &forms {
            for (what, csrf) in
                [("no token", None), ("a wrong token", Some(wrong.as_str())), ("B's token", Some(&b_token))]
            {
                let page = a.post(path, &with(fields, csrf)).await;
                assert_eq!(page.status, StatusCode::FORBIDDEN, "POST {path} with {what}: {}", page.body);
                page.shows("Form refused");
            }
            // The right token, but the browser says another site sent the form.
            let request = a.http.post(format!("{}{path}", a.base)).header("sec-fetch-site", "cross-site");
            let cross = a.send(request.form(&with(fields, Some(&a_token)))).await;
            assert_eq!(cross.status, StatusCode::FORBIDDEN, "POST {path} from another site: {}", cross.body);
        }
        // Not a form at all.
        let json_body = a
            .send(a.http.post(format!("{}/settings/webhooks", a.base)).json(&json!({ "csrf": a_token, "url": "x" })))
            .await;
        json_body.expect(StatusCode::BAD_REQUEST);
        // Sign-in is a form too.
        Visitor::new(&app)
            .post("/settings/sign-in", &[("api_key", app.a.key.as_deref().unwrap())])
            .await
            .expect(StatusCode::FORBIDDEN);

        // Nothing happened.
        assert_eq!(app.a.list("/v1/endpoints").await.len(), 1);
        let (status, read) = app.a.get(&format!("/v1/endpoints/{ep}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read["url"], endpoint["url"]);
        let (_, secret_after) = app.a.get(&format!("/v1/endpoints/{ep}/secret")).await;
        assert_eq!(secret_after, secret_before, "the secret was not rotated");
        assert_eq!(app.a.deliveries("").await.len(), 1, "no test event was sent");
        assert_eq!(app.a.delivery(&dlv).await["attempt_count"], 1, "no retry was made");
        a.get("/settings/webhooks").await.expect(StatusCode::OK);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------------------

on_both_stores! {
    async fn adding_a_webhook_shows_the_apis_messages_next_to_the_fields() {
        // Private targets refused, as in production, so that rule's message shows too.
        let app = TestApp::spawn_with(|c| c.allow_private_targets = false).await;
        let visitor = Visitor::signed_in(&app, &app.a).await;
        let form = visitor.get("/settings/webhooks/new").await;
        form.expect(StatusCode::OK)
            .shows(r#"<label for="url">URL</label>"#)
            .shows(&format!(r#"name="event_types" value="{INTERVIEW}" checked"#))
            .shows(r#"name="event_types" value="call_completed">"#)
            .shows(r#"name="enabled" value="on" id="enabled" checked"#);

        let long = "d".repeat(1025);
        let cases: Vec<BadForm> = vec![
            ("url", vec![("url", ""), ("event_types", INTERVIEW)], json!({}), "url"),
            ("url", vec![("url", "not a url"), ("event_types", INTERVIEW)], json!({ "url": "not a url" }), "url"),
            (
                "url",
                vec![("url", "ftp://example.com/"), ("event_types", INTERVIEW)],
                json!({ "url": "ftp://example.com/" }),
                "url",
            ),
            (
                "url",
                vec![("url", "http://127.0.0.1:9/hook"), ("event_types", INTERVIEW)],
                json!({ "url": "http://127.0.0.1:9/hook" }),
                "url",
            ),
            (
                "url",
                vec![("url", "https://user:pw@example.com/"), ("event_types", INTERVIEW)],
                json!({ "url": "https://user:pw@example.com/" }),
                "url",
            ),
            (
                "description",
                vec![("url", "https://example.com/hook"), ("description", &long), ("event_types", INTERVIEW)],
                json!({ "url": "https://example.com/hook", "description": long }),
                "description",
            ),
            (
                "event_types",
                vec![("url", "https://example.com/hook")],
                json!({ "url": "https://example.com/hook", "event_types": [] }),
                "event_types",
            ),
            (
                "event_types",
                vec![("url", "https://example.com/hook"), ("event_types", "interview.updated")],
                json!({ "url": "https://example.com/hook", "event_types": ["interview.updated"] }),
                "event_types",
            ),
        ];
        for (field, fields, api_body, error_id) in cases {
            let page = visitor.submit(&form, "/settings/webhooks", &fields).await;
            assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{fields:?}: {}", page.body);
            let message = api_message(&app.a, api_body).await;
            // The API's very message, in the error next to the field and in the summary.
            page.shows(&format!(r#"<p class="error" id="{error_id}-error">{}</p>"#, escaped(&message)));
            page.shows(r#"<div class="error-summary" role="alert">"#);
            assert!(message.starts_with(field), "{message}");
            if field == "url" {
                page.shows(r#"aria-invalid="true""#);
            }
            // What was typed stays in the form.
            if let Some((_, url)) = fields.iter().find(|(k, _)| *k == "url") {
                page.shows(&format!(r#"value="{}""#, escaped(url)));
            }
        }
        // Two mistakes at once: both shown.
        let both = visitor.submit(&form, "/settings/webhooks", &[("url", "ftp://x/")]).await;
        both.expect(StatusCode::UNPROCESSABLE_ENTITY).shows(r#"id="url-error""#).shows(r#"id="event_types-error""#);
        assert!(app.a.list("/v1/endpoints").await.is_empty(), "nothing was registered");

        // A good one, with a description that must be escaped.
        let description = "<script>alert('hi')</script> & co";
        let created = visitor
            .submit(
                &form,
                "/settings/webhooks",
                &[
                    ("url", "https://example.com/hooks/tidings"),
                    ("description", description),
                    ("event_types", INTERVIEW),
                    ("event_types", "call_completed"),
                    ("enabled", "on"),
                ],
            )
            .await;
        let location = created.redirects_to("/settings/webhooks/ep_");
        assert!(location.ends_with("?done=created&reveal=1#secret"), "{location}");
        let ep = id_in(&location);
        let (status, stored) = app.a.get(&format!("/v1/endpoints/{ep}")).await;
        assert_eq!(status, StatusCode::OK, "{stored}");
        assert_eq!(stored["url"], "https://example.com/hooks/tidings");
        assert_eq!(stored["description"], description);
        assert_eq!(stored["event_types"], json!([INTERVIEW, "call_completed"]));
        assert_eq!(stored["enabled"], true);

        let page = visitor.get(location.split('#').next().unwrap()).await;
        page.expect(StatusCode::OK).shows("Webhook added.");
        let (_, secret) = app.a.get(&format!("/v1/endpoints/{ep}/secret")).await;
        page.shows(&format!(r#"value="{}""#, secret["secret"].as_str().unwrap()));
        page.shows(&escaped(description)).hides("<script>alert");

        let list = visitor.get("/settings/webhooks").await;
        list.expect(StatusCode::OK)
            .shows(&format!(r#"href="/settings/webhooks/{ep}">https://example.com/hooks/tidings</a>"#))
            .shows(&escaped(description))
            .shows(&format!(r#"<code class="tag">{INTERVIEW}</code>"#))
            .shows(r#"<code class="tag">call_completed</code>"#)
            .shows(r#"<td data-label="Enabled">Yes</td>"#)
            .shows("none yet")
            .hides("<script>alert")
            .hides(secret["secret"].as_str().unwrap());
    }
}

on_both_stores! {
    async fn editing_rotating_and_deleting_a_webhook() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let visitor = Visitor::signed_in(&app, &app.a).await;
        let ep = visitor.add_webhook(&receiver.url()).await;
        let path = format!("/settings/webhooks/{ep}");

        // The page shows the stored values in its form, and hides the secret until asked.
        let page = visitor.get(&path).await;
        let (_, secret) = app.a.get(&format!("/v1/endpoints/{ep}/secret")).await;
        let secret = secret["secret"].as_str().unwrap().to_owned();
        page.expect(StatusCode::OK)
            .shows(&format!(r#"value="{}""#, receiver.url()))
            .shows("Reveal secret")
            .hides(&secret)
            .shows(&format!(r#"href="/settings/deliveries?endpoint_id={ep}""#));
        visitor.get(&format!("{path}?reveal=1")).await.shows(&secret).shows("data-copy=\"secret-value\"");

        // A bad edit changes nothing and says why, with the API's message.
        let bad = visitor
            .submit(
                &page,
                &path,
                &[("url", "mailto:someone@example.com"), ("event_types", INTERVIEW), ("enabled", "on")],
            )
            .await;
        let message = api_message(&app.a, json!({ "url": "mailto:someone@example.com" })).await;
        bad.expect(StatusCode::UNPROCESSABLE_ENTITY).shows(&escaped(&message)).hides(&secret);
        let (_, stored) = app.a.get(&format!("/v1/endpoints/{ep}")).await;
        assert_eq!(stored["url"], receiver.url(), "unchanged");

        // Every field edited at once.
        let moved = receiver.url_for("/moved");
        let saved = visitor
            .submit(
                &page,
                &path,
                &[
                    ("url", &moved),
                    ("description", "staging"),
                    ("event_types", "call_completed"),
                    ("event_types", INTERVIEW),
                ],
            )
            .await;
        assert_eq!(saved.redirects_to(&path), format!("{path}?done=saved"));
        let (_, stored) = app.a.get(&format!("/v1/endpoints/{ep}")).await;
        assert_eq!(stored["url"], moved);
        assert_eq!(stored["description"], "staging");
        assert_eq!(stored["event_types"], json!(["call_completed", INTERVIEW]));
        assert_eq!(stored["enabled"], false, "an unticked box turns the endpoint off");
        visitor.get(&format!("{path}?done=saved")).await.shows("Changes saved.").shows("status-disabled");
        visitor
            .get("/settings/webhooks")
            .await
            .shows("staging")
            .shows(r#"<span class="status status-disabled">No</span>"#);

        // Rotating: a new secret, shown; the old one still signs for a while.
        let rotated = visitor.submit(&page, &format!("{path}/rotate-secret"), &[]).await;
        assert_eq!(rotated.redirects_to(&path), format!("{path}?done=rotated&reveal=1#secret"));
        let (_, new_secret) = app.a.get(&format!("/v1/endpoints/{ep}/secret")).await;
        let new_secret = new_secret["secret"].as_str().unwrap().to_owned();
        assert_ne!(new_secret, secret);
        visitor
            .get(&format!("{path}?done=rotated&reveal=1"))
            .await
            .shows("New signing secret made.")
            .shows(&new_secret)
            .hides(&secret)
            .shows("The previous secret also signs until")
            .shows("keeps signing for 24 hours");

        // Deleting asks first, then deletes.
        let confirm = visitor.get(&format!("{path}/delete")).await;
        confirm.expect(StatusCode::OK).shows("Delete this webhook?").shows(&moved).shows("staging");
        let deleted = visitor.submit(&confirm, &format!("{path}/delete"), &[]).await;
        assert_eq!(deleted.redirects_to("/settings/webhooks"), "/settings/webhooks?done=deleted");
        let (status, _) = app.a.get(&format!("/v1/endpoints/{ep}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        visitor.get("/settings/webhooks?done=deleted").await.shows("Webhook deleted.").hides(&moved);
        visitor.get(&path).await.expect(StatusCode::NOT_FOUND);
        visitor.submit(&confirm, &format!("{path}/delete"), &[]).await.expect(StatusCode::NOT_FOUND);
    }
}

on_both_stores! {
    async fn send_test_event_delivers_the_example_and_shows_it() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let visitor = Visitor::signed_in(&app, &app.a).await;
        let ep = visitor.add_webhook(&receiver.url()).await;
        let path = format!("/settings/webhooks/{ep}");

        let sent = visitor.submit_from(&path, &format!("{path}/test"), &[]).await;
        let location = sent.redirects_to("/settings/deliveries/dlv_");
        assert!(location.ends_with("?done=test-sent"), "{location}");
        let got = receiver.wait_for(1).await;
        assert_eq!(got[0].json()["data"]["candidate_id"], "cand_12345678", "the documentation's example");
        let dlv = id_in(&location);
        app.a.wait_delivery_status(&dlv, "succeeded").await;

        let page = visitor.get(&location).await;
        page.expect(StatusCode::OK)
            .shows("Test event queued for this webhook")
            .shows(r#"id="delivery-status">succeeded</span>"#)
            .shows(&got[0].webhook_id())
            .shows("HTTP 200")
            .shows("receiver says 200")
            .shows("&#34;candidate_id&#34;: &#34;cand_12345678&#34;")
            .shows("none scheduled")
            .hides("data-refresh");
        visitor.get("/settings/webhooks").await.shows(&format!(
            r#"<a href="/settings/deliveries/{dlv}"><span class="status status-succeeded">succeeded</span>"#
        ));

        // A disabled endpoint gets no test event, with the API's message.
        let page = visitor.get(&path).await;
        visitor.submit(&page, &path, &[("url", &receiver.url()), ("event_types", INTERVIEW)]).await.redirects_to(&path);
        let refused = visitor.submit(&page, &format!("{path}/test"), &[]).await;
        let (status, api) = app.a.post_empty(&format!("/v1/endpoints/{ep}/test")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        refused.expect(StatusCode::CONFLICT).shows(&escaped(api["error"]["message"].as_str().unwrap()));
        assert_eq!(app.a.deliveries("").await.len(), 1);
        assert_eq!(receiver.count(), 1);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Deliveries
// ---------------------------------------------------------------------------------------------------------

/// The delivery ids of a deliveries page, in the order shown.
fn shown_deliveries(page: &Page) -> Vec<String> {
    page.body.split(r#"<tr data-delivery=""#).skip(1).map(|rest| rest.split('"').next().unwrap().to_owned()).collect()
}

on_both_stores! {
    async fn deliveries_are_listed_newest_first_and_filtered() {
        let app = TestApp::spawn_with(|c| c.retry_schedule = Vec::new()).await;
        let good = Receiver::ok().await;
        let bad = Receiver::start(Reply::Status(503)).await;
        let good_ep =
            id(&app.a.create_endpoint_with(json!({ "url": good.url(), "description": "the good one" })).await);
        let bad_ep = id(&app.a.create_endpoint(&bad.url()).await);
        let idle_ep = id(&app.a.create_endpoint_with(json!({ "url": good.url_for("/idle"), "enabled": false })).await);
        for outcome in ["qualified", "completed"] {
            app.a.patch_interview("cand_list", json!({ "interview_outcome": outcome })).await;
        }
        let all = app.a.deliveries("").await;
        assert_eq!(all.len(), 4);
        for d in &all {
            let expected = if d["endpoint_id"] == good_ep.as_str() { "succeeded" } else { "undeliverable" };
            app.a.wait_delivery_status(d["id"].as_str().unwrap(), expected).await;
        }
        let api_order: Vec<String> = all.iter().map(id).collect();

        let visitor = Visitor::signed_in(&app, &app.a).await;
        // The webhooks list shows each endpoint's newest delivery, or none.
        let list = visitor.get("/settings/webhooks").await;
        for (ep, status) in [(&good_ep, "succeeded"), (&bad_ep, "undeliverable")] {
            let newest = id(&app.a.deliveries(&format!("endpoint_id={ep}")).await[0]);
            let link = format!(r#"<a href="/settings/deliveries/{newest}"><span class="status status-{status}">"#);
            list.shows(&link);
        }
        let idle_row = list.body.split(&format!(r#"href="/settings/webhooks/{idle_ep}""#)).nth(1).unwrap();
        assert!(idle_row.split("</tr>").next().unwrap().contains("none yet"), "{idle_row}");

        let page = visitor.get("/settings/deliveries").await;
        page.expect(StatusCode::OK)
            .shows(r#"<div id="deliveries" data-refresh="2000">"#)
            .shows(r#"<noscript><meta http-equiv="refresh" content="10"></noscript>"#)
            .shows(r#"aria-current="page">Deliveries"#)
            .shows(&format!(r#"<option value="{good_ep}">{} (the good one)</option>"#, good.url()))
            .shows(r#"<span class="status status-undeliverable">undeliverable</span>"#)
            .shows(&format!("<code>{INTERVIEW}</code>"));
        assert_eq!(shown_deliveries(&page), api_order, "newest first, as the API lists them");

        let page = visitor.get(&format!("/settings/deliveries?endpoint_id={bad_ep}")).await;
        page.expect(StatusCode::OK).shows(&format!(r#"<option value="{bad_ep}" selected>"#)).shows("Clear filters");
        let expected: Vec<String> = app.a.deliveries(&format!("endpoint_id={bad_ep}")).await.iter().map(id).collect();
        assert_eq!(shown_deliveries(&page), expected);
        assert_eq!(expected.len(), 2);

        let page = visitor.get("/settings/deliveries?status=succeeded").await;
        page.shows(r#"<option value="succeeded" selected>"#);
        let expected: Vec<String> = app.a.deliveries("status=succeeded").await.iter().map(id).collect();
        assert_eq!(shown_deliveries(&page), expected);
        assert_eq!(expected.len(), 2);

        // An event's deliveries, to every webhook: the row's event links there, and the filter keeps the id.
        let event = all[0]["event_id"].as_str().unwrap();
        visitor.get("/settings/deliveries").await.shows(&format!(r#"href="/settings/deliveries?event_id={event}""#));
        let page = visitor.get(&format!("/settings/deliveries?event_id={event}")).await;
        page.expect(StatusCode::OK).shows(&format!(r#"name="event_id" value="{event}""#)).shows("Clear filters");
        let expected: Vec<String> = app.a.deliveries(&format!("event_id={event}")).await.iter().map(id).collect();
        assert_eq!(shown_deliveries(&page), expected);
        assert_eq!(expected.len(), 2, "the good and the bad endpoint's");

        let page = visitor.get(&format!("/settings/deliveries?endpoint_id={good_ep}&status=undeliverable")).await;
        assert!(shown_deliveries(&page).is_empty());
        page.shows("No deliveries match these filters yet.");

        let page = visitor.get("/settings/deliveries?status=lost").await;
        let (_, api) = app.a.get("/v1/deliveries?status=lost").await;
        page.expect(StatusCode::UNPROCESSABLE_ENTITY).shows(&escaped(api["error"]["message"].as_str().unwrap()));
    }
}

on_both_stores! {
    async fn a_delivery_shows_every_attempt_and_retry_now_delivers_it() {
        // Two quick failures, then the next retry is far away: the page shows it scheduled.
        let app = TestApp::spawn_with(|c| c.retry_schedule = vec![ms(30), Duration::from_secs(600)]).await;
        let receiver = Receiver::start(Reply::Status(500)).await;
        let ep = id(&app.a.create_endpoint(&receiver.url()).await);
        let answer =
            app.a.patch_interview("cand_retry_page", json!({ "interview_summary": "Strong <b>candidate</b>" })).await;
        let event_id = answer["event"]["id"].as_str().unwrap().to_owned();
        let dlv = id(&app.a.delivery_of_event(&event_id).await);
        let delivery = app.a.wait_delivery(&dlv, "two attempts", |d| d["attempt_count"] == 2).await;
        assert_eq!(delivery["status"], "pending");

        let visitor = Visitor::signed_in(&app, &app.a).await;
        let path = format!("/settings/deliveries/{dlv}");
        let page = visitor.get(&path).await;
        page.expect(StatusCode::OK)
            .shows(r#"id="delivery-status">pending</span>"#)
            .shows(r#"<div id="attempts" data-refresh="1000">"#)
            .shows(&format!(r#"<time datetime="{}""#, delivery["next_attempt_at"].as_str().unwrap()))
            .shows(&format!(r#"href="/settings/webhooks/{ep}""#))
            .shows(&event_id)
            .shows("Strong &#60;b&#62;candidate&#60;/b&#62;")
            .shows("&#34;event&#34;: &#34;interview.updated&#34;")
            .shows(r#"<span class="result failed">HTTP 500</span>"#)
            .shows("receiver says 500")
            .shows(r#"<td data-label="Duration">"#)
            .shows(r#"<button type="submit" id="retry-now">Retry now</button>"#);
        assert_eq!(page.body.matches(r#"<tr class="attempt">"#).count(), 2);

        // The receiver recovers; "Retry now" makes one attempt at once (the next scheduled one is 10 minutes away).
        receiver.set_reply(Reply::Status(200));
        let retried = visitor.submit(&page, &format!("{path}/retry"), &[]).await;
        assert_eq!(retried.redirects_to(&path), format!("{path}?done=retried"));
        app.a.wait_delivery_status(&dlv, "succeeded").await;
        let page = visitor.get(&format!("{path}?done=retried")).await;
        page.expect(StatusCode::OK)
            .shows("Retry asked for")
            .shows(r#"id="delivery-status">succeeded</span>"#)
            .shows(r#"3 <span class="muted">manual</span>"#)
            .shows(r#"<span class="result ok">HTTP 200</span>"#)
            .shows("none scheduled")
            .hides("data-refresh");
        assert_eq!(page.body.matches(r#"<tr class="attempt">"#).count(), 3);
        assert_eq!(receiver.count(), 3);

        // With the webhook disabled, the page says so, and "Retry now" answers why nothing is done, in the API's
        // words.
        let (status, _) = app.a.patch(&format!("/v1/endpoints/{ep}"), json!({ "enabled": false })).await;
        assert_eq!(status, StatusCode::OK);
        let page = visitor.get(&path).await;
        page.expect(StatusCode::OK).shows("its deliveries wait until it is enabled").hides("retry-error");
        let refused = visitor.submit(&page, &format!("{path}/retry"), &[]).await;
        let (status, api) = app.a.post_empty(&format!("/v1/deliveries/{dlv}/retry")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        refused
            .expect(StatusCode::CONFLICT)
            .shows(&format!(r#"role="alert" id="retry-error">{}"#, escaped(api["error"]["message"].as_str().unwrap())));
        assert_eq!(app.a.delivery(&dlv).await["status"], "succeeded", "not made pending");

        visitor.get("/settings/deliveries/dlv_nothex").await.expect(StatusCode::NOT_FOUND);
        visitor.get("/settings/deliveries/dlv_000000000000000000000000").await.expect(StatusCode::NOT_FOUND);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Isolation
// ---------------------------------------------------------------------------------------------------------

on_both_stores! {
    async fn another_organizations_ids_answer_404_on_every_page_and_form() {
        let app = TestApp::spawn().await;
        let receiver = Receiver::ok().await;
        let endpoint = app.a.create_endpoint_with(json!({ "url": receiver.url(), "description": "A's own" })).await;
        let ep = id(&endpoint);
        let answer = app.a.patch_interview("cand_iso", json!({ "interview_outcome": "qualified" })).await;
        let dlv = id(&app.a.delivery_of_event(answer["event"]["id"].as_str().unwrap()).await);
        app.a.wait_delivery_status(&dlv, "succeeded").await;
        let (_, secret) = app.a.get(&format!("/v1/endpoints/{ep}/secret")).await;

        let b = Visitor::signed_in(&app, &app.b).await;
        for path in [
            format!("/settings/webhooks/{ep}"),
            format!("/settings/webhooks/{ep}?reveal=1"),
            format!("/settings/webhooks/{ep}/delete"),
            format!("/settings/deliveries/{dlv}"),
        ] {
            let page = b.get(&path).await;
            assert_eq!(page.status, StatusCode::NOT_FOUND, "GET {path}: {}", page.body);
            page.hides(secret["secret"].as_str().unwrap()).hides(&receiver.url());
        }
        let list = b.get("/settings/webhooks").await;
        let edit = [("url", receiver.url_for("/b")), ("event_types", INTERVIEW.into()), ("enabled", "on".into())];
        for (path, fields) in [
            (format!("/settings/webhooks/{ep}"), edit.to_vec()),
            (format!("/settings/webhooks/{ep}/rotate-secret"), vec![]),
            (format!("/settings/webhooks/{ep}/test"), vec![]),
            (format!("/settings/webhooks/{ep}/delete"), vec![]),
            (format!("/settings/deliveries/{dlv}/retry"), vec![]),
        ] {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let page = b.submit(&list, &path, &fields).await;
            assert_eq!(page.status, StatusCode::NOT_FOUND, "POST {path}: {}", page.body);
        }
        list.hides(&receiver.url()).hides("A's own");
        b.get("/settings/deliveries").await.hides(&dlv).hides(&receiver.url());
        let filtered = b.get(&format!("/settings/deliveries?endpoint_id={ep}")).await;
        filtered.expect(StatusCode::OK).hides(&dlv);

        // A's rows are as they were.
        let (status, read) = app.a.get(&format!("/v1/endpoints/{ep}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read["url"], endpoint["url"]);
        assert_eq!(read["description"], "A's own");
        assert_eq!(read["enabled"], true);
        let (_, secret_after) = app.a.get(&format!("/v1/endpoints/{ep}/secret")).await;
        assert_eq!(secret_after, secret);
        assert_eq!(app.a.deliveries("").await.len(), 1);
        assert_eq!(app.a.delivery(&dlv).await["attempt_count"], 1);
        assert_eq!(receiver.count(), 1);
    }
}
