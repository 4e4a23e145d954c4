//! Outbound HTTP, hardened in one place: one pooled keep-alive client for the process, redirects not
//! followed, a timeout per attempt, response bodies read up to 4 KiB, and private addresses refused on the
//! address actually connected to (so a DNS name cannot be used to reach the operator's network).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue, USER_AGENT as USER_AGENT_HEADER};
use hyper::{Method, Request, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::domain::endpoint::{is_private_target, literal_ip};
use crate::domain::signing::{SigningKey, signature_header};
use crate::domain::time::now_ms;
use crate::store::{AttemptRecord, Claim};

/// How much of a receiver's response body is kept in the attempt log.
pub const RESPONSE_BODY_LIMIT: usize = 4096;

/// The `user-agent` of every delivery.
pub const USER_AGENT: &str = concat!("tidings/", env!("CARGO_PKG_VERSION"));

/// The connector: TCP through the policy resolver, TLS for `https` URLs (Mozilla's roots).
type Connector = HttpsConnector<HttpConnector<PolicyResolver>>;

/// Sends attempts. Cloning shares the connection pool.
///
/// Built on hyper's pooled client directly: a delivery is one request whose URL was checked at registration,
/// sent with no redirects, no proxy and no retries, so a general-purpose client's layers for those would only
/// cost time on every attempt.
#[derive(Clone)]
pub struct Sender {
    client: Client<Connector, Full<Bytes>>,
    timeout: Duration,
    allow_private: bool,
}

/// Why an attempt did not count as delivered, as the attempt log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No status within the attempt timeout.
    Timeout,
    /// The connection could not be made (refused, reset, TLS).
    Connect,
    /// The host name did not resolve.
    Dns,
    /// The target is a private, loopback or link-local address.
    Blocked,
    /// An answer came, but not a 2xx (redirects included).
    Status,
    /// The URL stored for the endpoint cannot be requested.
    Url,
    /// Anything else that broke the exchange midway.
    Request,
    /// The endpoint's stored secret cannot sign (a damaged store): nothing was sent.
    Signing,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Dns => "dns",
            Self::Blocked => "blocked",
            Self::Status => "status",
            Self::Url => "url",
            Self::Request => "request",
            Self::Signing => "signing",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("address {0} is private, loopback or link-local")]
struct BlockedAddress(IpAddr);

#[derive(Debug, thiserror::Error)]
#[error("could not resolve host: {0}")]
struct DnsFailure(String);

type ResolveError = Box<dyn std::error::Error + Send + Sync>;

/// Resolves with the system resolver, then drops addresses the policy forbids. (Literal addresses never reach
/// a resolver, so [`Sender::exchange`] applies the policy to them.)
#[derive(Clone)]
struct PolicyResolver {
    allow_private: bool,
}

impl tower_service::Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ResolveError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(DnsFailure(e.to_string())) as ResolveError)?
                .collect();
            let Some(first) = found.first().copied() else {
                return Err(Box::new(DnsFailure(host)) as ResolveError);
            };
            let allowed: Vec<SocketAddr> =
                found.into_iter().filter(|a| allow_private || !is_private_target(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(BlockedAddress(first.ip())) as ResolveError);
            }
            Ok(allowed.into_iter())
        })
    }
}

impl Sender {
    /// Builds the process's one client.
    pub fn new(timeout: Duration, allow_private: bool, pool_per_host: usize) -> Self {
        let mut http = HttpConnector::new_with_resolver(PolicyResolver { allow_private });
        // The TLS layer takes `https` URLs; plain ones pass through.
        http.enforce_http(false);
        // No connect timeout of its own: the attempt's deadline covers connecting.
        http.set_nodelay(true);
        let connector =
            HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self { client, timeout, allow_private }
    }

    /// Makes one attempt of a claimed delivery and describes it for the log. Never fails: every way an
    /// attempt can go wrong is an attempt record.
    pub async fn send(&self, claim: &Claim) -> AttemptRecord {
        let started_at = now_ms();
        let clock = Instant::now();
        let outcome = self.exchange(claim, tokio::time::Instant::now() + self.timeout).await;
        let (status_code, failure, response_body) = match outcome {
            Ok((status, body)) => {
                let failure = (!(200..300).contains(&status)).then_some(Failure::Status);
                (Some(i64::from(status)), failure, body)
            }
            Err(failure) => (None, Some(failure), String::new()),
        };
        AttemptRecord {
            number: 0,
            trigger: claim.trigger,
            started_at,
            duration_ms: clock.elapsed().as_millis() as i64,
            status_code,
            error: failure.map(|f| f.as_str().to_owned()),
            response_body,
        }
    }

    /// Sends the attempt and reads the answer, all before `deadline`. An answer whose status came in time
    /// counts even if its body did not finish: the body only goes to the log.
    async fn exchange(&self, claim: &Claim, deadline: tokio::time::Instant) -> Result<(u16, String), Failure> {
        // The stored URL was parsed and normalized at registration; this only splits it. A fragment is never
        // sent over HTTP.
        let target = claim.url.split_once('#').map_or(claim.url.as_str(), |(before, _)| before);
        let uri: Uri = target.parse().map_err(|_| Failure::Url)?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(Failure::Url);
        }
        // Literal addresses never reach the resolver, so the policy is applied to them here.
        let host = uri.host().ok_or(Failure::Url)?;
        if !self.allow_private && literal_ip(host).is_some_and(is_private_target) {
            return Err(Failure::Blocked);
        }
        let timestamp = chrono::Utc::now().timestamp();
        let keys: Vec<SigningKey> = claim.secrets.iter().filter_map(SigningKey::from_secret).collect();
        // Only a damaged store holds a secret that does not decode; an unsigned webhook is never sent.
        if keys.is_empty() {
            return Err(Failure::Signing);
        }
        let signature = signature_header(&keys, &claim.event_id, timestamp, &claim.payload);
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT))
            .header("webhook-id", claim.event_id.as_str())
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", signature)
            .body(Full::new(claim.payload.clone()))
            .map_err(|_| Failure::Request)?;
        let response = tokio::time::timeout_at(deadline, self.client.request(request))
            .await
            .map_err(|_| Failure::Timeout)?
            .map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut kept = Vec::new();
        while kept.len() < RESPONSE_BODY_LIMIT {
            match tokio::time::timeout_at(deadline, body.frame()).await.unwrap_or(None) {
                Some(Ok(frame)) => {
                    if let Some(chunk) = frame.data_ref() {
                        kept.extend_from_slice(&chunk[..chunk.len().min(RESPONSE_BODY_LIMIT - kept.len())]);
                    }
                }
                // The status already answered the question; a broken or late body only shortens the log.
                Some(Err(_)) | None => break,
            }
        }
        Ok((status, logged_text(&kept)))
    }
}

/// A reply body as the attempt log keeps it: text, with bytes that are not UTF-8 and NUL characters (which a
/// PostgreSQL `text` column refuses) shown as U+FFFD.
fn logged_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.contains('\0') { text.replace('\0', "\u{FFFD}") } else { text.into_owned() }
}

/// Names a transport error by walking its causes.
fn classify(error: &hyper_util::client::legacy::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<BlockedAddress>() {
            return Failure::Blocked;
        }
        if cause.is::<DnsFailure>() {
            return Failure::Dns;
        }
        source = cause.source();
    }
    if error.is_connect() { Failure::Connect } else { Failure::Request }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    /// The Standard Webhooks specification's example secret.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn claim(url: String, secret: &str) -> Claim {
        Claim::for_test("ep_1", &url, vec![SecretString::from(secret.to_owned())])
    }

    #[test]
    fn reply_bodies_are_logged_as_text_without_nul() {
        assert_eq!(logged_text(b"ok"), "ok");
        assert_eq!(logged_text(b"O\0K\0"), "O\u{FFFD}K\u{FFFD}");
        assert_eq!(logged_text(b"a\xffb"), "a\u{FFFD}b");
    }

    /// A secret that does not decode (only a damaged store has one) fails the attempt before anything is sent.
    #[tokio::test]
    async fn an_undecodable_secret_sends_nothing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let claim = claim(format!("http://{}/hook", listener.local_addr().unwrap()), "whsec_not base64!");
        let sender = Sender::new(Duration::from_secs(2), true, 1);
        let attempt = sender.send(&claim).await;
        assert_eq!(attempt.error.as_deref(), Some("signing"));
        assert_eq!(attempt.status_code, None);
    }

    /// A stored URL naming a private address literally (registered while private targets were allowed) is
    /// refused at send time once they are not: no resolver sees a literal address, so the sender checks it.
    #[tokio::test]
    async fn literal_private_addresses_are_refused_when_not_allowed() {
        let sender = Sender::new(Duration::from_secs(2), false, 1);
        for url in
            ["http://127.0.0.1:9/hook", "http://[::1]:9/hook", "https://10.1.2.3/x", "http://[::ffff:192.168.0.1]/"]
        {
            let attempt = sender.send(&claim(url.into(), SECRET)).await;
            assert_eq!(attempt.error.as_deref(), Some("blocked"), "{url}");
        }
    }

    /// A 2xx that came in time acknowledges even when its body stalls: the attempt keeps the status and logs
    /// the part of the body that arrived.
    #[tokio::test]
    async fn a_status_in_time_counts_though_its_body_stalls() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial").await;
            // Never sends the rest; holds the connection open past the attempt's deadline.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        // Long enough for a loaded machine to connect and answer the head; the body never comes.
        let sender = Sender::new(Duration::from_secs(2), true, 1);
        let attempt = sender.send(&claim(format!("http://{address}/hook"), SECRET)).await;
        assert_eq!(attempt.error, None);
        assert_eq!(attempt.status_code, Some(200));
        assert_eq!(attempt.response_body, "partial");
    }

    /// The fragment of a stored URL is not part of the request, and the answer is read and logged.
    #[tokio::test]
    async fn a_fragment_is_not_sent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (seen, mut told) = tokio::sync::mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let seen = seen.clone();
            async move {
                let _ = seen.send(uri.to_string());
                "thanks"
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sender = Sender::new(Duration::from_secs(2), true, 1);
        let attempt = sender.send(&claim(format!("http://{address}/hook?a=1#part"), SECRET)).await;
        assert_eq!(attempt.error, None);
        assert_eq!(attempt.status_code, Some(200));
        assert_eq!(attempt.response_body, "thanks");
        assert_eq!(told.recv().await.as_deref(), Some("/hook?a=1"));
    }
}
