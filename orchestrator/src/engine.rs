//! The engine: the sagas of an orchestrator on keel-core's one durable driver.
//!
//! The durable part (records, the log as the outbox, group commit, replay with its
//! check, recovery of what was in flight) is [`keel_core::driver::Driver`], running
//! [`Sagas`] as an ordinary reducer. What is here is the saga-facing side of it, sans-IO
//! like the driver: it checks a request before it reaches a saga (a start's input size,
//! whether a cancel or an operator command applies), bounds answers to what a record
//! may hold, and hands the batch out in the saga's terms (attempts, saga timers,
//! notifications and dead letters). The tokio [`Orchestrator`](crate::Orchestrator)
//! drives it in production, and the deterministic simulation in the tests drives it
//! with a virtual clock, fake services and crashes.
//!
//! The contract with a driver is the driver's (see
//! [the driver contract](keel_core#the-driver-contract)):
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
//! Every record stays within the size a store accepts
//! ([`set_record_bytes_max`](Engine::set_record_bytes_max)): a success too big to keep
//! becomes [`Answer::Unusable`](crate::Answer::Unusable), reasons and notes are cut, and
//! an input too big is refused at [`start`](Engine::start). An attempt whose closure
//! panicked is answered at once with a permanent failure, and a success whose check
//! panicked as unusable, each recorded after the record that led to it (see
//! [`Reanswer`](crate::saga::Reanswer)).

use std::sync::Arc;

use keel_core::driver::{self, Driver, Status, TimerChange};
use keel_core::{Envelope, InstanceId, IntentKind, StreamId, Timestamp};
use serde_json::Value;

use crate::definition::SagaDefinition;
use crate::error::Error;
use crate::id::{SagaId, SagaType};
use crate::saga::durable::CallOf;
use crate::saga::{
    OperatorCommand, REASON_BYTES_MAX, SagaEvent, SagaReducer, SagaState, SagaStatus, SagaTimer,
    StepCall,
};

use crate::saga::durable::RECORD_BYTES_PER_STEP;
pub use crate::saga::durable::{RECORD_FRAME_BYTES, Sagas};

/// The records one saga appends in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaAppend {
    /// The saga.
    pub saga: SagaId,
    /// Its stream (`saga-<id>`).
    pub stream: StreamId,
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

/// The sagas of an orchestrator (or a simulation) on the one durable driver, and the
/// batch being built in the saga's terms.
#[derive(Debug)]
pub struct Engine {
    /// Saga ids come from callers: the maps of sagas are seeded at random.
    driver: Driver<Sagas, foldhash::fast::RandomState>,
    batch: Batch,
    /// Buffers moved out of the driver after each request, kept for their capacity.
    spare: driver::Batch,
    calls: Vec<CallOf>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// An engine with no definitions.
    pub fn new() -> Self {
        // `saga` is a valid kind, so this cannot fail.
        let mut driver = Driver::with_hasher(Sagas::default()).unwrap_or_else(|_| unreachable!());
        // A step's intents are its calls, timers and (when publishing) transitions, all
        // bounded by the definition's size.
        driver.set_intents_per_step_max(usize::MAX);
        driver.reducer_mut().note_calls();
        Self {
            driver,
            batch: Batch::default(),
            spare: driver::Batch::default(),
            calls: Vec::new(),
        }
    }

    /// Registers a definition; a second one for the same type replaces the first, also
    /// for the sagas of that type already held (register definitions before starting).
    pub fn register(&mut self, definition: Arc<SagaDefinition>) {
        self.driver.reducer_mut().register(definition);
    }

    /// The reducer for `saga_type`, if registered.
    pub fn reducer(&self, saga_type: &SagaType) -> Option<&SagaReducer> {
        self.driver.reducer().reducer(saga_type)
    }

    /// Whether batches carry transition envelopes for the bus.
    pub fn set_publish(&mut self, publish: bool) {
        self.driver.reducer_mut().set_publish(publish);
    }

    /// Whether finished sagas stay in memory (for tests and inspection) instead of being
    /// dropped as soon as they finish.
    pub fn set_retain_finished(&mut self, retain: bool) {
        self.driver.set_retain_finished(retain);
    }

    /// The largest record payload the store accepts (default: what keel's stores accept,
    /// [`PAYLOAD_BYTES_MAX_DEFAULT`](keel_core::cloudevents::PAYLOAD_BYTES_MAX_DEFAULT)).
    /// Raised to at least twice [`RECORD_FRAME_BYTES`].
    pub fn set_record_bytes_max(&mut self, bytes: usize) {
        self.driver.reducer_mut().set_record_bytes_max(bytes);
    }

    /// The largest record payload the store accepts.
    pub fn record_bytes_max(&self) -> usize {
        self.driver.reducer().record_bytes_max()
    }

    /// The most an answer may take as JSON and still be kept in the log of a saga of
    /// `steps` steps: a record of the store's largest size, less room for the status
    /// and transitions around it (an answer that completes a stage starts the next).
    pub fn answer_bytes_max(&self, steps: usize) -> usize {
        self.driver.reducer().answer_bytes_max(steps)
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
            .reducer(saga_type)
            .ok_or_else(|| Error::UnknownSagaType {
                saga_type: saga_type.to_string(),
            })?;
        let instance = instance(&id);
        if self.driver.state(&instance).is_some() {
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
        let event = SagaEvent::Started {
            saga_type: saga_type.clone(),
            input,
        };
        let started = self.driver.start(&instance, state, event, now);
        self.collect(&id, &instance);
        started.map_err(|e| match e {
            keel_core::Error::InstanceExists { .. } => Error::SagaExists {
                saga: id.to_string(),
            },
            e => saga_error(&id, e),
        })
    }

    /// Feeds `event` to saga `id`; returns whether it changed the saga (and was
    /// recorded). Answers and timers for a saga that is no longer held are stale: they
    /// are refused with [`Error::UnknownSaga`], which a driver may ignore.
    pub fn handle(&mut self, id: &SagaId, event: SagaEvent, now: Timestamp) -> Result<bool, Error> {
        let instance = instance(id);
        let state = self.held(id, &instance)?;
        if state.status.is_finished() {
            return Ok(false);
        }
        let event = match event {
            SagaEvent::Answered {
                step,
                phase,
                attempt,
                answer,
            } => {
                let limit = self.driver.reducer().answer_limit(state);
                SagaEvent::Answered {
                    step,
                    phase,
                    attempt,
                    answer: answer.bounded(limit),
                }
            }
            event => event,
        };
        self.feed(id, &instance, event, now)
    }

    /// Asks saga `id` to turn back and compensate.
    pub fn cancel(&mut self, id: &SagaId, mut reason: String, now: Timestamp) -> Result<(), Error> {
        crate::saga::cut(&mut reason, REASON_BYTES_MAX);
        let instance = instance(id);
        let state = self.held(id, &instance)?;
        let refuse = |reason: String| Error::NotAllowed {
            saga: id.to_string(),
            request: "cancel",
            reason,
        };
        match (&state.status, state.pivot_passed) {
            (SagaStatus::Running, false) => {}
            (SagaStatus::Running, true) => {
                return Err(refuse(
                    "it is past its pivot and can only go forward".into(),
                ));
            }
            (status, _) => return Err(refuse(format!("it is {}, not running", status.name()))),
        }
        self.feed(id, &instance, SagaEvent::CancelRequested { reason }, now)
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
        let instance = instance(id);
        let state = self.held(id, &instance)?;
        if !matches!(state.status, SagaStatus::NeedsIntervention { .. }) {
            return Err(Error::NotAllowed {
                saga: id.to_string(),
                request: command.name(),
                reason: format!(
                    "it is {}; only a saga that needs intervention takes operator commands",
                    state.status.name()
                ),
            });
        }
        self.feed(id, &instance, SagaEvent::Operator { command }, now)
            .map(drop)
    }

    /// Saga `id`'s state, if it is held.
    fn held(&self, id: &SagaId, instance: &InstanceId) -> Result<&SagaState, Error> {
        self.driver
            .state(instance)
            .ok_or_else(|| Error::UnknownSaga {
                saga: id.to_string(),
            })
    }

    /// Feeds `event` to held saga `id` on the driver, then collects what it caused.
    fn feed(
        &mut self,
        id: &SagaId,
        instance: &InstanceId,
        event: SagaEvent,
        now: Timestamp,
    ) -> Result<bool, Error> {
        let recorded = self.driver.handle(instance, event, now);
        self.collect(id, instance);
        recorded.map_err(|e| saga_error(id, e))
    }

    /// Moves what the driver's last steps of saga `id` caused into the saga batch, in
    /// the saga's terms: calls named by their attempt, saga timers, notifications and
    /// dead letters, and the saga's status where a record brought it to rest. Called
    /// after every request, whether it succeeded or not: what the records already in the
    /// batch caused goes out once they are committed.
    fn collect(&mut self, id: &SagaId, instance: &InstanceId) {
        let mut effects = std::mem::take(&mut self.spare);
        self.driver.swap_effects(&mut effects);
        self.driver.reducer().take_calls(&mut self.calls);
        let mut noted = 0;
        for (_, intent) in effects.perform.drain(..) {
            match intent.kind {
                IntentKind::Notify { envelope, .. } => {
                    self.batch.notifications.push(*envelope);
                }
                IntentKind::Persist { stream, events, .. }
                    if stream.as_str() == crate::requests::DEAD_LETTER_STREAM =>
                {
                    self.batch.dead_letters.extend(events);
                }
                _ => {
                    // The calls of the steps, in order, as `Sagas` noted their attempts;
                    // by id if the order were ever off.
                    let found = match self.calls.get(noted) {
                        Some(&(call, ..)) if call == intent.id => Some(noted),
                        _ => self.calls.iter().position(|&(call, ..)| call == intent.id),
                    };
                    let Some(index) = found else {
                        // Not a call of any attempt: a bug, said loudly rather than
                        // sent under a guessed attempt. Its saga waits for its timeout
                        // or a restart, which sends its calls again.
                        tracing::error!(saga = %id, intent = %intent.id, kind = intent.kind.family(), "a saga intent names no attempt; it is not performed");
                        debug_assert!(false, "a saga intent names no attempt");
                        continue;
                    };
                    noted = index + 1;
                    let (_, step, phase, attempt) = self.calls[index];
                    let call = StepCall {
                        step,
                        phase,
                        attempt,
                        intent,
                    };
                    self.batch.calls.push((id.clone(), call));
                }
            }
        }
        for (_, change) in effects.timers.drain(..) {
            let parse = |timer: &keel_core::TimerId| timer.as_str().parse::<SagaTimer>().ok();
            match change {
                TimerChange::Set { timer, due, .. } => {
                    if let Some(timer) = parse(&timer) {
                        self.batch.timers.push((id.clone(), timer, due));
                    }
                }
                TimerChange::Cancel { timer } => {
                    if let Some(timer) = parse(&timer) {
                        self.batch.cancelled.push((id.clone(), timer));
                    }
                }
            }
        }
        // The driver reports each record that brought the saga to rest (parked or
        // finished), so a saga parked again by the follow-up of an operator's retry is
        // reported again.
        if !effects.settled.is_empty()
            && let Some(state) = self.driver.state(instance)
        {
            for _ in effects.settled.drain(..) {
                self.batch.settled.push((id.clone(), state.status.clone()));
            }
        }
        effects.settled.clear();
        self.spare = effects;
    }

    /// How many timers the batch built so far sets (before its cancellations).
    pub(crate) fn timers_to_set(&self) -> usize {
        self.batch.timers.len()
    }

    /// Takes the batch built so far, leaving an empty one.
    pub fn take_batch(&mut self) -> Batch {
        let driven = self.driver.take_batch();
        debug_assert!(driven.perform.is_empty() && driven.timers.is_empty());
        let mut batch = std::mem::take(&mut self.batch);
        batch.appends = driven
            .appends
            .into_iter()
            .map(|append| SagaAppend {
                // The id was checked when the saga started; its correlation is the
                // driver's.
                saga: SagaId::from_parts(append.instance.shared(), append.correlation),
                stream: append.stream,
                expected: append.expected,
                records: append.records,
            })
            .collect();
        batch
    }

    /// Drops saga `id` from memory (after its append failed: the engine ran ahead of the
    /// log). [`restore`](Self::restore) it from the store to go on.
    pub fn forget(&mut self, id: &SagaId) {
        self.driver.forget(&instance(id));
    }

    /// Rebuilds saga `id` from its log records `(version, envelope)`, in order, and holds
    /// it if it has not finished (or finished sagas are retained). Returns its state if
    /// it is held.
    pub fn restore<'a>(
        &mut self,
        id: &SagaId,
        records: impl IntoIterator<Item = (u64, &'a Envelope)>,
    ) -> Result<Option<&SagaState>, Error> {
        let instance = instance(id);
        self.driver.forget(&instance);
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
        Ok(self.driver.state(&instance))
    }

    /// Applies one record of saga `id`'s log while rebuilding it: record 1 creates the
    /// saga, each later one must follow the last. Lets recovery fold a whole store in one
    /// pass without holding every record. Returns where the saga stands after the
    /// record, as the driver sees it (running, parked or finished); a finished saga is
    /// then no longer held, unless finished sagas are retained.
    pub fn restore_record(
        &mut self,
        id: &SagaId,
        version: u64,
        envelope: &Envelope,
    ) -> Result<Status, Error> {
        let instance = instance(id);
        self.driver
            .restore_record(&instance, version, envelope)
            .map_err(|e| {
                if version == 1
                    && let Ok(saga_type) = crate::log::saga_type_of(id, envelope)
                    && self.reducer(&saga_type).is_none()
                {
                    return Error::UnknownSagaType {
                        saga_type: saga_type.to_string(),
                    };
                }
                saga_error(id, e)
            })
    }

    /// Adds to the batch every call in flight and every pending timer of every saga held:
    /// what a restart must pick up again. Sagas with attempts in flight first record
    /// [`SagaEvent::Recovered`]: the deliveries from before the restart may still take
    /// effect, so their steps count as maybe applied until a definite answer.
    pub fn resume(&mut self, now: Timestamp) {
        // In id order: the same log must give the same batch, record for record.
        let mut ids: Vec<SagaId> = self
            .driver
            .instances()
            .map(|(_, state)| state.id.clone())
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.resume_one(&id, now);
        }
    }

    /// Like [`resume`](Self::resume), for one saga. A call that cannot be built again
    /// (its closure now panics) fails its attempt for good; the step stays maybe applied,
    /// so the saga parks, naming it.
    pub fn resume_one(&mut self, id: &SagaId, now: Timestamp) {
        let instance = instance(id);
        match self.driver.state(&instance) {
            Some(state) if !state.status.is_finished() => {}
            _ => return,
        }
        // An error here means the saga is not held: nothing to resume.
        let _ = self.feed(id, &instance, SagaEvent::Recovered, now);
        // An error drops the saga, to be restored from its log.
        let _ = self.driver.resume_one(&instance, now);
        self.collect(id, &instance);
    }

    /// The state of saga `id`, if it is held (it has not finished, or finished sagas are
    /// retained).
    pub fn state(&self, id: &SagaId) -> Option<&SagaState> {
        self.driver.state(&instance(id))
    }

    /// The version of saga `id`'s log (its records, committed or in the current batch),
    /// if it is held.
    pub fn version(&self, id: &SagaId) -> Option<u64> {
        self.driver.version(&instance(id))
    }

    /// The sagas held, in no particular order.
    pub fn sagas(&self) -> impl Iterator<Item = &SagaState> {
        self.driver.instances().map(|(_, state)| state)
    }

    /// How many sagas are held.
    pub fn len(&self) -> usize {
        self.driver.len()
    }

    /// Whether no saga is held.
    pub fn is_empty(&self) -> bool {
        self.driver.is_empty()
    }
}

/// Saga `id` as the driver names its instance.
fn instance(id: &SagaId) -> InstanceId {
    InstanceId::new(id.shared())
}

/// A driver's error about saga `id`, in the orchestrator's terms.
fn saga_error(id: &SagaId, error: keel_core::Error) -> Error {
    match error {
        keel_core::Error::UnknownInstance { .. } => Error::UnknownSaga {
            saga: id.to_string(),
        },
        keel_core::Error::Diverged {
            version, reason, ..
        }
        | keel_core::Error::RecordDecode {
            version, reason, ..
        } => Error::CorruptLog {
            saga: id.to_string(),
            version,
            reason,
        },
        e => Error::Core(e),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::definition::{Step, StepAction};
    use crate::saga::Answer;
    use keel_core::{Failure, Payload};

    /// A two-step saga whose second step fails for good, so that it compensates.
    fn compensating() -> (Engine, SagaId, Vec<Envelope>) {
        let definition = SagaDefinition::builder("t")
            .step(
                Step::new("a", |_| StepAction::custom("a", json!({})))
                    .compensate(|_| StepAction::custom("undo", json!({}))),
            )
            .step(Step::new("b", |_| StepAction::custom("b", json!({}))))
            .build()
            .unwrap();
        let mut engine = Engine::new();
        engine.register(Arc::new(definition));
        let id = SagaId::new("s-1").unwrap();
        let now = Timestamp::from_unix_millis(1);
        let mut log = Vec::new();
        let saga_type = SagaType::new("t").unwrap();
        engine
            .start(&saga_type, id.clone(), json!({}), now)
            .unwrap();
        let answers = [
            Answer::Succeeded { value: json!(1) },
            Answer::Failed(Failure::permanent("no")),
        ];
        for answer in answers {
            let batch = engine.take_batch();
            log.extend(batch.appends.into_iter().flat_map(|append| append.records));
            let (_, call) = &batch.calls[0];
            let event = SagaEvent::Answered {
                step: call.step,
                phase: call.phase,
                attempt: call.attempt,
                answer,
            };
            assert!(engine.handle(&id, event, now).unwrap());
        }
        let batch = engine.take_batch();
        log.extend(batch.appends.into_iter().flat_map(|append| append.records));
        let status = engine.state(&id).map(|state| state.status.name());
        assert_eq!(status, Some("compensating"));
        (engine, id, log)
    }

    #[test]
    fn a_replay_that_reaches_another_saga_status_than_its_log_is_refused() {
        let (mut engine, id, mut log) = compensating();
        fn records(log: &[Envelope]) -> impl Iterator<Item = (u64, &Envelope)> {
            log.iter().zip(1..).map(|(e, v)| (v, e))
        }
        assert!(engine.restore(&id, records(&log)).unwrap().is_some());
        // The last record says compensating; make it say running, as a log written by a
        // definition that retried the failure would.
        let last = log.last_mut().unwrap();
        let Payload::Binary(bytes) = &last.payload else {
            panic!("saga records are JSON bytes");
        };
        let text = String::from_utf8(bytes.clone()).unwrap();
        let from = text
            .find(r#""status":{"status":"compensating""#)
            .unwrap_or_else(|| panic!("{text}"));
        let to = from + text[from..].find('}').unwrap() + 1;
        let changed = format!(
            r#"{}"status":{{"status":"running"}}{}"#,
            &text[..from],
            &text[to..]
        );
        last.payload = Payload::Binary(changed.into_bytes());
        let refused = engine.restore(&id, records(&log));
        assert!(
            matches!(&refused, Err(Error::CorruptLog { version: 3, reason, .. })
                if reason.contains("`compensating`") && reason.contains("`running`")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_replay_that_gives_another_reason_than_its_log_is_refused() {
        let (mut engine, id, mut log) = compensating();
        // The same status with another reason, as a definition whose step was renamed
        // would have recorded.
        let last = log.last_mut().unwrap();
        let Payload::Binary(bytes) = &last.payload else {
            panic!("saga records are JSON bytes");
        };
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("step `b` failed"), "{text}");
        let changed = text.replace("step `b` failed", "step `c` failed");
        last.payload = Payload::Binary(changed.into_bytes());
        let records = log.iter().zip(1..).map(|(e, v)| (v, e));
        let refused = engine.restore(&id, records);
        assert!(
            matches!(&refused, Err(Error::CorruptLog { version: 3, reason, .. })
                if reason.contains("step `b` failed") && reason.contains("step `c` failed")),
            "{refused:?}"
        );
    }
}
