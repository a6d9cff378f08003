//! The durable driver: many instances of one reducer, each with a log that is its outbox.
//!
//! Sans-IO like the reducer it runs: no store, no clock, no tasks. A shell (the tokio
//! one in `keel-effects`, or a test's simulation) feeds it events, commits the records
//! it produces and performs the intents those records caused; the crate docs give the
//! contract step by step (see [the driver contract](crate#the-driver-contract)).
//!
//! What the driver keeps per instance is the reducer's state plus two things the reducer
//! does not have to track itself: the intents in flight (emitted, outcome not yet
//! recorded) and the pending timers. Both are rebuilt by replaying the log, so a restart
//! performs again exactly what was in flight, under the same ids, and re-arms each timer
//! for the time it was set for.
//!
//! ```
//! use keel_core::driver::{Driver, Durable, Status};
//! use keel_core::{Input, Intent, IntentKind, Outcome, Reducer, Timestamp, TimerId};
//! use serde::{Deserialize, Serialize};
//!
//! /// Counts up to three, one tick a second.
//! struct Countdown;
//!
//! #[derive(Clone, Serialize, Deserialize)]
//! enum Event { Go, Done(Outcome) }
//! impl From<Outcome> for Event {
//!     fn from(outcome: Outcome) -> Self { Event::Done(outcome) }
//! }
//!
//! impl Reducer for Countdown {
//!     type State = u32;
//!     type Action = Input<Event>;
//!     fn reduce_into(&self, ticks: &mut u32, action: Input<Event>, intents: &mut Vec<Intent>) {
//!         if matches!(action.body, Event::Done(_)) {
//!             *ticks += 1;
//!         }
//!         if *ticks < 3 {
//!             let due = action.now.plus_millis(1_000);
//!             let timer = TimerId::from_static("tick");
//!             action.cause.emitter(intents).emit(IntentKind::ScheduleTimer { timer, due });
//!         }
//!     }
//! }
//!
//! impl Durable for Countdown {
//!     type Event = Event;
//!     fn kind(&self) -> &str { "countdown" }
//!     fn status(&self, ticks: &u32) -> Status {
//!         if *ticks < 3 { Status::Running } else { Status::Finished }
//!     }
//! }
//!
//! let mut driver = Driver::new(Countdown).unwrap();
//! let id = "c-1".into();
//! driver.start(&id, 0, Event::Go, Timestamp::UNIX_EPOCH).unwrap();
//! let batch = driver.take_batch();
//! assert_eq!(batch.record_count(), 1);
//! // Commit `batch.appends`, then set `batch.timers`; when one fires:
//! let (timer, intent) = match &batch.timers[0].1 {
//!     keel_core::driver::TimerChange::Set { timer, intent, .. } => (timer.clone(), *intent),
//!     _ => unreachable!(),
//! };
//! assert!(driver.fire(&id, &timer, intent, Timestamp::from_unix_millis(1_000)).unwrap());
//! assert_eq!(driver.state(&id), Some(&1));
//! ```

mod record;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use record::{
    RECORD_SCHEMA, RECORD_SCHEMA_MIN, RECORD_SOURCE, RECORD_TYPE, Record, RecordStep, Snapshot,
};

use crate::envelope::Envelope;
use crate::error::Error;
use crate::id::{CausationId, CorrelationId, EventId, InstanceId, IntentId, StreamId, TimerId};
use crate::intent::{Intent, IntentKind};
use crate::mark::InstanceMark;
use crate::outcome::{Outcome, OutcomeResult};
use crate::reducer::{Cause, Input, Reducer};
use crate::time::Timestamp;

/// The hasher of a driver's maps of instances unless its shell picks another: SipHash
/// with fixed keys, so the core draws no randomness. A shell that holds ids from
/// untrusted callers picks a randomly seeded one (the orchestrator does).
pub type FixedHasher = BuildHasherDefault<DefaultHasher>;

/// How often a record carries a snapshot of its instance, unless the reducer says.
pub const SNAPSHOT_EVERY_DEFAULT: u64 = 100;

/// The most intents one step may emit, unless [`Driver::set_intents_per_step_max`] says.
pub const INTENTS_PER_STEP_MAX_DEFAULT: usize = 1_024;

/// The longest instance id, in bytes.
pub const INSTANCE_ID_BYTES_MAX: usize = 200;

/// The longest reducer kind, in bytes.
pub const KIND_BYTES_MAX: usize = 64;

/// A reducer the driver can run durably: its state and events serialise, outcomes of
/// its intents come back to it as events, and it says when an instance has ended.
pub trait Durable:
    Reducer<State: Clone + Serialize + DeserializeOwned, Action = Input<<Self as Durable>::Event>>
{
    /// What the instances react to; an intent's outcome becomes one.
    type Event: From<Outcome> + Clone + Serialize + DeserializeOwned;

    /// The name of this kind of instance (`equipment`), recorded in each instance's
    /// first record and prefixed to its stream: lowercase ASCII letters, digits and
    /// `._`, at most [`KIND_BYTES_MAX`] bytes.
    fn kind(&self) -> &str;

    /// Where an instance stands: running, parked for an operator with a reason, or
    /// finished (then the driver drops it from memory once nothing of it is in flight;
    /// its log stays).
    fn status(&self, state: &Self::State) -> Status;

    /// Every how many records one carries a snapshot of the instance (0: never), so a
    /// restore reads from there. Default [`SNAPSHOT_EVERY_DEFAULT`].
    fn snapshot_every(&self) -> u64 {
        SNAPSHOT_EVERY_DEFAULT
    }

    // What follows has defaults that fit a reducer written against `Reducer` alone. A
    // reducer that keeps more in its state (a saga knows its attempts and timers) or
    // has a log format of its own overrides some of them.

    /// Reduces one step (see [`StepInput`]). Returns whether the step changed the
    /// instance; one that changed nothing and emitted nothing (a duplicate answer, a
    /// stale timer) is not recorded, and must leave the state as it was.
    ///
    /// Default: [`reduce_into`](Reducer::reduce_into) with a copy of the event, which
    /// always counts as a change.
    fn step(
        &self,
        state: &mut Self::State,
        step: StepInput<'_, Self::Event>,
        effects: &mut Effects<Self::Event>,
    ) -> bool {
        let action = Input::new(step.cause, step.now, step.event.clone());
        self.reduce_into(state, action, &mut effects.intents);
        true
    }

    /// Whether the state itself knows which of its intents are in flight and which of
    /// its timers are pending, and so can say it in [`in_flight`](Self::in_flight)
    /// (a saga's steps know their attempts). The driver then keeps no copy of them,
    /// passes every outcome and firing to [`step`](Self::step) (which ignores a stale
    /// one) and ends an instance as soon as it finishes. Default `false`: the driver
    /// keeps them.
    fn tracks_in_flight(&self) -> bool {
        false
    }

    /// For a reducer that [tracks its intents in flight](Self::tracks_in_flight):
    /// what a restored instance has out or due, as intents (timers as
    /// [`IntentKind::ScheduleTimer`]), under the ids they had, and answers it gives
    /// itself in [`Effects::then`]. Default: nothing.
    fn in_flight(&self, _state: &Self::State, _effects: &mut Effects<Self::Event>) {}

    /// The correlation id of instance `id`'s records and intents. Default: derived from
    /// its stream's name.
    fn correlation(&self, id: &InstanceId) -> CorrelationId {
        CorrelationId::of_name(&format!("{}-{id}", self.kind()))
    }

    /// The kind the store's index files instance `state` under. Default
    /// [`kind`](Self::kind); a reducer that runs several definitions names the one.
    fn kind_of<'a>(&'a self, _state: &'a Self::State) -> &'a str {
        self.kind()
    }

    /// The status the store's index shows for instance `state`, from a fixed set of
    /// names. Default the [`Status`]'s name; a reducer may tell finer stages apart
    /// (`compensating`).
    fn status_name(&self, state: &Self::State) -> &'static str {
        self.status(state).name()
    }

    /// What a reducer's own log format records of a status beyond its name (a reason),
    /// which a replay compares with [`Record::status_detail`]. Default `None`.
    fn status_detail(&self, _state: &Self::State) -> Option<String> {
        None
    }

    /// The envelope of record `version` of instance `id`, whose state after the step is
    /// `state` and whose step added `notes`. Default: [`Record::encode`], the driver's
    /// own format, which does not keep notes.
    ///
    /// # Errors
    ///
    /// [`Error::RecordDecode`] if the record cannot be encoded.
    #[allow(clippy::too_many_arguments)]
    fn encode_record(
        &self,
        id: &InstanceId,
        correlation: CorrelationId,
        version: u64,
        now: Timestamp,
        record: &Record<Self::State, Self::Event>,
        _notes: &[u8],
        _state: &Self::State,
    ) -> Result<Envelope, Error> {
        record.encode(id, correlation, version, now)
    }

    /// Reads record `version` of instance `id` back from its envelope. Default:
    /// [`Record::decode`].
    ///
    /// # Errors
    ///
    /// [`Error::RecordDecode`] for an envelope that is not such a record.
    fn decode_record(
        &self,
        id: &InstanceId,
        version: u64,
        envelope: &Envelope,
    ) -> Result<Record<Self::State, Self::Event>, Error> {
        Record::decode(id, version, envelope)
    }
}

/// One step as the driver hands it to [`Durable::step`].
#[derive(Debug)]
pub struct StepInput<'a, E> {
    /// What the step reduces.
    pub event: &'a E,
    /// The ids its intents derive from: the instance's correlation, and the id of the
    /// record the step makes.
    pub cause: Cause,
    /// When it happens: the record's time.
    pub now: Timestamp,
    /// The version of the record in the instance's log.
    pub version: u64,
    /// Whether the step is replayed from the log to rebuild the instance: its intents
    /// are only counted, and its notes and follow-ups are not used (the log holds the
    /// follow-ups as records of their own).
    pub replaying: bool,
}

/// The most follow-up events ([`Effects::then`]) one step and the steps they lead to
/// may feed an instance.
pub const FOLLOW_UPS_MAX: usize = 1_024;

/// What one step caused, as the driver collects it from [`Durable::step`].
#[derive(Debug)]
pub struct Effects<E> {
    /// The intents it emitted, in order.
    pub intents: Vec<Intent>,
    /// JSON the step adds to its record for readers of the log (a saga's timeline), for
    /// a reducer with a log format of its own ([`Durable::encode_record`]).
    pub notes: Vec<u8>,
    /// Events to feed the instance right after this step, each a step and a record of
    /// its own: an answer the reducer gives itself, which a replay then reads from the
    /// log instead of computing it again.
    pub then: Vec<E>,
}

impl<E> Default for Effects<E> {
    fn default() -> Self {
        Self {
            intents: Vec::new(),
            notes: Vec::new(),
            then: Vec::new(),
        }
    }
}

impl<E> Effects<E> {
    /// Empties the buffers, keeping their capacity.
    pub fn clear(&mut self) {
        self.intents.clear();
        self.notes.clear();
        self.then.clear();
    }

    /// Whether the step caused nothing: no intent, no follow-up.
    pub fn is_empty(&self) -> bool {
        self.intents.is_empty() && self.then.is_empty()
    }
}

/// Where an instance stands, as its reducer says after each step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It goes on by itself: events, outcomes and timers move it.
    Running,
    /// It waits for an operator; the reason says what for. It still takes events (an
    /// operator's decision is one).
    Parked {
        /// What the operator is asked to look at.
        reason: String,
    },
    /// It ended. It takes no more events or timers; the driver holds it only until the
    /// intents it has in flight are answered (recording those outcomes without reducing
    /// them), then drops it, and later outcomes for it are refused.
    Finished,
}

impl Status {
    /// Whether the instance ended.
    pub const fn is_finished(&self) -> bool {
        matches!(self, Self::Finished)
    }

    /// Whether the instance is parked for an operator.
    pub const fn is_parked(&self) -> bool {
        matches!(self, Self::Parked { .. })
    }

    /// A lowercase name: `running`, `parked`, `finished`.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Parked { .. } => "parked",
            Self::Finished => "finished",
        }
    }
}

/// The records one instance appends in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Append {
    /// The instance.
    pub instance: InstanceId,
    /// Its stream ([`Driver::stream`]).
    pub stream: StreamId,
    /// The correlation id of its records ([`Durable::correlation`]).
    pub correlation: CorrelationId,
    /// The stream version the append expects (0: the stream must not exist).
    pub expected: u64,
    /// The records, in order.
    pub records: Vec<Envelope>,
}

/// A change to an instance's pending timers, in the order the steps made them.
#[derive(Debug, Clone, PartialEq)]
pub enum TimerChange {
    /// Set (or reset) the timer for `due`; fire it with [`Driver::fire`] and `intent`.
    Set {
        /// The timer's name within the instance.
        timer: TimerId,
        /// When it is due.
        due: Timestamp,
        /// The intent that set it: a stale firing (of a timer set again since) names
        /// another and is refused.
        intent: IntentId,
    },
    /// Drop the timer if it is pending.
    Cancel {
        /// The timer's name within the instance.
        timer: TimerId,
    },
}

/// What to commit, then what to do once it is committed.
#[derive(Debug, Default)]
pub struct Batch {
    /// Records to append, one entry per instance. Commit them all before anything else.
    pub appends: Vec<Append>,
    /// Intents to perform, once the appends are committed; report each outcome with
    /// [`Driver::outcome`].
    pub perform: Vec<(InstanceId, Intent)>,
    /// Timer changes, in order, once the appends are committed.
    pub timers: Vec<(InstanceId, TimerChange)>,
    /// Instances that came to rest (finished or parked) in this batch.
    pub settled: Vec<(InstanceId, Status)>,
    /// Instances whose record at this version carries a snapshot.
    pub snapshots: Vec<(InstanceId, u64)>,
}

impl Batch {
    /// Whether there is nothing to commit or do.
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
            && self.perform.is_empty()
            && self.timers.is_empty()
            && self.settled.is_empty()
    }

    /// How many records it appends.
    pub fn record_count(&self) -> usize {
        self.appends.iter().map(|append| append.records.len()).sum()
    }
}

/// Which record a [point-in-time rebuild](Driver::rebuild) stops at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The last record.
    Latest,
    /// Record `version`, or the last before it if the log is shorter.
    Version(u64),
    /// The last record written at or before this time.
    Time(Timestamp),
}

/// An instance as rebuilt from its log.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebuilt<S> {
    /// The state, intents in flight and pending timers.
    pub instance: Snapshot<S>,
    /// The version of the last record folded in.
    pub version: u64,
    /// When that record was written.
    pub time: Timestamp,
    /// The status it recorded.
    pub status: Status,
}

/// One instance the driver holds.
#[derive(Debug)]
struct Live<S> {
    state: S,
    correlation: CorrelationId,
    /// Records in its log, committed or in the current batch.
    version: u64,
    status: Status,
    /// Its intents in flight and pending timers, once it has any (`None` for the
    /// instances of a reducer that tracks them itself): an idle instance costs a
    /// pointer for them, not two maps.
    pending: Option<Box<Pending>>,
}

/// What the driver keeps of an instance's intents in flight and pending timers.
#[derive(Debug, Default)]
struct Pending {
    in_flight: BTreeMap<IntentId, Intent>,
    timers: BTreeMap<TimerId, (Timestamp, IntentId)>,
}

/// The [`Pending`] of an instance that has none.
static NONE_PENDING: Pending = Pending {
    in_flight: BTreeMap::new(),
    timers: BTreeMap::new(),
};

impl<S: Clone> Live<S> {
    /// Its intents in flight and pending timers.
    fn pending(&self) -> &Pending {
        self.pending.as_deref().unwrap_or(&NONE_PENDING)
    }

    /// Its intents in flight and pending timers, to change (made on first use).
    fn pending_mut(&mut self) -> &mut Pending {
        self.pending.get_or_insert_with(Box::default)
    }

    /// Whether it is over: finished, with no intent of it left in flight. A finished
    /// instance whose last steps' intents are not answered yet is still held, so that a
    /// restart performs them again; their outcomes are recorded but not reduced.
    fn ended(&self) -> bool {
        self.status.is_finished() && self.pending().in_flight.is_empty()
    }

    /// After a record of schema version 1 that finished the instance: that keel dropped
    /// it there, with whatever was in flight, and so does a replay of its log.
    fn end_if_legacy(&mut self, schema: u32) {
        if schema < 2 && self.status.is_finished() {
            self.pending = None;
        }
    }

    fn new(state: S, correlation: CorrelationId) -> Self {
        Self {
            state,
            correlation,
            version: 0,
            status: Status::Running,
            pending: None,
        }
    }

    fn from_snapshot(snapshot: Snapshot<S>, correlation: CorrelationId, version: u64) -> Self {
        Self {
            state: snapshot.state,
            correlation,
            version,
            status: Status::Running,
            pending: (!snapshot.in_flight.is_empty() || !snapshot.timers.is_empty()).then(|| {
                Box::new(Pending {
                    in_flight: snapshot
                        .in_flight
                        .into_iter()
                        .map(|intent| (intent.id, intent))
                        .collect(),
                    timers: snapshot
                        .timers
                        .into_iter()
                        .map(|(timer, due, intent)| (timer, (due, intent)))
                        .collect(),
                })
            }),
        }
    }

    fn snapshot(&self) -> Snapshot<S> {
        Snapshot {
            state: self.state.clone(),
            in_flight: self.pending().in_flight.values().cloned().collect(),
            timers: self
                .pending()
                .timers
                .iter()
                .map(|(timer, (due, intent))| (timer.clone(), *due, *intent))
                .collect(),
        }
    }
}

/// Many instances of one durable reducer, and the batch being built.
///
/// Instances are held by id in a hash map whose hasher the shell picks (by default one
/// with fixed keys: the core draws no randomness), and [`resume`](Driver::resume) walks
/// them in id order: the same inputs give the same batches,
/// record for record, whatever the platform's hasher.
#[derive(Debug)]
pub struct Driver<R: Durable, H = FixedHasher> {
    reducer: R,
    /// Boxed: a table slot then holds a key and a pointer, and the table, which grows by
    /// doubling, stays a small part of what each instance costs.
    live: HashMap<InstanceId, Box<Live<R::State>>, H>,
    batch: Batch,
    /// Where each instance's append sits in `batch.appends`.
    appending: HashMap<InstanceId, usize, H>,
    /// Instances that finished in the current batch: dropped when it is taken.
    finished: Vec<InstanceId>,
    scratch: Effects<R::Event>,
    intents_per_step_max: usize,
    retain_finished: bool,
}

impl<R: Durable> Driver<R> {
    /// A driver of `reducer`'s instances, holding none yet, whose maps use the
    /// [`FixedHasher`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidId`] if the reducer's [`kind`](Durable::kind) is not a valid name.
    pub fn new(reducer: R) -> Result<Self, Error> {
        Self::with_hasher(reducer)
    }
}

impl<R: Durable, H: BuildHasher + Default> Driver<R, H> {
    /// A driver of `reducer`'s instances, holding none yet, whose maps of instances use
    /// hasher `H`.
    ///
    /// # Errors
    ///
    /// As [`new`](Driver::new).
    pub fn with_hasher(reducer: R) -> Result<Self, Error> {
        check_kind(reducer.kind())?;
        Ok(Self {
            reducer,
            live: HashMap::default(),
            batch: Batch::default(),
            appending: HashMap::default(),
            finished: Vec::new(),
            scratch: Effects::default(),
            intents_per_step_max: INTENTS_PER_STEP_MAX_DEFAULT,
            retain_finished: false,
        })
    }

    /// The reducer.
    pub fn reducer(&self) -> &R {
        &self.reducer
    }

    /// The reducer, to change its settings.
    pub fn reducer_mut(&mut self) -> &mut R {
        &mut self.reducer
    }

    /// Moves what the batch built so far says to perform, set and report (its
    /// [`perform`](Batch::perform), [`timers`](Batch::timers) and
    /// [`settled`](Batch::settled)) into `spare`, whose buffers must be empty, leaving
    /// the records to commit: for a shell that names each step's effects in its own terms
    /// as it goes (the buffers swap, so once grown nothing is allocated). They are still
    /// only to be carried out once the batch's appends are committed.
    pub fn swap_effects(&mut self, spare: &mut Batch) {
        debug_assert!(spare.is_empty(), "the spare buffers are empty");
        std::mem::swap(&mut self.batch.perform, &mut spare.perform);
        std::mem::swap(&mut self.batch.timers, &mut spare.timers);
        std::mem::swap(&mut self.batch.settled, &mut spare.settled);
    }

    /// Sets the most intents one step may emit (at least 1).
    pub fn set_intents_per_step_max(&mut self, max: usize) {
        self.intents_per_step_max = max.max(1);
    }

    /// Whether finished instances stay in memory (for tests and inspection). They take no
    /// more steps either way.
    pub fn set_retain_finished(&mut self, retain: bool) {
        self.retain_finished = retain;
    }

    /// The stream that holds `instance`'s log: `{kind}-{instance}`.
    pub fn stream(&self, instance: &InstanceId) -> StreamId {
        stream_of(self.reducer.kind(), instance)
    }

    /// The instance whose log `stream` is, if it is one of this reducer's.
    pub fn instance_of(&self, stream: &StreamId) -> Option<InstanceId> {
        let rest = stream.as_str().strip_prefix(self.reducer.kind())?;
        let id = rest.strip_prefix('-')?;
        check_instance(id).ok()?;
        Some(InstanceId::from(id))
    }

    /// Starts instance `id` in `state` with `event`: its first record.
    ///
    /// An instance that finished earlier is not held here; its id is caught when the
    /// append (which expects a new stream) conflicts.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidId`] for an id that is not 1 to [`INSTANCE_ID_BYTES_MAX`] bytes of
    /// ASCII letters, digits and `-_.:`; [`Error::InstanceExists`] if it is held;
    /// [`Error::TooManyIntents`] if the step emits too many (nothing is kept).
    pub fn start(
        &mut self,
        id: &InstanceId,
        state: R::State,
        event: R::Event,
        now: Timestamp,
    ) -> Result<(), Error> {
        check_instance(id.as_str())?;
        if self.live.contains_key(id) {
            return Err(Error::InstanceExists {
                instance: id.to_string(),
            });
        }
        let correlation = self.reducer.correlation(id);
        let initial = state.clone();
        self.live
            .insert(id.clone(), Box::new(Live::new(state, correlation)));
        self.step(id, RecordStep::Event(event), Some(initial), now)
            .map(drop)
    }

    /// Feeds `event` to instance `id`: one record, unless the step changed nothing
    /// (see [`Durable::step`]), and one per follow-up event it led to. Returns whether
    /// anything was recorded.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownInstance`] if it is not held (never started, or finished);
    /// [`Error::TooManyIntents`] if the step emits too many, or leads to more than
    /// [`FOLLOW_UPS_MAX`] follow-up events: the instance is then dropped from memory, to
    /// be [restored](Self::restore) from its log as it was.
    pub fn handle(
        &mut self,
        id: &InstanceId,
        event: R::Event,
        now: Timestamp,
    ) -> Result<bool, Error> {
        self.held(id)?;
        self.step(id, RecordStep::Event(event), None, now)
    }

    /// Reports what became of intent `outcome.intent` of instance `id`; returns whether
    /// it was in flight (and is now recorded; for a reducer that
    /// [tracks its intents](Durable::tracks_in_flight), whether anything was recorded).
    /// An outcome of an intent that is not in flight (reported already, or from before a
    /// restart that re-sent it) is ignored: each intent's outcome is reduced once.
    ///
    /// An instance that finished with intents in flight (its last step released a
    /// device, say) is held until each is answered: the outcomes are recorded, not
    /// reduced, and the instance is dropped with the last of them. Until then a restart
    /// performs them again.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownInstance`] if it is not held (never started, or finished with
    /// nothing in flight).
    pub fn outcome(
        &mut self,
        id: &InstanceId,
        outcome: Outcome,
        now: Timestamp,
    ) -> Result<bool, Error> {
        // A timer's firing comes through `fire`, which checks that it is still set.
        let timer = matches!(outcome.result, OutcomeResult::TimerFired { .. });
        let live = self
            .live
            .get(id)
            .filter(|live| !live.ended())
            .ok_or_else(|| Error::UnknownInstance {
                instance: id.to_string(),
            })?;
        let tracked = self.reducer.tracks_in_flight();
        if timer || !(tracked || live.pending().in_flight.contains_key(&outcome.intent)) {
            return Ok(false);
        }
        self.step(id, RecordStep::Outcome(outcome), None, now)
    }

    /// Fires timer `timer` of instance `id`, set by `intent`; returns whether it was
    /// pending under that intent (and its firing is now recorded; for a reducer that
    /// [tracks its timers](Durable::tracks_in_flight), whether anything was recorded).
    /// A stale firing (the timer was cancelled or set again since) is ignored.
    ///
    /// # Errors
    ///
    /// As [`handle`](Self::handle).
    pub fn fire(
        &mut self,
        id: &InstanceId,
        timer: &TimerId,
        intent: IntentId,
        now: Timestamp,
    ) -> Result<bool, Error> {
        let pending = self.held(id)?.pending().timers.get(timer);
        let tracked = self.reducer.tracks_in_flight();
        if !tracked && pending.map(|&(_, set_by)| set_by) != Some(intent) {
            return Ok(false);
        }
        let outcome = Outcome {
            intent,
            attempts: 0,
            result: OutcomeResult::TimerFired {
                timer: timer.clone(),
            },
        };
        self.step(id, RecordStep::Outcome(outcome), None, now)
    }

    /// Instance `id`, if it takes events and timers. One that finished is still held
    /// until its batch is taken and its intents in flight are answered (or for good, if
    /// finished instances are retained) but takes none: past the record that finished
    /// it, its log holds only those outcomes, which is what a restore expects.
    fn held(&self, id: &InstanceId) -> Result<&Live<R::State>, Error> {
        self.live
            .get(id)
            .map(|live| &**live)
            .filter(|live| !live.status.is_finished())
            .ok_or_else(|| Error::UnknownInstance {
                instance: id.to_string(),
            })
    }

    /// Reduces one step of held instance `id`, records it (unless it changed nothing)
    /// and adds what it caused to the batch, then does the same for the follow-up
    /// events it asked for. Returns whether anything was recorded.
    fn step(
        &mut self,
        id: &InstanceId,
        step: RecordStep<R::Event>,
        initial: Option<R::State>,
        now: Timestamp,
    ) -> Result<bool, Error> {
        let mut recorded = self.step_one(id, step, initial, now)?;
        if self.scratch.then.is_empty() {
            return Ok(recorded);
        }
        let mut next: std::collections::VecDeque<R::Event> =
            std::mem::take(&mut self.scratch.then).into();
        let mut fed = 0;
        while let Some(event) = next.pop_front() {
            if self.held(id).is_err() {
                break;
            }
            fed += 1;
            if fed > FOLLOW_UPS_MAX {
                self.forget(id);
                return Err(Error::TooManyIntents {
                    limit: FOLLOW_UPS_MAX,
                });
            }
            recorded |= self.step_one(id, RecordStep::Event(event), None, now)?;
            next.extend(self.scratch.then.drain(..));
        }
        Ok(recorded)
    }

    /// One step of [`step`](Self::step), without its follow-ups (left in the scratch).
    fn step_one(
        &mut self,
        id: &InstanceId,
        step: RecordStep<R::Event>,
        initial: Option<R::State>,
        now: Timestamp,
    ) -> Result<bool, Error> {
        let Some(live) = self.live.get_mut(id) else {
            return Err(Error::UnknownInstance {
                instance: id.to_string(),
            });
        };
        let before = live.status.clone();
        let name_before = self.reducer.status_name(&live.state);
        let force = initial.is_some();
        let (recorded, dropped) = advance(
            &self.reducer,
            live,
            &step,
            now,
            &mut self.scratch,
            force,
            false,
        );
        if !recorded {
            return Ok(false);
        }
        if self.scratch.intents.len() > self.intents_per_step_max {
            // The state has moved past what the log says: drop it, so that it is rebuilt
            // from the log as it was.
            self.forget(id);
            return Err(Error::TooManyIntents {
                limit: self.intents_per_step_max,
            });
        }
        let every = self.reducer.snapshot_every();
        let snapshot = (every > 0 && live.version % every == 0).then(|| live.snapshot());
        let snapshotted = snapshot.is_some();
        let record = Record {
            kind: initial.is_some().then(|| self.reducer.kind().to_owned()),
            initial,
            step,
            intents: Some(u32::try_from(self.scratch.intents.len()).unwrap_or(u32::MAX)),
            status: live.status.clone(),
            status_name: None,
            status_detail: None,
            snapshot,
        };
        let version = live.version;
        let notes = &self.scratch.notes;
        let encoded = self.reducer.encode_record(
            id,
            live.correlation,
            version,
            now,
            &record,
            notes,
            &live.state,
        );
        let mut envelope = match encoded {
            Ok(envelope) => envelope,
            Err(e) => {
                self.forget(id);
                return Err(e);
            }
        };
        // The store's index of instances follows the records that start an instance or
        // change where it stands (see `crate::mark`).
        let ended = live.ended();
        let name = self.reducer.status_name(&live.state);
        if version == 1 || live.status != before || name != name_before || ended {
            // Finished with calls still out: `finishing` until the last is answered.
            let status = match &live.status {
                Status::Finished if !ended => "finishing",
                _ => name,
            };
            let kind = self.reducer.kind_of(&live.state);
            InstanceMark::new(kind, status, ended).apply(&mut envelope);
        }
        let status = live.status.clone();
        let slot = match self.appending.get(id) {
            Some(&slot) => slot,
            None => {
                self.batch.appends.push(Append {
                    instance: id.clone(),
                    stream: stream_of(self.reducer.kind(), id),
                    correlation: live.correlation,
                    expected: version - 1,
                    records: Vec::new(),
                });
                let slot = self.batch.appends.len() - 1;
                self.appending.insert(id.clone(), slot);
                slot
            }
        };
        self.batch.appends[slot].records.push(envelope);
        if snapshotted {
            self.batch.snapshots.push((id.clone(), version));
        }
        route(&mut self.batch, id, self.scratch.intents.drain(..));
        for timer in dropped {
            let change = TimerChange::Cancel { timer };
            self.batch.timers.push((id.clone(), change));
        }
        if status != before && (status.is_finished() || status.is_parked()) {
            self.batch.settled.push((id.clone(), status.clone()));
        }
        if live.ended() && !self.retain_finished {
            self.finished.push(id.clone());
        }
        Ok(true)
    }

    /// Takes the batch built so far, leaving an empty one. Instances that finished in it
    /// are dropped from memory now.
    pub fn take_batch(&mut self) -> Batch {
        self.appending.clear();
        for id in self.finished.drain(..) {
            // It may have been started again under the same id since it finished in
            // this batch only if the caller ignored that its append must fail; dropping
            // it is right either way: the store decides.
            self.live.remove(&id);
        }
        std::mem::take(&mut self.batch)
    }

    /// Drops instance `id` from memory (after its append failed: the driver ran ahead of
    /// the log). [`restore`](Self::restore) it from the store to go on.
    pub fn forget(&mut self, id: &InstanceId) {
        self.live.remove(id);
        // Records it already has in the batch stay there (they may be committed); a
        // restored instance's next records go into an append of their own, which the
        // store refuses if those did land.
        self.appending.remove(id);
    }

    /// Rebuilds instance `id` from its log records `(version, envelope)`, in order,
    /// starting at record 1 or at a record that carries a snapshot, and holds it unless
    /// it is over: finished with nothing in flight (or finished instances are retained).
    /// Returns its status.
    ///
    /// # Errors
    ///
    /// [`Error::RecordDecode`] for a record that does not decode, [`Error::Diverged`]
    /// when replaying a record gives other intents or another status than it recorded
    /// (the reducer changed while instances were running), [`Error::UnknownInstance`]
    /// if there are no records. The instance is then not held.
    pub fn restore<'a>(
        &mut self,
        id: &InstanceId,
        records: impl IntoIterator<Item = (u64, &'a Envelope)>,
    ) -> Result<Status, Error> {
        self.live.remove(id);
        let mut status = None;
        for (version, envelope) in records {
            match self.restore_record(id, version, envelope) {
                Ok(now) => status = Some(now),
                Err(e) => {
                    self.live.remove(id);
                    return Err(e);
                }
            }
        }
        status.ok_or_else(|| Error::UnknownInstance {
            instance: id.to_string(),
        })
    }

    /// Applies one record of instance `id`'s log while rebuilding it, so that recovery
    /// can fold a whole store in one pass without holding every record. Record 1, or a
    /// record with a snapshot when the instance is not held, starts it; each later one
    /// must follow the last.
    ///
    /// # Errors
    ///
    /// As [`restore`](Self::restore); the instance is dropped on a divergence.
    pub fn restore_record(
        &mut self,
        id: &InstanceId,
        version: u64,
        envelope: &Envelope,
    ) -> Result<Status, Error> {
        let record = match self.reducer.decode_record(id, version, envelope) {
            Ok(record) => record,
            Err(e) => {
                // The instance cannot be rebuilt: none of it is held.
                self.live.remove(id);
                return Err(e);
            }
        };
        let status = match self.live.get_mut(id) {
            None if record.snapshot.is_some() => {
                let snapshot = record.snapshot.unwrap_or_else(|| unreachable!());
                let correlation = self.reducer.correlation(id);
                let live = Live::from_snapshot(snapshot, correlation, version);
                let status = record.status;
                self.live.insert(
                    id.clone(),
                    Box::new(Live {
                        status: status.clone(),
                        ..live
                    }),
                );
                status
            }
            None => {
                let initial = record.initial.clone().filter(|_| version == 1);
                let Some(initial) = initial else {
                    return Err(diverged(
                        id,
                        version,
                        "the records before it are missing".into(),
                    ));
                };
                let correlation = self.reducer.correlation(id);
                let live = self
                    .live
                    .entry(id.clone())
                    .or_insert_with(|| Box::new(Live::new(initial, correlation)));
                replay(
                    &self.reducer,
                    live,
                    id,
                    version,
                    envelope.time,
                    record,
                    &mut self.scratch,
                )
                .inspect_err(|_| {
                    self.live.remove(id);
                })?
            }
            Some(live) => {
                if version != live.version + 1 {
                    let reason = format!("it follows version {} in the log", live.version);
                    self.live.remove(id);
                    return Err(diverged(id, version, reason));
                }
                match replay(
                    &self.reducer,
                    live,
                    id,
                    version,
                    envelope.time,
                    record,
                    &mut self.scratch,
                ) {
                    Ok(status) => status,
                    Err(e) => {
                        self.live.remove(id);
                        return Err(e);
                    }
                }
            }
        };
        if let Some(live) = self.live.get_mut(id) {
            live.end_if_legacy(envelope.schema_version);
        }
        let ended = self.live.get(id).is_some_and(|live| live.ended());
        if ended && !self.retain_finished {
            self.live.remove(id);
        }
        Ok(status)
    }

    /// Adds to the batch every intent in flight and every pending timer of every
    /// instance held, in id order: what a restart must pick up again, under the ids they
    /// had before. That includes the intents in flight of an instance that finished
    /// with some (a finished instance has no timers). `now` is the time of the records
    /// that answers given at resumption make.
    pub fn resume(&mut self, now: Timestamp) {
        let mut ids: Vec<InstanceId> = self.live.keys().cloned().collect();
        ids.sort_unstable();
        for id in ids {
            // An instance whose follow-ups fail is dropped by `step`, to be restored.
            let _ = self.resume_one(&id, now);
        }
    }

    /// Like [`resume`](Self::resume), for one instance. For a reducer that
    /// [tracks its intents in flight](Durable::tracks_in_flight), its
    /// [`in_flight`](Durable::in_flight) says what to perform and set, and the answers it
    /// gives itself there are fed to the instance next.
    ///
    /// # Errors
    ///
    /// As [`handle`](Self::handle), for those answers.
    pub fn resume_one(&mut self, id: &InstanceId, now: Timestamp) -> Result<(), Error> {
        let Some(live) = self.live.get(id) else {
            return Ok(());
        };
        if self.reducer.tracks_in_flight() {
            self.scratch.clear();
            self.reducer.in_flight(&live.state, &mut self.scratch);
            route(&mut self.batch, id, self.scratch.intents.drain(..));
            for event in std::mem::take(&mut self.scratch.then) {
                if self.held(id).is_err() {
                    break;
                }
                self.step(id, RecordStep::Event(event), None, now)?;
            }
            return Ok(());
        }
        for intent in live.pending().in_flight.values() {
            self.batch.perform.push((id.clone(), intent.clone()));
        }
        for (timer, &(due, intent)) in &live.pending().timers {
            let timer = timer.clone();
            let change = TimerChange::Set { timer, due, intent };
            self.batch.timers.push((id.clone(), change));
        }
        Ok(())
    }

    /// Rebuilds instance `id` as of a record or a time from its whole log, starting at
    /// record 1, without holding it: point-in-time reconstruction. Every record is
    /// replayed (snapshots are not trusted), so it also checks the log.
    ///
    /// # Errors
    ///
    /// As [`restore`](Self::restore); [`Error::UnknownInstance`] if no record is as old
    /// as asked.
    pub fn rebuild<'a>(
        &mut self,
        id: &InstanceId,
        records: impl IntoIterator<Item = (u64, &'a Envelope)>,
        as_of: AsOf,
    ) -> Result<Rebuilt<R::State>, Error> {
        let correlation = self.reducer.correlation(id);
        let mut rebuilt: Option<(Live<R::State>, Timestamp)> = None;
        for (version, envelope) in records {
            let past = match as_of {
                AsOf::Latest => false,
                AsOf::Version(last) => version > last,
                AsOf::Time(last) => envelope.time > last,
            };
            if past {
                break;
            }
            let mut record = self.reducer.decode_record(id, version, envelope)?;
            // Snapshots are not trusted here: the point is to check the whole log.
            record.snapshot = None;
            let live = match &mut rebuilt {
                Some((live, time)) => {
                    if version != live.version + 1 {
                        let reason = format!("it follows version {} in the log", live.version);
                        return Err(diverged(id, version, reason));
                    }
                    *time = envelope.time;
                    live
                }
                None => {
                    let initial = record.initial.clone().filter(|_| version == 1);
                    let Some(initial) = initial else {
                        let reason = "the records before it are missing".into();
                        return Err(diverged(id, version, reason));
                    };
                    &mut rebuilt
                        .insert((Live::new(initial, correlation), envelope.time))
                        .0
                }
            };
            replay(
                &self.reducer,
                live,
                id,
                version,
                envelope.time,
                record,
                &mut self.scratch,
            )?;
            live.end_if_legacy(envelope.schema_version);
        }
        let (live, time) = rebuilt.ok_or_else(|| Error::UnknownInstance {
            instance: id.to_string(),
        })?;
        Ok(Rebuilt {
            instance: live.snapshot(),
            version: live.version,
            time,
            status: live.status,
        })
    }

    /// The state of instance `id`, if it is held.
    pub fn state(&self, id: &InstanceId) -> Option<&R::State> {
        self.live.get(id).map(|live| &live.state)
    }

    /// The status of instance `id`, if it is held.
    pub fn status(&self, id: &InstanceId) -> Option<&Status> {
        self.live.get(id).map(|live| &live.status)
    }

    /// The version of instance `id`'s log (records committed or in the current batch),
    /// if it is held.
    pub fn version(&self, id: &InstanceId) -> Option<u64> {
        self.live.get(id).map(|live| live.version)
    }

    /// The intents of instance `id` in flight, in id order, if it is held.
    pub fn in_flight(&self, id: &InstanceId) -> Option<impl Iterator<Item = &Intent>> {
        self.live
            .get(id)
            .map(|live| live.pending().in_flight.values())
    }

    /// The instance `id` as a [`Snapshot`], if it is held.
    pub fn snapshot(&self, id: &InstanceId) -> Option<Snapshot<R::State>> {
        self.live.get(id).map(|live| live.snapshot())
    }

    /// The instances held, in no particular order (sort them for one that holds across
    /// runs).
    pub fn instances(&self) -> impl Iterator<Item = (&InstanceId, &R::State)> {
        self.live.iter().map(|(id, live)| (id, &live.state))
    }

    /// How many instances are held.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no instance is held.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

/// Puts `intents` of instance `id` into `batch`: timers among its timer changes, the
/// rest to perform.
fn route(batch: &mut Batch, id: &InstanceId, intents: impl Iterator<Item = Intent>) {
    for intent in intents {
        match &intent.kind {
            IntentKind::ScheduleTimer { timer, due } => batch.timers.push((
                id.clone(),
                TimerChange::Set {
                    timer: timer.clone(),
                    due: *due,
                    intent: intent.id,
                },
            )),
            IntentKind::CancelTimer { timer } => batch.timers.push((
                id.clone(),
                TimerChange::Cancel {
                    timer: timer.clone(),
                },
            )),
            _ => batch.perform.push((id.clone(), intent)),
        }
    }
}

/// Reduces `step` on `live`: what it causes is left in `effects`, the instance's intents
/// in flight, timers, version and status move on. The one code path of a live step and
/// a replayed one, so that replay equals live by construction.
///
/// Returns whether the step is recorded (it changed the instance or emitted intents, or
/// `force`: a replay, or an instance's first step; its follow-up events are fed either
/// way), and the pending timers the step
/// that finishes an instance drops (to cancel). A step that is not recorded leaves
/// `live` as it was. An outcome that comes after the instance finished is not reduced:
/// it only ends its intent's flight.
fn advance<R: Durable>(
    reducer: &R,
    live: &mut Live<R::State>,
    step: &RecordStep<R::Event>,
    now: Timestamp,
    effects: &mut Effects<R::Event>,
    force: bool,
    replaying: bool,
) -> (bool, Vec<TimerId>) {
    effects.clear();
    if live.status.is_finished() {
        if let (RecordStep::Outcome(outcome), Some(pending)) = (step, &mut live.pending) {
            pending.in_flight.remove(&outcome.intent);
        }
        live.version += 1;
        return (true, Vec::new());
    }
    let tracked = reducer.tracks_in_flight();
    let version = live.version + 1;
    let cause = Cause::new(
        live.correlation,
        CausationId::from(EventId::record(live.correlation, version)),
    );
    let input = |event| StepInput {
        event,
        cause,
        now,
        version,
        replaying,
    };
    let changed = match step {
        RecordStep::Event(event) => reducer.step(&mut live.state, input(event), effects),
        RecordStep::Outcome(outcome) => {
            let event = R::Event::from(outcome.clone());
            let changed = reducer.step(&mut live.state, input(&event), effects);
            if let (false, Some(pending)) = (tracked, &mut live.pending) {
                // The driver's own account of the instance changed, whatever the reducer
                // made of it.
                match &outcome.result {
                    OutcomeResult::TimerFired { timer } => {
                        pending.timers.remove(timer);
                    }
                    _ => {
                        pending.in_flight.remove(&outcome.intent);
                    }
                }
            }
            changed || !tracked
        }
    };
    if !(changed || force || !effects.intents.is_empty()) {
        return (false, Vec::new());
    }
    if !tracked && !effects.intents.is_empty() {
        let pending = live.pending_mut();
        for intent in &effects.intents {
            match &intent.kind {
                IntentKind::ScheduleTimer { timer, due } => {
                    pending.timers.insert(timer.clone(), (*due, intent.id));
                }
                IntentKind::CancelTimer { timer } => {
                    pending.timers.remove(timer);
                }
                _ => {
                    pending.in_flight.insert(intent.id, intent.clone());
                }
            }
        }
    }
    live.version = version;
    live.status = reducer.status(&live.state);
    match &mut live.pending {
        Some(pending) if live.status.is_finished() && !pending.timers.is_empty() => (
            true,
            std::mem::take(&mut pending.timers).into_keys().collect(),
        ),
        _ => (true, Vec::new()),
    }
}

/// Replays `record` (version `version`) on `live` and checks that it gives what was
/// recorded.
fn replay<R: Durable>(
    reducer: &R,
    live: &mut Live<R::State>,
    id: &InstanceId,
    version: u64,
    time: Timestamp,
    record: Record<R::State, R::Event>,
    effects: &mut Effects<R::Event>,
) -> Result<Status, Error> {
    let _dropped = advance(reducer, live, &record.step, time, effects, true, true);
    let emitted = u32::try_from(effects.intents.len()).unwrap_or(u32::MAX);
    effects.clear();
    // A log format that does not count intents (a saga's) is checked on status alone.
    if let Some(recorded) = record.intents.filter(|&recorded| recorded != emitted) {
        let reason = format!("replaying it emits {emitted} intents, the log {recorded}: {CHANGED}");
        return Err(diverged(id, version, reason));
    }
    // A log format that names its statuses finer (a saga's) is checked on that name and
    // on what else it recorded of the status; the driver's own, on the status.
    let (replayed, recorded) = match record.status_name {
        Some(name) => (reducer.status_name(&live.state), name),
        None => (live.status.name(), record.status.name()),
    };
    let detail = match &record.status_detail {
        Some(_) => reducer.status_detail(&live.state),
        None => None,
    };
    if live.status != record.status || replayed != recorded || detail != record.status_detail {
        let said = |name: &str, status: &Status, detail: &Option<String>| {
            let reason = match status {
                Status::Parked { reason } => Some(reason.as_str()),
                _ => None,
            };
            match detail.as_deref().or(reason) {
                Some(detail) => format!("`{name}` ({detail})"),
                None => format!("`{name}`"),
            }
        };
        let replayed = said(replayed, &live.status, &detail);
        let recorded = said(recorded, &record.status, &record.status_detail);
        let reason = format!("replaying it gives status {replayed}, the log {recorded}: {CHANGED}");
        return Err(diverged(id, version, reason));
    }
    Ok(live.status.clone())
}

/// The stream of instance `id` of `kind`: `{kind}-{id}` (built without the formatting
/// machinery: once per instance per batch).
fn stream_of(kind: &str, id: &InstanceId) -> StreamId {
    let mut name = String::with_capacity(kind.len() + 1 + id.as_str().len());
    name.push_str(kind);
    name.push('-');
    name.push_str(id.as_str());
    StreamId::from(name)
}

/// What a divergence most likely means, said in every one.
const CHANGED: &str = "was the reducer changed while instances were running?";

fn diverged(id: &InstanceId, version: u64, reason: String) -> Error {
    Error::Diverged {
        instance: id.to_string(),
        version,
        reason,
    }
}

/// Checks an instance id: 1 to [`INSTANCE_ID_BYTES_MAX`] bytes of ASCII letters, digits
/// and `-_.:`, so that it can stand in a stream name and a URL path.
fn check_instance(id: &str) -> Result<(), Error> {
    let reason = if id.is_empty() || id.len() > INSTANCE_ID_BYTES_MAX {
        "an instance id is 1 to 200 bytes long"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        "an instance id holds ASCII letters, digits and `-_.:` only"
    } else {
        return Ok(());
    };
    Err(Error::InvalidId {
        value: id.chars().take(INSTANCE_ID_BYTES_MAX).collect(),
        reason,
    })
}

/// Checks a reducer kind: 1 to [`KIND_BYTES_MAX`] bytes of lowercase ASCII letters,
/// digits and `._`, with no `-` (it ends the kind in a stream name).
fn check_kind(kind: &str) -> Result<(), Error> {
    let valid = !kind.is_empty()
        && kind.len() <= KIND_BYTES_MAX
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._".contains(&b));
    if valid {
        return Ok(());
    }
    Err(Error::InvalidId {
        value: kind.chars().take(KIND_BYTES_MAX).collect(),
        reason: "a reducer kind is 1 to 64 bytes of lowercase ASCII letters, digits and `._`",
    })
}

#[cfg(test)]
mod tests;
