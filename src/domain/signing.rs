//! Standard Webhooks signing: `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, with
//! secrets written `whsec_<base64>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Every signing secret starts with this.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new random signing secret (192 bits), in its `whsec_` form.
pub fn generate_secret() -> SecretString {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// The HMAC key of a `whsec_` secret, decoded once per use. Its `Debug` prints nothing of the key.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Decodes `whsec_<base64>`; `None` if it is not that form.
    pub fn from_secret(secret: &SecretString) -> Option<Self> {
        let text = secret.expose_secret();
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        STANDARD.decode(encoded).ok().filter(|k| !k.is_empty()).map(Self)
    }

    /// The MAC of the signed content `id.timestamp.body`, which signing and checking both start from.
    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        mac
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body).finalize().into_bytes()))
    }

    /// Whether `header` (space-separated `v1,…` signatures) holds a valid signature of the message by this
    /// key. Compared in constant time.
    pub fn verify(&self, header: &str, id: &str, timestamp: i64, body: &[u8]) -> bool {
        let mac = self.mac(id, timestamp, body);
        header
            .split_whitespace()
            .filter_map(|sig| sig.strip_prefix("v1,"))
            .any(|sig| STANDARD.decode(sig).is_ok_and(|bytes| mac.clone().verify_slice(&bytes).is_ok()))
    }
}

/// The `webhook-signature` header value: one signature per key, space-separated, so a receiver that still
/// holds the previous secret accepts messages during a rotation's grace period.
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter().map(|k| k.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> SigningKey {
        SigningKey::from_secret(&SecretString::from(text.to_owned())).unwrap()
    }

    /// The test vector published with the Standard Webhooks specification.
    #[test]
    fn standard_webhooks_vector() {
        let k = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = k.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(k.verify(&sig, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#));
        assert!(!k.verify(&sig, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, br#"{"test": 2432232314}"#));
    }

    #[test]
    fn the_standardwebhooks_crate_accepts_our_signatures() {
        let secret = generate_secret();
        let k = SigningKey::from_secret(&secret).unwrap();
        let ts = chrono::Utc::now().timestamp();
        let body = br#"{"event":"interview.updated"}"#;
        let header = signature_header(&[key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), k], "evt_1", ts, body);
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().unwrap());
        headers.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        headers.insert("webhook-signature", header.parse().unwrap());
        let verifier = standardwebhooks::Webhook::new(secret.expose_secret()).unwrap();
        verifier.verify(body, &headers).unwrap();
    }

    #[test]
    fn secrets_have_the_prefix_and_decode() {
        let secret = generate_secret();
        assert!(secret.expose_secret().starts_with(SECRET_PREFIX));
        assert!(SigningKey::from_secret(&secret).is_some());
        assert!(SigningKey::from_secret(&SecretString::from("whsec_!!".to_owned())).is_none());
        assert_eq!(format!("{:?}", SigningKey::from_secret(&secret).unwrap()), "SigningKey(..)");
    }
}
