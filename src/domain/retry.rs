//! What happens after an attempt: done, try again after a backoff, or give up as undeliverable.

use std::time::Duration;

use rand::Rng;

use super::time::Millis;

/// The retry policy: delays before retry 1, 2, 3… with multiplicative jitter.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// `schedule[i]` is the delay before retry `i + 1`; its length is the number of retries.
    pub schedule: Vec<Duration>,
    /// Each delay is scaled by a random factor in `1 ± jitter`.
    pub jitter: f64,
}

/// Where a delivery goes after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A 2xx acknowledged it.
    Succeeded,
    /// Try again at this time.
    RetryAt(Millis),
    /// Every scheduled attempt failed.
    Undeliverable,
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based), jitter not applied.
    pub fn base_delay(&self, retry: usize) -> Option<Duration> {
        retry.checked_sub(1).and_then(|i| self.schedule.get(i)).copied()
    }

    /// Decides what follows an attempt that ended at `now`. `scheduled_attempts` counts the scheduled
    /// (not manual) attempts made so far, this one included if it was scheduled; a failed delivery is
    /// retried until it has had one first attempt and every retry of the schedule.
    pub fn next(&self, succeeded: bool, scheduled_attempts: u32, now: Millis) -> Next {
        if succeeded {
            return Next::Succeeded;
        }
        if scheduled_attempts == 0 {
            // A manual attempt before the first scheduled one failed: the first attempt is still owed.
            return Next::RetryAt(now);
        }
        match self.base_delay(scheduled_attempts as usize) {
            Some(delay) => Next::RetryAt(now + self.jittered(delay).as_millis() as Millis),
            None => Next::Undeliverable,
        }
    }

    fn jittered(&self, delay: Duration) -> Duration {
        if self.jitter <= 0.0 {
            return delay;
        }
        let factor = rand::rng().random_range(1.0 - self.jitter..=1.0 + self.jitter);
        delay.mul_f64(factor.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            schedule: vec![Duration::from_secs(30), Duration::from_secs(300), Duration::from_secs(3000)],
            jitter,
        }
    }

    #[test]
    fn three_retries_then_undeliverable() {
        let p = policy(0.0);
        assert_eq!(p.next(false, 1, 0), Next::RetryAt(30_000));
        assert_eq!(p.next(false, 2, 0), Next::RetryAt(300_000));
        assert_eq!(p.next(false, 3, 0), Next::RetryAt(3_000_000));
        assert_eq!(p.next(false, 4, 0), Next::Undeliverable);
        assert_eq!(p.next(true, 4, 0), Next::Succeeded);
        assert_eq!(p.next(false, 0, 5), Next::RetryAt(5));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = policy(0.2);
        for _ in 0..1000 {
            let Next::RetryAt(at) = p.next(false, 2, 0) else { panic!("expected a retry") };
            assert!((240_000..=360_000).contains(&at), "{at}");
        }
    }

    #[test]
    fn no_schedule_means_one_attempt() {
        let p = RetryPolicy { schedule: vec![], jitter: 0.0 };
        assert_eq!(p.next(false, 1, 0), Next::Undeliverable);
    }
}
