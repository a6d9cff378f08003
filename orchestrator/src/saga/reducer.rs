//! The saga reducer of one definition: `(saga state, saga event) -> (saga state, what
//! to do)`, pure. [`Sagas`](crate::Sagas), which holds the definitions of an
//! orchestrator, is the [`Reducer`](keel_core::Reducer) the durable driver runs: it
//! turns what this one says to do into intents.
//!
//! Every decision lives in the reducer (the rules are in `rules`): which steps start,
//! when to retry and how long to wait, when to turn back, what to compensate and in
//! which order, when to stop for an operator. The orchestrator around it only records
//! events and carries out calls.

use std::sync::Arc;

use keel_core::{
    Cause, Envelope, EventId, EventType, Intent, IntentKind, MetaValue, Payload, Priority,
    Timestamp,
};
use serde_json::Value;

use super::event::{Output, Reanswer, SagaEvent, SagaTimer, StepCall, Transition};
use super::state::{SagaState, SagaStatus, StepPhase};
use crate::definition::{SagaDefinition, StepAction, StepContext};
use crate::guard::catching;
use crate::id::{Phase, step_intent_id};

/// The `source` of every envelope the orchestrator makes.
pub const SOURCE: &str = "keel-orchestrator";

/// Runs sagas of one definition.
#[derive(Debug, Clone)]
pub struct SagaReducer {
    definition: Arc<SagaDefinition>,
}

impl SagaReducer {
    /// A reducer for sagas of `definition`.
    pub fn new(definition: Arc<SagaDefinition>) -> Self {
        Self { definition }
    }

    /// The definition it runs.
    pub fn definition(&self) -> &Arc<SagaDefinition> {
        &self.definition
    }

    /// Applies `event` at time `now`, appending what to do to `out`. Returns whether the
    /// state changed: an event that changes nothing (a duplicate answer, a stale timer)
    /// need not be recorded.
    pub fn apply(
        &self,
        state: &mut SagaState,
        now: Timestamp,
        event: &SagaEvent,
        out: &mut Output,
    ) -> bool {
        let mut step = super::rules::Step {
            def: &self.definition,
            state,
            now,
            out,
        };
        let changed = step.event(event);
        if changed {
            step.state.updated_at = now;
        }
        changed
    }

    /// What a saga recovered from its log has out or due: every attempt in flight (under
    /// the same intent id as before the restart) and every pending timer.
    pub fn in_flight(&self, state: &SagaState, out: &mut Output) {
        if state.status.is_finished() {
            return;
        }
        for (index, st) in state.steps.iter().enumerate() {
            // Steps are at most STEPS_MAX, far below u16::MAX.
            let step = u16::try_from(index).unwrap_or(u16::MAX);
            match st.phase {
                StepPhase::Running { timeout_at } => {
                    push_call(
                        out,
                        build_call(&self.definition, state, step, Phase::Action, st.attempts),
                    );
                    if let Some(due) = timeout_at {
                        out.timers.push((
                            SagaTimer::Timeout {
                                step,
                                phase: Phase::Action,
                                attempt: st.attempts,
                            },
                            due,
                        ));
                    }
                }
                StepPhase::Backoff { due } => {
                    out.timers.push((
                        SagaTimer::Retry {
                            step,
                            phase: Phase::Action,
                            attempt: st.attempts + 1,
                        },
                        due,
                    ));
                }
                StepPhase::Compensating { timeout_at } => {
                    let attempt = st.compensation_attempts;
                    push_call(
                        out,
                        build_call(&self.definition, state, step, Phase::Compensation, attempt),
                    );
                    if let Some(due) = timeout_at {
                        out.timers.push((
                            SagaTimer::Timeout {
                                step,
                                phase: Phase::Compensation,
                                attempt: st.compensation_attempts,
                            },
                            due,
                        ));
                    }
                }
                StepPhase::CompensationBackoff { due } => {
                    out.timers.push((
                        SagaTimer::Retry {
                            step,
                            phase: Phase::Compensation,
                            attempt: st.compensation_attempts + 1,
                        },
                        due,
                    ));
                }
                _ => {}
            }
        }
        if let (SagaStatus::Running, Some(deadline), false) =
            (&state.status, state.deadline, state.pivot_passed)
        {
            out.timers.push((SagaTimer::Deadline, deadline));
        }
    }

    /// The call for attempt `attempt` of `phase` of `step`: the same intent every time
    /// it is asked for, as long as the results it reads are the same. `Err` names the
    /// panic of a step closure that could not build it.
    pub fn call(
        &self,
        state: &SagaState,
        step: u16,
        phase: Phase,
        attempt: u16,
    ) -> Result<StepCall, Reanswer> {
        build_call(&self.definition, state, step, phase, attempt)
    }
}

/// The bus envelope announcing `transition`, the `index`-th of the reduction `cause`:
/// its id derives from both, so a replay announces with the same id.
pub fn transition_envelope(
    state: &SagaState,
    definition: &SagaDefinition,
    cause: Cause,
    now: Timestamp,
    index: u32,
    transition: &Transition,
) -> Envelope {
    let mut data = serde_json::json!({
        "saga": state.id.as_str(),
        "saga_type": state.saga_type.as_str(),
        "status": state.status.name(),
        "transition": transition,
    });
    if let Some(step) = transition.step() {
        data["step_name"] = Value::String(definition.step(step).name.clone());
    }
    Envelope {
        id: EventId::derived(cause.intent_id(index), u32::MAX - 1),
        event_type: EventType::from_static(transition.event_type()),
        source: SOURCE.to_owned(),
        target: None,
        time: now,
        correlation_id: cause.correlation,
        causation_id: Some(cause.causation),
        subject: Some(state.id.to_string()),
        sequence: 0,
        schema_version: 1,
        priority: Priority::Normal,
        metadata: std::collections::BTreeMap::new(),
        payload: Payload::Json(data),
    }
}

/// Adds a built call to `out`, or the failure of the attempt that could not be built
/// again after a restart.
fn push_call(out: &mut Output, call: Result<StepCall, Reanswer>) {
    match call {
        Ok(call) => out.calls.push(call),
        Err(mut failed) => {
            if let super::event::Answer::Failed(keel_core::Failure { reason, .. }) =
                &mut failed.answer
            {
                reason.insert_str(0, "after a restart, ");
            }
            out.reanswers.push(failed);
        }
    }
}

/// The call for attempt `attempt` of `phase` of `step`; one path for live and recovered
/// calls, so they cannot differ. A panic of the closure that builds it is caught and
/// named in the `Err`.
pub(super) fn build_call(
    def_all: &SagaDefinition,
    state: &SagaState,
    step: u16,
    phase: Phase,
    attempt: u16,
) -> Result<StepCall, Reanswer> {
    let ctx = StepContext {
        saga: &state.id,
        input: &state.input,
        definition: def_all,
        steps: &state.steps,
        step,
    };
    let def = def_all.step(step);
    let built = match (phase, &def.compensation) {
        (Phase::Compensation, Some(compensation)) => {
            catching("the step's compensation closure", || compensation(&ctx))
        }
        // A step without compensation is never compensated; asking is a bug, and
        // answering with its action would be worse than an effect that always fails.
        (Phase::Compensation, None) => Ok(StepAction::Custom {
            name: EventType::from_static("keel.no-compensation"),
            payload: Value::Null,
        }),
        (Phase::Action, _) => catching("the step's action closure", || (def.action)(&ctx)),
    };
    let action = built.map_err(|reason| Reanswer::failed(step, phase, attempt, reason))?;
    let id = step_intent_id(state.id.correlation(), step, phase);
    let kind = match action {
        StepAction::Http(request) => IntentKind::Http(Box::new(request)),
        StepAction::Custom { name, payload } => IntentKind::Custom { name, payload },
        StepAction::Request {
            topic,
            event_type,
            payload,
            timeout_ms,
        } => {
            let mut metadata = std::collections::BTreeMap::new();
            metadata.insert("idempotencykey".to_owned(), MetaValue::Text(id.to_string()));
            // Each attempt is a new request (the bus matches its reply by the
            // request's id), but all carry the step's idempotency key.
            let envelope = Envelope {
                id: EventId::derived(id, u32::from(attempt)),
                event_type,
                source: SOURCE.to_owned(),
                target: None,
                // The saga's start, not the attempt's: a recovered attempt must rebuild
                // the very same request, and the state keeps no time per attempt.
                time: state.started_at,
                correlation_id: state.id.correlation(),
                causation_id: None,
                subject: Some(state.id.to_string()),
                sequence: 0,
                schema_version: 1,
                priority: Priority::Normal,
                metadata,
                payload: Payload::Json(payload),
            };
            IntentKind::Request {
                topic,
                envelope: Box::new(envelope),
                timeout_ms,
            }
        }
    };
    Ok(StepCall {
        step,
        phase,
        attempt,
        intent: Intent { id, kind },
    })
}
