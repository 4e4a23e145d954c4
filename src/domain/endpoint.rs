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
/// loopback, private, link-local, shared (CGNAT), unspecified, broadcast, multicast and the IPv6
/// equivalents, including IPv4 addresses written as IPv6.
pub fn is_private_target(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0)
        }
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64.0.0/10
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
        ] {
            assert_eq!(EndpointUrl::parse(url, false).unwrap_err().field, "url", "{url}");
            assert!(EndpointUrl::parse(url, true).is_ok(), "{url}");
        }
        assert!(!is_private_target("93.184.216.34".parse().unwrap()));
        assert!(!is_private_target("2606:2800:220:1::1".parse().unwrap()));
    }

    #[test]
    fn event_types_are_known_and_deduplicated() {
        let types = vec![call::EVENT_TYPE.to_string(), call::EVENT_TYPE.to_string()];
        assert_eq!(parse_event_types(&types).unwrap(), vec![call::EVENT_TYPE.to_string()]);
        assert!(parse_event_types(&[]).is_err());
        assert!(parse_event_types(&["interview.updated".into()]).is_err());
    }
}
