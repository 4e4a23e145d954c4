//! API keys: `tdk_` and 43 base64url characters, shown once; only their SHA-256 is stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Every key starts with this, so a leaked key is recognisable by secret scanners.
pub const PREFIX: &str = "tdk_";

/// A fresh random key (256 bits).
pub fn generate() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The stored form of a key: lowercase hex SHA-256 of the whole key text.
pub fn hash(key: &SecretString) -> String {
    hex::encode(Sha256::digest(key.expose_secret().as_bytes()))
}

/// The stored form of what a caller presented as a key, or `None` when it cannot be one (no `tdk_` prefix), so
/// such text is never looked up.
pub fn hash_of_presented(text: &str) -> Option<String> {
    let key = text.trim();
    key.starts_with(PREFIX).then(|| hash(&SecretString::from(key.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_prefix_and_hash_stably() {
        let key = generate();
        assert!(key.expose_secret().starts_with(PREFIX));
        assert_eq!(hash(&key), hash(&SecretString::from(key.expose_secret().to_owned())));
        assert_eq!(hash(&key).len(), 64);
        assert_ne!(hash(&key), hash(&generate()));
        assert_eq!(hash_of_presented(&format!(" {} ", key.expose_secret())), Some(hash(&key)));
        assert_eq!(hash_of_presented("not-a-key"), None);
    }
}
