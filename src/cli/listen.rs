//! `tidings listen`: a local receiver for trying the service. Prints each webhook (the headers that matter
//! and the pretty JSON), checks its signature when given the secret, and answers a chosen status.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use clap::Args;
use secrecy::SecretString;

use crate::domain::signing::SigningKey;

#[derive(Args)]
pub struct ListenArgs {
    /// Port to listen on (127.0.0.1).
    #[arg(long, env = "TIDINGS_LISTEN_PORT", default_value_t = 9000)]
    port: u16,
    /// The endpoint's signing secret (`whsec_…`); when given, every signature is checked.
    #[arg(long, env = "TIDINGS_LISTEN_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The status code to answer with.
    #[arg(long, default_value_t = 200)]
    status: u16,
}

#[derive(Clone)]
struct Listener {
    key: Option<SigningKey>,
    status: StatusCode,
}

pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let status = StatusCode::from_u16(args.status)
        .map_err(|_| anyhow::anyhow!("--status {} is not a status code", args.status))?;
    let key = match args.secret {
        Some(secret) => Some(
            SigningKey::from_secret(&SecretString::from(secret))
                .ok_or_else(|| anyhow::anyhow!("--secret must look like whsec_<base64>"))?,
        ),
        None => None,
    };
    let address = SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener =
        tokio::net::TcpListener::bind(address).await.map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    println!("listening on http://{address}/ — answering {status}");
    let app = Router::new().fallback(receive).with_state(Listener { key, status });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn receive(State(listener): State<Listener>, headers: HeaderMap, body: Bytes) -> StatusCode {
    println!("{}", describe(&headers, &body, listener.key.as_ref()));
    listener.status
}

/// What `listen` prints for one webhook.
fn describe(headers: &HeaderMap, body: &[u8], key: Option<&SigningKey>) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let mut out = String::from("──────── webhook\n");
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "user-agent"] {
        out.push_str(&format!("{name}: {}\n", header(name)));
    }
    if let Some(key) = key {
        let timestamp = header("webhook-timestamp").parse::<i64>().unwrap_or(0);
        let valid = key.verify(&header("webhook-signature"), &header("webhook-id"), timestamp, body);
        let age = (chrono::Utc::now().timestamp() - timestamp).abs();
        out.push_str(match (valid, age <= 300) {
            (true, true) => "signature: valid\n",
            (true, false) => "signature: valid, but the timestamp is more than 5 minutes off\n",
            (false, _) => "signature: INVALID\n",
        });
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => out.push_str(&serde_json::to_string_pretty(&json).unwrap_or_default()),
        Err(_) => out.push_str(&String::from_utf8_lossy(body)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_headers_body_and_signature_verdict() {
        let secret = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let key = SigningKey::from_secret(&secret).unwrap();
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"event":"interview.updated"}"#;
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().unwrap());
        headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
        headers.insert("webhook-signature", key.sign("evt_1", now, body).parse().unwrap());
        let text = describe(&headers, body, Some(&key));
        assert!(text.contains("webhook-id: evt_1"));
        assert!(text.contains("signature: valid\n"));
        assert!(text.contains("\"event\": \"interview.updated\""));
        headers.insert("webhook-signature", "v1,AAAA".parse().unwrap());
        assert!(describe(&headers, body, Some(&key)).contains("signature: INVALID"));
    }
}
