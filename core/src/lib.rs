//! keel's pure core: workflows as `reduce(state, action) -> (state, Vec<Intent>)`.
//!
//! Nothing in this crate performs I/O, reads a clock or draws a random number; its
//! dependency list (serde, serde_json, uuid, thiserror) is the proof. Time and ids are
//! inputs, effects are outputs described as data.
//!
//! # Layout
//!
//! - [`reducer`]: the [`Reducer`] trait, its two equivalent paths, and the [`Input`],
//!   [`Cause`] and [`Emitter`] that give intents their stable ids.
//! - [`intent`]: [`Intent`] and [`IntentKind`]: notify, persist, http, timers, custom.
//! - [`redact`]: an HTTP request's credentials, sent as they are but redacted in `Debug`
//!   output and scrubbed out of text that quotes them.
//! - [`outcome`]: [`Outcome`], what became of an intent, fed back as an action; the
//!   [`Failure`] a handler answers instead of a value, and its [`FailureKind`].
//! - [`retry`]: the one [`RetryPolicy`] (attempts, backoff, jitter, which
//!   [`FailureKinds`] are retried), a pure decision both the effects layer and sagas
//!   ask.
//! - [`envelope`]: [`Envelope`], the shape every event and command travels in.
//! - [`cloudevents`]: lossless mapping of envelopes to and from CloudEvents 1.0 JSON,
//!   with bounded, validating decoding.
//! - [`topic`]: [`Topic`] and compiled [`TopicPattern`]s (`*`, `**`).
//! - [`machine`]: declarative state machines, checked when built, exported to Mermaid
//!   and Graphviz.
//! - [`aggregate`]: event-sourced aggregates (decide, apply, fold, snapshots).
//! - [`upcast`]: upcaster chains that lift stored payloads to the current schema.
//! - [`timer`]: [`TimerQueue`], the one queue of pending timers: by id, in due order,
//!   cancellable and bounded, with time as an argument.
//! - [`id`], [`time`], [`base64`]: id newtypes, [`Timestamp`], base64.
//! - [`error`]: the crate's one [`Error`] enum.
//!
//! # The driver contract
//!
//! A driver (the effects runtime in `keel-effects`, or a test) runs a reducer like this,
//! one action at a time per reducer instance:
//!
//! 1. It wraps what happened in an action, stamping it with the [`Cause`] (correlation id
//!    of the workflow, causation id = the id of this action's envelope) and `now`.
//! 2. It calls [`Reducer::reduce_into`] (or [`Reducer::reduce`]). The call is pure and
//!    total: it cannot fail and it performs nothing.
//! 3. If it promises that no effect is lost, it durably records the step's intents
//!    *before* it performs any of them (a transactional outbox), and marks each done only
//!    once its outcome has been reduced, so that after a crash the intents left pending
//!    are performed again under the same ids. A driver without such a record (an
//!    in-memory runtime, a test) performs them straight away, and a crash loses what was
//!    in flight. Either way the reducer's state is the driver's caller's to keep: persist
//!    it as events (`Persist` intents) or snapshots.
//! 4. It performs the intents in the order emitted, using each [`IntentId`] as the
//!    idempotency key, so a repeated intent has one visible effect.
//! 5. It turns each outcome (success with a value, failure with a reason, timeout, a
//!    fired timer) into a new action whose causation id is the intent's id, and feeds it
//!    back to the same instance through step 1.
//!
//! The reducer therefore decides everything: what to do next after a failure, whether to
//! retry, when to give up. The driver only carries out and reports.

pub mod aggregate;
pub mod base64;
pub mod cloudevents;
pub mod driver;
pub mod envelope;
pub mod error;
pub mod id;
pub mod intent;
pub mod machine;
pub mod outcome;
pub mod redact;
pub mod reducer;
pub mod retry;
pub mod time;
pub mod timer;
pub mod topic;
pub mod upcast;

pub use aggregate::{
    Aggregate, AggregateReducer, AggregateState, DomainEvent, Snapshot, Versioned,
};
pub use envelope::{Envelope, EnvelopeBuilder, EventType, MetaValue, Payload, Priority};
pub use error::{Error, Result};
pub use id::{CausationId, CorrelationId, EventId, InstanceId, IntentId, StreamId, TimerId};
pub use intent::{ExpectedVersion, HttpBody, HttpMethod, HttpRequest, Intent, IntentKind};
pub use machine::{Effect, Guard, Machine, MachineState};
pub use outcome::{Failure, FailureKind, Outcome, OutcomeResult};
pub use reducer::{Cause, Emitter, Input, Reducer, reduce};
pub use retry::{FailureKinds, RetryDecision, RetryPolicy};
pub use time::Timestamp;
pub use timer::TimerQueue;
pub use topic::{Topic, TopicPattern};
pub use upcast::UpcasterChain;
