//! A rate limit: a token bucket.
//!
//! [`TokenBucket`] is the pure part: it holds up to `capacity` tokens, gains
//! `refill_per_second` of them per second, and answers "may I go at `now_ms`, and if not,
//! how long until I may". [`RateLimitLayer`] carries it out: each attempt takes a token,
//! sleeping for it if it must, but never longer than `wait_ms_max`; a caller that would
//! wait longer fails at once with [`FailureKind::Unavailable`](crate::FailureKind) and a
//! `retry_after`, which the retry layer honours.
//!
//! The layer *reserves* its token ([`TokenBucket::reserve`]) rather than polling
//! [`try_take`](TokenBucket::try_take) in a loop: the bucket may go into debt, so waiting
//! callers are served in arrival order, each woken exactly when its token is due.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{WAIT_MS_MAX_DEFAULT, lock, millis_since};
use crate::handler::{Call, Failure, Handler, HandlerFuture, Layer, SharedHandler};

/// Thousandths of a token, so that a refill over whole milliseconds is exact.
const MILLI: i64 = 1_000;

/// A token bucket with time as an input.
///
/// It starts full at `now_ms = 0`. Fractional rates are not supported: the slowest
/// refill is one token per second.
///
/// ```
/// use keel_effects::policy::TokenBucket;
/// let mut bucket = TokenBucket::new(2, 10); // bursts of 2, then 10 per second
/// assert_eq!(bucket.try_take(0), Ok(()));
/// assert_eq!(bucket.try_take(0), Ok(()));
/// assert_eq!(bucket.try_take(0), Err(100)); // the next token in 100 ms
/// assert_eq!(bucket.try_take(100), Ok(()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    capacity: u32,
    refill_per_second: u32,
    /// Negative while reservations are outstanding (see [`TokenBucket::reserve`]).
    tokens_milli: i64,
    updated_ms: u64,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens refilled at `refill_per_second`; both at
    /// least 1.
    pub fn new(capacity: u32, refill_per_second: u32) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            refill_per_second: refill_per_second.max(1),
            tokens_milli: i64::from(capacity) * MILLI,
            updated_ms: 0,
        }
    }

    /// Takes a token at `now_ms` if one is there, or says in how many milliseconds one
    /// will be.
    pub fn try_take(&mut self, now_ms: u64) -> Result<(), u64> {
        self.refill(now_ms);
        if self.tokens_milli >= MILLI {
            self.tokens_milli -= MILLI;
            Ok(())
        } else {
            Err(self.wait_ms(MILLI - self.tokens_milli))
        }
    }

    /// Takes a token at `now_ms`, borrowing it from the future if need be: `Ok(wait_ms)`
    /// says how long to wait before using it (0 if it was there). If that wait would be
    /// longer than `wait_ms_max`, nothing is taken and `Err(wait_ms)` says how long it
    /// would have been.
    ///
    /// Each reservation waits behind the ones before it, which makes waiting callers
    /// first come, first served. The debt is bounded by `wait_ms_max`.
    pub fn reserve(&mut self, now_ms: u64, wait_ms_max: u64) -> Result<u64, u64> {
        self.refill(now_ms);
        let after_milli = self.tokens_milli - MILLI;
        let wait_ms = if after_milli >= 0 {
            0
        } else {
            self.wait_ms(-after_milli)
        };
        if wait_ms > wait_ms_max {
            return Err(wait_ms);
        }
        self.tokens_milli = after_milli;
        Ok(wait_ms)
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed_ms = now_ms.saturating_sub(self.updated_ms);
        // `refill_per_second` tokens per 1000 ms is `refill_per_second` thousandths per ms.
        let gained_milli = i64::try_from(elapsed_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(i64::from(self.refill_per_second));
        let full_milli = i64::from(self.capacity) * MILLI;
        self.tokens_milli = self
            .tokens_milli
            .saturating_add(gained_milli)
            .min(full_milli);
        self.updated_ms = self.updated_ms.max(now_ms);
    }

    /// Milliseconds until `deficit_milli` (positive) thousandths of a token have refilled,
    /// rounded up.
    fn wait_ms(&self, deficit_milli: i64) -> u64 {
        let rate = i64::from(self.refill_per_second);
        let wait_ms = (deficit_milli + rate - 1) / rate;
        u64::try_from(wait_ms).unwrap_or(0)
    }
}

/// Limits the rate of calls to the wrapped handler with a [`TokenBucket`].
///
/// Each handler this layer wraps gets its own bucket. A call waits for its token up to
/// `wait_ms_max` ([`WAIT_MS_MAX_DEFAULT`] unless set); one that would wait longer fails
/// at once as [`Unavailable`](crate::FailureKind::Unavailable) with `retry_after` set
/// to the wait, without taking a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitLayer {
    capacity: u32,
    refill_per_second: u32,
    wait_ms_max: u64,
}

impl RateLimitLayer {
    /// `per_second` calls per second, in bursts of up to `per_second` (at least 1).
    pub fn per_second(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        Self {
            capacity: per_second,
            refill_per_second: per_second,
            wait_ms_max: WAIT_MS_MAX_DEFAULT,
        }
    }

    /// The largest burst: the bucket's capacity (at least 1).
    #[must_use]
    pub fn burst(mut self, capacity: u32) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How long a call may wait for its token before it fails instead.
    #[must_use]
    pub const fn wait_ms_max(mut self, wait_ms_max: u64) -> Self {
        self.wait_ms_max = wait_ms_max;
        self
    }

    /// The bucket this layer gives each handler it wraps.
    pub fn bucket(&self) -> TokenBucket {
        TokenBucket::new(self.capacity, self.refill_per_second)
    }

    /// The failure of a call that would wait `wait_ms` for its token.
    pub fn failure(&self, wait_ms: u64) -> Failure {
        Failure::unavailable(format!(
            "rate limit of {} per second reached: the next token is {wait_ms} ms away, \
             over the {} ms a call may wait; not attempted",
            self.refill_per_second, self.wait_ms_max
        ))
        .retry_after(Duration::from_millis(wait_ms))
    }
}

impl Layer for RateLimitLayer {
    fn layer(&self, inner: SharedHandler) -> SharedHandler {
        Arc::new(RateLimit {
            inner,
            bucket: Arc::new(Mutex::new(self.bucket())),
            origin: Instant::now(),
            layer: *self,
        })
    }
}

struct RateLimit {
    inner: SharedHandler,
    bucket: Arc<Mutex<TokenBucket>>,
    origin: Instant,
    layer: RateLimitLayer,
}

impl Handler for RateLimit {
    fn call(&self, call: Call) -> HandlerFuture {
        let inner = Arc::clone(&self.inner);
        let bucket = Arc::clone(&self.bucket);
        let origin = self.origin;
        let layer = self.layer;
        Box::pin(async move {
            let reserved = lock(&bucket).reserve(millis_since(origin), layer.wait_ms_max);
            match reserved {
                Ok(0) => {}
                Ok(wait_ms) => tokio::time::sleep(Duration::from_millis(wait_ms)).await,
                Err(wait_ms) => return Err(layer.failure(wait_ms)),
            }
            inner.call(call).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_bucket_allows_a_full_burst() {
        let mut bucket = TokenBucket::new(3, 1);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(0), Ok(()));
        }
        assert_eq!(bucket.try_take(0), Err(1_000));
    }

    #[test]
    fn tokens_refill_at_the_configured_rate() {
        let mut bucket = TokenBucket::new(1, 4); // one token per 250 ms
        assert_eq!(bucket.try_take(0), Ok(()));
        assert_eq!(bucket.try_take(100), Err(150));
        assert_eq!(bucket.try_take(249), Err(1));
        assert_eq!(bucket.try_take(250), Ok(()));
    }

    #[test]
    fn refill_stops_at_capacity() {
        let mut bucket = TokenBucket::new(2, 10);
        assert_eq!(bucket.try_take(0), Ok(()));
        assert_eq!(bucket.try_take(0), Ok(()));
        // An hour idle refills two tokens, not thirty-six thousand.
        for _ in 0..2 {
            assert_eq!(bucket.try_take(3_600_000), Ok(()));
        }
        assert_eq!(bucket.try_take(3_600_000), Err(100));
    }

    #[test]
    fn reservations_queue_behind_each_other() {
        let mut bucket = TokenBucket::new(1, 10);
        assert_eq!(bucket.reserve(0, 1_000), Ok(0));
        assert_eq!(bucket.reserve(0, 1_000), Ok(100));
        assert_eq!(bucket.reserve(0, 1_000), Ok(200));
        assert_eq!(bucket.reserve(50, 1_000), Ok(250));
        // The debt is paid off by refill: at 400 ms the bucket is even again.
        assert_eq!(bucket.try_take(399), Err(1));
        assert_eq!(bucket.reserve(400, 0), Ok(0));
    }

    #[test]
    fn a_reservation_over_the_wait_bound_takes_nothing() {
        let mut bucket = TokenBucket::new(1, 10);
        assert_eq!(bucket.reserve(0, 0), Ok(0));
        assert_eq!(bucket.reserve(0, 99), Err(100));
        assert_eq!(bucket.reserve(0, 100), Ok(100));
    }

    #[test]
    fn zero_settings_become_one() {
        assert_eq!(TokenBucket::new(0, 0), TokenBucket::new(1, 1));
        let failure = RateLimitLayer::per_second(0).failure(1_000);
        assert_eq!(failure.retry_after, Some(Duration::from_millis(1_000)));
    }
}
