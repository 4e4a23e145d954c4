//! Outbound HTTP, hardened in one place: one pooled keep-alive client for the process, redirects not
//! followed, a timeout per attempt, response bodies read up to 4 KiB, and private addresses refused on the
//! address actually connected to (so a DNS name cannot be used to reach the operator's network).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use url::Url;

use crate::domain::endpoint::{is_private_target, literal_ip};
use crate::domain::signing::{SigningKey, signature_header};
use crate::domain::time::now_ms;
use crate::store::{AttemptRecord, Claim};

/// How much of a receiver's response body is kept in the attempt log.
pub const RESPONSE_BODY_LIMIT: usize = 4096;

/// The `user-agent` of every delivery.
pub const USER_AGENT: &str = concat!("tidings/", env!("CARGO_PKG_VERSION"));

/// Sends attempts. Cloning shares the connection pool.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    timeout: Duration,
    allow_private: bool,
}

/// Why an attempt did not count as delivered, as the attempt log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No complete answer within the attempt timeout.
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

/// Resolves with the system resolver, then drops addresses the policy forbids.
struct PolicyResolver {
    allow_private: bool,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(DnsFailure(e.to_string())) as Box<dyn std::error::Error + Send + Sync>)?
                .collect();
            let Some(first) = found.first().copied() else {
                return Err(Box::new(DnsFailure(host)) as Box<dyn std::error::Error + Send + Sync>);
            };
            let allowed: Vec<SocketAddr> =
                found.into_iter().filter(|a| allow_private || !is_private_target(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(BlockedAddress(first.ip())) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

impl Sender {
    /// Builds the process's one client.
    pub fn new(timeout: Duration, allow_private: bool, pool_per_host: usize) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would connect on our behalf, past the address check below.
            .no_proxy()
            .dns_resolver(std::sync::Arc::new(PolicyResolver { allow_private }))
            .pool_max_idle_per_host(pool_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .connect_timeout(timeout)
            .build()?;
        Ok(Self { client, timeout, allow_private })
    }

    /// Makes one attempt of a claimed delivery and describes it for the log. Never fails: every way an
    /// attempt can go wrong is an attempt record.
    pub async fn send(&self, claim: &Claim) -> AttemptRecord {
        let started_at = now_ms();
        let clock = Instant::now();
        let (status_code, failure, response_body) = match self.exchange(claim).await {
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

    async fn exchange(&self, claim: &Claim) -> Result<(u16, String), Failure> {
        let url = Url::parse(&claim.url).map_err(|_| Failure::Url)?;
        // Literal addresses never reach the resolver, so the policy is applied to them here.
        if !self.allow_private && literal_ip(&url).is_some_and(is_private_target) {
            return Err(Failure::Blocked);
        }
        let timestamp = chrono::Utc::now().timestamp();
        let keys: Vec<SigningKey> = claim.secrets.iter().filter_map(SigningKey::from_secret).collect();
        // Only a damaged store holds a secret that does not decode; an unsigned webhook is never sent.
        if keys.is_empty() {
            return Err(Failure::Signing);
        }
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let id = HeaderValue::from_str(&claim.event_id).map_err(|_| Failure::Request)?;
        headers.insert("webhook-id", id);
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        let signature = signature_header(&keys, &claim.event_id, timestamp, &claim.payload);
        headers.insert("webhook-signature", HeaderValue::from_str(&signature).map_err(|_| Failure::Request)?);
        let request = self.client.post(url).headers(headers).body(claim.payload.clone()).timeout(self.timeout);
        let mut response = request.send().await.map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < RESPONSE_BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(RESPONSE_BODY_LIMIT - body.len())]),
                Ok(None) => break,
                // The status already answered the question; a broken body only shortens the log.
                Err(_) => break,
            }
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Names a transport error by walking its causes.
fn classify(error: &reqwest::Error) -> Failure {
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
    if error.is_timeout() {
        Failure::Timeout
    } else if error.is_connect() {
        Failure::Connect
    } else {
        Failure::Request
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use secrecy::SecretString;

    use super::*;
    use crate::store::Trigger;

    /// A secret that does not decode (only a damaged store has one) fails the attempt before anything is sent.
    #[tokio::test]
    async fn an_undecodable_secret_sends_nothing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let claim = Claim {
            delivery_id: "dlv_1".into(),
            lease_token: "lease_1".into(),
            lease_until: 0,
            event_id: "evt_1".into(),
            endpoint_id: "ep_1".into(),
            url: format!("http://{}/hook", listener.local_addr().unwrap()),
            payload: Bytes::from_static(b"{}"),
            secrets: vec![SecretString::from("whsec_not base64!".to_owned())],
            scheduled_count: 0,
            trigger: Trigger::Scheduled,
        };
        let sender = Sender::new(Duration::from_secs(2), true, 1).unwrap();
        let attempt = sender.send(&claim).await;
        assert_eq!(attempt.error.as_deref(), Some("signing"));
        assert_eq!(attempt.status_code, None);
    }
}
