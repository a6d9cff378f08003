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
//! - [`driver`]: the one durable driver: many instances of a [`driver::Durable`] reducer,
//!   each with a log that is its outbox, rebuilt by replay (see the contract below).
//! - [`mark`]: [`mark::InstanceMark`], what a record says of its instance (type, status,
//!   ended) for the store's index of instances.
//! - [`cloudevents`]: lossless mapping of envelopes to and from CloudEvents 1.0 JSON,
//!   with bounded, validating decoding.
//! - [`topic`]: [`Topic`] and compiled [`TopicPattern`]s (`*`, `**`).
//! - [`machine`]: declarative state machines, checked when built, exported to Mermaid
//!   and Graphviz, and run durably on the driver as [`machine::DurableMachine`].
//! - [`aggregate`]: event-sourced aggregates (decide, apply, fold, snapshots).
//! - [`upcast`]: upcaster chains that lift stored payloads to the current schema.
//! - [`timer`]: [`TimerQueue`], the one queue of pending timers: by id, in due order,
//!   cancellable and bounded, with time as an argument.
//! - [`id`], [`time`], [`base64`]: id newtypes, [`Timestamp`], base64.
//! - [`error`]: the crate's one [`Error`] enum.
//!
//! # The driver contract
//!
//! [`driver::Driver`] is the one durable driver: it runs any reducer that implements
//! [`driver::Durable`] (its state and events serialise; an outcome becomes an event), as
//! many instances keyed by [`InstanceId`], and a shell around it (the tokio one in
//! `keel-effects`, or a test's simulation) performs what it asks. Step by step:
//!
//! 1. **An input becomes one record.** The shell feeds an event ([`start`], [`handle`]),
//!    an intent's outcome ([`outcome`]) or a due timer ([`fire`]), stamped with `now`.
//!    The driver reduces it ([`Durable::step`], by default [`Reducer::reduce_into`], pure
//!    and total) with the cause `(correlation of the instance, id of the record)`, so
//!    every intent id derives from the record, and appends one record to the instance's
//!    log: the step, how many intents it emitted and the status after it (the first
//!    record also holds the initial state; every few records hold a snapshot). An
//!    outcome of an intent that is not in flight, and a timer set again since, are
//!    ignored: each is reduced once. A step that changed nothing and emitted nothing (a
//!    reducer says so from [`Durable::step`]) is not recorded; follow-up events a step
//!    asks for ([`Effects::then`]: an answer the reducer gives itself) are each a record
//!    of their own, right after it.
//! 2. **Nothing is performed before its record is durable.** [`take_batch`] hands over
//!    every instance's records (one append per instance; many instances share one
//!    commit) and, separately, the intents and timer changes they caused. The shell
//!    commits the appends first, trying again while the store is unavailable, and only
//!    then performs. An append the store refuses means the driver ran ahead of the log:
//!    [`forget`] the instance and [`restore`] it from the store.
//! 3. **The log is the outbox.** A record does not store its intents: replaying it emits
//!    them again, under the same ids. What is in flight (emitted, outcome not recorded)
//!    and which timers are pending (with their due times) are part of the instance as
//!    the log rebuilds it. After a restart the shell [`restore`]s every unfinished
//!    instance and [`resume`]s: the next batch performs again exactly what was in
//!    flight and re-arms every timer for the time it was set for.
//! 4. **Performing is idempotent by id.** The shell performs each intent using its
//!    [`IntentId`] as the idempotency key (HTTP sends it as `Idempotency-Key`), so an
//!    intent performed again after a crash has one visible effect.
//! 5. **Outcomes come back as events.** Success with a value, a [`Failure`] with its
//!    kind, a timeout, a fired timer: the shell feeds each back through step 1. The shell
//!    does not retry: the reducer decides (a [`RetryPolicy`] and a timer), so attempts
//!    are not multiplied by a second layer unless a handler is wrapped in one on purpose.
//! 6. **Instances end.** After each step the reducer says whether the instance runs, is
//!    parked for an operator with a reason, or finished. A finished instance takes no
//!    more events or timers (its pending timers are cancelled); it stays held only until
//!    the intents it still has in flight are answered (those outcomes are recorded, not
//!    reduced, and a restart performs them again), then it is dropped from memory. Its
//!    log stays, and [`rebuild`] gives its state as of any record or time.
//!
//! A replay that emits other intents or reaches another status than its record says is
//! refused as [`Error::Diverged`] at the first such record: the reducer was changed
//! under running instances.
//!
//! A reducer that knows more than [`Reducer`] asks of it says so through
//! [`Durable`]'s provided methods, not through a driver of its own. Sagas are the
//! example (`keel-orchestrator`'s `Sagas`): a saga's state knows its attempts and timers
//! ([`Durable::tracks_in_flight`]: the driver keeps no copy and asks
//! [`Durable::in_flight`] at a restart), its records keep the saga log's format with
//! the step's transitions as notes ([`Durable::encode_record`],
//! [`Durable::decode_record`]), and its index entries name the saga type and its finer
//! status ([`Durable::kind_of`], [`Durable::status_name`]).
//!
//! [`Durable`]: driver::Durable
//! [`Durable::step`]: driver::Durable::step
//! [`Durable::tracks_in_flight`]: driver::Durable::tracks_in_flight
//! [`Durable::in_flight`]: driver::Durable::in_flight
//! [`Durable::encode_record`]: driver::Durable::encode_record
//! [`Durable::decode_record`]: driver::Durable::decode_record
//! [`Durable::kind_of`]: driver::Durable::kind_of
//! [`Durable::status_name`]: driver::Durable::status_name
//! [`Effects::then`]: driver::Effects::then
//!
//! [`start`]: driver::Driver::start
//! [`handle`]: driver::Driver::handle
//! [`outcome`]: driver::Driver::outcome
//! [`fire`]: driver::Driver::fire
//! [`take_batch`]: driver::Driver::take_batch
//! [`forget`]: driver::Driver::forget
//! [`restore`]: driver::Driver::restore
//! [`resume`]: driver::Driver::resume
//! [`rebuild`]: driver::Driver::rebuild

pub mod aggregate;
pub mod base64;
pub mod cloudevents;
pub mod driver;
pub mod envelope;
pub mod error;
pub mod id;
pub mod intent;
pub mod machine;
pub mod mark;
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
