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

/// A new id: the prefix, `_`, and 24 lowercase hex digits: 12 of the current time in milliseconds, then 48
/// random bits. Ids made later sort later, so the store's unique indexes grow at one end instead of being
/// written all over (one page touched per batch of inserts, not one per insert); the random part keeps them
/// unguessable and unique across processes.
pub fn new_id(prefix: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let millis = crate::domain::time::now_ms().max(0) as u64 & 0xffff_ffff_ffff;
    let mut random = [0u8; 6];
    rand::rng().fill_bytes(&mut random);
    // Written digit by digit: ids are made for every event and delivery, on the store's writer.
    let mut id = String::with_capacity(prefix.len() + 25);
    id.push_str(prefix);
    id.push('_');
    for shift in (0..12).rev() {
        id.push(char::from(HEX[(millis >> (shift * 4)) as usize & 0xf]));
    }
    for byte in random {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    id
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

    #[test]
    fn ids_start_with_the_time_they_were_made() {
        let before = crate::domain::time::now_ms();
        let id = new_id(DELIVERY);
        let after = crate::domain::time::now_ms();
        let made = i64::from_str_radix(&id[4..16], 16).unwrap();
        assert!((before..=after).contains(&made), "{id} made at {made}, not in {before}..={after}");
        assert!(id[16..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
        assert_ne!(id[16..], new_id(DELIVERY)[16..], "the random part differs");
    }

    #[test]
    fn later_ids_sort_later() {
        let first = new_id(EVENT);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(new_id(EVENT) > first);
    }
}
