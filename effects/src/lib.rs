//! keel's effect runtime: carries out the intents that `keel-core` reducers emit, on
//! tokio, and feeds their outcomes back as actions.
//!
//! # Layout
//!
//! - [`runtime`]: the [`Runtime`](runtime::Runtime) hosting reducer instances, each with a bounded
//!   mailbox; dispatch of intents to handlers, deduplication by intent id, outcomes fed
//!   back, graceful shutdown.
//! - [`handler`]: the [`Handler`] contract, [`Call`], [`Failure`], and [`Layer`].
//! - [`notify`]: the in-process event bus: topics, patterns, filters, priorities,
//!   request-reply.
//! - [`http`]: the HTTP handler, with its guard against server-side request forgery.
//! - [`timer`]: timers, scheduled and cancelled by stable id.
//! - [`persist`]: the [`EventStore`](persist::EventStore) trait, an in-memory store, and
//!   the handler that appends persist intents.
//! - [`policy`]: retry, timeout, circuit breaker, concurrency and rate limits, dead
//!   letters; each decision a pure function, each policy a [`Layer`].
//! - [`clock`], [`metrics`], [`error`]: the runtime's time source, counters and error.
//!
//! The contract this crate fulfils is written once, in `keel-core`'s crate docs
//! ("The driver contract").

pub mod clock;
pub mod error;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod persist;
pub mod policy;
pub mod runtime;
pub mod timer;

pub use clock::{Clock, TokioClock};
pub use error::Error;
pub use handler::{
    Call, Failure, FailureKind, Handler, HandlerFuture, HandlerResult, InstanceId, Layer,
    SharedHandler,
};
pub use keel_core as core;
pub use metrics::{Metrics, MetricsSnapshot};
