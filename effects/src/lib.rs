//! keel's effect runtime: carries out the intents that `keel-core` reducers emit, on
//! tokio, and feeds their outcomes back as actions.
//!
//! # Layout
//!
//! - [`runtime`]: the [`Runtime`](runtime::Runtime) hosting reducer instances, each with a bounded
//!   mailbox; dispatch of intents to handlers, deduplication by intent id, outcomes fed
//!   back, an optional durable outbox, stopping one instance or all of them gracefully.
//! - [`durable`]: the durable shell, which runs keel-core's driver on a store: any
//!   [`Durable`](keel_core::driver::Durable) reducer, crash-safe, intents performed once
//!   their records are committed and again after a restart, under the same ids.
//! - [`handler`]: the [`Handler`] contract, [`Call`], [`Failure`], and [`Layer`].
//! - [`handlers`]: [`Handlers`](handlers::Handlers), the one registry of which handler
//!   performs which intents, shared by the durable shell and the in-memory runtime.
//! - [`notify`]: the in-process event bus: topics, patterns, filters, priorities,
//!   request-reply.
//! - `http`: the HTTP handler, with its guard against server-side request forgery
//!   (feature `http`, on by default).
//! - [`timer`]: timers, scheduled and cancelled by stable id.
//! - [`persist`]: the handler that appends persist intents to a store, and the
//!   dispatcher of a store's outbox. The store itself (the
//!   [`EventStore`](keel_store::EventStore) contract and its backends) is `keel-store`.
//! - [`policy`]: retry, timeout, circuit breaker, concurrency and rate limits, dead
//!   letters; each decision a pure function, each policy a [`Layer`].
//! - [`clock`], [`metrics`], [`error`]: the runtime's time source, counters and error
//!   (which wraps the store's, [`Error::Store`]).
//!
//! # Features
//!
//! `http` (on by default) is the HTTP handler, built on reqwest with rustls. Turn it off
//! where no HTTP intent is performed (the `keel` CLI does): the build then holds no HTTP
//! client, TLS or hyper.
//!
//! The contract this crate fulfils is written once, in `keel-core`'s crate docs ("The
//! driver contract"); the [`durable`] shell follows it step by step. The in-memory
//! [`Runtime`](runtime::Runtime) is the older, non-durable way to run a reducer: it keeps
//! no reducer state, and its intents are durable only with a store-backed outbox
//! ([`RuntimeBuilder::outbox`](runtime::RuntimeBuilder::outbox)). Prefer the durable
//! shell (a [`MemoryStore`](keel_store::MemoryStore) gives it an in-memory mode).

pub mod clock;
pub mod durable;
pub mod error;
pub mod handler;
pub mod handlers;
#[cfg(feature = "http")]
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
