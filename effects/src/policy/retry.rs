//! The retry layer: carries out keel-core's [`RetryPolicy`] around a handler.
//!
//! The policy is keel-core's one pure retry decision (attempts, backoff, deterministic
//! jitter from the intent id, `Retry-After` honoured up to a cap); [`RetryLayer`] calls
//! the inner handler, sleeps on tokio's clock between attempts and returns the last
//! failure when the policy gives up.
//!
//! A saga step has its own retry policy, decided by the saga itself: do not stack a
//! `RetryLayer` under a saga step's handler unless you mean attempts to multiply (each
//! of the saga's attempts would then make up to this layer's attempts).

use std::sync::Arc;

pub use keel_core::retry::{ATTEMPTS_MAX, DELAY_MAX, RetryDecision, RetryPolicy, jitter_seed};

use crate::handler::{Call, Handler, HandlerFuture, Layer, SharedHandler};

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
            // Bounded: `decide` gives up once `attempt` reaches the policy's attempts, which is
            // at most ATTEMPTS_MAX, and `attempt` grows by one per turn.
            loop {
                call.record_attempt();
                let result = inner.call(call.clone()).await;
                let failure = match result {
                    Ok(value) => return Ok(value),
                    Err(failure) => failure,
                };
                let seed = jitter_seed(&call.intent.id, call.attempt);
                match policy.decide(call.attempt, failure.kind, failure.retry_after, seed) {
                    RetryDecision::GiveUp => return Err(failure),
                    RetryDecision::RetryAfter(delay) => {
                        tracing::debug!(
                            intent = %call.intent.id,
                            attempt = call.attempt,
                            delay_ms = delay.as_millis() as u64,
                            %failure,
                            "retrying effect"
                        );
                        tokio::time::sleep(delay).await;
                        call.attempt += 1;
                        call.metrics.retried();
                    }
                }
            }
        })
    }
}
