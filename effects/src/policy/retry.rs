//! Retry with exponential backoff and deterministic jitter.
//!
//! [`RetryPolicy::decide`] is the decision: given the attempt that just failed, its
//! failure and a jitter seed, retry after how long, or give up. [`RetryLayer`] carries it
//! out: it calls the inner handler, sleeps on tokio's clock between attempts and returns
//! the last failure when the policy gives up.
//!
//! Jitter spreads the retries of many intents that failed together (a downstream outage)
//! so that they do not come back in lockstep. It needs no random source: the seed is
//! derived from the intent id and the attempt by [`jitter_seed`], so different intents
//! get different delays, and one intent gets the same delays on every run, which keeps
//! tests and replays deterministic.

use std::sync::Arc;
use std::time::Duration;

use keel_core::IntentId;

use crate::handler::{Call, Failure, Handler, HandlerFuture, Layer, SharedHandler};

/// The most attempts a [`RetryPolicy`] makes, whatever it is configured with.
pub const ATTEMPTS_LIMIT: u32 = 100;

/// The longest single delay a [`RetryPolicy`] waits (one hour), whatever it is
/// configured with.
pub const DELAY_MS_LIMIT: u64 = 3_600_000;

/// When and how often to retry a failed effect.
///
/// Only retryable failures ([`FailureKind::is_retryable`](crate::FailureKind::is_retryable):
/// transient ones such as a 5xx, a 429 or a reset connection, timeouts, and protections
/// such as an open circuit) are retried; a permanent failure is returned at once.
///
/// The delay after the `n`-th attempt is `backoff_ms_initial × multiplier^(n-1)`, capped
/// at `backoff_ms_max`, then shortened by a random-looking fraction of up to `jitter` of
/// itself. A `Retry-After` from the other side (`failure.retry_after_ms`) is a lower
/// bound on the delay, up to `retry_after_ms_max`; a `Retry-After` beyond that cap makes
/// the policy give up rather than come back early to a server that said it would refuse.
///
/// Setters clamp their argument into the documented range, so every policy is bounded.
///
/// ```
/// use keel_effects::Failure;
/// use keel_effects::policy::{RetryDecision, RetryPolicy};
/// let policy = RetryPolicy::default().attempts_max(3).jitter(0.0);
/// let failure = Failure::transient("503");
/// assert_eq!(policy.decide(1, &failure, 0), RetryDecision::RetryAfter { delay_ms: 100 });
/// assert_eq!(policy.decide(2, &failure, 0), RetryDecision::RetryAfter { delay_ms: 200 });
/// assert_eq!(policy.decide(3, &failure, 0), RetryDecision::GiveUp);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    attempts_max: u32,
    backoff_ms_initial: u64,
    backoff_ms_max: u64,
    multiplier: f64,
    jitter: f64,
    retry_after_ms_max: u64,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Attempt again after this delay.
    RetryAfter {
        /// How long to wait first.
        delay_ms: u64,
    },
    /// Stop and report the failure.
    GiveUp,
}

impl RetryPolicy {
    /// The default policy: 5 attempts, backoff from 100 ms doubling up to 30 s, equal
    /// jitter (0.5), `Retry-After` honoured up to 60 s.
    pub const fn new() -> Self {
        Self {
            attempts_max: 5,
            backoff_ms_initial: 100,
            backoff_ms_max: 30_000,
            multiplier: 2.0,
            jitter: 0.5,
            retry_after_ms_max: 60_000,
        }
    }

    /// Total attempts, the first included: 1 means never retry. Clamped to
    /// `1..=`[`ATTEMPTS_LIMIT`].
    #[must_use]
    pub fn attempts_max(mut self, attempts_max: u32) -> Self {
        self.attempts_max = attempts_max.clamp(1, ATTEMPTS_LIMIT);
        self
    }

    /// The delay after the first attempt, before jitter. At most [`DELAY_MS_LIMIT`].
    #[must_use]
    pub fn backoff_ms_initial(mut self, backoff_ms_initial: u64) -> Self {
        self.backoff_ms_initial = backoff_ms_initial.min(DELAY_MS_LIMIT);
        self
    }

    /// The cap on the growing delay, before jitter. At most [`DELAY_MS_LIMIT`].
    #[must_use]
    pub fn backoff_ms_max(mut self, backoff_ms_max: u64) -> Self {
        self.backoff_ms_max = backoff_ms_max.min(DELAY_MS_LIMIT);
        self
    }

    /// How much each delay grows over the previous one. Clamped to `1.0..=100.0`; not a
    /// number means 1.0 (a constant delay).
    #[must_use]
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_nan() {
            1.0
        } else {
            multiplier.clamp(1.0, 100.0)
        };
        self
    }

    /// The largest fraction of a delay that jitter may take off: 0.0 for none, 0.5 for
    /// "equal jitter" (a delay between half and all of the backoff), 1.0 for "full
    /// jitter" (anywhere between zero and the backoff). Clamped to `0.0..=1.0`; not a
    /// number means 0.0.
    #[must_use]
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// The longest `Retry-After` the policy waits for; a longer one makes it give up. At
    /// most [`DELAY_MS_LIMIT`].
    #[must_use]
    pub fn retry_after_ms_max(mut self, retry_after_ms_max: u64) -> Self {
        self.retry_after_ms_max = retry_after_ms_max.min(DELAY_MS_LIMIT);
        self
    }

    /// The delay after failed attempt `attempt` (from 1) before jitter:
    /// `backoff_ms_initial × multiplier^(attempt-1)`, capped at `backoff_ms_max`.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let exponent = attempt.clamp(1, ATTEMPTS_LIMIT) - 1;
        // f64 keeps the growth exact for any sensible configuration, and saturates (to
        // infinity, then to the cap) instead of overflowing for absurd ones.
        let grown = self.backoff_ms_initial as f64 * self.multiplier.powi(exponent as i32);
        let capped = grown.min(self.backoff_ms_max as f64);
        // In 0..=backoff_ms_max by construction: the `as` cast only drops the fraction.
        capped as u64
    }

    /// Whether to retry after attempt number `attempt` (from 1) failed with `failure`.
    ///
    /// `jitter_seed` picks the jitter; pass [`jitter_seed`] of the intent id and the
    /// attempt for delays that differ between intents and repeat between runs.
    pub fn decide(&self, attempt: u32, failure: &Failure, jitter_seed: u64) -> RetryDecision {
        if !failure.kind.is_retryable() || attempt >= self.attempts_max {
            return RetryDecision::GiveUp;
        }
        let backoff_ms = self.backoff_ms(attempt);
        let cut_ms = (backoff_ms as f64 * self.jitter * unit_interval(jitter_seed)) as u64;
        let mut delay_ms = backoff_ms.saturating_sub(cut_ms);
        if let Some(retry_after_ms) = failure.retry_after_ms {
            if retry_after_ms > self.retry_after_ms_max {
                return RetryDecision::GiveUp;
            }
            delay_ms = delay_ms.max(retry_after_ms);
        }
        RetryDecision::RetryAfter { delay_ms }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
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
        u64::from(intent.position) << 32 | u64::from(attempt),
    ];
    words
        .iter()
        .fold(0x6B65_656C_7265_7472, |seed, word| splitmix64(seed ^ word)) // "keelretr"
}

/// One step of SplitMix64: a tiny, well-mixed generator, enough for jitter.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A number in `[0, 1)` drawn from `seed`: the top 53 bits, the precision of an f64.
fn unit_interval(seed: u64) -> f64 {
    (splitmix64(seed) >> 11) as f64 / (1_u64 << 53) as f64
}

/// Retries the wrapped handler as a [`RetryPolicy`] decides.
///
/// Each retry raises `call.attempt`, counts one [`retried`](crate::Metrics::retried) and
/// sleeps on tokio's clock first. When the policy gives up, the last failure is returned
/// unchanged.
#[derive(Debug, Clone, Copy)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// A layer that retries as `policy` decides.
    pub const fn new(policy: RetryPolicy) -> Self {
        Self { policy }
    }
}

impl Layer for RetryLayer {
    fn layer(&self, inner: SharedHandler) -> SharedHandler {
        Arc::new(Retry {
            inner,
            policy: self.policy,
        })
    }
}

struct Retry {
    inner: SharedHandler,
    policy: RetryPolicy,
}

impl Handler for Retry {
    fn call(&self, call: Call) -> HandlerFuture {
        let inner = Arc::clone(&self.inner);
        let policy = self.policy;
        Box::pin(async move {
            let mut call = call;
            call.attempt = call.attempt.max(1);
            // Bounded: `decide` gives up once `attempt` reaches `attempts_max`, which is
            // at most ATTEMPTS_LIMIT, and `attempt` grows by one per turn.
            loop {
                call.record_attempt();
                let result = inner.call(call.clone()).await;
                let failure = match result {
                    Ok(value) => return Ok(value),
                    Err(failure) => failure,
                };
                let seed = jitter_seed(&call.intent.id, call.attempt);
                match policy.decide(call.attempt, &failure, seed) {
                    RetryDecision::GiveUp => return Err(failure),
                    RetryDecision::RetryAfter { delay_ms } => {
                        tracing::debug!(
                            intent = %call.intent.id,
                            attempt = call.attempt,
                            delay_ms,
                            %failure,
                            "retrying effect"
                        );
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        call.attempt += 1;
                        call.metrics.retried();
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use keel_core::Cause;

    use super::*;
    use crate::FailureKind;

    fn no_jitter() -> RetryPolicy {
        RetryPolicy::default().jitter(0.0)
    }

    fn delay(decision: RetryDecision) -> u64 {
        match decision {
            RetryDecision::RetryAfter { delay_ms } => delay_ms,
            RetryDecision::GiveUp => panic!("expected a retry, got {decision:?}"),
        }
    }

    #[test]
    fn backoff_grows_by_the_multiplier_until_the_cap() {
        let policy = no_jitter().backoff_ms_initial(100).backoff_ms_max(1_000);
        let delays: Vec<u64> = (1..=6).map(|attempt| policy.backoff_ms(attempt)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
        let triple = policy.multiplier(3.0);
        assert_eq!(triple.backoff_ms(3), 900);
    }

    #[test]
    fn backoff_saturates_at_the_cap_for_the_last_attempt() {
        let policy = no_jitter()
            .attempts_max(u32::MAX)
            .multiplier(100.0)
            .backoff_ms_max(u64::MAX);
        assert_eq!(policy.backoff_ms(ATTEMPTS_LIMIT), DELAY_MS_LIMIT);
    }

    #[test]
    fn decide_without_jitter_returns_the_backoff() {
        let policy = no_jitter();
        let failure = Failure::transient("503");
        for attempt in 1..5 {
            assert_eq!(
                delay(policy.decide(attempt, &failure, 42)),
                policy.backoff_ms(attempt)
            );
        }
    }

    #[test]
    fn jitter_stays_within_its_fraction_of_the_backoff() {
        let failure = Failure::transient("503");
        for jitter in [0.25, 0.5, 1.0] {
            let policy = RetryPolicy::default().jitter(jitter).attempts_max(10);
            for seed in 0..1_000 {
                let backoff = policy.backoff_ms(4);
                let delay_ms = delay(policy.decide(4, &failure, seed));
                let floor = (backoff as f64 * (1.0 - jitter)) as u64;
                assert!(
                    (floor..=backoff).contains(&delay_ms),
                    "{delay_ms} not in {floor}..={backoff}"
                );
            }
        }
    }

    #[test]
    fn jitter_is_deterministic_for_a_seed_and_spreads_across_seeds() {
        let policy = RetryPolicy::default().jitter(1.0);
        let failure = Failure::transient("503");
        let intent = Cause::root(1).intent_id(0);
        let seed = jitter_seed(&intent, 2);
        assert_eq!(seed, jitter_seed(&intent, 2));
        assert_eq!(
            policy.decide(2, &failure, seed),
            policy.decide(2, &failure, seed)
        );
        let distinct: std::collections::HashSet<u64> = (0..64)
            .map(|position| {
                let seed = jitter_seed(&Cause::root(1).intent_id(position), 2);
                delay(policy.decide(2, &failure, seed))
            })
            .collect();
        assert!(
            distinct.len() > 32,
            "only {} distinct delays",
            distinct.len()
        );
        assert_ne!(jitter_seed(&intent, 1), jitter_seed(&intent, 2));
    }

    #[test]
    fn retry_after_is_a_lower_bound_on_the_delay() {
        let policy = no_jitter();
        let throttled = Failure::transient("429").retry_after_ms(5_000);
        assert_eq!(delay(policy.decide(1, &throttled, 0)), 5_000);
        // A shorter Retry-After than the backoff does not shorten the backoff.
        let soon = Failure::transient("429").retry_after_ms(10);
        assert_eq!(delay(policy.decide(3, &soon, 0)), 400);
    }

    #[test]
    fn retry_after_beyond_its_cap_gives_up() {
        let policy = no_jitter().retry_after_ms_max(10_000);
        let failure = Failure::transient("429").retry_after_ms(10_001);
        assert_eq!(policy.decide(1, &failure, 0), RetryDecision::GiveUp);
        let failure = Failure::transient("429").retry_after_ms(10_000);
        assert_eq!(delay(policy.decide(1, &failure, 0)), 10_000);
    }

    #[test]
    fn permanent_failures_are_never_retried() {
        let policy = RetryPolicy::default().attempts_max(ATTEMPTS_LIMIT);
        let failure = Failure::permanent("404").retry_after_ms(1);
        assert_eq!(policy.decide(1, &failure, 0), RetryDecision::GiveUp);
    }

    #[test]
    fn timeouts_and_unavailable_are_retried() {
        let policy = RetryPolicy::default();
        for kind in [
            FailureKind::Transient,
            FailureKind::Timeout,
            FailureKind::Unavailable,
        ] {
            let failure = Failure::new(kind, "again");
            assert!(matches!(
                policy.decide(1, &failure, 0),
                RetryDecision::RetryAfter { .. }
            ));
        }
    }

    #[test]
    fn attempts_max_counts_the_first_attempt() {
        let policy = RetryPolicy::default().attempts_max(3);
        let failure = Failure::timeout("slow");
        assert!(matches!(
            policy.decide(2, &failure, 0),
            RetryDecision::RetryAfter { .. }
        ));
        assert_eq!(policy.decide(3, &failure, 0), RetryDecision::GiveUp);
        assert_eq!(
            RetryPolicy::default()
                .attempts_max(0)
                .decide(1, &failure, 0),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn setters_clamp_into_their_bounds() {
        let policy = RetryPolicy::default()
            .attempts_max(1_000)
            .multiplier(f64::NAN)
            .jitter(7.0)
            .backoff_ms_initial(u64::MAX);
        assert_eq!(policy.attempts_max, ATTEMPTS_LIMIT);
        assert!((policy.multiplier - 1.0).abs() < f64::EPSILON);
        assert!((policy.jitter - 1.0).abs() < f64::EPSILON);
        assert_eq!(policy.backoff_ms_initial, DELAY_MS_LIMIT);
    }
}
