//! A deterministic simulation of the saga engine: a virtual clock, a seeded random
//! source, fake step services that succeed, fail, time out, answer twice or answer late
//! by the seed's plan, and crashes of the orchestrator at random persistence points.
//!
//! The services misbehave the way real ones do: one keeps working on a request long
//! after the saga gave up on it and answers a retry `409 key in use` meanwhile, one
//! answers more than a record may hold, one panics; a step's closures panic; and the
//! store goes away for a stretch of simulated time, failing appends and reads. The
//! commit goes through the orchestrator's own [`Commit`] (which decides what to try
//! again), and handlers are called through its own [`answer_of`] (which catches their
//! panics); what the tokio driver does around them (acting on a batch, rebuilding a
//! saga whose records were refused, holding events while a commit waits) is mirrored
//! here, and covered by the orchestrator's behaviour tests.
//!
//! Everything that varies comes from one seed: the saga definition, the services'
//! faults, message latencies, cancellations and crash points. The same seed therefore
//! gives the same history, byte for byte, which is itself one of the laws checked.
//!
//! The durable log holds records as bytes (their CloudEvents JSON), exactly as a store
//! would, and every restart rebuilds the engine from those bytes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use keel::orchestrator::commit::Commit;
use keel::orchestrator::saga::StepCall;
use keel::orchestrator::{
    Answer, Batch, Engine, Failure, FailureKind, OperatorCommand, Phase, RetryPolicy,
    SagaDefinition, SagaEvent, SagaId, SagaState, SagaStatus, SagaTimer, SagaType, Step,
    StepAction, StepPhase, answer_of,
};
use keel::{Envelope, IntentKind};
use serde_json::{Value, json};

/// The largest record the simulated store takes: small, so that an oversized answer
/// costs little to make. The engine is told, as a driver tells it of its store's limit.
pub const RECORD_BYTES_MAX: usize = 16 * 1024;

/// How long a slow service works on a request before it applies and answers: well past
/// every step's timeout (at most 120 ms).
const SLOW_MS: u64 = 300;

/// The text every simulated panic starts with (the quiet panic hook knows it).
const PANIC_TEXT: &str = "simulated panic";

/// Keeps the simulation's own panics (thousands, caught by the orchestrator) out of
/// the test output; every other panic is reported as usual.
fn quiet_simulated_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied());
            if !text.is_some_and(|t| t.starts_with(PANIC_TEXT)) {
                default(info);
            }
        }));
    });
}

/// SplitMix64: small, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x6B65_656C_7369_6D00)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
}

/// What a fake service does with one delivery of a call whose key it has not settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Applies the effect and answers.
    Ok,
    /// Refuses for good: nothing applied, and it says so again for this key.
    Permanent,
    /// Fails without applying; answers a transient failure.
    Transient,
    /// Not attempted; answers unavailable.
    Unavailable,
    /// The request is lost: nothing applied, no answer.
    LoseRequest,
    /// Applies the effect, but the answer is lost.
    LoseAnswer,
    /// Applies the effect and answers long after the saga's timeout.
    Late,
    /// Applies the effect and answers twice.
    Twice,
    /// Works on it for [`SLOW_MS`], then applies the effect and answers; a delivery of
    /// the same key meanwhile is refused `409 key in use`, a permanent failure.
    Slow,
    /// Applies the effect and answers more than a record may hold (until the operator
    /// phase, when it answers its usual small value).
    Oversized,
    /// The handler panics before applying anything.
    Panic,
    /// The handler applies the effect, then panics.
    PanicAfterApply,
    /// Refuses in a success answer (`{"declined": true}`) without applying, and keeps
    /// that answer for the key: the step's check turns it into a failure.
    Declined,
}

/// The seed's plan for one case.
#[derive(Debug)]
pub struct Plan {
    pub definition: Arc<SagaDefinition>,
    pub sagas: Vec<SagaId>,
    /// Faults per (saga, step, phase), in delivery order; past the end, `Ok`.
    pub faults: HashMap<(String, u16, Phase), Vec<Fault>>,
    /// Cancellations: (time, saga).
    pub cancels: Vec<(u64, SagaId)>,
    /// Percent chance of a crash at each persistence point.
    pub crash_percent: u64,
    pub crashes_max: u32,
    /// When the store is away (simulated ms, from inclusive to exclusive), if ever.
    pub outage: Option<(u64, u64)>,
    /// The (saga, step, phase) whose closure panics until the operator phase.
    pub panics: Arc<ClosurePanics>,
}

/// Which closures panic: a bug in the definition, fixed (by a deploy) in the operator
/// phase. A panicking closure fails its attempt; the failure is recorded, so replaying
/// the log gives the same state before and after the fix.
#[derive(Debug, Default)]
pub struct ClosurePanics {
    pub at: HashSet<(String, usize, Phase)>,
    /// The (saga, step) whose check panics judging a success.
    pub checks: HashSet<(String, usize)>,
    pub fixed: AtomicBool,
}

impl ClosurePanics {
    /// Whether a check panics judging `answer`: the services put their key in every
    /// answer, and the plan marked the key's (saga, step).
    fn check_panics(&self, answer: &Value) -> bool {
        if self.fixed.load(Ordering::Relaxed) {
            return false;
        }
        let Some(key) = answer["key"].as_str() else {
            return false;
        };
        self.checks
            .iter()
            .any(|(saga, step)| key_of(saga, *step) == key)
    }

    fn check(&self, saga: &SagaId, step: usize, phase: Phase) {
        if !self.fixed.load(Ordering::Relaxed) && self.at.contains(&(saga.to_string(), step, phase))
        {
            panic!("{PANIC_TEXT}: the closure of step {step} {phase:?} of {saga}");
        }
    }
}

fn effect_name(step: usize, phase: Phase) -> String {
    format!("sim.{}.s{step}", phase.as_str())
}

/// Draws a saga definition and fault plan from `rng`.
pub fn plan(rng: &mut Rng) -> Plan {
    let sagas: Vec<SagaId> = (0..rng.between(1, 3))
        .map(|n| SagaId::new(format!("sim-{n}")).expect("a valid id"))
        .collect();
    let mut panics = ClosurePanics::default();
    let mut builder = SagaDefinition::builder("sim.saga");
    let stages = rng.between(1, 4);
    let mut index = 0usize;
    let pivot_stage = if rng.chance(30) {
        Some(rng.below(stages))
    } else {
        None
    };
    let panics_percent = [0, 0, 3, 8][rng.below(4) as usize];
    for i in 0..12 {
        for phase in [Phase::Action, Phase::Compensation] {
            for saga in &sagas {
                if rng.chance(panics_percent) {
                    panics.at.insert((saga.to_string(), i, phase));
                }
                if phase == Phase::Action && rng.chance(panics_percent) {
                    panics.checks.insert((saga.to_string(), i));
                }
            }
        }
    }
    let panics = Arc::new(panics);
    for stage in 0..stages {
        let width = if pivot_stage != Some(stage) && rng.chance(35) {
            rng.between(2, 3)
        } else {
            1
        };
        let mut group = Vec::new();
        for _ in 0..width {
            let i = index;
            index += 1;
            let action = effect_name(i, Phase::Action);
            let undo = effect_name(i, Phase::Compensation);
            let (panics_do, panics_undo) = (Arc::clone(&panics), Arc::clone(&panics));
            let mut step = Step::new(format!("s{i}"), move |ctx| {
                panics_do.check(ctx.saga(), i, Phase::Action);
                let previous = ctx.result(&format!("s{}", i.wrapping_sub(1)));
                StepAction::Custom {
                    name: keel::EventType::new(action.clone()).expect("a valid name"),
                    // Data flow: each step reads the saga's input and the earlier results.
                    payload: json!({ "order": ctx.input()["order"], "previous": previous }),
                }
            })
            .check({
                let panics = Arc::clone(&panics);
                move |answer: &Value| {
                    if panics.check_panics(answer) {
                        panic!("{PANIC_TEXT}: the check of step {i}");
                    }
                    match answer["declined"].as_bool() {
                        Some(true) => Err("declined".to_owned()),
                        _ => Ok(()),
                    }
                }
            })
            .retry(
                RetryPolicy::exponential()
                    .attempts(rng.between(1, 4) as u32)
                    .first_delay(Duration::from_millis(rng.between(5, 50))),
            )
            .compensation_retry(
                RetryPolicy::exponential()
                    .attempts(rng.between(2, 6) as u32)
                    .first_delay(Duration::from_millis(rng.between(5, 50))),
            )
            .timeout_ms(rng.between(20, 120));
            if rng.chance(80) {
                step = step.compensate(move |ctx| {
                    panics_undo.check(ctx.saga(), i, Phase::Compensation);
                    StepAction::Custom {
                        name: keel::EventType::new(undo.clone()).expect("a valid name"),
                        // The compensation names what it undoes: the fake service checks it.
                        payload: json!({ "undo": ctx.own_result()["key"] }),
                    }
                });
            }
            if pivot_stage == Some(stage) {
                step = step.pivot();
            }
            group.push(step);
        }
        builder = if group.len() == 1 {
            builder.step(group.remove(0))
        } else {
            builder.parallel(group)
        };
    }
    if rng.chance(25) {
        builder = builder.deadline_ms(rng.between(50, 1_000));
    }
    let definition = Arc::new(
        builder
            .build()
            .expect("the simulated definitions are valid"),
    );
    let steps = definition.steps().len();
    let mut faults = HashMap::new();
    let style = rng.below(4); // 0: calm, 1: flaky, 2: hostile, 3: mixed
    for saga in &sagas {
        for step in 0..steps {
            for phase in [Phase::Action, Phase::Compensation] {
                let count = match style {
                    0 => rng.below(2),
                    1 => rng.below(4),
                    2 => rng.between(1, 6),
                    _ => rng.below(5),
                };
                let mut list = Vec::new();
                for _ in 0..count {
                    let roll = rng.below(120);
                    let fault = match roll {
                        0..=11 if phase == Phase::Action => Fault::Permanent,
                        0..=1 => Fault::Permanent,
                        12..=34 => Fault::Transient,
                        35..=44 => Fault::Unavailable,
                        45..=56 => Fault::LoseRequest,
                        57..=68 => Fault::LoseAnswer,
                        69..=80 => Fault::Late,
                        81..=90 => Fault::Twice,
                        91..=99 => Fault::Slow,
                        100..=104 => Fault::Oversized,
                        105..=106 => Fault::Panic,
                        107..=108 => Fault::PanicAfterApply,
                        109..=111 if phase == Phase::Action => Fault::Declined,
                        _ => Fault::Ok,
                    };
                    list.push(fault);
                }
                faults.insert((saga.to_string(), step as u16, phase), list);
            }
        }
    }
    let mut cancels = Vec::new();
    for saga in &sagas {
        if rng.chance(15) {
            cancels.push((rng.between(0, 300), saga.clone()));
        }
    }
    let outage = rng.chance(20).then(|| {
        let from = rng.between(0, 400);
        (from, from + rng.between(20, 1_500))
    });
    Plan {
        definition,
        sagas,
        faults,
        cancels,
        crash_percent: [0, 2, 5, 12][rng.below(4) as usize],
        crashes_max: rng.between(0, 4) as u32,
        outage,
        panics,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A call reaches its service.
    Deliver {
        epoch: u32,
        saga: SagaId,
        step: u16,
        phase: Phase,
        attempt: u16,
        key: String,
        payload: String,
    },
    /// An answer reaches the orchestrator.
    Answer {
        epoch: u32,
        saga: SagaId,
        step: u16,
        phase: Phase,
        attempt: u16,
        answer: String,
    },
    /// A timer fires.
    Timer {
        epoch: u32,
        generation: u64,
        saga: SagaId,
        timer: SagaTimer,
    },
    /// Someone cancels a saga.
    Cancel { saga: SagaId },
    /// A slow service finishes its work on `key`, applies it and answers.
    Finish {
        epoch: u32,
        saga: SagaId,
        step: u16,
        phase: Phase,
        attempt: u16,
        key: String,
    },
    /// The orchestrator tries a held commit again.
    RetryCommit { epoch: u32 },
    /// The orchestrator, dead since a crash during an outage, starts again.
    Restart { epoch: u32 },
}

impl Event {
    /// Whether the orchestrator takes it (and so waits while a commit is held).
    fn for_orchestrator(&self) -> bool {
        matches!(
            self,
            Self::Answer { .. } | Self::Timer { .. } | Self::Cancel { .. }
        )
    }
}

/// What a fake service remembers of one idempotency key.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// The settled answer: success (the effect applied) or a permanent refusal.
    pub settled: Option<Result<Value, String>>,
    /// How many times the effect was applied: the law says at most once.
    pub applied: u32,
    /// How many deliveries arrived (redeliveries included).
    pub deliveries: u32,
    /// Which (saga, step, phase) used this key.
    pub owner: (String, u16, Phase),
    /// Faults already played.
    pub played: usize,
    /// Whether a slow delivery is still being worked on.
    pub working: bool,
    /// Whether the settled answer is too big to keep (until the operator phase).
    pub oversized: bool,
}

/// One simulated world.
pub struct World {
    pub rng: Rng,
    pub plan: Plan,
    pub now: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    epoch: u32,
    pub engine: Engine,
    /// The durable saga log: each saga's records as stored bytes.
    pub log: BTreeMap<SagaId, Vec<Vec<u8>>>,
    pub services: HashMap<String, KeyRecord>,
    timers: HashMap<(SagaId, SagaTimer), u64>,
    generation: u64,
    pub crashes: u32,
    /// Whether services have stopped failing (the operator phase).
    pub healthy: bool,
    pub violations: Vec<String>,
    pub steps_taken: u64,
    /// A commit waiting for the store, and the orchestrator's events held meanwhile.
    committing: Option<Commit>,
    held: Vec<Event>,
    /// The epoch of an orchestrator that crashed while the store was away and starts
    /// again when it is back.
    restarting: Option<u32>,
}

/// The most simulated events one case may take before it counts as stuck.
pub const EVENTS_MAX: u64 = 200_000;

impl World {
    pub fn new(seed: u64) -> Self {
        quiet_simulated_panics();
        let mut rng = Rng::new(seed);
        let plan = plan(&mut rng);
        let engine = new_engine(&plan.definition);
        Self {
            rng,
            plan,
            now: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            epoch: 0,
            engine,
            log: BTreeMap::new(),
            services: HashMap::new(),
            timers: HashMap::new(),
            generation: 0,
            crashes: 0,
            healthy: false,
            violations: Vec::new(),
            steps_taken: 0,
            committing: None,
            held: Vec::new(),
            restarting: None,
        }
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, event)));
    }

    fn stamp(&self) -> keel::Timestamp {
        keel::Timestamp::from_unix_millis(1_700_000_000_000 + self.now as i64)
    }

    /// Starts every saga of the plan and runs until nothing is left to happen.
    pub fn run(&mut self) -> Result<(), String> {
        let saga_type = SagaType::new("sim.saga").expect("a valid type");
        for saga in self.plan.sagas.clone() {
            let input = json!({ "order": saga.as_str() });
            self.engine
                .start(&saga_type, saga, input, self.stamp())
                .map_err(|e| format!("start failed: {e}"))?;
        }
        for (at, saga) in self.plan.cancels.clone() {
            self.push(at, Event::Cancel { saga });
        }
        self.persist_and_dispatch();
        self.drain()
    }

    /// Processes events until the queue is empty.
    pub fn drain(&mut self) -> Result<(), String> {
        while let Some(Reverse((at, _, event))) = self.queue.pop() {
            self.steps_taken += 1;
            if self.steps_taken > EVENTS_MAX {
                return Err(format!(
                    "no quiescence after {EVENTS_MAX} events: a saga keeps going"
                ));
            }
            self.now = self.now.max(at);
            match event {
                Event::RetryCommit { epoch } => {
                    if epoch == self.epoch
                        && let Some(commit) = self.committing.take()
                    {
                        self.commit_round(commit);
                    }
                }
                Event::Restart { epoch } => {
                    if self.restarting == Some(epoch) {
                        self.restart();
                    }
                }
                // No process to take it: a cancellation is lost (its caller would try
                // again), answers and timers were for the dead process anyway.
                event if self.restarting.is_some() && event.for_orchestrator() => {}
                // While a commit waits for the store, the orchestrator takes nothing new.
                event if self.committing.is_some() && event.for_orchestrator() => {
                    self.held.push(event);
                }
                event => {
                    self.step(event);
                    self.persist_and_dispatch();
                }
            }
            while self.committing.is_none() && !self.held.is_empty() {
                let event = self.held.remove(0);
                self.step(event);
                self.persist_and_dispatch();
            }
        }
        if self.committing.is_some() || !self.held.is_empty() {
            return Err("the queue ran dry with a commit held".into());
        }
        Ok(())
    }

    /// Whether the store is away now.
    fn store_down(&self) -> bool {
        !self.healthy
            && self
                .plan
                .outage
                .is_some_and(|(from, to)| (from..to).contains(&self.now))
    }

    fn step(&mut self, event: Event) {
        let now = self.stamp();
        match event {
            Event::Deliver {
                epoch,
                saga,
                step,
                phase,
                attempt,
                key,
                payload,
            } => {
                self.serve(epoch, saga, step, phase, attempt, key, payload);
            }
            Event::Answer {
                epoch,
                saga,
                step,
                phase,
                attempt,
                answer,
            } => {
                if epoch != self.epoch {
                    return; // sent to a process that has since crashed
                }
                let answer: Answer = serde_json::from_str(&answer).expect("answers round-trip");
                let event = SagaEvent::Answered {
                    step,
                    phase,
                    attempt,
                    answer,
                };
                let _ = self.engine.handle(&saga, event, now);
            }
            Event::Timer {
                epoch,
                generation,
                saga,
                timer,
            } => {
                if epoch != self.epoch
                    || self.timers.get(&(saga.clone(), timer)) != Some(&generation)
                {
                    return;
                }
                self.timers.remove(&(saga.clone(), timer));
                let _ = self
                    .engine
                    .handle(&saga, SagaEvent::TimerFired { timer }, now);
            }
            Event::Cancel { saga } => {
                let _ = self
                    .engine
                    .cancel(&saga, "simulated cancellation".into(), now);
            }
            Event::Finish {
                epoch,
                saga,
                step,
                phase,
                attempt,
                key,
            } => {
                let record = self.services.get_mut(&key).expect("a key being worked on");
                if !record.working {
                    return; // finished early, for the operator phase
                }
                record.working = false;
                record.applied += 1;
                let value = json!({ "key": key, "attempt": attempt });
                record.settled = Some(Ok(value.clone()));
                let text =
                    serde_json::to_string(&Answer::Succeeded { value }).expect("answers serialise");
                let event = Event::Answer {
                    epoch,
                    saga,
                    step,
                    phase,
                    attempt,
                    answer: text,
                };
                self.push(self.now + 1, event);
            }
            Event::RetryCommit { .. } | Event::Restart { .. } => {
                unreachable!("handled by drain")
            }
        }
    }

    /// A fake idempotent service: settles each key once, answers repeats from its record.
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &mut self,
        epoch: u32,
        saga: SagaId,
        step: u16,
        phase: Phase,
        attempt: u16,
        key: String,
        payload: String,
    ) {
        let owner = (saga.to_string(), step, phase);
        let record = self
            .services
            .entry(key.clone())
            .or_insert_with(|| KeyRecord {
                settled: None,
                applied: 0,
                deliveries: 0,
                owner: owner.clone(),
                played: 0,
                working: false,
                oversized: false,
            });
        record.deliveries += 1;
        if record.owner != owner {
            self.violations.push(format!(
                "key {key} used by {:?} and {owner:?}",
                record.owner
            ));
        }
        if phase == Phase::Compensation {
            // The compensation must name the effect it undoes (data flow from the
            // action's result, rebuilt after every restart).
            let payload: Value = serde_json::from_str(&payload).expect("payload json");
            let action_key = self
                .services
                .iter()
                .find(|(_, r)| r.owner == (saga.to_string(), step, Phase::Action) && r.applied > 0)
                .map(|(k, _)| k.clone());
            if payload["undo"].as_str() != action_key.as_deref() {
                self.violations.push(format!(
                    "saga {saga} step {step}: compensation names {} but the applied action was {action_key:?}",
                    payload["undo"]
                ));
            }
        }
        let latency = self.latency();
        let record = self.services.get_mut(&key).expect("just inserted");
        let answer_at = self.now + latency;
        let healthy = self.healthy;
        let (answer, copies, delay): (Option<Answer>, u32, u64) = if record.working {
            let refusal = Answer::Failed(Failure::new(
                FailureKind::Permanent,
                "409 Conflict: idempotency key in use",
            ));
            (Some(refusal), 1, 0)
        } else if let Some(settled) = &record.settled {
            let answer = match settled {
                Ok(value) if record.oversized && !healthy => Answer::Succeeded {
                    value: oversized(value),
                },
                Ok(value) => Answer::Succeeded {
                    value: value.clone(),
                },
                Err(reason) => Answer::Failed(Failure::new(FailureKind::Permanent, reason.clone())),
            };
            (Some(answer), 1, 0)
        } else {
            let fault = if self.healthy {
                Fault::Ok
            } else {
                let list = self.plan.faults.get(&owner).cloned().unwrap_or_default();
                let fault = list.get(record.played).copied().unwrap_or(Fault::Ok);
                record.played += 1;
                fault
            };
            let value = json!({ "key": key, "attempt": attempt });
            let apply = |record: &mut KeyRecord| {
                record.applied += 1;
                record.settled = Some(Ok(value.clone()));
            };
            match fault {
                Fault::Ok => {
                    apply(record);
                    (
                        Some(Answer::Succeeded {
                            value: value.clone(),
                        }),
                        1,
                        0,
                    )
                }
                Fault::Permanent => {
                    let reason = "refused for good".to_owned();
                    record.settled = Some(Err(reason.clone()));
                    (
                        Some(Answer::Failed(Failure::new(FailureKind::Permanent, reason))),
                        1,
                        0,
                    )
                }
                Fault::Transient => (
                    Some(Answer::Failed(Failure::new(FailureKind::Transient, "503"))),
                    1,
                    0,
                ),
                Fault::Unavailable => (
                    Some(Answer::Failed(
                        Failure::new(FailureKind::Unavailable, "circuit open")
                            .retry_after(Duration::from_millis(20)),
                    )),
                    1,
                    0,
                ),
                Fault::LoseRequest => (None, 0, 0),
                Fault::LoseAnswer => {
                    apply(record);
                    (None, 0, 0)
                }
                Fault::Late => {
                    apply(record);
                    (
                        Some(Answer::Succeeded {
                            value: value.clone(),
                        }),
                        1,
                        500,
                    )
                }
                Fault::Twice => {
                    apply(record);
                    (
                        Some(Answer::Succeeded {
                            value: value.clone(),
                        }),
                        2,
                        0,
                    )
                }
                Fault::Slow => {
                    record.working = true;
                    let finish = Event::Finish {
                        epoch,
                        saga: saga.clone(),
                        step,
                        phase,
                        attempt,
                        key: key.clone(),
                    };
                    self.push(self.now + SLOW_MS, finish);
                    (None, 0, 0)
                }
                Fault::Oversized => {
                    apply(record);
                    record.oversized = true;
                    (
                        Some(Answer::Succeeded {
                            value: oversized(&value),
                        }),
                        1,
                        0,
                    )
                }
                Fault::Panic => (Some(panicking_handler(&key)), 1, 0),
                Fault::PanicAfterApply => {
                    apply(record);
                    (Some(panicking_handler(&key)), 1, 0)
                }
                Fault::Declined => {
                    // Like a real idempotent service, it keeps its answer for the
                    // key, refusal included: a repeat is declined again.
                    let declined = json!({ "key": key, "declined": true });
                    record.settled = Some(Ok(declined.clone()));
                    (Some(Answer::Succeeded { value: declined }), 1, 0)
                }
            }
        };
        if let Some(answer) = answer {
            let text = serde_json::to_string(&answer).expect("answers serialise");
            for copy in 0..copies {
                self.push(
                    answer_at + delay + u64::from(copy) * 3,
                    Event::Answer {
                        epoch,
                        saga: saga.clone(),
                        step,
                        phase,
                        attempt,
                        answer: text.clone(),
                    },
                );
            }
        }
    }

    /// Commits the engine's batch to the durable log (maybe crashing before or after),
    /// then carries out its calls and timers. While a commit waits for the store,
    /// nothing new is committed: the engine has taken no event since.
    fn persist_and_dispatch(&mut self) {
        if self.committing.is_some() {
            return;
        }
        let batch = self.engine.take_batch();
        if batch.is_empty() {
            return;
        }
        if !batch.appends.is_empty() && self.crash_now() {
            self.crash(); // before the commit: the batch is lost
            return;
        }
        self.commit_round(Commit::new(batch));
    }

    /// One round of appends of `commit`, as the orchestrator's driver makes it; holds
    /// the commit for another round while the store is away.
    fn commit_round(&mut self, mut commit: Commit) {
        let indices = commit.pending();
        if commit.dead_letters_pending() {
            let result = self.store_result(Ok(()));
            commit.dead_letters_answered(result);
        }
        if !commit.dead_letters_pending() {
            for index in indices {
                let result = self.store_append(&commit.batch().appends[index]);
                commit.answered(index, result);
            }
        }
        match commit.retry_after(self.stamp()) {
            Some(delay) => {
                let at = self.now + delay.as_millis() as u64;
                self.committing = Some(commit);
                self.push(at, Event::RetryCommit { epoch: self.epoch });
            }
            None => {
                let (batch, refused) = commit.finish();
                self.committed(batch, refused);
            }
        }
    }

    /// What the store answers an operation that would give `ok`: the outage's error
    /// while it is away.
    fn store_result(
        &self,
        ok: Result<(), keel::store::Error>,
    ) -> Result<keel::store::Appended, keel::store::Error> {
        if self.store_down() {
            return Err(keel::store::Error::Unavailable {
                backend: "sim",
                reason: "the store is away".into(),
            });
        }
        ok.map(|()| keel::store::Appended {
            first_version: 1,
            last_version: 1,
            first_position: 1,
            deduplicated: false,
        })
    }

    /// Appends one saga's records to the log, as a store would: all or nothing, at the
    /// expected version, no record over [`RECORD_BYTES_MAX`].
    fn store_append(
        &mut self,
        append: &keel::orchestrator::SagaAppend,
    ) -> Result<keel::store::Appended, keel::store::Error> {
        let encoded: Vec<Vec<u8>> = append
            .records
            .iter()
            .map(|record| record.to_cloudevent_json().into_bytes())
            .collect();
        let stored = self
            .log
            .get(&append.saga)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let from = usize::try_from(append.expected).expect("a small log");
        if self.store_down() {
            // Down, it refuses; now and then it commits first and loses the answer.
            if stored.len() == from && self.rng.chance(25) {
                self.log
                    .entry(append.saga.clone())
                    .or_default()
                    .extend(encoded);
            }
            return self.store_result(Ok(()));
        }
        // The same records at the same place: a repeat, answered as such.
        if !encoded.is_empty() && stored.get(from..) == Some(&encoded[..]) {
            return Ok(keel::store::Appended {
                first_version: append.expected + 1,
                last_version: append.expected + encoded.len() as u64,
                first_position: 1,
                deduplicated: true,
            });
        }
        if stored.len() != from {
            return Err(keel::store::Error::VersionConflict {
                stream: append.stream.clone(),
                expected: append.expected.to_string(),
                actual: stored.len() as u64,
            });
        }
        let size = append
            .records
            .iter()
            .map(|record| match &record.payload {
                keel::Payload::Binary(bytes) => bytes.len(),
                keel::Payload::Json(value) => value.to_string().len(),
            })
            .find(|&size| size > RECORD_BYTES_MAX);
        if let Some(size_bytes) = size {
            return Err(keel::store::Error::Core(keel::Error::TooLarge {
                field: "data",
                size_bytes,
                limit_bytes: RECORD_BYTES_MAX,
            }));
        }
        self.log
            .entry(append.saga.clone())
            .or_default()
            .extend(encoded);
        self.store_result(Ok(()))
    }

    /// After a commit: carries out the batch, as the driver does.
    fn committed(&mut self, batch: Batch, refused: Vec<(SagaId, keel::store::Error)>) {
        let refused: HashMap<SagaId, keel::store::Error> = refused.into_iter().collect();
        if !batch.appends.is_empty() && self.crash_now() {
            self.crash(); // after the commit, before any call went out
            return;
        }
        for (saga, error) in &refused {
            // The engine keeps every record within the store's limits and is the only
            // writer: a refusal is a bug it would hide by rebuilding the saga.
            self.violations.push(format!(
                "saga {saga}: its records were refused by the store: {error}"
            ));
        }
        // As the driver does: set, then cancel.
        let cancelled = batch.cancelled;
        for (saga, timer, due) in batch.timers {
            if refused.contains_key(&saga) {
                continue;
            }
            self.generation += 1;
            self.timers.insert((saga.clone(), timer), self.generation);
            let at = due
                .unix_millis()
                .saturating_sub(1_700_000_000_000)
                .max(self.now as i64) as u64;
            let event = Event::Timer {
                epoch: self.epoch,
                generation: self.generation,
                saga,
                timer,
            };
            self.push(at, event);
        }
        for (saga, timer) in cancelled {
            self.timers.remove(&(saga, timer));
        }
        for (saga, call) in batch.calls {
            if !refused.contains_key(&saga) {
                self.send(saga, call);
            }
        }
        // As the driver does: the engine ran ahead of the log for these sagas.
        for saga in refused.keys() {
            self.engine.forget(saga);
            // The rebuild reads the store, which fails while it is away.
            let envelopes = decode_all(self.log.get(saga).map_or(&[][..], Vec::as_slice));
            if envelopes.is_empty() || self.store_down() {
                continue;
            }
            let records = envelopes.iter().enumerate().map(|(i, e)| (i as u64 + 1, e));
            if self.engine.restore(saga, records).is_ok() {
                self.engine.resume_one(saga, self.stamp());
            }
        }
        if !refused.is_empty() {
            self.persist_and_dispatch();
        }
    }

    fn send(&mut self, saga: SagaId, call: StepCall) {
        let IntentKind::Custom { payload, .. } = &call.intent.kind else {
            self.violations.push(format!(
                "unexpected intent kind {:?}",
                call.intent.kind.family()
            ));
            return;
        };
        let at = self.now + self.latency();
        let event = Event::Deliver {
            epoch: self.epoch,
            saga,
            step: call.step,
            phase: call.phase,
            attempt: call.attempt,
            key: call.intent.id.to_string(),
            payload: payload.to_string(),
        };
        self.push(at, event);
    }

    /// One network hop: up to 15 ms, or up to 5 ms once the operator has made things
    /// healthy (well inside the shortest timeout, 20 ms, for a round trip).
    fn latency(&mut self) -> u64 {
        if self.healthy {
            self.rng.between(1, 5)
        } else {
            self.rng.between(1, 15)
        }
    }

    fn crash_now(&mut self) -> bool {
        self.restarting.is_none()
            && self.crashes < self.plan.crashes_max
            && self.rng.chance(self.plan.crash_percent)
    }

    /// The orchestrator dies: its memory, timers and answers in transit are gone. It
    /// restarts from the durable log and picks up what was in flight; while the store is
    /// away its start fails, and it is started again once the store is back.
    fn crash(&mut self) {
        self.crashes += 1;
        self.epoch += 1;
        self.timers.clear();
        self.committing = None;
        self.held.clear();
        self.engine = new_engine(&self.plan.definition);
        if let Some((_, back)) = self.plan.outage.filter(|_| self.store_down()) {
            self.restarting = Some(self.epoch);
            self.push(back, Event::Restart { epoch: self.epoch });
            return;
        }
        self.restart();
    }

    /// Starts the orchestrator on the durable log.
    fn restart(&mut self) {
        self.restarting = None;
        self.engine = new_engine(&self.plan.definition);
        for (saga, records) in &self.log {
            let envelopes = decode_all(records);
            if let Err(e) = self.engine.restore(
                saga,
                envelopes.iter().enumerate().map(|(i, e)| (i as u64 + 1, e)),
            ) {
                self.violations
                    .push(format!("saga {saga} does not restore: {e}"));
            }
        }
        let now = self.stamp();
        self.engine.resume(now);
        // A client whose start was never acknowledged starts the saga again.
        let saga_type = SagaType::new("sim.saga").expect("a valid type");
        for saga in self.plan.sagas.clone() {
            if !self.log.contains_key(&saga) {
                let input = json!({ "order": saga.as_str() });
                if let Err(e) = self
                    .engine
                    .start(&saga_type, saga.clone(), input, self.stamp())
                {
                    self.violations
                        .push(format!("saga {saga}: restart refused: {e}"));
                }
            }
        }
        self.persist_and_dispatch();
    }

    /// Rebuilds `saga` from the durable log alone.
    pub fn replay(&self, saga: &SagaId) -> Result<SagaState, String> {
        let mut fresh = new_engine(&self.plan.definition);
        let envelopes = decode_all(self.log.get(saga).ok_or("no log")?);
        fresh
            .restore(
                saga,
                envelopes.iter().enumerate().map(|(i, e)| (i as u64 + 1, e)),
            )
            .map_err(|e| e.to_string())?
            .cloned()
            .ok_or_else(|| "not held after replay".to_owned())
    }

    /// The history: every record of every saga, as stored.
    pub fn history(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (saga, records) in &self.log {
            out.extend_from_slice(saga.as_str().as_bytes());
            for record in records {
                out.push(b'\n');
                out.extend_from_slice(record);
            }
            out.push(b'\n');
        }
        out
    }

    /// The history, one line per record: saga, version, time, event, status, transitions.
    pub fn readable_history(&self) -> String {
        let mut out = String::new();
        for (saga, records) in &self.log {
            for (version, envelope) in decode_all(records).iter().enumerate() {
                // Records are JSON carried as bytes.
                let data: Value = match &envelope.payload {
                    keel::Payload::Json(data) => data.clone(),
                    keel::Payload::Binary(bytes) => {
                        serde_json::from_slice(bytes).unwrap_or(Value::Null)
                    }
                };
                let transitions: Vec<String> = data["transitions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        format!(
                            "{}{}",
                            t["transition"].as_str().unwrap_or("?"),
                            t.get("step").map(|s| s.to_string()).unwrap_or_default()
                        )
                    })
                    .collect();
                out.push_str(&format!(
                    "{saga} v{} t={} {} -> {} {:?}\n",
                    version + 1,
                    envelope.time.unix_millis() - 1_700_000_000_000,
                    data["event"],
                    data["status"]["status"],
                    transitions
                ));
            }
        }
        out
    }

    /// The operator phase: services become healthy, and every saga that needs
    /// intervention gets a command. Returns the commands given.
    pub fn intervene(&mut self) -> Vec<(SagaId, OperatorCommand)> {
        self.healthy = true;
        // The operator fixed whatever made services refuse for good, waited for slow
        // services to finish their work, and deployed the fix of the panicking closures.
        self.plan.panics.fixed.store(true, Ordering::Relaxed);
        for (key, record) in &mut self.services {
            let declined = matches!(&record.settled, Some(Ok(v)) if v["declined"] == true);
            if declined || matches!(record.settled, Some(Err(_))) {
                record.settled = None;
            }
            if record.working {
                record.working = false;
                record.applied += 1;
                record.settled = Some(Ok(json!({ "key": key, "attempt": 0 })));
            }
        }
        let mut given = Vec::new();
        let now = self.stamp();
        let mut parked: Vec<SagaId> = self
            .engine
            .sagas()
            .filter(|s| matches!(s.status, SagaStatus::NeedsIntervention { .. }))
            .map(|s| s.id.clone())
            .collect();
        parked.sort();
        for saga in parked {
            let command = match self.rng.below(10) {
                0..=6 => OperatorCommand::Retry,
                7..=8 => OperatorCommand::Skip,
                _ => OperatorCommand::Resolve {
                    note: "closed by hand".into(),
                },
            };
            if let Err(e) = self.engine.operate(&saga, command.clone(), now) {
                self.violations.push(format!(
                    "operator {} on {saga} refused: {e}",
                    command.name()
                ));
            }
            given.push((saga, command));
        }
        // The commands are acknowledged to the operator: a crash may come later, not
        // before their commit (an unacknowledged command would simply be given again).
        let crash_percent = std::mem::replace(&mut self.plan.crash_percent, 0);
        self.persist_and_dispatch();
        self.plan.crash_percent = crash_percent;
        given
    }
}

fn new_engine(definition: &Arc<SagaDefinition>) -> Engine {
    let mut engine = Engine::new();
    engine.register(Arc::clone(definition));
    engine.set_retain_finished(true);
    engine.set_record_bytes_max(RECORD_BYTES_MAX);
    engine
}

/// The idempotency key of step `step`'s action in saga `saga`.
fn key_of(saga: &str, step: usize) -> String {
    let saga = SagaId::new(saga).expect("a valid id");
    let step = u16::try_from(step).expect("few steps");
    keel::orchestrator::id::step_intent_id(saga.correlation(), step, Phase::Action).to_string()
}

/// `value` padded past what a record may hold.
fn oversized(value: &Value) -> Value {
    json!({ "answer": value, "padding": "x".repeat(RECORD_BYTES_MAX + 1) })
}

/// What a handler that panics answers, called as the orchestrator calls handlers.
fn panicking_handler(key: &str) -> Answer {
    let handler = |call: keel::effects::Call| async move {
        if call.attempt > 0 {
            panic!("{PANIC_TEXT}: the handler of {}", call.intent.id);
        }
        Ok::<Value, keel::effects::Failure>(Value::Null)
    };
    let id: keel::IntentId = key.parse().expect("keys are intent ids");
    let intent = keel::Intent {
        id,
        kind: IntentKind::Custom {
            name: keel::EventType::from_static("sim.panic"),
            payload: Value::Null,
        },
    };
    let call = keel::effects::Call::new(
        intent,
        keel::effects::InstanceId::from("sim"),
        keel::effects::Metrics::default(),
    );
    let mut future = std::pin::pin!(answer_of(&handler, call));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(answer) => answer,
        std::task::Poll::Pending => unreachable!("the handler answers at once"),
    }
}

fn decode_all(records: &[Vec<u8>]) -> Vec<Envelope> {
    records
        .iter()
        .map(|bytes| {
            Envelope::from_cloudevent_slice(bytes, &keel::cloudevents::DecodeLimits::default())
                .expect("stored records decode")
        })
        .collect()
}

/// Checks laws 1 to 4 and 6 on a world at rest; returns the broken ones.
pub fn check_laws(world: &World) -> Vec<String> {
    let mut broken = world.violations.clone();
    broken.extend(check_sagas(world, &world.plan.sagas));
    broken
}

/// Laws 1 to 4 and 6 for `sagas`: every effect the services applied is kept by a
/// Completed saga, undone by a Compensated one, or named by a parked one.
fn check_sagas(world: &World, sagas: &[SagaId]) -> Vec<String> {
    let mut broken = Vec::new();
    let definition = &world.plan.definition;
    for saga in sagas {
        let live = match world.engine.state(saga) {
            Some(state) => state.clone(),
            None => {
                broken.push(format!("saga {saga}: not held by the engine at the end"));
                continue;
            }
        };
        // Law 6: the log rebuilds the live state.
        match world.replay(saga) {
            Ok(replayed) if replayed == live => {}
            Ok(replayed) => broken.push(format!(
                "saga {saga}: replay differs from live\n live: {live:?}\n replay: {replayed:?}"
            )),
            Err(e) => broken.push(format!("saga {saga}: replay failed: {e}")),
        }
        // Law 1: at rest, with a reason where one is due.
        match &live.status {
            SagaStatus::Completed | SagaStatus::Compensated { .. } => {}
            SagaStatus::NeedsIntervention { reason, .. } if !reason.is_empty() => {}
            other => broken.push(format!("saga {saga}: ended {other:?}")),
        }
        // Law 2: compensated = completed compensable steps, reverse completion order.
        let undo_order: Vec<u16> = live
            .completed
            .iter()
            .rev()
            .copied()
            .filter(|&s| definition.steps()[usize::from(s)].is_compensated())
            .collect();
        match &live.status {
            SagaStatus::Compensated { .. } if live.compensated != undo_order => broken.push(format!(
                "saga {saga}: compensated {:?}, expected {undo_order:?} (completed {:?})",
                live.compensated, live.completed
            )),
            SagaStatus::Completed if !live.compensated.is_empty() => {
                broken.push(format!("saga {saga}: completed yet compensated {:?}", live.compensated));
            }
            SagaStatus::NeedsIntervention { .. } if !undo_order.starts_with(&live.compensated) => broken.push(format!(
                "saga {saga}: compensated {:?} out of order (expected a prefix of {undo_order:?})",
                live.compensated
            )),
            _ => {}
        }
        // Law 3: never started, never compensated; past the pivot, nothing compensated.
        for &s in &live.compensated {
            if !live.completed.contains(&s) {
                broken.push(format!(
                    "saga {saga}: step {s} compensated but never completed"
                ));
            }
        }
        if let Some(pivot) = definition.pivot()
            && live.completed.contains(&pivot)
            && !live.compensated.is_empty()
        {
            broken.push(format!(
                "saga {saga}: compensated {:?} after the pivot",
                live.compensated
            ));
        }
        // Law 4 and the services' view: each (step, phase) used one key, applied at most
        // once, and what was applied matches what the saga believes.
        for (index, st) in live.steps.iter().enumerate() {
            let step = index as u16;
            for phase in [Phase::Action, Phase::Compensation] {
                let owner = (saga.to_string(), step, phase);
                let keys: Vec<&KeyRecord> = world
                    .services
                    .values()
                    .filter(|r| r.owner == owner)
                    .collect();
                if keys.len() > 1 {
                    broken.push(format!(
                        "saga {saga} step {step} {phase:?}: {} idempotency keys",
                        keys.len()
                    ));
                }
                let applied: u32 = keys.iter().map(|r| r.applied).sum();
                if applied > 1 {
                    broken.push(format!(
                        "saga {saga} step {step} {phase:?}: effect applied {applied} times"
                    ));
                }
                let at_rest_cleanly = matches!(
                    live.status,
                    SagaStatus::Completed | SagaStatus::Compensated { .. }
                );
                let believed = match phase {
                    Phase::Action => live.completed.contains(&step),
                    Phase::Compensation => live.compensated.contains(&step),
                };
                if at_rest_cleanly && believed != (applied == 1) {
                    broken.push(format!(
                        "saga {saga} step {step} {phase:?}: the saga believes applied={believed}, the service applied {applied} (phase {:?})",
                        st.phase
                    ));
                }
                if phase == Phase::Action && believed && applied == 0 {
                    broken.push(format!(
                        "saga {saga} step {step}: completed without its effect"
                    ));
                }
                // A parked saga names every effect it has not settled: an applied action
                // is completed (to keep or undo) or its step is of unknown outcome; an
                // applied compensation is recorded or its step is parked.
                let named = match phase {
                    Phase::Action => st.is_unknown(),
                    Phase::Compensation => st.phase == StepPhase::Parked,
                };
                if matches!(live.status, SagaStatus::NeedsIntervention { .. })
                    && applied == 1
                    && !believed
                    && !named
                {
                    broken.push(format!(
                        "saga {saga} step {step} {phase:?}: the service applied it, but the parked saga neither recorded it nor names it (phase {:?})",
                        st.phase
                    ));
                }
            }
            if st.phase == StepPhase::Compensated && !live.completed.contains(&step) {
                broken.push(format!(
                    "saga {saga}: step {step} compensated without completing"
                ));
            }
        }
    }
    broken
}

/// Operator commands end a parked saga cleanly once services are healthy; after a
/// retry, the saga's record agrees with the services' as at any clean end.
pub fn check_after_intervention(world: &World, given: &[(SagaId, OperatorCommand)]) -> Vec<String> {
    let mut broken = world.violations.clone();
    let retried: Vec<SagaId> = given
        .iter()
        .filter(|(_, command)| *command == OperatorCommand::Retry)
        .map(|(saga, _)| saga.clone())
        .collect();
    broken.extend(check_sagas(world, &retried));
    for (saga, command) in given {
        let Some(state) = world.engine.state(saga) else {
            broken.push(format!("saga {saga}: gone after {}", command.name()));
            continue;
        };
        let fine = match command {
            OperatorCommand::Retry => matches!(
                state.status,
                SagaStatus::Completed | SagaStatus::Compensated { .. }
            ),
            OperatorCommand::Skip => state.status.is_at_rest(),
            OperatorCommand::Resolve { .. } => matches!(state.status, SagaStatus::Resolved { .. }),
        };
        if !fine {
            broken.push(format!(
                "saga {saga}: after {} with healthy services it is {:?}",
                command.name(),
                state.status
            ));
        }
        match world.replay(saga) {
            Ok(replayed) if &replayed == state => {}
            Ok(_) => broken.push(format!(
                "saga {saga}: replay differs from live after {}",
                command.name()
            )),
            Err(e) => broken.push(format!(
                "saga {saga}: replay failed after {}: {e}",
                command.name()
            )),
        }
    }
    broken
}
