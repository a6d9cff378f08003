//! A deadline on each attempt.
//!
//! The decision is a constant (how long), so the pure part is only the failure the layer
//! reports; [`TimeoutLayer`] runs the inner handler under `tokio::time::timeout` and drops
//! it when the time is up. Placed inside the retry layer (as [`Policies`](super::Policies)
//! does), every attempt gets its own deadline.

use std::sync::Arc;
use std::time::Duration;

use crate::handler::{Call, Failure, Handler, HandlerFuture, Layer, SharedHandler};

/// Fails an attempt with [`FailureKind::Timeout`](crate::FailureKind::Timeout) when the
/// handler takes longer than `timeout_ms`.
///
/// The handler's future is dropped at the deadline, so a handler must be safe to cancel
/// at any await point (the intent id as idempotency key makes the retry that follows
/// safe on the other side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutLayer {
    timeout_ms: u64,
}

impl TimeoutLayer {
    /// A deadline of `timeout_ms` per attempt, at least 1 ms: a zero deadline would fail
    /// every call without trying it.
    pub fn new(timeout_ms: u64) -> Self {
        Self {
            timeout_ms: timeout_ms.max(1),
        }
    }

    /// The failure reported when an attempt runs out of time.
    pub fn failure(&self) -> Failure {
        Failure::timeout(format!(
            "the effect did not finish within {} ms: it may or may not have happened; \
             retrying under the same intent id is safe",
            self.timeout_ms
        ))
    }
}

impl Layer for TimeoutLayer {
    fn layer(&self, inner: SharedHandler) -> SharedHandler {
        Arc::new(Timeout {
            inner,
            layer: *self,
        })
    }
}

struct Timeout {
    inner: SharedHandler,
    layer: TimeoutLayer,
}

impl Handler for Timeout {
    fn call(&self, call: Call) -> HandlerFuture {
        let attempt = self.inner.call(call);
        let layer = self.layer;
        Box::pin(async move {
            match tokio::time::timeout(Duration::from_millis(layer.timeout_ms), attempt).await {
                Ok(result) => result,
                Err(_elapsed) => Err(layer.failure()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FailureKind;

    #[test]
    fn the_failure_is_a_timeout_that_names_the_deadline() {
        let failure = TimeoutLayer::new(250).failure();
        assert_eq!(failure.kind, FailureKind::Timeout);
        assert!(failure.reason.contains("250 ms"), "{}", failure.reason);
        assert!(failure.kind.is_retryable());
    }

    #[test]
    fn a_zero_deadline_becomes_one_millisecond() {
        assert_eq!(TimeoutLayer::new(0), TimeoutLayer::new(1));
    }
}
