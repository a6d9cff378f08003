//! How a step retries: attempts, backoff, and which failures are worth another try.
//!
//! Pure: the backoff's jitter comes from a hash of the saga and the attempt, not from a
//! random source, so a replay waits exactly as long as the original run did.

use serde::{Deserialize, Serialize};

/// What kind of failure an answer reports; the saga decides on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Might succeed if tried again (a 5xx, a 429, a reset connection). The effect may
    /// or may not have happened.
    Transient,
    /// No answer in time. The effect may or may not have happened.
    Timeout,
    /// Not attempted: a protection was engaged (an open circuit, a rate limit).
    Unavailable,
    /// The service refused for good (a 4xx, a declined card): nothing happened.
    Permanent,
}

impl FailureClass {
    /// Whether the effect may have happened despite the failure. Only a definite answer
    /// from the service (success, or a permanent refusal) settles that question.
    pub const fn is_ambiguous(self) -> bool {
        matches!(self, Self::Transient | Self::Timeout)
    }

    /// The class of a keel-effects failure.
    pub fn of(kind: keel_effects::FailureKind) -> Self {
        match kind {
            keel_effects::FailureKind::Timeout => Self::Timeout,
            keel_effects::FailureKind::Unavailable => Self::Unavailable,
            keel_effects::FailureKind::Permanent => Self::Permanent,
            // Transient, and any class added later: retrying is the safe default.
            _ => Self::Transient,
        }
    }
}

/// The most attempts a policy may allow, so that a typo cannot retry for a year.
pub const ATTEMPTS_MAX: u16 = 10_000;

/// Attempts and exponential backoff with jitter.
///
/// ```
/// use keel_orchestrator::RetryPolicy;
/// let policy = RetryPolicy::exponential(5, 100).backoff_max_ms(1_000);
/// // The n-th retry waits about 100 * 2^(n-1) ms, capped, jittered into its upper half.
/// let waits: Vec<u64> = (1..5).map(|attempt| policy.delay_ms(attempt, 7)).collect();
/// assert!((50..=100).contains(&waits[0]) && (500..=1_000).contains(&waits[3]));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub attempts_max: u16,
    /// The wait before the first retry.
    pub backoff_initial_ms: u64,
    /// The longest wait between two attempts.
    pub backoff_max_ms: u64,
    /// Whether the n-th wait is drawn (deterministically) from its upper half, so that
    /// many sagas failing together do not retry together.
    pub jitter: bool,
    /// Which failures are retried. A `Permanent` failure is final even if listed:
    /// the service said nothing will change.
    pub retry_transient: bool,
    /// Whether a timeout is retried.
    pub retry_timeout: bool,
    /// Whether an unavailable (not attempted) call is retried.
    pub retry_unavailable: bool,
}

impl Default for RetryPolicy {
    /// Three attempts, 100 ms then 200 ms apart (jittered), every retryable class retried.
    fn default() -> Self {
        Self::exponential(3, 100)
    }
}

impl RetryPolicy {
    /// `attempts_max` attempts, the first retry after `backoff_initial_ms`, doubling up to
    /// 30 seconds, jittered.
    pub const fn exponential(attempts_max: u16, backoff_initial_ms: u64) -> Self {
        Self {
            attempts_max,
            backoff_initial_ms,
            backoff_max_ms: 30_000,
            jitter: true,
            retry_transient: true,
            retry_timeout: true,
            retry_unavailable: true,
        }
    }

    /// One attempt, no retry.
    pub const fn none() -> Self {
        Self::exponential(1, 0)
    }

    /// Caps the wait between two attempts.
    #[must_use]
    pub const fn backoff_max_ms(mut self, backoff_max_ms: u64) -> Self {
        self.backoff_max_ms = backoff_max_ms;
        self
    }

    /// Turns jitter off: waits are exactly the doubling series.
    #[must_use]
    pub const fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// Sets which failure classes are retried.
    #[must_use]
    pub const fn retry_on(mut self, transient: bool, timeout: bool, unavailable: bool) -> Self {
        self.retry_transient = transient;
        self.retry_timeout = timeout;
        self.retry_unavailable = unavailable;
        self
    }

    /// Whether a failure of `class` after `attempt` attempts is tried again.
    pub const fn retries(&self, class: FailureClass, attempt: u16) -> bool {
        let retryable = match class {
            FailureClass::Transient => self.retry_transient,
            FailureClass::Timeout => self.retry_timeout,
            FailureClass::Unavailable => self.retry_unavailable,
            FailureClass::Permanent => false,
        };
        retryable && attempt < self.attempts_max
    }

    /// The wait after attempt `attempt` (from 1) failed; `seed` spreads the jitter.
    pub fn delay_ms(&self, attempt: u16, seed: u64) -> u64 {
        let doublings = u32::from(attempt.saturating_sub(1)).min(62);
        let full = self
            .backoff_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_ms);
        if !self.jitter || full < 2 {
            return full;
        }
        let half = full / 2;
        let mut z = seed ^ u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        half + z % (full - half + 1)
    }

    /// Checks the policy's bounds; `what` names it in the message.
    pub(crate) fn check(&self, what: &str) -> Result<(), String> {
        if self.attempts_max == 0 || self.attempts_max > ATTEMPTS_MAX {
            return Err(format!(
                "{what}: attempts_max must be 1 to {ATTEMPTS_MAX}, not {}",
                self.attempts_max
            ));
        }
        if self.backoff_initial_ms > self.backoff_max_ms {
            return Err(format!(
                "{what}: backoff_initial_ms ({}) is over backoff_max_ms ({})",
                self.backoff_initial_ms, self.backoff_max_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_without_jitter() {
        let policy = RetryPolicy::exponential(10, 100)
            .backoff_max_ms(1_000)
            .without_jitter();
        let waits: Vec<u64> = (1..=6).map(|a| policy.delay_ms(a, 0)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn jitter_stays_in_the_upper_half_and_is_deterministic() {
        let policy = RetryPolicy::exponential(10, 1_000);
        for seed in 0..200 {
            let wait = policy.delay_ms(2, seed);
            assert!((1_000..=2_000).contains(&wait), "{wait}");
            assert_eq!(wait, policy.delay_ms(2, seed));
        }
    }

    #[test]
    fn a_permanent_failure_is_never_retried_and_attempts_run_out() {
        let policy = RetryPolicy::exponential(3, 10);
        assert!(!policy.retries(FailureClass::Permanent, 1));
        assert!(policy.retries(FailureClass::Transient, 2));
        assert!(!policy.retries(FailureClass::Transient, 3));
        let picky = policy.retry_on(true, false, true);
        assert!(!picky.retries(FailureClass::Timeout, 1));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let policy = RetryPolicy::exponential(ATTEMPTS_MAX, u64::MAX / 2).backoff_max_ms(u64::MAX);
        assert!(policy.delay_ms(u16::MAX, 1) >= u64::MAX / 4);
    }
}
