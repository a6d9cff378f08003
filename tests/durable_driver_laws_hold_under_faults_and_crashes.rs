//! The durable driver's laws, checked over 10,000 simulated cases of a reducer that is not a
//! saga: equipment monitoring. Each case runs a few devices, each checked on a periodic
//! timer the reducer sets again at every check and cancels when it parks or stops; a check
//! is a custom device call that succeeds, fails (for now or for good) or times out. A
//! device parks after three failed checks in a row (or one refusal) until an operator
//! acknowledges it, and finishes when stopped or after enough good checks. The world
//! around the driver loses answers, reports some twice, delivers some late (after later
//! ones), jumps its clock forward, and crashes the driver before a commit (the batch is
//! lost) and after one (nothing of it is performed); a new driver then restores every
//! instance from its log, from its first record or from a snapshot, and resumes.
//!
//! 1. the same seed gives the same logs, byte for byte, whether or not the driver keeps
//!    finished instances in memory;
//! 2. restoring an instance from its log gives what the live driver held, at every crash
//!    after a commit and at the end, and a rebuild as of the latest record, or of any
//!    earlier one, agrees with a restore of the log up to there;
//! 3. no intent is lost: each device call a committed record caused is performed, and
//!    performed again by the restart after a crash that left it unperformed, even the
//!    call of the step that finished its device (the release): a finished instance is
//!    held until its calls in flight are answered. A restart re-arms each pending timer
//!    for the time it was set for; the driver refuses only instances that finished.
//! 4. no effect is doubled: each intent's outcome is recorded once at most and is the
//!    answer its service gave, the services apply each intent id once however often it is
//!    performed, nothing is performed that no committed record caused, and no append is
//!    refused by the store;
//! 5. every device ends finished or parked within a bounded number of steps.
//!
//! A failing case prints its seed; `KEEL_SIM_SEED=N cargo test --test laws
//! durable_driver_a_single_seed_reruns_alone -- --nocapture` reruns it alone, with a trace.

use std::collections::{BTreeMap, BTreeSet};

use keel_core::driver::{AsOf, Batch, Driver, Durable, RecordStep, Snapshot, Status, TimerChange};
use keel_core::{
    Envelope, Error, EventType, Failure, FailureKind, Input, InstanceId, Intent, IntentId,
    IntentKind, Outcome, OutcomeResult, Payload, Reducer, TimerId, Timestamp,
};
use serde::{Deserialize, Serialize};

/// Cases in the normal test run, split over shards that run in parallel.
const CASES: u64 = 10_000;
const SHARDS: u64 = 4;

/// Batches one case may take, ten times the most the cases take (about 50): a case that
/// needs more has a device that never settles, and fails rather than hangs.
const STEPS_MAX: u32 = 500;
/// Faults stop after this many batches, so that every case can settle.
const FAULTY_STEPS: u32 = 150;
/// Crashes per case at most: each restart replays every log, and a few show as much.
const CRASHES_MAX: u32 = 3;

/// How often a device is checked.
const PERIOD_MS: u64 = 1_000;
/// Failed checks in a row that park a device.
const FAILURES_TO_PARK: u32 = 3;
/// The timer of the periodic check.
const CHECK: &str = "check";
/// The device calls.
const READ: &str = "device.read";
const ALARM: &str = "device.alarm";
const RELEASE: &str = "device.release";

// ---------------------------------------------------------------------------------------
// The reducer.

/// Monitors one piece of equipment.
struct Monitor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    /// Start monitoring: the first event.
    Monitor,
    /// An operator stops monitoring: the device is released and the instance finishes.
    Stop,
    /// An operator has looked at a parked device: checks start again.
    Acknowledge,
    /// What became of a device call, or the check timer fired.
    Done(Outcome),
}

impl From<Outcome> for Event {
    fn from(outcome: Outcome) -> Self {
        Self::Done(outcome)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Equipment {
    device: String,
    checks_to_finish: u32,
    good_checks: u32,
    failures_in_a_row: u32,
    /// Reads in flight: the reducer tells a read's answer from an alarm's by its id.
    reads: Vec<IntentId>,
    parked: Option<String>,
    stopped: bool,
    answers_while_parked: u32,
}

impl Equipment {
    fn new(device: &InstanceId, checks_to_finish: u32) -> Self {
        Self {
            device: device.to_string(),
            checks_to_finish,
            good_checks: 0,
            failures_in_a_row: 0,
            reads: Vec::new(),
            parked: None,
            stopped: false,
            answers_while_parked: 0,
        }
    }
}

fn device_call(name: &'static str, device: &str) -> IntentKind {
    IntentKind::Custom {
        name: EventType::from_static(name),
        payload: serde_json::json!({ "device": device }),
    }
}

impl Reducer for Monitor {
    type State = Equipment;
    type Action = Input<Event>;

    fn reduce_into(&self, eq: &mut Equipment, action: Input<Event>, intents: &mut Vec<Intent>) {
        let mut out = action.cause.emitter(intents);
        let next_check = IntentKind::ScheduleTimer {
            timer: TimerId::from_static(CHECK),
            due: action.now.plus_millis(PERIOD_MS),
        };
        let cancel_check = || IntentKind::CancelTimer {
            timer: TimerId::from_static(CHECK),
        };
        match action.body {
            Event::Monitor => {
                out.emit(next_check);
            }
            Event::Stop => {
                eq.stopped = true;
                out.emit(cancel_check());
                out.emit(device_call(RELEASE, &eq.device));
            }
            Event::Acknowledge => {
                if eq.parked.take().is_some() {
                    eq.failures_in_a_row = 0;
                    out.emit(next_check);
                }
            }
            Event::Done(outcome) => {
                if let OutcomeResult::TimerFired { .. } = outcome.result {
                    let read = out.emit(device_call(READ, &eq.device));
                    eq.reads.push(read);
                    out.emit(next_check);
                    return;
                }
                let Some(at) = eq.reads.iter().position(|read| *read == outcome.intent) else {
                    return; // an alarm's or a release's answer: nothing more to do
                };
                eq.reads.remove(at);
                if eq.parked.is_some() {
                    eq.answers_while_parked += 1;
                    return;
                }
                let park = match outcome.result {
                    OutcomeResult::Succeeded { .. } => {
                        eq.good_checks += 1;
                        eq.failures_in_a_row = 0;
                        if eq.good_checks >= eq.checks_to_finish {
                            out.emit(cancel_check());
                        }
                        None
                    }
                    OutcomeResult::Failed(failure) if failure.kind == FailureKind::Permanent => {
                        Some(format!("the device refused a read: {}", failure.reason))
                    }
                    _ => {
                        eq.failures_in_a_row += 1;
                        (eq.failures_in_a_row >= FAILURES_TO_PARK)
                            .then(|| "three checks failed in a row".to_owned())
                    }
                };
                if let Some(reason) = park {
                    eq.parked = Some(reason);
                    out.emit(cancel_check());
                    out.emit(device_call(ALARM, &eq.device));
                }
            }
        }
    }
}

impl Durable for Monitor {
    type Event = Event;

    fn kind(&self) -> &str {
        "equipment"
    }

    fn status(&self, eq: &Equipment) -> Status {
        if eq.stopped || eq.good_checks >= eq.checks_to_finish {
            Status::Finished
        } else if let Some(reason) = &eq.parked {
            Status::Parked {
                reason: reason.clone(),
            }
        } else {
            Status::Running
        }
    }

    fn snapshot_every(&self) -> u64 {
        3
    }
}

fn new_driver(retain_finished: bool) -> Driver<Monitor> {
    let mut driver = Driver::new(Monitor).expect("`equipment` is a valid kind");
    driver.set_retain_finished(retain_finished);
    driver
}

/// A log's records as `restore` and `rebuild` take them, from the one at index `from`.
fn records(log: &[Envelope], from: usize) -> impl Iterator<Item = (u64, &Envelope)> {
    log.iter()
        .zip(1..)
        .skip(from)
        .map(|(envelope, v)| (v, envelope))
}

fn decode(id: &InstanceId, version: u64, envelope: &Envelope) -> Result<Record, String> {
    Record::decode(id, version, envelope).map_err(|e| format!("{id}'s record {version}: {e}"))
}

type Record = keel_core::driver::Record<Equipment, Event>;

// ---------------------------------------------------------------------------------------
// The plan of a case.

/// SplitMix64: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x6472_6976_6572_5349)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
}

/// How often each fault strikes, in percent: per batch for crashes, per step for clock
/// jumps, per performed call for the answers.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    crash_before_commit: u64,
    crash_after_commit: u64,
    lose: u64,
    duplicate: u64,
    late: u64,
    jump: u64,
}

#[derive(Debug, Clone)]
struct DevicePlan {
    id: InstanceId,
    start_at: u64,
    stop_at: Option<u64>,
    checks_to_finish: u32,
    /// How many times an operator acknowledges it when it parks.
    acknowledgements: u32,
}

#[derive(Debug, Clone)]
struct Plan {
    devices: Vec<DevicePlan>,
    faults: Faults,
    retain_finished: bool,
}

impl Plan {
    fn new(rng: &mut Rng) -> Self {
        let devices = (0..rng.between(2, 3))
            .map(|n| DevicePlan {
                id: InstanceId::from(format!("eq-{n}")),
                start_at: rng.below(800),
                stop_at: rng.chance(30).then(|| rng.between(500, 6_000)),
                checks_to_finish: u32::try_from(rng.between(2, 3)).unwrap_or(2),
                acknowledgements: u32::try_from(rng.below(3)).unwrap_or(0),
            })
            .collect();
        // Some cases run without any fault: there the live driver saw the whole run.
        let faults = if rng.chance(15) {
            Faults::default()
        } else {
            Faults {
                crash_before_commit: rng.between(0, 6),
                crash_after_commit: rng.between(0, 6),
                lose: rng.between(0, 12),
                duplicate: rng.between(0, 12),
                late: rng.between(0, 15),
                jump: rng.between(0, 3),
            }
        };
        Self {
            devices,
            faults,
            retain_finished: rng.chance(50),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The world.

/// What can happen next.
#[derive(Debug, Clone)]
enum Item {
    /// An operator's command, from an inbox that is acknowledged when its record commits.
    Command(InstanceId, Event),
    /// A service's answer, from the incarnation that performed the call.
    Answer {
        instance: InstanceId,
        outcome: Outcome,
        incarnation: u32,
    },
    /// A timer armed in the current incarnation comes due.
    Fire {
        instance: InstanceId,
        timer: TimerId,
        intent: IntentId,
        due: Timestamp,
    },
}

/// The devices' services, idempotent by intent id.
#[derive(Debug, Default)]
struct Services {
    /// The first answer to each intent id: what any repeat of it is answered.
    answers: BTreeMap<IntentId, OutcomeResult>,
    /// The effects applied, in order: one per intent id, if the services are idempotent.
    applied: Vec<IntentId>,
    /// How often each intent was performed.
    performed: BTreeMap<IntentId, u32>,
}

/// How often each thing happened, over the cases of a shard.
#[derive(Debug, Default)]
struct Tally(BTreeMap<&'static str, u64>);

impl Tally {
    fn add(&mut self, what: &'static str, n: u64) {
        *self.0.entry(what).or_default() += n;
    }

    fn get(&self, what: &str) -> u64 {
        self.0.get(what).copied().unwrap_or(0)
    }

    fn merge(&mut self, other: &Self) {
        for (what, n) in &other.0 {
            self.add(what, *n);
        }
    }
}

/// A record's time and payload bytes.
type TimedBytes = (Timestamp, Vec<u8>);

type Wheel = BTreeMap<(InstanceId, TimerId), (Timestamp, IntentId)>;

struct World {
    plan: Plan,
    rng: Rng,
    retain_finished: bool,
    now: Timestamp,
    step: u32,
    incarnation: u32,
    crashes: u32,
    driver: Driver<Monitor>,
    /// Each instance's log.
    store: BTreeMap<InstanceId, Vec<Envelope>>,
    services: Services,
    /// What happens next, by time and then in the order it was scheduled.
    agenda: BTreeMap<(Timestamp, u64), Item>,
    scheduled: u64,
    /// The timers armed in the current incarnation.
    wheel: Wheel,
    /// Commands and timer firings fed since the last commit.
    uncommitted: Vec<Item>,
    /// Instances the driver refused since the last batch was taken.
    refused: BTreeSet<InstanceId>,
    /// The last committed record of each instance that carries a snapshot.
    snapshots: BTreeMap<InstanceId, u64>,
    /// Each device call a committed record caused, and its instance.
    owed: BTreeMap<IntentId, InstanceId>,
    /// What each device call was, to count the releases of finished devices.
    names: BTreeMap<IntentId, IntentKind>,
    acknowledgements: BTreeMap<InstanceId, u32>,
    tally: Tally,
    trace: Option<Vec<String>>,
}

impl World {
    fn new(seed: u64, retain_finished: Option<bool>, traced: bool) -> Self {
        let mut rng = Rng::new(seed);
        let plan = Plan::new(&mut rng);
        let retain_finished = retain_finished.unwrap_or(plan.retain_finished);
        let mut world = Self {
            rng,
            retain_finished,
            now: Timestamp::UNIX_EPOCH,
            step: 0,
            incarnation: 0,
            crashes: 0,
            driver: new_driver(retain_finished),
            store: BTreeMap::new(),
            services: Services::default(),
            agenda: BTreeMap::new(),
            scheduled: 0,
            wheel: Wheel::new(),
            uncommitted: Vec::new(),
            refused: BTreeSet::new(),
            snapshots: BTreeMap::new(),
            owed: BTreeMap::new(),
            names: BTreeMap::new(),
            acknowledgements: BTreeMap::new(),
            tally: Tally::default(),
            trace: traced.then(Vec::new),
            plan: plan.clone(),
        };
        for device in &plan.devices {
            let start = Timestamp::from_unix_millis(i64::try_from(device.start_at).unwrap_or(0));
            world.schedule(start, Item::Command(device.id.clone(), Event::Monitor));
            if let Some(stop) = device.stop_at {
                let stop = start.plus_millis(stop);
                world.schedule(stop, Item::Command(device.id.clone(), Event::Stop));
            }
        }
        world
    }

    fn note(&mut self, what: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            let now = self.now.unix_millis();
            trace.push(format!("{now:>7} ms  #{:<4} {}", self.step, what()));
        }
    }

    fn schedule(&mut self, due: Timestamp, item: Item) {
        self.agenda.insert((due, self.scheduled), item);
        self.scheduled += 1;
    }

    fn faults(&self) -> Faults {
        if self.step < FAULTY_STEPS {
            self.plan.faults
        } else {
            Faults::default()
        }
    }

    /// Whether a crash strikes: one draw whatever the answer, so that the draws after it
    /// do not depend on how many crashes came before.
    fn may_crash(&mut self, percent: u64) -> bool {
        let strikes = self.rng.chance(percent);
        strikes && self.crashes < CRASHES_MAX
    }

    fn finished_in_log(&self, id: &InstanceId) -> Result<bool, String> {
        let Some(last) = self.store.get(id).and_then(|log| log.last()) else {
            return Ok(false);
        };
        let version = self.store[id].len() as u64;
        Ok(decode(id, version, last)?.status.is_finished())
    }

    /// Runs the case until nothing is left to happen.
    fn run(&mut self) -> Result<(), String> {
        while let Some(item) = self.next_item() {
            self.step += 1;
            if self.step > STEPS_MAX {
                return Err(format!("no end after {STEPS_MAX} batches"));
            }
            self.feed(item)?;
            // A shell takes what has come in meanwhile into the same batch.
            for _ in 0..3 {
                if !self.rng.chance(35) {
                    break;
                }
                let Some(item) = self.next_item() else { break };
                self.feed(item)?;
            }
            self.flush()?;
        }
        Ok(())
    }

    fn next_item(&mut self) -> Option<Item> {
        let ((due, _), item) = self.agenda.pop_first()?;
        let jump = self.faults().jump;
        if jump > 0 && self.rng.chance(jump) {
            self.now = self.now.plus_millis(self.rng.between(2_000, 8_000));
            self.tally.add("clock jumps", 1);
            self.note(|| "the clock jumps".into());
        }
        self.now = self.now.max(due);
        Some(item)
    }

    fn feed(&mut self, item: Item) -> Result<(), String> {
        let now = self.now;
        match item {
            Item::Command(id, Event::Monitor) => {
                self.note(|| format!("{id}: start"));
                let checks = self.plan.devices.iter().find(|d| d.id == id);
                let checks = checks.map_or(2, |device| device.checks_to_finish);
                self.driver
                    .start(&id, Equipment::new(&id, checks), Event::Monitor, now)
                    .map_err(|e| format!("starting {id}: {e}"))?;
                self.uncommitted.push(Item::Command(id, Event::Monitor));
            }
            Item::Command(id, event) => {
                self.note(|| format!("{id}: command {event:?}"));
                match self.driver.handle(&id, event.clone(), now) {
                    Ok(_) => self.uncommitted.push(Item::Command(id, event)),
                    Err(Error::UnknownInstance { .. }) if self.store.contains_key(&id) => {
                        self.tally.add("commands refused after finishing", 1);
                        self.refused.insert(id);
                    }
                    Err(Error::UnknownInstance { .. }) => {
                        // Its start was lost in a crash and comes again: so does this.
                        self.schedule(now.plus_millis(100), Item::Command(id, event));
                    }
                    Err(e) => return Err(format!("{id} refused {event:?}: {e}")),
                }
            }
            Item::Answer {
                instance,
                outcome,
                incarnation,
            } => {
                if incarnation < self.incarnation {
                    self.tally.add("answers from an earlier incarnation", 1);
                }
                let what = self.trace.is_some().then(|| {
                    format!(
                        "{instance}: answer {:?} to {}",
                        outcome.result, outcome.intent
                    )
                });
                let what = what.unwrap_or_default();
                match self.driver.outcome(&instance, outcome, now) {
                    Ok(true) => self.note(|| what),
                    Ok(false) => {
                        self.tally.add("repeated answers ignored", 1);
                        self.note(|| format!("{what}, ignored"));
                    }
                    Err(Error::UnknownInstance { .. }) => {
                        self.tally.add("answers refused after finishing", 1);
                        self.note(|| format!("{what}, refused"));
                        self.refused.insert(instance);
                    }
                    Err(e) => return Err(format!("{instance} refused an answer: {e}")),
                }
            }
            Item::Fire {
                instance,
                timer,
                intent,
                due,
            } => {
                let key = (instance.clone(), timer.clone());
                if self.wheel.get(&key) != Some(&(due, intent)) {
                    return Ok(()); // set again or cancelled since: not armed any more
                }
                self.wheel.remove(&key);
                self.note(|| format!("{instance}: timer `{timer}` due at {due} fires"));
                match self.driver.fire(&instance, &timer, intent, now) {
                    Ok(true) => {}
                    // The driver ran ahead of the wheel in this batch: set again or
                    // cancelled by an earlier step of it.
                    Ok(false) => self.tally.add("firings refused as stale", 1),
                    Err(Error::UnknownInstance { .. }) => {
                        self.tally.add("firings refused after finishing", 1);
                        self.refused.insert(instance.clone());
                    }
                    Err(e) => return Err(format!("{instance} refused a firing: {e}")),
                }
                let fire = Item::Fire {
                    instance,
                    timer,
                    intent,
                    due,
                };
                self.uncommitted.push(fire);
            }
        }
        Ok(())
    }

    /// Takes the batch, commits it and carries it out, unless a crash strikes.
    fn flush(&mut self) -> Result<(), String> {
        let batch = self.driver.take_batch();
        // The driver refuses only an instance that finished, in the log or in this batch.
        for id in std::mem::take(&mut self.refused) {
            let settled = batch
                .settled
                .iter()
                .any(|(i, s)| *i == id && s.is_finished());
            if !settled && !self.finished_in_log(&id)? {
                return Err(format!("the driver refused {id}, which did not finish"));
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let faults = self.faults();
        if self.may_crash(faults.crash_before_commit) {
            self.tally.add("crashes before a commit", 1);
            self.note(|| format!("crash before committing {} records", batch.record_count()));
            // The armed timers as the log has them: those fired in the lost batch did not.
            let mut expected = self.wheel.clone();
            for item in std::mem::take(&mut self.uncommitted) {
                match item {
                    Item::Fire {
                        instance,
                        timer,
                        intent,
                        due,
                    } => {
                        expected.insert((instance, timer), (due, intent));
                    }
                    // The inbox delivers its commands again.
                    command => self.schedule(self.now, command),
                }
            }
            return self.restart(false, expected);
        }
        self.commit(&batch)?;
        self.uncommitted.clear();
        for (instance, intent) in &batch.perform {
            self.owed.insert(intent.id, instance.clone());
            self.names.insert(intent.id, intent.kind.clone());
        }
        if self.may_crash(faults.crash_after_commit) {
            self.tally.add("crashes after a commit", 1);
            self.note(|| format!("crash after committing {} records", batch.record_count()));
            let mut expected = self.wheel.clone();
            apply_timers(&mut expected, &batch);
            return self.restart(true, expected);
        }
        self.carry_out(&batch)
    }

    /// Appends a batch's records atomically: all or none, each where it expects.
    fn commit(&mut self, batch: &Batch) -> Result<(), String> {
        for append in &batch.appends {
            let id = &append.instance;
            let held = self.store.get(id).map_or(0, Vec::len) as u64;
            if held != append.expected {
                return Err(format!(
                    "the store refused {id}'s append: it expects version {} and the log \
                     holds {held} records",
                    append.expected
                ));
            }
            if append.stream != self.driver.stream(id) {
                return Err(format!("{id}'s append goes to stream {}", append.stream));
            }
            for (envelope, version) in append.records.iter().zip(held + 1..) {
                if envelope.sequence != version {
                    return Err(format!(
                        "{id}'s record {version} says it is {}",
                        envelope.sequence
                    ));
                }
            }
        }
        for append in &batch.appends {
            let log = self.store.entry(append.instance.clone()).or_default();
            log.extend(append.records.iter().cloned());
        }
        for (id, version) in &batch.snapshots {
            self.snapshots.insert(id.clone(), *version);
        }
        self.note(|| format!("commit {} records", batch.record_count()));
        Ok(())
    }

    /// Performs a committed batch's intents, arms its timers and tells the operators.
    fn carry_out(&mut self, batch: &Batch) -> Result<(), String> {
        for (instance, intent) in &batch.perform {
            self.perform(instance, intent)?;
        }
        apply_timers(&mut self.wheel, batch);
        for (instance, change) in &batch.timers {
            if let TimerChange::Set { timer, due, intent } = change {
                let fire = Item::Fire {
                    instance: instance.clone(),
                    timer: timer.clone(),
                    intent: *intent,
                    due: *due,
                };
                self.schedule(*due, fire);
            }
        }
        for (instance, status) in &batch.settled {
            self.note(|| format!("{instance}: {status:?}"));
            if status.is_parked() {
                self.operator_may_acknowledge(instance);
            }
        }
        // The wheel holds what the driver holds pending, for each instance that moved.
        for append in &batch.appends {
            if let Some(snapshot) = self.driver.snapshot(&append.instance) {
                self.check_armed(&append.instance, &snapshot.timers, "after a commit")?;
            }
        }
        Ok(())
    }

    fn perform(&mut self, instance: &InstanceId, intent: &Intent) -> Result<(), String> {
        let IntentKind::Custom { name, .. } = &intent.kind else {
            return Err(format!("{instance}: performing {intent:?}, never emitted"));
        };
        if self.owed.get(&intent.id) != Some(instance) {
            return Err(format!(
                "{instance}: performing {name} {}, which no committed record of it caused",
                intent.id
            ));
        }
        let performed = self.services.performed.entry(intent.id).or_default();
        *performed += 1;
        if *performed > 1 {
            self.tally.add("intents performed again", 1);
        }
        let result = match self.services.answers.get(&intent.id) {
            Some(result) => result.clone(),
            None => {
                let result = if name.as_str() == READ {
                    self.reading()
                } else {
                    OutcomeResult::Succeeded {
                        value: serde_json::Value::Null,
                    }
                };
                self.services.applied.push(intent.id);
                self.services.answers.insert(intent.id, result.clone());
                result
            }
        };
        self.note(|| format!("{instance}: perform {name} {} -> {result:?}", intent.id));
        let outcome = Outcome {
            intent: intent.id,
            attempts: 1,
            result,
        };
        let faults = self.faults();
        if self.rng.chance(faults.lose) {
            self.tally.add("answers lost", 1);
            self.note(|| "  its answer is lost".into());
            return Ok(());
        }
        let copies = if self.rng.chance(faults.duplicate) {
            self.tally.add("answers duplicated", 1);
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.rng.chance(faults.late) {
                self.tally.add("answers late", 1);
                self.rng.between(1_200, 4_000)
            } else {
                self.rng.between(10, 300)
            };
            let answer = Item::Answer {
                instance: instance.clone(),
                outcome: outcome.clone(),
                incarnation: self.incarnation,
            };
            self.schedule(self.now.plus_millis(delay), answer);
        }
        Ok(())
    }

    /// What a device answers a read.
    fn reading(&mut self) -> OutcomeResult {
        match self.rng.below(100) {
            0..62 => OutcomeResult::Succeeded {
                value: serde_json::json!({ "celsius": 40 + self.rng.below(30) }),
            },
            62..76 => OutcomeResult::Failed(Failure::transient("no answer from the device")),
            76..80 => OutcomeResult::Failed(Failure::permanent("no such register")),
            _ => OutcomeResult::TimedOut,
        }
    }

    fn operator_may_acknowledge(&mut self, id: &InstanceId) {
        let planned = self.plan.devices.iter().find(|d| d.id == *id);
        let planned = planned.map_or(0, |device| device.acknowledgements);
        let given = self.acknowledgements.entry(id.clone()).or_default();
        if *given < planned {
            *given += 1;
            let due = self.now.plus_millis(self.rng.between(500, 3_000));
            self.schedule(due, Item::Command(id.clone(), Event::Acknowledge));
        }
    }

    /// Checks that the wheel holds exactly `pending` for `id`.
    fn check_armed(
        &self,
        id: &InstanceId,
        pending: &[(TimerId, Timestamp, IntentId)],
        when: &str,
    ) -> Result<(), String> {
        let armed: Vec<(TimerId, Timestamp, IntentId)> = self
            .wheel
            .iter()
            .filter(|((instance, _), _)| instance == id)
            .map(|((_, timer), (due, intent))| (timer.clone(), *due, *intent))
            .collect();
        if armed != pending {
            return Err(format!(
                "{when}, {id} has timers {armed:?} armed and {pending:?} pending"
            ));
        }
        Ok(())
    }

    /// A new driver restores every instance from the store and resumes what was in flight;
    /// `expected` is the armed timers as the logs have them. After a commit, the crashed
    /// driver held what the logs hold: `compare` checks that a restore gives the same.
    fn restart(&mut self, compare: bool, expected: Wheel) -> Result<(), String> {
        self.crashes += 1;
        self.incarnation += 1;
        let old = std::mem::replace(&mut self.driver, new_driver(self.retain_finished));
        self.uncommitted.clear();
        // The timers lived in the crashed process; answers on their way may still come.
        self.wheel.clear();
        for (key, item) in std::mem::take(&mut self.agenda) {
            let keep = match &item {
                Item::Fire { .. } => false,
                Item::Answer { .. } => self.rng.chance(50),
                Item::Command(..) => true,
            };
            if keep {
                self.agenda.insert(key, item);
            }
        }
        let ids: Vec<InstanceId> = self.store.keys().cloned().collect();
        let mut finished = BTreeSet::new();
        for id in &ids {
            let log = &self.store[id];
            // Half the restores start at the last record that carries a snapshot.
            let mut from = 0;
            if let Some(&version) = self.snapshots.get(id).filter(|_| self.rng.chance(50)) {
                let index = usize::try_from(version - 1).unwrap_or(usize::MAX);
                if decode(id, version, &log[index])?.snapshot.is_none() {
                    return Err(format!("{id}'s record {version} was to carry a snapshot"));
                }
                from = index;
                self.tally.add("restores from a snapshot", 1);
            }
            let status = self
                .driver
                .restore(id, records(log, from))
                .map_err(|e| format!("restoring {id} from record {}: {e}", from + 1))?;
            if status.is_finished() {
                finished.insert(id.clone());
            }
            if status.is_parked() {
                self.operator_may_acknowledge(id);
            }
        }
        self.note(|| format!("restart: {} instances restored", ids.len()));
        if compare {
            for id in &ids {
                if old.snapshot(id) != self.driver.snapshot(id) {
                    return Err(format!(
                        "restoring {id} from its log gives {:?} where the live driver held {:?}",
                        self.driver.snapshot(id),
                        old.snapshot(id)
                    ));
                }
            }
        }
        self.driver.resume(self.now);
        let batch = self.driver.take_batch();
        if !batch.appends.is_empty() || !batch.settled.is_empty() {
            return Err(format!("resuming recorded or settled something: {batch:?}"));
        }
        let resumed: BTreeSet<IntentId> = batch.perform.iter().map(|(_, i)| i.id).collect();
        for (intent, instance) in &self.owed {
            let unperformed = !self.services.performed.contains_key(intent);
            if unperformed && !finished.contains(instance) && !resumed.contains(intent) {
                return Err(format!(
                    "{instance}'s intent {intent}, caused by a committed record and never \
                     performed, is not resumed"
                ));
            }
        }
        self.carry_out(&batch)?;
        // Each timer pending in the logs is armed again, for the time it was set for.
        let mut armed = self.wheel.clone();
        let mut expected = expected;
        armed.retain(|(id, _), _| !finished.contains(id));
        expected.retain(|(id, _), _| !finished.contains(id));
        if armed != expected {
            return Err(format!(
                "after a restart the timers armed are {armed:?}, and the logs have {expected:?}"
            ));
        }
        for id in &ids {
            if let Some(snapshot) = self.driver.snapshot(id) {
                self.check_armed(id, &snapshot.timers, "after a restart")?;
            }
        }
        Ok(())
    }

    /// Checks the laws once nothing is left to happen.
    fn check_end(&mut self) -> Result<(), String> {
        let mut replayed = new_driver(true);
        let mut rebuilder = new_driver(false);
        let mut finished = BTreeSet::new();
        for device in &self.plan.devices {
            let id = &device.id;
            let Some(log) = self.store.get(id) else {
                return Err(format!("{id} never started"));
            };
            let status = replayed
                .restore(id, records(log, 0))
                .map_err(|e| format!("restoring {id} at the end: {e}"))?;
            match status {
                Status::Finished => {
                    self.tally.add("devices finished", 1);
                    finished.insert(id.clone());
                }
                Status::Parked { .. } => self.tally.add("devices parked", 1),
                Status::Running => {
                    return Err(format!("{id} still runs with nothing left to happen"));
                }
            }
            let restored = replayed.snapshot(id);
            let live = self.driver.snapshot(id);
            // A finished device is still held while a call of it is in flight (its answer
            // was lost): a restart would perform it again.
            let answering = restored.as_ref().is_some_and(|s| !s.in_flight.is_empty());
            let held = !status.is_finished() || self.retain_finished || answering;
            if live.is_some() != held || (held && live != restored) {
                return Err(format!(
                    "{id}: the live driver holds {live:?}, and replaying its log gives \
                     {restored:?}"
                ));
            }
            let latest = rebuilder
                .rebuild(id, records(log, 0), AsOf::Latest)
                .map_err(|e| format!("rebuilding {id}: {e}"))?;
            let length = log.len() as u64;
            if Some(&latest.instance) != restored.as_ref()
                || latest.version != length
                || latest.status != status
            {
                return Err(format!("{id}: rebuilt {latest:?}, restored {restored:?}"));
            }
            // Each timer pending in the final log state is armed.
            if let Some(Snapshot { timers, .. }) = restored.filter(|_| !status.is_finished()) {
                self.check_armed(id, &timers, "at the end")?;
            }
            // A point in time, for one device in four: it replays the log twice more.
            if !self.rng.chance(25) {
                continue;
            }
            let version = 1 + self.rng.below(length);
            let then = rebuilder
                .rebuild(id, records(log, 0), AsOf::Version(version))
                .map_err(|e| format!("rebuilding {id} as of record {version}: {e}"))?;
            let mut prefix = new_driver(true);
            let prefix_length = usize::try_from(version).unwrap_or(usize::MAX);
            prefix
                .restore(id, records(&log[..prefix_length], 0))
                .map_err(|e| format!("restoring {id} up to record {version}: {e}"))?;
            if Some(&then.instance) != prefix.snapshot(id).as_ref() || then.version != version {
                return Err(format!(
                    "{id}: rebuilt as of record {version} {then:?}, restored up to it {:?}",
                    prefix.snapshot(id)
                ));
            }
        }
        for (intent, instance) in &self.owed {
            if !self.services.performed.contains_key(intent) {
                return Err(format!(
                    "{instance}'s intent {intent}, caused by a committed record, was never \
                     performed"
                ));
            }
            if finished.contains(instance)
                && matches!(
                    self.names.get(intent),
                    Some(IntentKind::Custom { name, .. }) if name.as_str() == RELEASE
                )
            {
                self.tally.add("releases performed", 1);
            }
        }
        let mut recorded: BTreeMap<IntentId, u32> = BTreeMap::new();
        for (id, log) in &self.store {
            for (version, envelope) in records(log, 0) {
                let RecordStep::Outcome(outcome) = decode(id, version, envelope)?.step else {
                    continue;
                };
                let times = recorded.entry(outcome.intent).or_default();
                *times += 1;
                if *times > 1 {
                    return Err(format!(
                        "{id}: the outcome of {} is recorded twice (again at record {version})",
                        outcome.intent
                    ));
                }
                if matches!(outcome.result, OutcomeResult::TimerFired { .. }) {
                    continue;
                }
                if self.services.answers.get(&outcome.intent) != Some(&outcome.result) {
                    return Err(format!(
                        "{id}: record {version} holds {:?} for {}, which its service answered \
                         {:?}",
                        outcome.result,
                        outcome.intent,
                        self.services.answers.get(&outcome.intent)
                    ));
                }
            }
        }
        let applied: BTreeSet<IntentId> = self.services.applied.iter().copied().collect();
        if applied.len() != self.services.applied.len() {
            return Err("a service applied an intent id twice".into());
        }
        self.tally
            .add("records", self.store.values().map(|l| l.len() as u64).sum());

        if self.crashes == 0 {
            self.tally.add("cases without a crash", 1);
        }
        Ok(())
    }

    /// The logs, as bytes: the record payloads and their times.
    fn history(&self) -> Vec<(InstanceId, Vec<TimedBytes>)> {
        let payload = |envelope: &Envelope| match &envelope.payload {
            Payload::Binary(bytes) => bytes.clone(),
            Payload::Json(value) => value.to_string().into_bytes(),
        };
        self.store
            .iter()
            .map(|(id, log)| {
                let records = log.iter().map(|e| (e.time, payload(e))).collect();
                (id.clone(), records)
            })
            .collect()
    }

    fn readable_logs(&self) -> String {
        let mut text = String::new();
        for (id, log) in &self.store {
            for (version, envelope) in records(log, 0) {
                let line = match decode(id, version, envelope) {
                    Ok(record) => format!(
                        "{id} #{version} at {}: {:?} -> {} intents, {}",
                        envelope.time.unix_millis(),
                        record.step,
                        record.intents.unwrap_or_default(),
                        record.status.name()
                    ),
                    Err(e) => e,
                };
                text.push_str(&line);
                text.push('\n');
            }
        }
        text
    }
}

/// Applies a batch's timer changes, in order, to a wheel.
fn apply_timers(wheel: &mut Wheel, batch: &Batch) {
    for (instance, change) in &batch.timers {
        match change {
            TimerChange::Set { timer, due, intent } => {
                wheel.insert((instance.clone(), timer.clone()), (*due, *intent));
            }
            TimerChange::Cancel { timer } => {
                wheel.remove(&(instance.clone(), timer.clone()));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The cases.

fn run_case(seed: u64, tally: &mut Tally, traced: bool) -> Result<(), String> {
    let mut world = World::new(seed, None, traced);
    let result = check_case(&mut world, seed);
    if result.is_err() && traced {
        eprintln!("plan: {:#?}", world.plan);
        if let Some(trace) = &world.trace {
            eprintln!("trace:\n{}", trace.join("\n"));
        }
        eprintln!("logs:\n{}", world.readable_logs());
    }
    tally.merge(&world.tally);
    result
}

fn check_case(world: &mut World, seed: u64) -> Result<(), String> {
    world.run()?;
    world.check_end()?;
    // The same seed, with finished instances kept in memory or not the other way round.
    let mut again = World::new(seed, Some(!world.retain_finished), false);
    again.run().map_err(|e| format!("run again: {e}"))?;
    if again.history() != world.history() {
        if world.trace.is_some() {
            eprintln!("logs of the run again:\n{}", again.readable_logs());
        }
        return Err(format!(
            "the same seed gave other logs when finished instances were {} in memory",
            if again.retain_finished {
                "kept"
            } else {
                "not kept"
            }
        ));
    }
    Ok(())
}

fn shard(index: u64) {
    let mut tally = Tally::default();
    for seed in (index..CASES).step_by(SHARDS as usize) {
        if let Err(broken) = run_case(seed, &mut tally, false) {
            panic!(
                "seed {seed} broke a durable driver law:\n{broken}\nrerun it alone: \
                 KEEL_SIM_SEED={seed} cargo test --test laws \
                 durable_driver_a_single_seed_reruns_alone -- --nocapture"
            );
        }
    }
    eprintln!("shard {index}: {tally:#?}");
    // The cases must reach every kind of end and every fault, or the laws were checked on
    // too little.
    for (what, least) in [
        ("devices finished", 1_000),
        ("devices parked", 200),
        ("crashes before a commit", 200),
        ("crashes after a commit", 200),
        ("answers duplicated", 200),
        ("repeated answers ignored", 100),
        ("answers lost", 200),
        ("answers late", 200),
        ("answers from an earlier incarnation", 50),
        ("answers refused after finishing", 50),
        ("clock jumps", 50),
        ("restores from a snapshot", 200),
        ("intents performed again", 100),
        ("cases without a crash", 200),
    ] {
        assert!(tally.get(what) >= least, "too few `{what}` in {tally:#?}");
    }
}

#[test]
fn durable_driver_laws_hold_for_cases_0_mod_4() {
    shard(0);
}

#[test]
fn durable_driver_laws_hold_for_cases_1_mod_4() {
    shard(1);
}

#[test]
fn durable_driver_laws_hold_for_cases_2_mod_4() {
    shard(2);
}

#[test]
fn durable_driver_laws_hold_for_cases_3_mod_4() {
    shard(3);
}

#[test]
fn durable_driver_a_single_seed_reruns_alone() {
    let Ok(seed) = std::env::var("KEEL_SIM_SEED") else {
        return; // nothing asked: the shards cover every seed
    };
    let seed: u64 = seed.parse().expect("KEEL_SIM_SEED is a number");
    let mut tally = Tally::default();
    if let Err(broken) = run_case(seed, &mut tally, true) {
        panic!("seed {seed} broke a durable driver law:\n{broken}");
    }
    eprintln!("seed {seed}: {tally:#?}");
}
