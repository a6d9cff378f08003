//! keel's saga orchestrator: steps with compensations, a durable saga log, recovery
//! after a crash.
//!
//! A workflow author declares a saga ([`SagaDefinition`]): ordered steps and parallel
//! groups, each step an action with an optional compensation, a retry policy and a
//! timeout, perhaps a pivot and a deadline. keel drives every saga of that type to a
//! clean end (completed, compensated, or parked for an operator with a reason) across
//! failures, timeouts and crashes.
//!
//! # Layout
//!
//! - [`definition`]: declaring sagas, checked when built; retry policies; diagrams.
//! - [`saga`]: the saga as a pure reducer: state, events, transitions, output; and
//!   [`Sagas`], the definitions of an orchestrator as one reducer of keel-core's
//!   durable driver (`keel_core::driver`), which keeps the log, the outbox and recovery.
//! - [`engine`]: the sagas on that driver, sans-IO, in the saga's terms: requests
//!   checked and bounded, events in, batches of records, calls, timers, notifications
//!   and dead letters out.
//! - [`commit`]: committing a batch, tried again while the store is unavailable.
//! - [`log`]: the saga log's record format, one stream per saga.
//! - [`Orchestrator`]: the engine on tokio over an event store (keel-store's
//!   `EventStore`), with the handlers that carry out steps; recovery on start.
//! - [`query`]: status, timelines and lists read from the store.
//! - [`requests`]: durable operator requests (how tools steer sagas) and dead letters.
//! - [`id`]: saga ids and types, and the ids derived from them.
//! - [`error`]: the crate's one [`Error`] enum; the store's failures come as
//!   [`Error::Store`], keel-store's error, as the store answered them.
//! - `guard`: panics in user code become failed attempts ([`answer_of`]).
//!
//! # How a saga runs
//!
//! Every change to a saga is a [`SagaEvent`] applied by the [`SagaReducer`], on the
//! same durable driver that runs any other keel reducer. The event is appended to the saga's stream in the event store before any call it asked
//! for goes out; since the reducer is pure, the record determines the calls, so a crash
//! at any point loses nothing: on restart each unfinished saga is rebuilt from its log
//! and every attempt that was in flight is made again, under the same intent id (its
//! idempotency key), so the service it calls can deduplicate.
//!
//! # Maybe applied
//!
//! keel never guesses whether a step took effect. An attempt that timed out, failed
//! transiently, lost its answer or was in flight at a restart may have applied: from
//! then on the step is *maybe applied*, and only a success settles it. A permanent
//! failure speaks for its own attempt only (a service answers a retry `409 key in use`
//! while the first attempt is still at work), and a success keel cannot use
//! ([`Answer::Unusable`]: too big for a record, or its check panicked) ends the step
//! after that one call: both leave it maybe applied, as does a failure marked
//! `maybe_applied` (a redirect after a POST, a body too big to read, a panicking
//! handler). A step that fails for good while maybe applied parks the saga, naming it,
//! instead of being compensated or passed over; a late success is recorded whenever it
//! comes and the saga goes on from there, or an operator retries or skips the step. So
//! every effect a service applied is kept by a Completed saga, undone by a Compensated
//! one, or named by a parked one. The rules are in `saga/rules.rs`.
//!
//! # Failures of keel's surroundings
//!
//! A panic in a handler or a definition's closure fails that attempt as permanent (see
//! [`answer_of`]); a store that is unavailable holds the shard's commit, which is tried
//! again until the store is back ([`commit`]); records stay within the store's size
//! limit ([`Engine::set_record_bytes_max`]).

pub mod commit;
pub mod definition;
pub mod engine;
pub mod error;
mod guard;
pub mod id;
pub mod log;
mod orchestrator;
pub mod query;
pub mod requests;
pub mod saga;

pub use definition::{RetryPolicy, SagaDefinition, Step, StepAction, StepContext};
pub use engine::{Batch, Engine, RECORD_FRAME_BYTES, SagaAppend, Sagas};
pub use error::Error;
pub use guard::answer_of;
pub use id::{Phase, SagaId, SagaType};
pub use keel_core as core;
pub use keel_core::{Failure, FailureKind, FailureKinds};
pub use orchestrator::{
    Orchestrator, OrchestratorBuilder, OrchestratorConfig, Recovered, SHARDS_MAX, Stats,
};
pub use query::{SagaFilter, SagaSummary, Timeline, TimelineEntry};
pub use saga::{
    Answer, OperatorCommand, SagaEvent, SagaReducer, SagaState, SagaStatus, SagaTimer, StepPhase,
    StepState, Transition,
};
