//! The configuration of a running service: one typed struct, validated before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// The defaults of `tidings serve`, written once for the flags and for [`ServeConfig::new`]; durations in the
/// form the flags take.
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const RETRY_SCHEDULE: &str = "30s,5m,50m";
    pub const RETRY_JITTER: f64 = 0.2;
    pub const ATTEMPT_TIMEOUT: &str = "15s";
    pub const MAX_BODY_BYTES: usize = 1024 * 1024;
    /// A slot is held until its result is recorded, so this also bounds throughput by the store's recording
    /// time: 512 keeps a PostgreSQL server that takes 10–20 ms per batch busy, and bounds what a crash can
    /// make a receiver see twice.
    pub const MAX_IN_FLIGHT: usize = 512;
    pub const ENDPOINT_CONCURRENCY: usize = 64;
    pub const SECRET_GRACE: &str = "24h";
    pub const POLL_INTERVAL: &str = "1s";
    pub const CLIENT_TIMEOUT: &str = "30s";
}

/// Everything `tidings serve` (and the tests) can tune. Built by the CLI from flags and `TIDINGS_*`
/// variables, or by tests from [`ServeConfig::new`] with fields overridden.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where the API listens. Only used by the CLI: [`crate::run`] takes an already bound listener so tests
    /// can bind port 0.
    pub listen: SocketAddr,
    /// A SQLite file path (`tidings.db`), `sqlite:` URL, or `postgres://` URL.
    pub database: String,
    /// Delay before retry 1, 2, 3…; its length is the number of retries after the first attempt.
    pub retry_schedule: Vec<Duration>,
    /// Each delay is multiplied by a random factor in `1 ± retry_jitter`, so receivers that failed together
    /// are not hit again together.
    pub retry_jitter: f64,
    /// How long one POST may take, from connect to the last byte read, before it counts as `timeout`.
    pub attempt_timeout: Duration,
    /// Lets endpoints target loopback, private and link-local addresses; off by default so the service
    /// cannot be used to reach the operator's internal network.
    pub allow_private_targets: bool,
    /// Largest request body the API accepts; larger ones answer 413.
    pub max_body_bytes: usize,
    /// Run delivery workers in this process (`serve`); `false` serves the API only.
    pub workers: bool,
    /// Serve the HTTP API in this process; `false` runs the workers only (`tidings worker`).
    pub api: bool,
    /// Attempts in flight at once in this process, all endpoints together.
    pub max_in_flight: usize,
    /// Attempts in flight at once to one endpoint, so one slow receiver cannot take every slot.
    pub endpoint_concurrency: usize,
    /// How long the previous signing secret keeps signing after a rotation.
    pub secret_grace: Duration,
    /// How often workers look for due retries when nothing woke them.
    pub poll_interval: Duration,
    /// Signs Developer Settings sessions. Set the same value on every API process (and keep it across
    /// restarts) so a session is good everywhere; unset, each process makes its own key at start.
    pub session_key: Option<SecretString>,
    /// How long a client of the API may take to send a request's head (a kept-alive connection waiting for
    /// its next request is closed after this long), and then its body.
    pub client_timeout: Duration,
}

impl ServeConfig {
    /// The defaults of `tidings serve`, on the given database.
    pub fn new(database: impl Into<String>) -> Self {
        Self {
            listen: defaults::LISTEN.parse().expect("the default address parses"),
            database: database.into(),
            retry_schedule: parse_schedule(defaults::RETRY_SCHEDULE).expect("the default schedule parses"),
            retry_jitter: defaults::RETRY_JITTER,
            attempt_timeout: parse_duration(defaults::ATTEMPT_TIMEOUT).expect("the default timeout parses"),
            allow_private_targets: false,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            workers: true,
            api: true,
            max_in_flight: defaults::MAX_IN_FLIGHT,
            endpoint_concurrency: defaults::ENDPOINT_CONCURRENCY,
            secret_grace: parse_duration(defaults::SECRET_GRACE).expect("the default grace parses"),
            poll_interval: parse_duration(defaults::POLL_INTERVAL).expect("the default interval parses"),
            session_key: None,
            client_timeout: parse_duration(defaults::CLIENT_TIMEOUT).expect("the default timeout parses"),
        }
    }

    /// Refuses settings that cannot work, with a message naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.retry_jitter) || self.retry_jitter.is_nan() {
            return Err("--retry-jitter must be between 0 and 1".into());
        }
        if self.attempt_timeout.is_zero() {
            return Err("--attempt-timeout must be greater than zero".into());
        }
        if self.max_in_flight == 0 {
            return Err("--max-in-flight must be at least 1".into());
        }
        if self.endpoint_concurrency == 0 {
            return Err("--endpoint-concurrency must be at least 1".into());
        }
        if self.max_body_bytes < 1024 {
            return Err("--max-body-bytes must be at least 1024".into());
        }
        if self.poll_interval.is_zero() {
            return Err("--poll-interval must be greater than zero".into());
        }
        if self.client_timeout.is_zero() {
            return Err("--client-timeout must be greater than zero".into());
        }
        if self.retry_schedule.windows(2).any(|pair| pair[1] < pair[0]) {
            return Err("--retry-schedule must not shorten: each delay at least the one before it".into());
        }
        if self.session_key.as_ref().is_some_and(|k| k.expose_secret().len() < 32) {
            return Err("--session-key must be at least 32 characters".into());
        }
        if !self.api && !self.workers {
            return Err("nothing to run: neither the API nor the workers are enabled".into());
        }
        Ok(())
    }
}

/// Parses a duration written like `200ms`, `30s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration like 200ms, 30s or 5m: {e}"))
}

/// Parses a retry schedule: comma-separated durations (`30s,5m,50m`); empty or `none` means no retries.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    text.split(',').map(parse_duration).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_read_and_hold() {
        let config = ServeConfig::new("tidings.db");
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(config.retry_schedule, [30, 300, 3000].map(Duration::from_secs));
        assert_eq!(config.attempt_timeout, Duration::from_secs(15));
        assert_eq!(config.secret_grace, Duration::from_secs(24 * 60 * 60));
        assert_eq!(config.poll_interval, Duration::from_secs(1));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn schedules_are_lists_of_durations() {
        assert_eq!(
            parse_schedule("10ms, 20ms,1s").unwrap(),
            vec![Duration::from_millis(10), Duration::from_millis(20), Duration::from_secs(1)]
        );
        assert!(parse_schedule("none").unwrap().is_empty());
        assert!(parse_schedule("1s,x").is_err());
    }

    #[test]
    fn defaults_are_valid_and_have_three_growing_retries() {
        let config = ServeConfig::new("tidings.db");
        assert!(config.validate().is_ok());
        assert_eq!(config.retry_schedule.len(), 3);
        assert!(config.retry_schedule.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn a_schedule_may_not_shorten() {
        let mut config = ServeConfig::new("tidings.db");
        config.retry_schedule = parse_schedule("1s,1s,2s").unwrap();
        assert_eq!(config.validate(), Ok(()));
        config.retry_schedule = parse_schedule("5m,30s").unwrap();
        assert!(config.validate().unwrap_err().contains("--retry-schedule"));
        config.retry_schedule = Vec::new();
        config.client_timeout = Duration::ZERO;
        assert!(config.validate().unwrap_err().contains("--client-timeout"));
    }
}
