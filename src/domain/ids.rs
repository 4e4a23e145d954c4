//! Typed, prefixed identifiers (`org_…`, `ep_…`, `evt_…`, `dlv_…`): the prefix tells a reader what an id
//! names, and a wrong kind of id is refused before any lookup.

use rand::RngCore;

/// Organization ids.
pub const ORG: &str = "org";
/// Endpoint ids.
pub const ENDPOINT: &str = "ep";
/// Event ids; also the `webhook-id` receivers dedupe on.
pub const EVENT: &str = "evt";
/// Delivery ids.
pub const DELIVERY: &str = "dlv";

/// A new random id: the prefix, `_`, and 24 lowercase hex digits (96 random bits).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// Whether `id` could have been made by [`new_id`] with this prefix; used to answer 404 early for ids that
/// cannot exist.
pub fn has_prefix(id: &str, prefix: &str) -> bool {
    id.len() == prefix.len() + 25
        && id.starts_with(prefix)
        && id.as_bytes()[prefix.len()] == b'_'
        && id[prefix.len() + 1..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_are_unique() {
        let a = new_id(ENDPOINT);
        let b = new_id(ENDPOINT);
        assert_ne!(a, b);
        assert!(has_prefix(&a, ENDPOINT));
        assert!(!has_prefix(&a, EVENT));
        assert!(!has_prefix("ep_nothex", ENDPOINT));
    }
}
