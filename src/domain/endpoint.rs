//! Endpoint rules: which URLs may be registered, which addresses may be reached, which event types exist.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use super::Invalid;
use super::{call, interview};

/// Longest URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest description accepted, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// The event types an endpoint can subscribe to.
pub const EVENT_TYPES: [&str; 2] = [interview::EVENT_TYPE, call::EVENT_TYPE];

/// A URL that passed every registration rule. The only way to make one is [`EndpointUrl::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(Url);

impl EndpointUrl {
    /// Checks a URL a customer wants to register: absolute `http` or `https`, at most 2048 bytes, no
    /// user or password, and (unless `allow_private`) not a loopback, private or link-local address. Host
    /// names are checked again on every connection, against the addresses they resolve to.
    pub fn parse(text: &str, allow_private: bool) -> Result<Self, Invalid> {
        let invalid = |message: &str| Invalid::new("url", message);
        if text.len() > MAX_URL_BYTES {
            return Err(invalid(&format!("must be at most {MAX_URL_BYTES} bytes")));
        }
        let url = Url::parse(text).map_err(|e| invalid(&format!("is not an absolute URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("must use http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("must not contain a user name or password"));
        }
        // A URL may hold characters an HTTP request line cannot (`{` in a host name): every attempt would fail.
        if url.as_str().parse::<axum::http::Uri>().is_err() {
            return Err(invalid("has characters an HTTP request cannot carry"));
        }
        let blocked = match url.host() {
            None => return Err(invalid("must have a host")),
            Some(Host::Ipv4(ip)) => is_private_target(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => is_private_target(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
        };
        if blocked && !allow_private {
            return Err(invalid(
                "points at a loopback, private or link-local address, which this service does not deliver to",
            ));
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The address a URL's host names literally (`10.0.0.1`, `[::1]`), which no resolver sees; `None` for a
/// domain name. Reads the host as a URL normalized at registration writes it (the sender has only the text).
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// Whether delivering to `ip` could reach the operator's own network rather than a customer's server:
/// loopback, private, link-local, shared (CGNAT), benchmarking, reserved, unspecified, broadcast, multicast
/// and the IPv6 equivalents, including IPv6 addresses that carry an IPv4 one a gateway or the host would reach
/// (IPv4-mapped and -compatible, NAT64's `64:ff9b::/96` and 6to4's `2002::/16`).
pub fn is_private_target(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_private_v4(v4);
            }
            let [first, second, third, ..] = v6.segments();
            // Local-use NAT64 (`64:ff9b:1::/48`) reaches IPv4 addresses the network chose, private ones too.
            let local_nat64 = first == 0x64 && second == 0xff9b && third == 1;
            local_nat64
                || v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0)
        }
    }
}

/// The IPv4 address an IPv6 one carries: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:AABB:CCDD::/48`.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // `::` and `::1` are IPv6's own unspecified and loopback addresses, not IPv4 ones.
        [0, 0, 0, 0, 0, 0, _, _] if u32::from(low) > 1 => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, high, low16, ..] => Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low16))),
        _ => None,
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || a >= 240 // reserved 240.0.0.0/4
}

/// Checks a list of event types: not empty, each one known; duplicates are dropped, order kept.
pub fn parse_event_types(types: &[String]) -> Result<Vec<String>, Invalid> {
    if types.is_empty() {
        return Err(Invalid::new("event_types", "must name at least one event type"));
    }
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for t in types {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(Invalid::new(
                "event_types",
                format!("`{t}` is not an event type; the types are {}", EVENT_TYPES.join(", ")),
            ));
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// Checks a description's length.
pub fn validate_description(text: &str) -> Result<(), Invalid> {
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Invalid::new("description", format!("must be at most {MAX_DESCRIPTION_CHARS} characters")));
    }
    if text.contains('\0') {
        return Err(Invalid::new("description", "must not contain NUL characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_rules() {
        assert!(EndpointUrl::parse("https://example.com/hook", false).is_ok());
        assert!(EndpointUrl::parse("http://example.com:8080/a?b=c", false).is_ok());
        assert!(EndpointUrl::parse("ftp://example.com/", false).is_err());
        assert!(EndpointUrl::parse("/relative", false).is_err());
        assert!(EndpointUrl::parse("https://user:pw@example.com/", false).is_err());
        assert!(EndpointUrl::parse("https://a{b.example.com/", false).is_err(), "no request can carry it");
        assert!(EndpointUrl::parse("https://example.com/a b?c=d e", false).is_ok(), "written percent-encoded");
        let long = format!("https://example.com/{}", "a".repeat(2100));
        assert!(EndpointUrl::parse(&long, false).is_err());
    }

    #[test]
    fn literal_addresses_are_read_from_the_host() {
        assert_eq!(literal_ip("10.0.0.1"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(literal_ip("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(literal_ip("example.com"), None);
        assert_eq!(literal_ip("::1"), None, "a URL writes an IPv6 host in brackets");
        let url = Url::parse("http://[::ffff:7f00:1]:8080/x").unwrap();
        assert!(url.host_str().and_then(literal_ip).is_some_and(is_private_target));
    }

    #[test]
    fn private_targets_need_permission() {
        for url in [
            "http://127.0.0.1:9/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://172.16.0.1/",
            "http://169.254.169.254/latest",
            "http://[::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:8080/",
            "http://0.0.0.0/",
            "http://[::a9fe:a9fe]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[64:ff9b::10.0.0.1]/",
            "http://[2002:7f00:1::1]/",
            "http://[64:ff9b:1::a9fe:a9fe]/",
            "http://192.0.0.170/",
            "http://198.18.0.1/",
            "http://240.0.0.1/",
        ] {
            assert_eq!(EndpointUrl::parse(url, false).unwrap_err().field, "url", "{url}");
            assert!(EndpointUrl::parse(url, true).is_ok(), "{url}");
        }
        assert!(!is_private_target("93.184.216.34".parse().unwrap()));
        assert!(!is_private_target("2606:2800:220:1::1".parse().unwrap()));
        for public in ["64:ff9b::5db8:d822", "2002:5db8:d822::1", "::5db8:d822", "198.20.0.1", "192.0.2.1"] {
            assert!(!is_private_target(public.parse().unwrap()), "{public} carries a public IPv4 address");
        }
    }

    #[test]
    fn event_types_are_known_and_deduplicated() {
        let types = vec![call::EVENT_TYPE.to_string(), call::EVENT_TYPE.to_string()];
        assert_eq!(parse_event_types(&types).unwrap(), vec![call::EVENT_TYPE.to_string()]);
        assert!(parse_event_types(&[]).is_err());
        assert!(parse_event_types(&["interview.updated".into()]).is_err());
    }
}
