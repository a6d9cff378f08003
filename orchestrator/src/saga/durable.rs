//! Sagas as an ordinary reducer of keel-core's one durable driver.
//!
//! [`Sagas`] holds the definitions an orchestrator runs and is the reducer the driver
//! runs: each instance is one saga, its state the [`SagaState`], its events the
//! [`SagaEvent`]s, and its log the saga log (`saga-<id>`, the format of [`crate::log`],
//! which keel has always written). What a saga needs beyond a plain reducer it says
//! through the driver's hooks, not through an engine of its own:
//!
//! - a step that changes nothing (a duplicate answer, a stale timer) is not recorded;
//! - the saga's state knows its attempts and timers, so the driver keeps no copy of
//!   them ([`Durable::tracks_in_flight`]), and a restored saga says what it has out;
//! - an answer keel gives an attempt itself (its closure panicked) is a follow-up event,
//!   a record of its own ([`Effects::then`]);
//! - each record carries the step's transitions, the saga's timeline, as notes.

use std::cell::RefCell;
use std::sync::Arc;

use foldhash::HashMap;
use keel_core::driver::{Durable, Effects, Record, RecordStep, Status, StepInput};
use keel_core::{
    CausationId, Cause, CorrelationId, Envelope, ExpectedVersion, Input, InstanceId, Intent,
    IntentId, IntentKind, Outcome, OutcomeResult, Reducer, StreamId, Timestamp,
};

use super::event::{Answer, Output, SagaEvent, SagaTimer, Transition};
use super::reducer::{SagaReducer, transition_envelope};
use super::state::{SagaState, SagaStatus};
use crate::definition::SagaDefinition;
use crate::id::{Phase, SagaId, SagaType};
use crate::log;

/// The attempt a call intent is: its id, step, phase and attempt number.
pub(crate) type CallOf = (IntentId, u16, Phase, u16);

/// The kind of every saga on the driver: their streams are `saga-<id>`.
pub(crate) const KIND: &str = "saga";

/// Room kept in every record around an answer or an input: the status, the transitions
/// with their reasons (each at most [`REASON_BYTES_MAX`](super::REASON_BYTES_MAX)) and
/// the JSON around them.
pub const RECORD_FRAME_BYTES: usize = 8 * 1024;

/// Room kept in a saga's first record per step of its definition: the step's name and
/// its `step_started` transition.
pub(crate) const RECORD_BYTES_PER_STEP: usize = 64;

/// The saga definitions one driver runs, as one reducer: an instance's type picks its
/// definition.
#[derive(Debug, Default)]
pub struct Sagas {
    reducers: HashMap<SagaType, SagaReducer>,
    /// Whether steps emit their transitions as bus notifications.
    publish: bool,
    /// The largest record payload the store takes; 0 until set (then the default).
    record_bytes_max: usize,
    /// The rules' output buffers, kept between steps (the driver runs on one task).
    scratch: RefCell<Output>,
    /// Whether steps note their calls' attempts in `calls` (the engine takes them).
    noting: bool,
    /// The attempts of the calls the last live steps emitted, in the order of their
    /// intents, for the engine to address their answers (an intent does not say which
    /// attempt it is); taken by [`Sagas::take_calls`].
    calls: RefCell<Vec<CallOf>>,
}

impl Sagas {
    /// Registers a definition; a second one for the same type replaces the first.
    pub fn register(&mut self, definition: Arc<SagaDefinition>) {
        let saga_type = definition.saga_type().clone();
        self.reducers
            .insert(saga_type, SagaReducer::new(definition));
    }

    /// The reducer for `saga_type`, if registered.
    pub fn reducer(&self, saga_type: &SagaType) -> Option<&SagaReducer> {
        self.reducers.get(saga_type)
    }

    /// Whether steps emit their transitions as [`IntentKind::Notify`] intents.
    pub fn set_publish(&mut self, publish: bool) {
        self.publish = publish;
    }

    /// The largest record payload the store accepts; raised to at least twice
    /// [`RECORD_FRAME_BYTES`].
    pub fn set_record_bytes_max(&mut self, bytes: usize) {
        self.record_bytes_max = bytes.max(2 * RECORD_FRAME_BYTES);
    }

    /// The largest record payload the store accepts (default: what keel's stores accept,
    /// [`PAYLOAD_BYTES_MAX_DEFAULT`](keel_core::cloudevents::PAYLOAD_BYTES_MAX_DEFAULT)).
    pub fn record_bytes_max(&self) -> usize {
        match self.record_bytes_max {
            0 => keel_core::cloudevents::PAYLOAD_BYTES_MAX_DEFAULT,
            set => set,
        }
    }

    /// The most an answer may take as JSON and still be kept in the log of a saga of
    /// `steps` steps: a record of the store's largest size, less room for the status
    /// and transitions around it (an answer that completes a stage starts the next).
    pub fn answer_bytes_max(&self, steps: usize) -> usize {
        self.record_bytes_max()
            .saturating_sub(RECORD_FRAME_BYTES + RECORD_BYTES_PER_STEP * steps)
    }

    /// [`answer_bytes_max`](Self::answer_bytes_max) for a saga in `state`.
    pub fn answer_limit(&self, state: &SagaState) -> usize {
        let steps = self
            .reducers
            .get(&state.saga_type)
            .map_or(0, |reducer| reducer.definition().steps().len());
        self.answer_bytes_max(steps)
    }

    /// Has steps note their calls' attempts, for [`take_calls`](Self::take_calls).
    pub(crate) fn note_calls(&mut self) {
        self.noting = true;
    }

    /// Moves the attempts of the calls emitted since the last time into `into` (which
    /// it leaves with their capacity).
    pub(crate) fn take_calls(&self, into: &mut Vec<CallOf>) {
        into.clear();
        std::mem::swap(&mut *self.calls.borrow_mut(), into);
    }

    /// Turns what the rules gave into the driver's effects: calls and timers as intents,
    /// transitions as notes (and notifications, if publishing), a dead letter for a
    /// saga that stopped for an operator as a `Persist` to the dead-letter stream, and
    /// keel's own answers as follow-up events.
    #[allow(clippy::too_many_arguments)]
    fn effects(
        &self,
        reducer: &SagaReducer,
        state: &SagaState,
        cause: Cause,
        now: Timestamp,
        version: u64,
        out: &mut Output,
        effects: &mut Effects<SagaEvent>,
    ) {
        if !out.reanswers.is_empty() {
            let limit = self.answer_limit(state);
            let answers = out
                .reanswers
                .drain(..)
                .map(|reanswer| reanswer.event(limit));
            effects.then.extend(answers);
        }
        // An attempt whose closure panicked has no intent: its answer is a follow-up.
        let mut calls = self.calls.borrow_mut();
        for call in out.calls.drain(..) {
            if self.noting {
                calls.push((call.intent.id, call.step, call.phase, call.attempt));
            }
            effects.intents.push(call.intent);
        }
        let mut emitter = cause.emitter(&mut effects.intents);
        for (timer, due) in out.timers.drain(..) {
            let timer = timer.timer_id();
            emitter.emit(IntentKind::ScheduleTimer { timer, due });
        }
        for timer in out.cancelled.drain(..) {
            let timer = timer.timer_id();
            emitter.emit(IntentKind::CancelTimer { timer });
        }
        if out.transitions.is_empty() {
            return;
        }
        let parked = out
            .transitions
            .iter()
            .any(|t| matches!(t, Transition::NeedsIntervention { .. }));
        if parked && matches!(state.status, SagaStatus::NeedsIntervention { .. }) {
            let names: Vec<&str> = reducer
                .definition()
                .steps()
                .iter()
                .map(crate::definition::Step::name)
                .collect();
            let letter =
                crate::requests::dead_letter(state, &names, cause, version, now, &out.transitions);
            if let Some(letter) = letter {
                emitter.emit(IntentKind::Persist {
                    stream: StreamId::from_static(crate::requests::DEAD_LETTER_STREAM),
                    expected_version: ExpectedVersion::Any,
                    events: vec![letter],
                });
            }
        }
        if self.publish {
            let definition = reducer.definition();
            for (index, transition) in out.transitions.iter().enumerate() {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                let envelope =
                    transition_envelope(state, definition, cause, now, index, transition);
                let topic = keel_core::Topic::from(envelope.event_type.clone());
                emitter.emit(IntentKind::Notify {
                    topic,
                    envelope: Box::new(envelope),
                });
            }
        }
        // Serialising transitions cannot fail: their maps have string keys.
        let _ = serde_json::to_writer(&mut effects.notes, &out.transitions);
        out.transitions.clear();
    }
}

/// A saga's status as the driver sees it: running, parked for an operator, or finished.
pub(crate) fn status_of(status: &SagaStatus) -> Status {
    match status {
        SagaStatus::New | SagaStatus::Running | SagaStatus::Compensating { .. } => Status::Running,
        SagaStatus::NeedsIntervention { reason, .. } => Status::Parked {
            reason: reason.clone(),
        },
        SagaStatus::Completed | SagaStatus::Compensated { .. } | SagaStatus::Resolved { .. } => {
            Status::Finished
        }
    }
}

/// What a saga log records of a status beyond its name, for a replay to check: the
/// reason or note, and which way a parked saga resumes.
fn detail_of(status: &SagaStatus) -> Option<String> {
    match status {
        SagaStatus::New | SagaStatus::Running | SagaStatus::Completed => None,
        SagaStatus::Compensating { reason } | SagaStatus::Compensated { reason } => {
            Some(reason.clone())
        }
        SagaStatus::Resolved { note } => Some(note.clone()),
        SagaStatus::NeedsIntervention { reason, resume } => Some(match resume {
            super::state::Resume::Forward => format!("{reason}; resumes forward"),
            super::state::Resume::Compensate => format!("{reason}; resumes compensating"),
        }),
    }
}

/// An outcome reported through the driver's generic path: a fired timer is the saga's
/// [`SagaEvent::TimerFired`]. The orchestrator answers attempts as
/// [`SagaEvent::Answered`], which names the attempt; any other outcome names none, and
/// reads as an answer to no step, which the saga ignores.
impl From<Outcome> for SagaEvent {
    fn from(outcome: Outcome) -> Self {
        if let OutcomeResult::TimerFired { timer } = &outcome.result
            && let Ok(timer) = timer.as_str().parse::<SagaTimer>()
        {
            return Self::TimerFired { timer };
        }
        Self::Answered {
            step: u16::MAX,
            phase: crate::id::Phase::Action,
            attempt: 0,
            answer: Answer::Unusable {
                reason: "an outcome that names no attempt".into(),
            },
        }
    }
}

impl Reducer for Sagas {
    type State = SagaState;
    type Action = Input<SagaEvent>;

    fn reduce_into(
        &self,
        state: &mut SagaState,
        action: Input<SagaEvent>,
        intents: &mut Vec<Intent>,
    ) {
        let mut effects = Effects::default();
        let step = StepInput {
            event: &action.body,
            cause: action.cause,
            now: action.now,
            version: 0,
            replaying: false,
        };
        if self.step(state, step, &mut effects) {
            intents.append(&mut effects.intents);
        }
    }
}

impl Durable for Sagas {
    type Event = SagaEvent;

    fn kind(&self) -> &str {
        KIND
    }

    fn status(&self, state: &SagaState) -> Status {
        status_of(&state.status)
    }

    /// Saga logs are short and a saga's state holds its input and answers: no
    /// snapshots.
    fn snapshot_every(&self) -> u64 {
        0
    }

    fn step(
        &self,
        state: &mut SagaState,
        step: StepInput<'_, SagaEvent>,
        effects: &mut Effects<SagaEvent>,
    ) -> bool {
        let Some(reducer) = self.reducers.get(&state.saga_type) else {
            return false;
        };
        let mut out = self.scratch.borrow_mut();
        out.clear();
        let changed = reducer.apply(state, step.now, step.event, &mut out);
        if step.replaying {
            // A saga record does not count its intents, and its follow-ups are records
            // of their own: nothing of the output is needed.
            return changed;
        }
        if !changed {
            // A success whose check panicked changes nothing itself: its answer comes
            // next.
            out.calls.clear();
            out.timers.clear();
            out.cancelled.clear();
            out.transitions.clear();
        }
        let (cause, now, version) = (step.cause, step.now, step.version);
        self.effects(reducer, state, cause, now, version, &mut out, effects);
        changed
    }

    fn tracks_in_flight(&self) -> bool {
        true
    }

    fn in_flight(&self, state: &SagaState, effects: &mut Effects<SagaEvent>) {
        let Some(reducer) = self.reducers.get(&state.saga_type) else {
            return;
        };
        let mut out = self.scratch.borrow_mut();
        out.clear();
        reducer.in_flight(state, &mut out);
        let correlation = state.id.correlation();
        // Timers are named by what they are for; the ids of these intents are not used.
        let cause = Cause::new(correlation, CausationId::new(correlation.uuid()));
        // Nothing in flight changes where the saga stands: no transition, no letter.
        out.transitions.clear();
        self.effects(
            reducer,
            state,
            cause,
            state.updated_at,
            0,
            &mut out,
            effects,
        );
    }

    fn correlation(&self, id: &InstanceId) -> CorrelationId {
        CorrelationId::of_name(id.as_str())
    }

    fn kind_of<'a>(&'a self, state: &'a SagaState) -> &'a str {
        state.saga_type.as_str()
    }

    fn status_name(&self, state: &SagaState) -> &'static str {
        state.status.name()
    }

    fn status_detail(&self, state: &SagaState) -> Option<String> {
        detail_of(&state.status)
    }

    fn encode_record(
        &self,
        _id: &InstanceId,
        _correlation: CorrelationId,
        version: u64,
        now: Timestamp,
        record: &Record<SagaState, SagaEvent>,
        notes: &[u8],
        state: &SagaState,
    ) -> Result<Envelope, keel_core::Error> {
        let outcome;
        let event = match &record.step {
            RecordStep::Event(event) => event,
            RecordStep::Outcome(reported) => {
                outcome = SagaEvent::from(reported.clone());
                &outcome
            }
        };
        let definition = self
            .reducers
            .get(&state.saga_type)
            .map(SagaReducer::definition);
        log::encode(definition, state, version, now, event, notes).map_err(|e| {
            let reason = match e {
                crate::Error::CorruptLog { reason, .. } => reason,
                e => e.to_string(),
            };
            keel_core::Error::RecordDecode {
                instance: state.id.to_string(),
                version,
                reason,
            }
        })
    }

    fn decode_record(
        &self,
        id: &InstanceId,
        version: u64,
        envelope: &Envelope,
    ) -> Result<Record<SagaState, SagaEvent>, keel_core::Error> {
        let refuse = |reason: String| keel_core::Error::RecordDecode {
            instance: id.to_string(),
            version,
            reason,
        };
        let record = log::decode_named(id.as_str(), version, envelope).map_err(|e| match e {
            // Said once: the engine names the saga and the version again.
            crate::Error::CorruptLog { reason, .. } => refuse(reason),
            e => refuse(e.to_string()),
        })?;
        let initial = match &record.event {
            SagaEvent::Started { saga_type, .. } if version == 1 => {
                if !self.reducers.contains_key(saga_type) {
                    return Err(refuse(format!(
                        "no definition of saga type `{saga_type}` is registered"
                    )));
                }
                let saga = SagaId::new(id.as_str()).map_err(|e| refuse(e.to_string()))?;
                Some(SagaState::new(saga, saga_type.clone()))
            }
            _ => None,
        };
        Ok(Record {
            kind: None,
            initial,
            step: RecordStep::Event(record.event),
            intents: None,
            status: status_of(&record.status),
            status_name: Some(record.status.name()),
            status_detail: detail_of(&record.status),
            snapshot: None,
        })
    }
}
