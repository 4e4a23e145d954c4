//! Shared test machinery: a running app on a fresh SQLite file ([`TestApp`]), an API client per organization
//! ([`Api`]), a real webhook receiver on 127.0.0.1 ([`Receiver`]) and polling with a deadline ([`eventually`]).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use tidings::ServeConfig;

use crate::db::{Backend, TestDb};

/// How long a test waits for something that should happen promptly before it fails.
pub const WAIT: Duration = Duration::from_secs(15);

/// Shorthand for milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls `probe` every 20 ms until it returns `Some`, or panics naming `what` once `timeout` has passed.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(ms(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// The documents' examples
// ---------------------------------------------------------------------------------------------------------

/// The "Example 200 Response" of Interview Events in webhooks-doc.txt, verbatim.
pub fn doc_interview_example() -> Value {
    json!({
        "event": "interview.updated",
        "changes": {
            "interview_completed_at": { "from": null, "to": "2025-04-15T16:00:00Z" },
            "interview_outcome": { "from": null, "to": "completed" }
        },
        "data": {
            "candidate_id": "cand_12345678",
            "interview_completed_at": "2025-04-15T16:00:00Z",
            "interview_sent_at": "2025-04-14T12:00:00Z",
            "interview_outcome": "completed",
            "interview_summary": "Example of customizable interview summary text",
            "interview_custom_data": { "can_lift_50lbs": true, "eligible_to_work": true }
        }
    })
}

/// The "Example 200 Response" of Call Completed in webhooks-doc.txt, verbatim.
pub fn doc_call_example() -> Value {
    json!({
        "candidate_id": "12345",
        "candidate_phone": "+1234567890",
        "job_id": "67890",
        "job_title": "CDL Truck Driver",
        "call_status": "call_completed",
        "transcript": [
            { "role": "user", "words": [ { "start": 0, "end": 0.5, "word": "Hello?" } ], "content": "Hello?" }
        ],
        "questions": [ { "question": "Are you older than the age of 18?", "answer": "Yes, I am" } ],
        "call_details": {
            "duration": 300,
            "start_time": 1737073800,
            "end_time": 1737074100,
            "e2e_latency": 120,
            "call_analysis": {
                "call_summary": "The AI voice bot interviewed John for the Warehouse Associate role, providing job details and confirming availability. The interview concluded successfully.",
                "user_sentiment": "Positive",
                "agent_sentiment": "Positive",
                "call_completion_rating": "Complete",
                "agent_task_completion_rating": "Complete",
                "call_completion_rating_reason": "The call reached a natural conclusion and all necessary information was gathered.",
                "agent_task_completion_rating_reason": "The agent successfully gathered information about John's background and provided him with the necessary job details."
            },
            "org_phone_number": "+1234567890"
        },
        "call_id": "abcdef123456",
        "recording_url": "https://example.com/recordings/abcdef123456.mp3"
    })
}

// ---------------------------------------------------------------------------------------------------------
// Shape checks
// ---------------------------------------------------------------------------------------------------------

/// An RFC 3339 timestamp in UTC written with `Z`.
pub fn assert_utc_timestamp(value: &Value, what: &str) {
    let text = value.as_str().unwrap_or_else(|| panic!("{what} should be a string, got {value}"));
    assert!(text.ends_with('Z'), "{what} should be UTC with Z, got {text}");
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{what} is not RFC 3339 ({text}): {e}"));
}

/// Checks an error envelope `{"error":{"code","message"}}` and returns the inner object.
pub fn assert_error_envelope(body: &Value) -> &Value {
    let error = &body["error"];
    assert!(error.is_object(), "expected an error envelope, got {body}");
    assert!(error["code"].as_str().is_some_and(|c| !c.is_empty()), "error.code should be a non-empty string: {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error.message should be a non-empty string: {body}"
    );
    error
}

/// Checks the endpoint object's fields and their kinds.
pub fn assert_endpoint_shape(ep: &Value) {
    assert!(ep["id"].as_str().is_some_and(|id| id.starts_with("ep_")), "endpoint id: {ep}");
    assert!(ep["url"].is_string(), "endpoint url: {ep}");
    assert!(ep.get("description").is_some(), "endpoint description missing: {ep}");
    assert!(ep["event_types"].is_array(), "endpoint event_types: {ep}");
    assert!(ep["enabled"].is_boolean(), "endpoint enabled: {ep}");
    assert_utc_timestamp(&ep["created_at"], "endpoint created_at");
    assert_utc_timestamp(&ep["updated_at"], "endpoint updated_at");
}

/// Checks the event object's fields and their kinds.
pub fn assert_event_shape(ev: &Value) {
    assert!(ev["id"].as_str().is_some_and(|id| id.starts_with("evt_")), "event id: {ev}");
    assert!(matches!(ev["type"].as_str(), Some("candidate.interview.updated" | "call_completed")), "event type: {ev}");
    assert!(ev["payload"].is_object(), "event payload: {ev}");
    assert_utc_timestamp(&ev["created_at"], "event created_at");
}

/// Checks the delivery object's fields and their kinds.
pub fn assert_delivery_shape(d: &Value) {
    assert!(d["id"].as_str().is_some_and(|id| id.starts_with("dlv_")), "delivery id: {d}");
    assert!(d["event_id"].as_str().is_some_and(|id| id.starts_with("evt_")), "delivery event_id: {d}");
    assert!(d["endpoint_id"].as_str().is_some_and(|id| id.starts_with("ep_")), "delivery endpoint_id: {d}");
    assert!(matches!(d["status"].as_str(), Some("pending" | "succeeded" | "undeliverable")), "delivery status: {d}");
    assert!(d["attempt_count"].is_u64(), "delivery attempt_count: {d}");
    assert!(d.get("next_attempt_at").is_some(), "delivery next_attempt_at missing: {d}");
    if !d["next_attempt_at"].is_null() {
        assert_utc_timestamp(&d["next_attempt_at"], "delivery next_attempt_at");
    }
    assert_utc_timestamp(&d["created_at"], "delivery created_at");
    assert_utc_timestamp(&d["updated_at"], "delivery updated_at");
}

// ---------------------------------------------------------------------------------------------------------
// API client
// ---------------------------------------------------------------------------------------------------------

/// A JSON client for one organization (or none: `key` is `None`).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub key: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: impl Into<String>, key: Option<String>) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("reqwest client");
        Self { base: base.into(), key, http }
    }

    /// The same server with another key (or none).
    pub fn with_key(&self, key: Option<&str>) -> Self {
        Self { base: self.base.clone(), key: key.map(str::to_owned), http: self.http.clone() }
    }

    /// Sends raw bytes with the given content type; answers the status and the body parsed as JSON (a JSON
    /// string holding the text when it is not JSON, `null` when empty).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Value) {
        let (status, _, value) = self.raw_with_headers(method, path, content_type, body).await;
        (status, value)
    }

    /// [`Api::raw`], with the answer's headers too.
    pub async fn raw_with_headers(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_else(|e| panic!("{method} {path} body: {e}"));
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, headers, value)
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        match body {
            Some(body) => {
                self.raw(method, path, Some("application/json"), Some(serde_json::to_vec(body).unwrap())).await
            }
            None => self.raw(method, path, None, None).await,
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(&body)).await
    }

    /// A POST without a body (rotate-secret, test, retry).
    pub async fn post_empty(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::POST, path, None).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::PATCH, path, Some(&body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, None).await
    }

    /// Creates an endpoint from a full request body; expects 201.
    pub async fn create_endpoint_with(&self, body: Value) -> Value {
        let (status, ep) = self.post("/v1/endpoints", body.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "POST /v1/endpoints {body} answered {ep}");
        ep
    }

    /// Creates an endpoint subscribed to the default event types; expects 201.
    pub async fn create_endpoint(&self, url: &str) -> Value {
        self.create_endpoint_with(json!({ "url": url })).await
    }

    /// PATCHes an interview; expects 200 and answers `{"interview", "event"}`.
    pub async fn patch_interview(&self, candidate: &str, body: Value) -> Value {
        let path = format!("/v1/interviews/{candidate}");
        let (status, answer) = self.patch(&path, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "PATCH {path} {body} answered {answer}");
        answer
    }

    /// POSTs a call; expects 201 and answers the event.
    pub async fn post_call(&self, body: Value) -> Value {
        let (status, answer) = self.post("/v1/calls", body).await;
        assert_eq!(status, StatusCode::CREATED, "POST /v1/calls answered {answer}");
        answer["event"].clone()
    }

    /// Rotates an endpoint's secret, expecting success; answers the new secret.
    pub async fn rotate_secret(&self, endpoint_id: &str) -> String {
        let (status, rotated) = self.post_empty(&format!("/v1/endpoints/{endpoint_id}/rotate-secret")).await;
        assert!(status.is_success(), "rotate-secret answered {status} {rotated}");
        rotated["secret"].as_str().expect("rotate-secret answers {secret}").to_owned()
    }

    /// `GET /v1/deliveries?{query}`: the `data` array (one page of up to 250).
    pub async fn deliveries(&self, query: &str) -> Vec<Value> {
        self.list(&format!("/v1/deliveries?limit=250&{query}")).await
    }

    /// One page of a list, expecting 200.
    pub async fn list(&self, path: &str) -> Vec<Value> {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path} answered {body}");
        body["data"].as_array().unwrap_or_else(|| panic!("GET {path}: no data array in {body}")).clone()
    }

    /// Every item of a list, following `next_cursor` (pages of 250).
    pub async fn all(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut url = format!("{path}{sep}limit=250");
        for _ in 0..100 {
            let (status, page) = self.get(&url).await;
            assert_eq!(status, StatusCode::OK, "GET {url} answered {page}");
            items.extend(page["data"].as_array().unwrap_or_else(|| panic!("no data in {page}")).iter().cloned());
            match page["next_cursor"].as_str() {
                Some(cursor) => url = format!("{path}{sep}limit=250&cursor={}", encode(cursor)),
                None => return items,
            }
        }
        panic!("{path} has more than 100 pages");
    }

    /// `GET /v1/deliveries/{id}`, expecting 200.
    pub async fn delivery(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/deliveries/{id}")).await;
        assert_eq!(status, StatusCode::OK, "GET /v1/deliveries/{id} answered {body}");
        body
    }

    /// The only delivery of an event (waits until it exists).
    pub async fn delivery_of_event(&self, event_id: &str) -> Value {
        self.only_delivery(&format!("event_id={event_id}")).await
    }

    /// Waits until `GET /v1/deliveries?{query}` lists a delivery, and answers it; more than one fails.
    pub async fn only_delivery(&self, query: &str) -> Value {
        eventually(&format!("a delivery matching {query}"), WAIT, || async {
            let list = self.deliveries(query).await;
            assert!(list.len() <= 1, "expected one delivery matching {query}, got {list:?}");
            list.into_iter().next()
        })
        .await
    }

    /// Waits until the delivery has `status` and answers it with its attempts.
    pub async fn wait_delivery_status(&self, id: &str, status: &str) -> Value {
        self.wait_delivery(id, &format!("status {status}"), |d| d["status"] == status).await
    }

    /// Waits until `done` holds for the delivery (with attempts) and answers it.
    pub async fn wait_delivery(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let last = self.delivery(id).await;
            if done(&last) {
                return last;
            }
            if Instant::now() >= deadline {
                panic!("timed out waiting for delivery {id} to reach {what}; last seen: {last:#}");
            }
            tokio::time::sleep(ms(20)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The app under test
// ---------------------------------------------------------------------------------------------------------

/// The settings most tests want: fast retries without jitter, short timeouts, receivers on loopback allowed.
pub fn test_config(database: &str) -> ServeConfig {
    let mut config = ServeConfig::new(database);
    config.retry_schedule = vec![ms(50), ms(150), ms(400)];
    config.retry_jitter = 0.0;
    config.attempt_timeout = Duration::from_secs(2);
    config.allow_private_targets = true;
    config.poll_interval = ms(25);
    config
}

/// A running Tidings (API + workers) on a fresh SQLite file, with two organizations: `a` (the one most tests
/// use) and `b` (for isolation).
pub struct TestApp {
    pub base: String,
    /// Organization A's client.
    pub a: Api,
    /// Organization B's client.
    pub b: Api,
    /// A client without a key.
    pub anon: Api,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    /// The store of this test (SQLite or PostgreSQL), kept until the app is dropped.
    _db: TestDb,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts the app after `adjust` changed the [`test_config`].
    pub async fn spawn_with(adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let db = TestDb::new(Backend::current()).await.expect("a database for this test's backend");
        let database = db.url.clone();
        let org_a = tidings::create_org(&database, "org a").await.expect("create org a");
        let org_b = tidings::create_org(&database, "org b").await.expect("create org b");
        let key_a = org_a.api_key.expose_secret().to_owned();
        let key_b = org_b.api_key.expose_secret().to_owned();
        assert!(key_a.starts_with("tdk_"), "API keys start with tdk_: {key_a}");
        assert_ne!(key_a, key_b);

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let mut config = test_config(&database);
        config.listen = addr;
        adjust(&mut config);
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(tidings::run(config, listener, async move {
            let _ = rx.await;
        }));
        let base = format!("http://{addr}");
        let anon = Api::new(base.clone(), None);
        let mut app = TestApp {
            a: anon.with_key(Some(&key_a)),
            b: anon.with_key(Some(&key_b)),
            anon,
            base,
            shutdown: Some(tx),
            server: Some(server),
            _db: db,
        };
        app.wait_healthy().await;
        app
    }

    /// Signals shutdown and waits (up to `within`) for `tidings::run` to return; panics if it does not.
    pub async fn shut_down(&mut self, within: Duration) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let server = self.server.take().expect("still running");
        let result = tokio::time::timeout(within, server).await;
        let result = result.unwrap_or_else(|_| panic!("tidings::run did not return within {within:?} of shutdown"));
        result.expect("the server task").expect("tidings::run");
    }

    async fn wait_healthy(&mut self) {
        let http = reqwest::Client::new();
        let url = format!("{}/healthz", self.base);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            if self.server.as_ref().is_some_and(|s| s.is_finished()) {
                let result = self.server.take().unwrap().await;
                panic!("tidings::run stopped before it was healthy: {result:?}");
            }
            if Instant::now() >= deadline {
                panic!("{url} did not answer 200 within {WAIT:?}");
            }
            tokio::time::sleep(ms(20)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// A real webhook receiver
// ---------------------------------------------------------------------------------------------------------

/// How the receiver answers a request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status at once, body `receiver says <status>`.
    Status(u16),
    /// Waits, then answers this status.
    Slow(Duration, u16),
    /// 302 with this `Location`.
    Redirect(String),
    /// This status with these body bytes.
    Bytes(u16, &'static [u8]),
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("receiver got a body that is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn webhook_id(&self) -> String {
        self.header("webhook-id").unwrap_or_else(|| panic!("no webhook-id header in {:?}", self.headers)).to_owned()
    }
}

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    answered: AtomicUsize,
}

/// An HTTP server on 127.0.0.1:0 that records every request and answers as told.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// A receiver answering 200.
    pub async fn ok() -> Self {
        Self::start(Reply::Status(200)).await
    }

    pub async fn start(default: Reply) -> Self {
        let state = Arc::new(ReceiverState {
            received: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            answered: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let router = Router::new().fallback(receive).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Receiver { addr, state, task }
    }

    /// The URL to register: `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        self.url_for("/hook")
    }

    pub fn url_for(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Changes how every later request is answered (after the scripted ones).
    pub fn set_reply(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = reply;
    }

    /// Queues a reply used once, before the default one.
    pub fn then(&self, reply: Reply) {
        self.state.script.lock().unwrap().push_back(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// Requests whose answer has been sent (after any delay).
    pub fn answered(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived, and answers all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(&format!("{n} request(s) at the receiver {}", self.addr), WAIT, || async {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.received.lock().unwrap().push(Received {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    });
    let reply = {
        let scripted = state.script.lock().unwrap().pop_front();
        scripted.unwrap_or_else(|| state.default.lock().unwrap().clone())
    };
    let response = match reply {
        Reply::Status(code) => status_response(code),
        Reply::Slow(delay, code) => {
            tokio::time::sleep(delay).await;
            status_response(code)
        }
        Reply::Redirect(location) => {
            let mut response = (StatusCode::FOUND, "moved").into_response();
            response.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&location).unwrap());
            response
        }
        Reply::Bytes(code, body) => (StatusCode::from_u16(code).expect("valid status"), body).into_response(),
    };
    state.answered.fetch_add(1, Ordering::SeqCst);
    response
}

fn status_response(code: u16) -> Response {
    let status = StatusCode::from_u16(code).expect("valid status");
    (status, format!("receiver says {code}")).into_response()
}

/// Percent-encodes a query parameter value.
pub fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A port on 127.0.0.1 that nothing listens on (bound, read, released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().unwrap().port()
}
