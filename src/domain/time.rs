//! Time as the service stores it (milliseconds since the Unix epoch, UTC) and writes it (RFC 3339, `Z`).

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch: the stored form of every service timestamp.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_ms() -> Millis {
    // Straight from the system clock: called for every write and attempt, where chrono's calendar is not needed.
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => since.as_millis() as Millis,
        Err(before) => -(before.duration().as_millis() as Millis),
    }
}

/// `2026-01-02T03:04:05.678Z`: how the API writes service timestamps.
pub fn format_ms(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads an RFC 3339 timestamp with any offset and writes it back in UTC with `Z`, keeping the precision
/// it was given (`2025-04-15T18:00:00+02:00` becomes `2025-04-15T16:00:00Z`).
pub fn normalize_rfc3339(text: &str) -> Option<String> {
    let parsed = DateTime::parse_from_rfc3339(text).ok()?;
    Some(parsed.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_in_utc() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(normalize_rfc3339("2025-04-15T18:00:00+02:00").unwrap(), "2025-04-15T16:00:00Z");
        assert_eq!(normalize_rfc3339("2025-04-15T16:00:00.250Z").unwrap(), "2025-04-15T16:00:00.250Z");
        assert!(normalize_rfc3339("yesterday").is_none());
        assert!(normalize_rfc3339("2025-04-15").is_none());
    }
}
