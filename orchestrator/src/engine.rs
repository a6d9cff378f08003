//! The engine: many sagas in memory, driven by events, producing batches of records to
//! commit and calls, timers and notifications to carry out once they are committed.
//!
//! Sans-IO like the reducer it wraps: no store, no clock, no tasks. The tokio
//! [`Orchestrator`](crate::Orchestrator) drives it in production, and the deterministic
//! simulation in the tests drives it with a virtual clock, fake services and crashes.
//!
//! The contract with a driver:
//!
//! 1. Feed events ([`start`](Engine::start), [`handle`](Engine::handle),
//!    [`cancel`](Engine::cancel), [`operate`](Engine::operate)); each that changes a
//!    saga adds a record to the current [`Batch`].
//! 2. [`take_batch`](Engine::take_batch), commit its appends, and only then carry out
//!    its calls, timers and notifications. Many sagas share one commit.
//! 3. Commit through a [`Commit`](crate::commit::Commit): while the store is unavailable
//!    the same appends are tried again, with a bounded backoff, and nothing of the batch
//!    is carried out (no new event may be fed meanwhile). An append the store refuses
//!    for good (a conflict) means the engine ran ahead of the log:
//!    [`forget`](Engine::forget) the saga and [`restore`](Engine::restore) it.
//! 4. After a restart, [`restore`](Engine::restore) every unfinished saga and
//!    [`resume`](Engine::resume): the batch then holds every call in flight and every
//!    pending timer, under the ids they had before.
//!
//! The engine keeps every record within the size a store accepts
//! ([`set_record_bytes_max`](Engine::set_record_bytes_max)): a success too big to keep
//! becomes [`Answer::Unusable`](crate::Answer::Unusable), reasons and notes are cut, and
//! an input too big is refused at [`start`](Engine::start). An attempt whose closure
//! panicked is answered at once with a permanent failure, and a success whose check
//! panicked as unusable, each recorded after the record that led to it (see
//! [`Reanswer`]).

use foldhash::HashMap;
use std::sync::Arc;

use keel_core::mark::InstanceMark;
use keel_core::{CausationId, Cause, Envelope, Timestamp};
use serde_json::Value;

use crate::definition::SagaDefinition;
use crate::error::Error;
use crate::id::{SagaId, SagaType};
use crate::log;
use crate::saga::{
    OperatorCommand, Output, REASON_BYTES_MAX, Reanswer, SagaEvent, SagaReducer, SagaState,
    SagaStatus, SagaTimer, StepCall, transition_envelope,
};

/// Room kept in every record around an answer or an input: the status, the transitions
/// with their reasons (each at most [`REASON_BYTES_MAX`]) and the JSON around them.
pub const RECORD_FRAME_BYTES: usize = 8 * 1024;

/// Room kept in a saga's first record per step of its definition: the step's name and
/// its `step_started` transition.
const RECORD_BYTES_PER_STEP: usize = 64;

/// The records one saga appends in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaAppend {
    /// The saga.
    pub saga: SagaId,
    /// The stream version the append expects (0: the stream must not exist).
    pub expected: u64,
    /// The records, in order.
    pub records: Vec<Envelope>,
}

/// What to commit, then what to do once it is committed.
#[derive(Debug, Default)]
pub struct Batch {
    /// Records to append, one entry per saga.
    pub appends: Vec<SagaAppend>,
    /// Attempts to carry out.
    pub calls: Vec<(SagaId, StepCall)>,
    /// Timers to set.
    pub timers: Vec<(SagaId, SagaTimer, Timestamp)>,
    /// Timers to drop.
    pub cancelled: Vec<(SagaId, SagaTimer)>,
    /// Transition envelopes to publish, if publishing is on.
    pub notifications: Vec<Envelope>,
    /// Sagas that came to rest (finished, or waiting for an operator), with their status.
    pub settled: Vec<(SagaId, SagaStatus)>,
    /// Dead letters for sagas that stopped for an operator, to append to
    /// [`DEAD_LETTER_STREAM`](crate::requests::DEAD_LETTER_STREAM) before the sagas'
    /// own records.
    pub dead_letters: Vec<Envelope>,
}

impl Batch {
    /// Whether there is nothing to commit or do.
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
            && self.calls.is_empty()
            && self.timers.is_empty()
            && self.cancelled.is_empty()
            && self.notifications.is_empty()
            && self.settled.is_empty()
            && self.dead_letters.is_empty()
    }

    /// How many records it appends.
    pub fn record_count(&self) -> usize {
        self.appends.iter().map(|append| append.records.len()).sum()
    }
}

/// A saga the engine holds: every saga that has not finished.
#[derive(Debug)]
struct Live {
    reducer: SagaReducer,
    state: SagaState,
    /// Records in its log, committed or in the current batch.
    version: u64,
}

/// Many sagas, their definitions, and the batch being built.
#[derive(Debug, Default)]
pub struct Engine {
    reducers: HashMap<SagaType, SagaReducer>,
    /// Boxed: a table slot then holds a key and a pointer, and the table, which grows
    /// by doubling, stays a small part of what each saga costs.
    live: HashMap<SagaId, Box<Live>>,
    batch: Batch,
    /// Where each saga's append sits in `batch.appends`.
    appending: HashMap<SagaId, usize>,
    scratch: Output,
    publish: bool,
    retain_finished: bool,
    /// Sagas that finished in the current batch: dropped when it is taken, so that
    /// until then their final state can still be asked for.
    finished: Vec<SagaId>,
    /// Answers keel gives attempts itself, to record next.
    reanswers: Vec<Reanswer>,
    /// The largest record payload the store takes; 0 until set (then the default).
    record_bytes_max: usize,
}

impl Engine {
    /// An engine with no definitions.
    pub fn new() -> Self {
        Self::default()
    }

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

    /// Whether batches carry transition envelopes for the bus.
    pub fn set_publish(&mut self, publish: bool) {
        self.publish = publish;
    }

    /// Whether finished sagas stay in memory (for tests and inspection) instead of being
    /// dropped as soon as they finish.
    pub fn set_retain_finished(&mut self, retain: bool) {
        self.retain_finished = retain;
    }

    /// The largest record payload the store accepts (default: what keel's stores accept,
    /// [`PAYLOAD_BYTES_MAX_DEFAULT`](keel_core::cloudevents::PAYLOAD_BYTES_MAX_DEFAULT)).
    /// Raised to at least twice [`RECORD_FRAME_BYTES`].
    pub fn set_record_bytes_max(&mut self, bytes: usize) {
        self.record_bytes_max = bytes.max(2 * RECORD_FRAME_BYTES);
    }

    /// The largest record payload the store accepts.
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

    /// [`answer_bytes_max`](Self::answer_bytes_max) for saga `id`, if it is held.
    fn answer_limit(&self, id: &SagaId) -> usize {
        let steps = self
            .live
            .get(id)
            .map_or(0, |live| live.reducer.definition().steps().len());
        self.answer_bytes_max(steps)
    }

    /// Starts saga `id` of `saga_type` with `input`.
    ///
    /// A saga that finished earlier is not held here; its id is caught when the append
    /// (which expects a new stream) conflicts.
    pub fn start(
        &mut self,
        saga_type: &SagaType,
        id: SagaId,
        input: Value,
        now: Timestamp,
    ) -> Result<(), Error> {
        let reducer = self
            .reducers
            .get(saga_type)
            .ok_or_else(|| Error::UnknownSagaType {
                saga_type: saga_type.to_string(),
            })?
            .clone();
        if self.live.contains_key(&id) {
            return Err(Error::SagaExists {
                saga: id.to_string(),
            });
        }
        // The first record holds the input and the definition's step names, besides
        // the transitions of the first stage.
        let steps = reducer.definition().steps().len();
        let limit_bytes = self
            .answer_bytes_max(steps)
            .saturating_sub(RECORD_BYTES_PER_STEP * steps);
        if let Err(size_bytes) = crate::saga::json_size_within(&input, limit_bytes) {
            return Err(Error::TooLarge {
                what: "saga input",
                size_bytes,
                limit_bytes: limit_bytes as u64,
            });
        }
        let state = SagaState::new(id.clone(), saga_type.clone());
        self.live.insert(
            id.clone(),
            Box::new(Live {
                reducer,
                state,
                version: 0,
            }),
        );
        let event = SagaEvent::Started {
            saga_type: saga_type.clone(),
            input,
        };
        self.apply(&id, &event, now).map(drop)
    }

    /// Feeds `event` to saga `id`; returns whether it changed the saga (and was
    /// recorded). Answers and timers for a saga that is no longer held are stale: they
    /// are refused with [`Error::UnknownSaga`], which a driver may ignore.
    pub fn handle(
        &mut self,
        id: &SagaId,
        event: &SagaEvent,
        now: Timestamp,
    ) -> Result<bool, Error> {
        match event {
            SagaEvent::Answered {
                step,
                phase,
                attempt,
                answer,
            } => {
                let limit = self.answer_limit(id);
                if answer.fits(limit) {
                    return self.apply(id, event, now);
                }
                let bounded = SagaEvent::Answered {
                    step: *step,
                    phase: *phase,
                    attempt: *attempt,
                    answer: answer.clone().bounded(limit),
                };
                self.apply(id, &bounded, now)
            }
            _ => self.apply(id, event, now),
        }
    }

    /// Asks saga `id` to turn back and compensate.
    pub fn cancel(&mut self, id: &SagaId, mut reason: String, now: Timestamp) -> Result<(), Error> {
        crate::saga::cut(&mut reason, REASON_BYTES_MAX);
        let live = self.live.get(id).ok_or_else(|| Error::UnknownSaga {
            saga: id.to_string(),
        })?;
        let refuse = |reason: String| Error::NotAllowed {
            saga: id.to_string(),
            request: "cancel",
            reason,
        };
        match (&live.state.status, live.state.pivot_passed) {
            (SagaStatus::Running, false) => {}
            (SagaStatus::Running, true) => {
                return Err(refuse(
                    "it is past its pivot and can only go forward".into(),
                ));
            }
            (status, _) => return Err(refuse(format!("it is {}, not running", status.name()))),
        }
        self.apply(id, &SagaEvent::CancelRequested { reason }, now)
            .map(drop)
    }

    /// Carries out an operator's decision on saga `id`, which must need intervention.
    pub fn operate(
        &mut self,
        id: &SagaId,
        mut command: OperatorCommand,
        now: Timestamp,
    ) -> Result<(), Error> {
        if let OperatorCommand::Resolve { note } = &mut command {
            crate::saga::cut(note, REASON_BYTES_MAX);
        }
        let live = self.live.get(id).ok_or_else(|| Error::UnknownSaga {
            saga: id.to_string(),
        })?;
        if !matches!(live.state.status, SagaStatus::NeedsIntervention { .. }) {
            return Err(Error::NotAllowed {
                saga: id.to_string(),
                request: command.name(),
                reason: format!(
                    "it is {}; only a saga that needs intervention takes operator commands",
                    live.state.status.name()
                ),
            });
        }
        self.apply(id, &SagaEvent::Operator { command }, now)
            .map(drop)
    }

    /// Applies `event`, then the answers keel gives attempts itself ([`Reanswer`]), each
    /// a record of its own: a replay reads them from the log instead of running the
    /// closure that panicked again, so replay equals live even once it is fixed.
    fn apply(&mut self, id: &SagaId, event: &SagaEvent, now: Timestamp) -> Result<bool, Error> {
        let mut changed = self.apply_one(id, event, now)?;
        // Each answer settles an attempt for good, so this ends: at most one per step
        // and phase, and a definition has at most STEPS_MAX steps.
        let mut answered = 0;
        while !self.reanswers.is_empty() {
            let reanswer = self.reanswers.remove(0);
            answered += 1;
            debug_assert!(answered <= 2 * crate::definition::STEPS_MAX + 2);
            let event = reanswer.event(self.answer_limit(id));
            changed |= self.apply_one(id, &event, now)?;
        }
        Ok(changed)
    }

    fn apply_one(&mut self, id: &SagaId, event: &SagaEvent, now: Timestamp) -> Result<bool, Error> {
        let live = self.live.get_mut(id).ok_or_else(|| Error::UnknownSaga {
            saga: id.to_string(),
        })?;
        let before = live.state.status.clone();
        self.scratch.clear();
        let changed = live
            .reducer
            .apply(&mut live.state, now, event, &mut self.scratch);
        // A success whose check panicked changes nothing itself: its answer comes next.
        self.reanswers.append(&mut self.scratch.reanswers);
        if !changed {
            return Ok(false);
        }
        let version = live.version + 1;
        let mut record = log::encode(
            live.reducer.definition(),
            &live.state,
            version,
            now,
            event,
            &self.scratch.transitions,
        )?;
        // The store's index of instances follows the records that start a saga or change
        // its status (see `keel_core::mark`).
        let status = &live.state.status;
        if version == 1 || *status != before {
            let kind = live.state.saga_type.as_str();
            InstanceMark::new(kind, status.name(), status.is_finished()).apply(&mut record);
        }
        live.version = version;
        let cause = Cause::new(live.state.id.correlation(), CausationId::from(record.id));
        let slot = match self.appending.get(id) {
            Some(&slot) => slot,
            None => {
                self.batch.appends.push(SagaAppend {
                    saga: id.clone(),
                    expected: version - 1,
                    records: Vec::new(),
                });
                self.appending
                    .insert(id.clone(), self.batch.appends.len() - 1);
                self.batch.appends.len() - 1
            }
        };
        self.batch.appends[slot].records.push(record);
        let scratch = &mut self.scratch;
        self.reanswers.append(&mut scratch.reanswers);
        self.batch
            .calls
            .extend(scratch.calls.drain(..).map(|call| (id.clone(), call)));
        self.batch.timers.extend(
            scratch
                .timers
                .drain(..)
                .map(|(timer, due)| (id.clone(), timer, due)),
        );
        self.batch
            .cancelled
            .extend(scratch.cancelled.drain(..).map(|timer| (id.clone(), timer)));
        if self.publish {
            let definition = live.reducer.definition();
            for (index, transition) in scratch.transitions.iter().enumerate() {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                self.batch.notifications.push(transition_envelope(
                    &live.state,
                    definition,
                    cause,
                    now,
                    index,
                    transition,
                ));
            }
        }
        let status = &live.state.status;
        if status.is_at_rest() && *status != before {
            self.batch.settled.push((id.clone(), status.clone()));
        }
        if matches!(status, SagaStatus::NeedsIntervention { .. }) && *status != before {
            let names: Vec<&str> = live
                .reducer
                .definition()
                .steps()
                .iter()
                .map(crate::definition::Step::name)
                .collect();
            if let Some(letter) = crate::requests::dead_letter(
                &live.state,
                &names,
                cause,
                version,
                now,
                &scratch.transitions,
            ) {
                self.batch.dead_letters.push(letter);
            }
        }
        if status.is_finished() && !self.retain_finished {
            self.finished.push(id.clone());
        }
        Ok(true)
    }

    /// How many timers the batch built so far sets (before its cancellations).
    pub(crate) fn timers_to_set(&self) -> usize {
        self.batch.timers.len()
    }

    /// Takes the batch built so far, leaving an empty one.
    pub fn take_batch(&mut self) -> Batch {
        self.appending.clear();
        for id in self.finished.drain(..) {
            self.live.remove(&id);
        }
        std::mem::take(&mut self.batch)
    }

    /// Drops saga `id` from memory (after its append failed: the engine ran ahead of the
    /// log). [`restore`](Self::restore) it from the store to go on.
    pub fn forget(&mut self, id: &SagaId) {
        self.live.remove(id);
    }

    /// Rebuilds saga `id` from its log records `(version, envelope)`, in order, and holds
    /// it if it has not finished (or finished sagas are retained). Returns its state if
    /// it is held.
    pub fn restore<'a>(
        &mut self,
        id: &SagaId,
        records: impl IntoIterator<Item = (u64, &'a Envelope)>,
    ) -> Result<Option<&SagaState>, Error> {
        self.live.remove(id);
        let mut any = false;
        for (version, envelope) in records {
            self.restore_record(id, version, envelope)?;
            any = true;
        }
        if !any {
            return Err(Error::UnknownSaga {
                saga: id.to_string(),
            });
        }
        Ok(self.live.get(id).map(|live| &live.state))
    }

    /// Applies one record of saga `id`'s log while rebuilding it: record 1 creates the
    /// saga, each later one must follow the last. Lets recovery fold a whole store in one
    /// pass without holding every record. Returns the saga's status after the record.
    pub fn restore_record(
        &mut self,
        id: &SagaId,
        version: u64,
        envelope: &Envelope,
    ) -> Result<SagaStatus, Error> {
        if version == 1 {
            let saga_type = log::saga_type_of(id, envelope)?;
            let reducer = self
                .reducers
                .get(&saga_type)
                .ok_or_else(|| Error::UnknownSagaType {
                    saga_type: saga_type.to_string(),
                })?
                .clone();
            let state = SagaState::new(id.clone(), saga_type);
            self.live.insert(
                id.clone(),
                Box::new(Live {
                    reducer,
                    state,
                    version: 0,
                }),
            );
        }
        let corrupt = |reason: String| Error::CorruptLog {
            saga: id.to_string(),
            version,
            reason,
        };
        let live = self
            .live
            .get_mut(id)
            .ok_or_else(|| corrupt("the records before it are missing or ended the saga".into()))?;
        if version != live.version + 1 {
            return Err(corrupt(format!(
                "it follows version {} in the log",
                live.version
            )));
        }
        let record = log::decode(id, version, envelope)?;
        self.scratch.clear();
        live.reducer.apply(
            &mut live.state,
            envelope.time,
            &record.event,
            &mut self.scratch,
        );
        live.version = version;
        if live.state.status != record.status {
            let reason = format!(
                "replaying it gives status `{}` where the log recorded `{}`: was the saga's definition changed while sagas were running?",
                live.state.status.name(),
                record.status.name()
            );
            self.live.remove(id);
            return Err(corrupt(reason));
        }
        let status = live.state.status.clone();
        if status.is_finished() && !self.retain_finished {
            self.live.remove(id);
        }
        Ok(status)
    }

    /// Adds to the batch every call in flight and every pending timer of every saga held:
    /// what a restart must pick up again. Sagas with attempts in flight first record
    /// [`SagaEvent::Recovered`]: the deliveries from before the restart may still take
    /// effect, so their steps count as maybe applied until a definite answer.
    pub fn resume(&mut self, now: Timestamp) {
        // In id order: the same log must give the same batch, record for record.
        let mut ids: Vec<SagaId> = self.live.keys().cloned().collect();
        ids.sort_unstable();
        for id in ids {
            self.resume_one(&id, now);
        }
    }

    /// Like [`resume`](Self::resume), for one saga. A call that cannot be built again
    /// (its closure now panics) fails its attempt for good; the step stays maybe applied,
    /// so the saga parks, naming it.
    pub fn resume_one(&mut self, id: &SagaId, now: Timestamp) {
        // An error here means the saga is not held: nothing to resume.
        let _ = self.apply(id, &SagaEvent::Recovered, now);
        let Some(live) = self.live.get(id) else {
            return;
        };
        self.scratch.clear();
        live.reducer.in_flight(&live.state, &mut self.scratch);
        let reanswers = std::mem::take(&mut self.scratch.reanswers);
        self.batch
            .calls
            .extend(self.scratch.calls.drain(..).map(|call| (id.clone(), call)));
        self.batch.timers.extend(
            self.scratch
                .timers
                .drain(..)
                .map(|(timer, due)| (id.clone(), timer, due)),
        );
        for reanswer in reanswers {
            let event = reanswer.event(self.answer_limit(id));
            // The saga is held (checked above), so this cannot be refused.
            let _ = self.apply(id, &event, now);
        }
    }

    /// The state of saga `id`, if it is held (it has not finished, or finished sagas are
    /// retained).
    pub fn state(&self, id: &SagaId) -> Option<&SagaState> {
        self.live.get(id).map(|live| &live.state)
    }

    /// The version of saga `id`'s log (its records, committed or in the current batch),
    /// if it is held.
    pub fn version(&self, id: &SagaId) -> Option<u64> {
        self.live.get(id).map(|live| live.version)
    }

    /// The sagas held, in no particular order.
    pub fn sagas(&self) -> impl Iterator<Item = &SagaState> {
        self.live.values().map(|live| &live.state)
    }

    /// How many sagas are held.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no saga is held.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}
