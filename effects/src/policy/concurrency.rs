//! A cap on the attempts in flight at once.
//!
//! There is no decision to make here beyond "is a slot free", which tokio's fair (FIFO)
//! [`Semaphore`] answers; the layer adds the bound on how long a caller queues.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::WAIT_MS_MAX_DEFAULT;
use crate::handler::{Call, Failure, Handler, HandlerFuture, Layer, SharedHandler};

/// Lets at most `max` calls run the wrapped handler at once; the others queue in
/// arrival order.
///
/// Each handler this layer wraps gets its own semaphore. A caller that has waited
/// `wait_ms_max` without a slot fails with
/// [`FailureKind::Unavailable`](crate::FailureKind::Unavailable) (which the retry layer
/// may retry) rather than queue without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyLimitLayer {
    max: usize,
    wait_ms_max: u64,
}

impl ConcurrencyLimitLayer {
    /// At most `max` calls at once, clamped to `1..=Semaphore::MAX_PERMITS`; callers
    /// wait up to [`WAIT_MS_MAX_DEFAULT`] for a slot.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.clamp(1, Semaphore::MAX_PERMITS),
            wait_ms_max: WAIT_MS_MAX_DEFAULT,
        }
    }

    /// How long a caller waits for a slot before it fails.
    #[must_use]
    pub const fn wait_ms_max(mut self, wait_ms_max: u64) -> Self {
        self.wait_ms_max = wait_ms_max;
        self
    }

    /// The failure of a caller that found no slot in time.
    pub fn failure(&self) -> Failure {
        Failure::unavailable(format!(
            "all {} slots of the concurrency limit stayed busy for {} ms: not attempted; \
             raise the limit or the wait if this persists",
            self.max, self.wait_ms_max
        ))
    }
}

impl From<usize> for ConcurrencyLimitLayer {
    fn from(max: usize) -> Self {
        Self::new(max)
    }
}

impl Layer for ConcurrencyLimitLayer {
    fn layer(&self, inner: SharedHandler) -> SharedHandler {
        Arc::new(ConcurrencyLimit {
            inner,
            slots: Arc::new(Semaphore::new(self.max)),
            layer: *self,
        })
    }
}

struct ConcurrencyLimit {
    inner: SharedHandler,
    slots: Arc<Semaphore>,
    layer: ConcurrencyLimitLayer,
}

impl Handler for ConcurrencyLimit {
    fn call(&self, call: Call) -> HandlerFuture {
        let inner = Arc::clone(&self.inner);
        let slots = Arc::clone(&self.slots);
        let layer = self.layer;
        Box::pin(async move {
            let wait = Duration::from_millis(layer.wait_ms_max);
            // The semaphore is never closed, so `acquire_owned` fails only by timing out;
            // both cases are the same failure to the caller.
            let Ok(Ok(_slot)) = tokio::time::timeout(wait, slots.acquire_owned()).await else {
                return Err(layer.failure());
            };
            inner.call(call).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FailureKind;

    #[test]
    fn the_limit_is_at_least_one() {
        assert_eq!(ConcurrencyLimitLayer::new(0), ConcurrencyLimitLayer::new(1));
        assert_eq!(
            ConcurrencyLimitLayer::from(3),
            ConcurrencyLimitLayer::new(3)
        );
    }

    #[test]
    fn a_full_limit_is_unavailable_not_permanent() {
        let failure = ConcurrencyLimitLayer::new(2).wait_ms_max(50).failure();
        assert_eq!(failure.kind, FailureKind::Unavailable);
        assert!(failure.reason.contains("2 slots"), "{}", failure.reason);
    }
}
