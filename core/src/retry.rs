//! The one retry policy: how many attempts, how long between them, which failures are
//! worth another try.
//!
//! Pure: [`RetryPolicy::decide`] takes the attempt that just failed, its [`FailureKind`],
//! the other side's `Retry-After` hint and a jitter seed, and answers "try again after
//! this long" or "give up". The effects layer that retries a handler and the saga that
//! retries a step both ask it; neither keeps a second set of rules.
//!
//! Jitter spreads the retries of many effects that failed together (a downstream
//! outage) so that they do not come back in lockstep. It needs no random source: the
//! seed is derived from the intent id and the attempt ([`jitter_seed`]), so different
//! intents wait different times and one intent waits the same on every run and replay.
//! The arithmetic is integer-only, so the same seed gives the same wait on every
//! platform.
//!
//! ```
//! use std::time::Duration;
//! use keel_core::retry::{RetryDecision, RetryPolicy};
//! use keel_core::{FailureKind, FailureKinds};
//!
//! let policy = RetryPolicy::exponential()
//!     .attempts(4)
//!     .first_delay(Duration::from_millis(100))
//!     .max_delay(Duration::from_secs(1))
//!     .without_jitter()
//!     .retry_on(FailureKinds::RETRYABLE.without(FailureKind::Timeout));
//! let delay = |attempt| policy.decide(attempt, FailureKind::Transient, None, 0);
//! assert_eq!(delay(1), RetryDecision::RetryAfter(Duration::from_millis(100)));
//! assert_eq!(delay(3), RetryDecision::RetryAfter(Duration::from_millis(400)));
//! assert_eq!(delay(4), RetryDecision::GiveUp);
//! assert_eq!(policy.decide(1, FailureKind::Timeout, None, 0), RetryDecision::GiveUp);
//! assert_eq!(policy.decide(1, FailureKind::Permanent, None, 0), RetryDecision::GiveUp);
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::id::IntentId;
use crate::outcome::FailureKind;

/// The most attempts a policy may allow, so that a typo cannot retry for a year.
pub const ATTEMPTS_MAX: u32 = 10_000;

/// The longest single wait a policy may be configured with (one day).
pub const DELAY_MAX: Duration = Duration::from_secs(24 * 3_600);

/// The largest growth factor between two waits.
pub const MULTIPLIER_MAX: f64 = 100.0;

/// A set of [`FailureKind`]s: the kinds a [`RetryPolicy`] retries.
///
/// ```
/// use keel_core::{FailureKind, FailureKinds};
/// let kinds = FailureKinds::of(FailureKind::Transient) | FailureKind::Unavailable;
/// assert!(kinds.contains(FailureKind::Unavailable) && !kinds.contains(FailureKind::Timeout));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FailureKinds(u8);

impl FailureKinds {
    /// No kind at all.
    pub const NONE: Self = Self(0);
    /// Every kind a retry could help: transient failures, timeouts, and calls a
    /// protection did not attempt. ([`FailureKind::Permanent`] is never retried.)
    pub const RETRYABLE: Self = Self(0b0111);

    const fn bit(kind: FailureKind) -> u8 {
        match kind {
            FailureKind::Transient => 0b0001,
            FailureKind::Timeout => 0b0010,
            FailureKind::Unavailable => 0b0100,
            FailureKind::Permanent => 0b1000,
        }
    }

    /// The set holding only `kind`.
    pub const fn of(kind: FailureKind) -> Self {
        Self(Self::bit(kind))
    }

    /// The set with `kind` added.
    #[must_use]
    pub const fn with(self, kind: FailureKind) -> Self {
        Self(self.0 | Self::bit(kind))
    }

    /// The set with `kind` taken out.
    #[must_use]
    pub const fn without(self, kind: FailureKind) -> Self {
        Self(self.0 & !Self::bit(kind))
    }

    /// Whether `kind` is in the set.
    pub const fn contains(self, kind: FailureKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr<FailureKind> for FailureKinds {
    type Output = Self;
    fn bitor(self, kind: FailureKind) -> Self {
        self.with(kind)
    }
}

impl std::ops::BitOr for FailureKinds {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl fmt::Debug for FailureKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds = [
            FailureKind::Transient,
            FailureKind::Timeout,
            FailureKind::Unavailable,
            FailureKind::Permanent,
        ];
        f.debug_set()
            .entries(kinds.into_iter().filter(|kind| self.contains(*kind)))
            .finish()
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Attempt again after this wait.
    RetryAfter(Duration),
    /// Stop and report the failure.
    GiveUp,
}

/// Attempts and exponential backoff with deterministic jitter.
///
/// The wait after the `n`-th failed attempt is `first_delay × multiplier^(n-1)`, capped at
/// `max_delay`, then shortened by a seeded fraction of up to `jitter` of itself (0.5 by
/// default: between half and all of it). A `Retry-After` from the other side is a lower
/// bound on the wait, up to `retry_after_max`; a longer one makes the policy give up
/// rather than come back early to a server that said it would refuse.
///
/// Only the kinds in `retry_on` are retried, and never [`FailureKind::Permanent`]: the
/// other side said nothing will change. Build it as a sentence with the setters below;
/// [`check`](Self::check) refuses a policy out of bounds with a typed error, and the
/// decisions stay bounded even for a policy nobody checked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RetryPolicy {
    attempts: u32,
    first_delay: Duration,
    max_delay: Duration,
    /// The growth factor in thousandths: integers keep the waits exact everywhere.
    multiplier_milli: u32,
    /// The jitter fraction in thousandths.
    jitter_milli: u16,
    retry_after_max: Duration,
    retry_on: FailureKinds,
}

impl Default for RetryPolicy {
    /// [`RetryPolicy::exponential`].
    fn default() -> Self {
        Self::exponential()
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("attempts", &self.attempts)
            .field("first_delay", &self.first_delay)
            .field("max_delay", &self.max_delay)
            .field("multiplier", &(f64::from(self.multiplier_milli) / 1_000.0))
            .field("jitter", &(f64::from(self.jitter_milli) / 1_000.0))
            .field("retry_after_max", &self.retry_after_max)
            .field("retry_on", &self.retry_on)
            .finish()
    }
}

impl RetryPolicy {
    /// Three attempts, the first retry after 100 ms, doubling up to 30 s, equal jitter,
    /// `Retry-After` honoured up to 60 s, every retryable kind retried.
    pub const fn exponential() -> Self {
        Self {
            attempts: 3,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            multiplier_milli: 2_000,
            jitter_milli: 500,
            retry_after_max: Duration::from_secs(60),
            retry_on: FailureKinds::RETRYABLE,
        }
    }

    /// One attempt, no retry.
    pub const fn none() -> Self {
        Self::exponential().attempts(1)
    }

    /// Attempts in all, the first included: 1 means never retry; 1 to [`ATTEMPTS_MAX`].
    #[must_use]
    pub const fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// The wait before the first retry, before jitter; at most `max_delay`.
    #[must_use]
    pub const fn first_delay(mut self, delay: Duration) -> Self {
        self.first_delay = delay;
        self
    }

    /// The longest wait between two attempts, before jitter; at most [`DELAY_MAX`].
    #[must_use]
    pub const fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// How much each wait grows over the previous one: 2.0 doubles, 1.0 keeps it
    /// constant. Kept to a thousandth, clamped to `1.0..=`[`MULTIPLIER_MAX`]; not a
    /// number means 1.0.
    #[must_use]
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        let clamped = if multiplier.is_nan() {
            1.0
        } else {
            multiplier.clamp(1.0, MULTIPLIER_MAX)
        };
        // In 1_000..=100_000 by the clamp.
        self.multiplier_milli = (clamped * 1_000.0).round() as u32;
        self
    }

    /// The largest fraction of a wait that jitter may take off: 0.0 for none, 0.5 for
    /// "equal jitter" (between half and all of the backoff), 1.0 for "full jitter".
    /// Kept to a thousandth, clamped to `0.0..=1.0`; not a number means 0.0.
    #[must_use]
    pub fn jitter(mut self, jitter: f64) -> Self {
        let clamped = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        // In 0..=1_000 by the clamp.
        self.jitter_milli = (clamped * 1_000.0).round() as u16;
        self
    }

    /// Turns jitter off: waits are exactly the growing series.
    #[must_use]
    pub const fn without_jitter(mut self) -> Self {
        self.jitter_milli = 0;
        self
    }

    /// The longest `Retry-After` the policy waits for; a longer one makes it give up. At
    /// most [`DELAY_MAX`].
    #[must_use]
    pub const fn retry_after_max(mut self, delay: Duration) -> Self {
        self.retry_after_max = delay;
        self
    }

    /// Which kinds of failure are retried ([`FailureKind::Permanent`] never is).
    #[must_use]
    pub const fn retry_on(mut self, kinds: FailureKinds) -> Self {
        self.retry_on = kinds;
        self
    }

    /// Attempts in all, as configured.
    pub const fn max_attempts(&self) -> u32 {
        self.attempts
    }

    /// The kinds retried.
    pub const fn retried_kinds(&self) -> FailureKinds {
        self.retry_on
    }

    /// The wait before the first retry, before jitter.
    pub const fn initial_delay(&self) -> Duration {
        self.first_delay
    }

    /// The cap on the wait, before jitter.
    pub const fn delay_cap(&self) -> Duration {
        self.max_delay
    }

    /// Whether a failure of `kind` after `attempt` attempts (from 1) is tried again.
    pub const fn retries(&self, kind: FailureKind, attempt: u32) -> bool {
        let allowed = if self.attempts > ATTEMPTS_MAX {
            ATTEMPTS_MAX
        } else {
            self.attempts
        };
        !matches!(kind, FailureKind::Permanent) && self.retry_on.contains(kind) && attempt < allowed
    }

    /// The wait after failed attempt `attempt` (from 1), before jitter:
    /// `first_delay × multiplier^(attempt-1)`, capped at `max_delay` (and at
    /// [`DELAY_MAX`]).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = nanos(self.max_delay.min(DELAY_MAX));
        let mut wait = nanos(self.first_delay).min(cap);
        let multiplier = u128::from(self.multiplier_milli.max(1_000));
        for _ in 1..attempt.clamp(1, ATTEMPTS_MAX) {
            if wait == 0 || wait >= cap || multiplier == 1_000 {
                break;
            }
            wait = (wait * multiplier / 1_000).min(cap);
        }
        duration_of(wait)
    }

    /// The wait after failed attempt `attempt`, jittered by `seed` and the attempt (pass
    /// [`jitter_seed`] of the intent, or any value fixed for the effect).
    pub fn delay(&self, attempt: u32, seed: u64) -> Duration {
        let backoff = nanos(self.backoff(attempt));
        // `backoff × jitter × u` with u in [0, 1) drawn from the top 53 bits of the seed
        // mixed with the attempt, so that one seed still gives each attempt its own draw.
        let mixed = splitmix64(seed ^ u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let unit = u128::from(mixed >> 11);
        let cut = (backoff * u128::from(self.jitter_milli.min(1_000)) * unit / 1_000) >> 53;
        // Jitter in whole milliseconds, the resolution of timers: a backoff of whole
        // milliseconds gives a wait of whole milliseconds.
        let cut = cut - cut % 1_000_000;
        duration_of(backoff - cut)
    }

    /// Whether, and after how long, to try again after attempt `attempt` (from 1)
    /// failed with `kind`; `retry_after` is the other side's hint, `seed` picks the
    /// jitter.
    pub fn decide(
        &self,
        attempt: u32,
        kind: FailureKind,
        retry_after: Option<Duration>,
        seed: u64,
    ) -> RetryDecision {
        if !self.retries(kind, attempt) {
            return RetryDecision::GiveUp;
        }
        let mut wait = self.delay(attempt, seed);
        if let Some(hint) = retry_after {
            if hint > self.retry_after_max.min(DELAY_MAX) {
                return RetryDecision::GiveUp;
            }
            wait = wait.max(hint);
        }
        RetryDecision::RetryAfter(wait)
    }

    /// Refuses a policy out of bounds: attempts outside 1 to [`ATTEMPTS_MAX`], a first
    /// delay over the cap, a cap or `retry_after_max` over [`DELAY_MAX`].
    pub fn check(&self) -> Result<(), Error> {
        let refuse = |reason: String| Err(Error::InvalidRetryPolicy { reason });
        if self.attempts == 0 || self.attempts > ATTEMPTS_MAX {
            return refuse(format!(
                "attempts must be 1 to {ATTEMPTS_MAX}, not {}",
                self.attempts
            ));
        }
        if self.max_delay > DELAY_MAX || self.retry_after_max > DELAY_MAX {
            return refuse(format!(
                "a wait of at most {DELAY_MAX:?} may be configured, not {:?}",
                self.max_delay.max(self.retry_after_max)
            ));
        }
        if self.first_delay > self.max_delay {
            return refuse(format!(
                "the first delay ({:?}) is over the max delay ({:?})",
                self.first_delay, self.max_delay
            ));
        }
        Ok(())
    }
}

/// The jitter seed for attempt `attempt` of intent `intent`: a fixed mix of the two, so
/// that retries of different intents spread out and retries of one intent repeat.
pub fn jitter_seed(intent: &IntentId, attempt: u32) -> u64 {
    let correlation = intent.correlation.0.as_u128();
    let causation = intent.causation.0.as_u128();
    let words = [
        (correlation >> 64) as u64,
        correlation as u64,
        (causation >> 64) as u64,
        causation as u64,
        (u64::from(intent.position) << 32) | u64::from(attempt),
    ];
    words
        .iter()
        .fold(0x6B65_656C_7265_7472, |seed, word| splitmix64(seed ^ word)) // "keelretr"
}

/// One step of SplitMix64: a tiny, well-mixed generator, enough for jitter.
const fn splitmix64(seed: u64) -> u64 {
    crate::id::mix64(seed.wrapping_add(0x9E37_79B9_7F4A_7C15))
}

fn nanos(duration: Duration) -> u128 {
    duration.as_nanos()
}

/// A duration of `nanos`, which callers keep at or under [`DELAY_MAX`].
fn duration_of(nanos: u128) -> Duration {
    let nanos = nanos.min(DELAY_MAX.as_nanos());
    // Under a day of nanoseconds fits a u64 with room to spare.
    Duration::from_nanos(nanos as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn waits_grow_up_to_the_cap_without_jitter() {
        let policy = RetryPolicy::exponential()
            .attempts(10)
            .max_delay(MS(1_000))
            .without_jitter();
        let waits: Vec<Duration> = (1..=6).map(|a| policy.delay(a, 0)).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1_000, 1_000].map(MS));
        let slow = policy.multiplier(1.5);
        assert_eq!(slow.backoff(3), MS(225));
        assert_eq!(policy.multiplier(f64::NAN).backoff(5), MS(100));
    }

    #[test]
    fn jitter_stays_in_its_fraction_and_is_deterministic() {
        let policy = RetryPolicy::exponential()
            .attempts(10)
            .first_delay(MS(1_000));
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let wait = policy.delay(2, seed);
            assert!((MS(1_000)..=MS(2_000)).contains(&wait), "{wait:?}");
            assert_eq!(wait, policy.delay(2, seed));
            seen.insert(wait);
        }
        assert!(
            seen.len() > 100,
            "jitter spreads: {} distinct waits",
            seen.len()
        );
        let full = policy.jitter(1.0);
        assert!((0..200).any(|seed| full.delay(2, seed) < MS(1_000)));
    }

    #[test]
    fn jitter_seeds_spread_across_intents_and_repeat_for_one() {
        use crate::reducer::Cause;
        let policy = RetryPolicy::exponential().attempts(10).jitter(1.0);
        let intent = Cause::root(1).intent_id(0);
        assert_eq!(jitter_seed(&intent, 2), jitter_seed(&intent, 2));
        assert_ne!(jitter_seed(&intent, 1), jitter_seed(&intent, 2));
        let distinct: std::collections::BTreeSet<Duration> = (0..64)
            .map(|position| {
                let seed = jitter_seed(&Cause::root(1).intent_id(position), 2);
                policy.delay(2, seed)
            })
            .collect();
        assert!(
            distinct.len() > 32,
            "only {} distinct waits",
            distinct.len()
        );
    }

    #[test]
    fn a_permanent_failure_is_never_retried_and_attempts_run_out() {
        let policy = RetryPolicy::exponential().attempts(3);
        let all = policy.retry_on(FailureKinds::RETRYABLE.with(FailureKind::Permanent));
        assert!(!all.retries(FailureKind::Permanent, 1));
        assert!(policy.retries(FailureKind::Transient, 2));
        assert!(!policy.retries(FailureKind::Transient, 3));
        let picky = policy.retry_on(FailureKinds::RETRYABLE.without(FailureKind::Timeout));
        assert!(!picky.retries(FailureKind::Timeout, 1));
        assert!(picky.retries(FailureKind::Unavailable, 1));
    }

    #[test]
    fn retry_after_is_a_floor_up_to_its_cap() {
        let policy = RetryPolicy::exponential().without_jitter();
        assert_eq!(
            policy.decide(1, FailureKind::Transient, Some(MS(5_000)), 0),
            RetryDecision::RetryAfter(MS(5_000))
        );
        assert_eq!(
            policy.decide(1, FailureKind::Transient, Some(MS(10)), 0),
            RetryDecision::RetryAfter(MS(100))
        );
        assert_eq!(
            policy.decide(1, FailureKind::Transient, Some(MS(61_000)), 0),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn check_names_what_is_out_of_bounds() {
        let bad = [
            RetryPolicy::exponential().attempts(0),
            RetryPolicy::exponential().attempts(ATTEMPTS_MAX + 1),
            RetryPolicy::exponential().first_delay(MS(60_000)),
            RetryPolicy::exponential().max_delay(DELAY_MAX * 2),
        ];
        for policy in bad {
            let err = policy.check().expect_err("out of bounds");
            assert!(matches!(err, Error::InvalidRetryPolicy { .. }), "{err}");
        }
        assert_eq!(RetryPolicy::exponential().check(), Ok(()));
        assert_eq!(RetryPolicy::none().check(), Ok(()));
    }

    #[test]
    fn absurd_policies_stay_bounded_unchecked() {
        let policy = RetryPolicy::exponential()
            .attempts(u32::MAX)
            .first_delay(Duration::MAX)
            .max_delay(Duration::MAX)
            .multiplier(1e300);
        assert_eq!(policy.backoff(u32::MAX), DELAY_MAX);
        assert!(!policy.retries(FailureKind::Transient, ATTEMPTS_MAX));
    }

    #[test]
    fn a_policy_survives_a_serde_round_trip() {
        let policy = RetryPolicy::exponential().multiplier(1.5).jitter(0.25);
        let json = serde_json::to_string(&policy).expect("serialises");
        let back: RetryPolicy = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, policy);
    }
}
