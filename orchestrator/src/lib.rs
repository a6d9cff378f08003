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
//! - [`saga`]: the saga as a pure reducer: state, events, transitions, output.
//! - [`engine`]: many sagas in memory, sans-IO: events in, batches of records and
//!   calls out.
//! - [`commit`]: committing a batch, tried again while the store is unavailable.
//! - [`log`]: the saga log, one stream per saga, and replaying it.
//! - [`Orchestrator`]: the engine on tokio over an event store, with the handlers
//!   that carry out steps; recovery on start.
//! - [`query`]: status, timelines and lists read from the store.
//! - [`requests`]: durable operator requests (how tools steer sagas) and dead letters.
//! - [`id`]: saga ids and types, and the ids derived from them.
//! - [`error`]: the crate's one [`Error`] enum.
//! - `guard`: panics in user code become failed attempts ([`answer_of`]).
//!
//! # How a saga runs
//!
//! Every change to a saga is a [`SagaEvent`] applied by the [`SagaReducer`]. The
//! event is appended to the saga's stream in the event store before any call it asked
//! for goes out; since the reducer is pure, the record determines the calls, so a crash
//! at any point loses nothing: on restart each unfinished saga is rebuilt from its log
//! and every attempt that was in flight is made again, under the same intent id (its
//! idempotency key), so the service it calls can deduplicate.

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

pub use definition::{FailureClass, RetryPolicy, SagaDefinition, Step, StepAction, StepContext};
pub use engine::{Batch, Engine, SagaAppend};
pub use error::Error;
pub use guard::answer_of;
pub use id::{Phase, SagaId, SagaType};
pub use keel_core as core;
pub use orchestrator::{
    Orchestrator, OrchestratorBuilder, OrchestratorConfig, Recovered, SHARDS_MAX, Stats,
};
pub use query::{SagaFilter, SagaSummary, Timeline, TimelineEntry};
pub use saga::{
    Answer, OperatorCommand, SagaEvent, SagaReducer, SagaState, SagaStatus, SagaTimer, StepPhase,
    StepState, Transition,
};
