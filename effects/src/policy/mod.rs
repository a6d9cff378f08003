//! Policies around handlers: retry, timeout, circuit breaker, concurrency and rate
//! limits, dead letters.
//!
//! Each policy comes in two parts, as in tower's retry (a `Policy` decides, the `Retry`
//! service carries it out):
//!
//! - a **pure decision**, a plain value whose methods take the time, the attempt and the
//!   failure as inputs and return what to do: [`RetryPolicy::decide`],
//!   [`Breaker::admit`], [`TokenBucket::try_take`]. They read no clock and draw no random
//!   number, so the unit tests at the bottom of each file drive them step by step;
//! - a [`Layer`] that carries the decision out around an inner [`SharedHandler`] on
//!   tokio: [`RetryLayer`], [`TimeoutLayer`], [`BreakerLayer`], [`ConcurrencyLimitLayer`],
//!   [`RateLimitLayer`], [`DeadLetterLayer`]. Every wait is a `tokio::time` sleep, so
//!   tests that pause tokio's clock run them instantly.
//!
//! # Layout
//!
//! - `retry`: [`RetryPolicy`] (exponential backoff, jitter derived from the intent id,
//!   `Retry-After` honoured) and [`RetryLayer`].
//! - `timeout`: [`TimeoutLayer`].
//! - `breaker`: the [`Breaker`] state machine (closed, open, half-open with one probe)
//!   and [`BreakerLayer`].
//! - `concurrency`: [`ConcurrencyLimitLayer`], a semaphore.
//! - `rate`: the [`TokenBucket`] and [`RateLimitLayer`].
//! - `dead_letter`: the [`DeadLetterQueue`] of intents that failed for good, with
//!   replay, and [`DeadLetterLayer`].
//!
//! [`Policies`] stacks them in one fixed order, so that no two handlers of a runtime
//! combine them differently by accident.
//!
//! # Order
//!
//! From the outside in, [`Policies::wrap`] builds
//!
//! ```text
//! dead letters → retry → circuit breaker → rate limit → concurrency limit → timeout → handler
//! ```
//!
//! - **Dead letters outermost**, so that they see the final outcome once per intent:
//!   after the last retry, and also when a protection (an open circuit, an exhausted
//!   rate limit) outlasts the retries.
//! - **Retry next**, so that everything below runs once per *attempt*: each attempt asks
//!   the breaker, spends a rate token, holds a concurrency permit only while it runs and
//!   gets its own timeout. A backoff sleep holds no permit, and a retry is a request like
//!   any other, so it counts against the rate limit.
//! - **The breaker before the limits**, so that an open circuit fails fast without
//!   spending a token or queueing for a permit. Its rejection carries the time until the
//!   half-open state as `retry_after`, which the retry above honours: the retry sleeps
//!   until the circuit lets a probe through instead of burning its attempts. (Keep the
//!   breaker's `open_ms` within the retry's `retry_after_max`, or a rejection makes the
//!   retry give up at once and the intent goes to the dead letters.)
//! - **The rate limit before the concurrency limit**, so that a caller waiting for a
//!   token does not sit on a permit, the scarcer of the two.
//! - **The timeout innermost**, so that it measures the handler alone and not the time
//!   spent queueing for a token or a permit: a timeout that reaches the breaker is then
//!   evidence about the other side, not about our own congestion. The waits above it
//!   have bounds of their own (`wait_ms_max`).
//!
//! # State
//!
//! A layer holds configuration only. The state of a stateful policy (a breaker, a
//! semaphore, a token bucket) is created each time the layer wraps a handler, so
//! wrapping two handlers with one [`Policies`] gives each its own circuit and limits. The
//! dead-letter queue is the exception: it is passed in, shared by every handler wrapped
//! with it, and listed and replayed through its own handle.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use crate::clock::{Clock, TokioClock};
use crate::handler::{Layer, SharedHandler};

mod breaker;
mod concurrency;
mod dead_letter;
mod rate;
mod retry;
mod timeout;

pub use breaker::{Admission, Breaker, BreakerConfig, BreakerLayer, BreakerState};
pub use concurrency::ConcurrencyLimitLayer;
pub use dead_letter::{DEAD_LETTER_CAPACITY_DEFAULT, DeadLetter, DeadLetterLayer, DeadLetterQueue};
pub use rate::{RateLimitLayer, TokenBucket};
pub use retry::{ATTEMPTS_MAX, DELAY_MAX, RetryDecision, RetryLayer, RetryPolicy, jitter_seed};
pub use timeout::TimeoutLayer;

/// How long a layer waits for a rate token or a concurrency permit by default before it
/// fails the attempt as [`Unavailable`](crate::FailureKind::Unavailable).
pub const WAIT_MS_MAX_DEFAULT: u64 = 30_000;

/// A stack of policies, applied in the fixed order the module docs justify.
///
/// Every policy is optional; [`Policies::new`] applies none.
///
/// ```
/// use std::sync::Arc;
/// use keel_effects::policy::{BreakerConfig, DeadLetterQueue, Policies, RetryPolicy};
/// use keel_effects::{Call, Failure, HandlerResult, SharedHandler};
///
/// let dead_letters = DeadLetterQueue::new(100);
/// let policies = Policies::new()
///     .dead_letters(dead_letters.clone())
///     .retry(RetryPolicy::default().attempts(4))
///     .circuit_breaker(BreakerConfig::default().failures_to_open(10))
///     .concurrency_limit(8)
///     .timeout_ms(2_000);
///
/// async fn charge(_call: Call) -> HandlerResult {
///     Err(Failure::transient("payment provider answered 503"))
/// }
/// let handler: SharedHandler = policies.wrap(Arc::new(charge));
/// # let _ = handler;
/// ```
#[derive(Clone, Default)]
pub struct Policies {
    dead_letters: Option<DeadLetterQueue>,
    clock: Option<Arc<dyn Clock>>,
    retry: Option<RetryPolicy>,
    circuit_breaker: Option<BreakerConfig>,
    rate_limit: Option<RateLimitLayer>,
    concurrency_limit: Option<ConcurrencyLimitLayer>,
    timeout_ms: Option<u64>,
}

impl Policies {
    /// No policy at all: [`wrap`](Self::wrap) returns the handler as it is.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bounds each attempt to `timeout_ms` (at least 1).
    #[must_use]
    pub fn timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }

    /// Retries retryable failures as `policy` decides.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Puts a circuit breaker, one per wrapped handler, in front of each attempt.
    #[must_use]
    pub fn circuit_breaker(mut self, config: BreakerConfig) -> Self {
        self.circuit_breaker = Some(config);
        self
    }

    /// Limits the rate of attempts, with one token bucket per wrapped handler.
    #[must_use]
    pub fn rate_limit(mut self, limit: RateLimitLayer) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Limits the attempts in flight at once, per wrapped handler: a number, or a
    /// [`ConcurrencyLimitLayer`] for a wait bound other than the default.
    #[must_use]
    pub fn concurrency_limit(mut self, limit: impl Into<ConcurrencyLimitLayer>) -> Self {
        self.concurrency_limit = Some(limit.into());
        self
    }

    /// Parks the intents that fail for good in `queue`.
    #[must_use]
    pub fn dead_letters(mut self, queue: DeadLetterQueue) -> Self {
        self.dead_letters = Some(queue);
        self
    }

    /// The clock that stamps dead letters; by default a [`TokioClock`] started when
    /// [`wrap`](Self::wrap) is called.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// `handler` inside the configured policies, outermost first: dead letters, retry,
    /// circuit breaker, rate limit, concurrency limit, timeout.
    pub fn wrap(&self, handler: SharedHandler) -> SharedHandler {
        // Built from the inside out: each step wraps what the previous one returned.
        let mut handler = handler;
        if let Some(timeout_ms) = self.timeout_ms {
            handler = TimeoutLayer::new(timeout_ms).layer(handler);
        }
        if let Some(limit) = &self.concurrency_limit {
            handler = limit.layer(handler);
        }
        if let Some(limit) = &self.rate_limit {
            handler = limit.layer(handler);
        }
        if let Some(config) = self.circuit_breaker {
            handler = BreakerLayer::new(config).layer(handler);
        }
        if let Some(policy) = self.retry {
            handler = RetryLayer::new(policy).layer(handler);
        }
        if let Some(queue) = &self.dead_letters {
            let clock = match &self.clock {
                Some(clock) => Arc::clone(clock),
                None => Arc::new(TokioClock::new()),
            };
            handler = DeadLetterLayer::new(queue.clone(), clock).layer(handler);
        }
        handler
    }
}

impl Layer for Policies {
    fn layer(&self, inner: SharedHandler) -> SharedHandler {
        self.wrap(inner)
    }
}

impl fmt::Debug for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policies")
            .field("dead_letters", &self.dead_letters)
            .field("clock", &self.clock.as_ref().map(|_| "dyn Clock"))
            .field("retry", &self.retry)
            .field("circuit_breaker", &self.circuit_breaker)
            .field("rate_limit", &self.rate_limit)
            .field("concurrency_limit", &self.concurrency_limit)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// Locks `mutex`, carrying on after a panic elsewhere: every critical section in this
/// module leaves its state consistent at each step, so a poisoned lock holds valid data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whole milliseconds since `origin` on tokio's clock: the `now_ms` fed to the pure
/// decisions, so a paused clock makes them deterministic.
fn millis_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}
