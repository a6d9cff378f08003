//! The handler contract: how an intent is carried out and how it can fail.
//!
//! A [`Handler`] takes a [`Call`] (the intent and where it comes from) and returns the
//! effect's value or a [`Failure`]. Handlers are shared by every instance of a runtime,
//! so they take `&self`; a [`Layer`] wraps one handler in another (retry, timeout,
//! circuit breaker, limits, dead letters) without the inner one knowing.
//!
//! This is tower's idea in a simpler shape: tower's `Service` takes `&mut self` and a
//! readiness handshake, which suits a connection but not a handler shared by thousands
//! of workflow instances. The decisions the layers make (retry or not, is the circuit
//! open) are pure functions in [`policy`](crate::policy), unit-tested without a runtime.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use keel_core::Intent;
/// Classes of failure. Defined in `keel-core`, because the class reaches the reducer in
/// [`OutcomeResult::Failed`](keel_core::OutcomeResult::Failed).
pub use keel_core::{Failure, FailureKind};

use crate::metrics::Metrics;

/// What a handler returns: the effect's value, or why it failed.
pub type HandlerResult = Result<serde_json::Value, Failure>;

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send + 'static>>;

/// Carries out one family of intents.
///
/// A handler must treat `call.intent.id` as the idempotency key of the effect and pass it
/// on to whatever it calls (the HTTP handler sends it as `Idempotency-Key`), so that a
/// retried call has one visible effect.
pub trait Handler: Send + Sync + 'static {
    /// Performs the intent once.
    fn call(&self, call: Call) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, call: Call) -> HandlerFuture {
        Box::pin(self(call))
    }
}

/// A shared handler, as layers and the runtime hold them.
pub type SharedHandler = Arc<dyn Handler>;

/// Wraps a handler in a policy.
pub trait Layer: Send + Sync {
    /// Returns `inner` wrapped.
    fn layer(&self, inner: SharedHandler) -> SharedHandler;
}

/// One attempt at one intent.
///
/// Clones of a call share one count of the attempts made, so the layers above a retry
/// (the dead letters, the runtime reporting the [`Outcome`](keel_core::Outcome)) learn how
/// many attempts the layers below made, even if one of them ran the call on another task.
#[derive(Clone)]
pub struct Call {
    /// The intent; shared, because layers may attempt it several times.
    pub intent: Arc<Intent>,
    /// The reducer instance that emitted it.
    pub instance: InstanceId,
    /// The attempt number, from 1; the retry layer raises it.
    pub attempt: u32,
    /// The runtime's counters, for layers that count retries and dead letters.
    pub metrics: Metrics,
    /// The highest attempt number made so far, shared by every clone of this call.
    attempts_made: Arc<AtomicU32>,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("intent", &self.intent.id)
            .field("family", &self.intent.kind.family())
            .field("instance", &self.instance)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Call {
    /// A first attempt at `intent` (owned or already shared) from `instance`.
    pub fn new(intent: impl Into<Arc<Intent>>, instance: InstanceId, metrics: Metrics) -> Self {
        Self {
            intent: intent.into(),
            instance,
            attempt: 1,
            metrics,
            attempts_made: Arc::new(AtomicU32::new(1)),
        }
    }

    /// Records that attempt number [`attempt`](Self::attempt) is being made. A layer that
    /// attempts a call again (like the retry layer) calls this before each attempt, so
    /// that [`attempts_made`](Self::attempts_made) counts it.
    pub fn record_attempt(&self) {
        self.attempts_made
            .fetch_max(self.attempt, Ordering::Relaxed);
    }

    /// How many attempts this call (any of its clones) has made so far: at least 1, the
    /// attempt it was created for.
    pub fn attempts_made(&self) -> u32 {
        self.attempts_made.load(Ordering::Relaxed)
    }

    /// The idempotency key: the intent's id as text, unless an HTTP intent overrides it.
    pub fn idempotency_key(&self) -> String {
        match &self.intent.kind {
            keel_core::IntentKind::Http(request) => match &request.idempotency_key {
                Some(key) => key.to_string(),
                None => self.intent.id.to_string(),
            },
            _ => self.intent.id.to_string(),
        }
    }
}

/// The id of a reducer instance. Defined in `keel-core`, where the durable driver keys
/// its instances by it.
pub use keel_core::InstanceId;
