//! The saga as a pure reducer: its state, the events it reacts to, what it outputs.
//!
//! Nothing here performs I/O or reads a clock: time arrives with each event, ids derive
//! from the saga's id. The orchestrator records each event that changed a saga before
//! it carries out the calls the change asked for.

pub(crate) mod durable;
mod event;
mod reducer;
mod rules;
mod state;

pub use event::{
    Answer, OperatorCommand, Output, REASON_BYTES_MAX, Reanswer, SagaEvent, SagaTimer, StepCall,
    Transition,
};
pub(crate) use event::{cut, json_size_within};
pub use reducer::{SOURCE, SagaReducer, transition_envelope};
pub use state::{Resume, SagaState, SagaStatus, StepPhase, StepState};
