//! When a call is tried again: only calls that are safe to repeat (reads, and creates that
//! carry a `request_id`), only on UNAVAILABLE, with exponential backoff and full jitter, and
//! never sooner than the server's retry hint.

use std::time::Duration;

/// How often and how patiently a safe call is retried on UNAVAILABLE.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 turns retries off).
    pub max_attempts: u32,
    /// The backoff before the second attempt; it doubles after each one.
    pub initial_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Whether a call may be sent again when its answer is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Safety {
    /// Reads, and creates with a request id.
    Idempotent,
    /// Everything else: an UNAVAILABLE answer is returned as it is.
    Once,
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (0-based `attempt` just failed): a random
    /// duration up to the exponential backoff, but at least the server's hint.
    pub(crate) fn wait(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let ceiling = self.initial_backoff.saturating_mul(1u32 << attempt.min(16)).min(self.max_backoff);
        let jittered = ceiling.mul_f64(unit_random());
        hint.map_or(jittered, |h| h.max(jittered))
    }
}

/// A uniform random number in [0, 1).
fn unit_random() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_the_hint() {
        let p = RetryPolicy::default();
        for attempt in 0..10 {
            let w = p.wait(attempt, None);
            assert!(w <= p.max_backoff, "{w:?}");
            assert!(w <= p.initial_backoff * (1 << attempt), "{w:?}");
        }
        assert!(p.wait(0, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
    }
}
