//! Equipment monitoring: a user's own reducer (not a saga) on keel's durable driver.
//!
//! Each piece of equipment is commissioned by a call to the equipment service, then
//! checked every [`Monitor::check_every`]. After [`Monitor::checks`] good checks it is
//! released and finishes. Two failed checks in a row raise an alarm and park it for an
//! operator; so does a commissioning the service refuses. A call that fails for a while
//! (a 429, a timeout) is tried again after the retry policy's backoff, under the same
//! idempotency key, so the service applies it once however often it is sent.
//!
//! Everything the reducer does is an intent: HTTP calls, and the timers for the next
//! check and the next retry. The durable driver records each step before performing
//! what it caused, so a SIGKILL at any moment loses nothing and doubles nothing.

use std::time::Duration;

use keel_core::driver::{Durable, Status};
use keel_core::retry::jitter_seed;
use keel_core::{
    CorrelationId, Emitter, Failure, FailureKind, HttpRequest, Input, Intent, IntentId, IntentKind,
    Outcome, OutcomeResult, Reducer, RetryDecision, RetryPolicy, TimerId, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The kind of these instances: their streams are `equipment-eq-1`, ...
pub const KIND: &str = "equipment";

/// The reducer: where the service is, and how often and how long to watch.
#[derive(Debug, Clone)]
pub struct Monitor {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The time between two checks.
    pub check_every: Duration,
    /// Good checks before the equipment is released.
    pub checks: u32,
    /// How a failing call is tried again.
    pub retry: RetryPolicy,
}

/// What an instance reacts to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// Commission the equipment: the first event of every instance.
    Commission,
    /// What became of a call or a timer.
    Done(Outcome),
}

impl From<Outcome> for Event {
    fn from(outcome: Outcome) -> Self {
        Self::Done(outcome)
    }
}

/// The call an instance is making.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Call {
    /// `POST /equipment/commission`.
    #[default]
    Commission,
    /// `POST /equipment/check-N`.
    Check(u32),
    /// `POST /alarms/raise-N`.
    RaiseAlarm(u32),
    /// `POST /equipment/release`: the service never refuses it for good.
    Release,
}

impl Call {
    /// The service's path for this call.
    fn path(self) -> String {
        match self {
            Self::Commission => "equipment/commission".to_owned(),
            Self::Check(n) => format!("equipment/check-{n}"),
            Self::RaiseAlarm(n) => format!("alarms/raise-{n}"),
            Self::Release => "equipment/release".to_owned(),
        }
    }

    /// A number of its own per call of an instance, from which its idempotency key
    /// derives: every attempt of one call has the same key.
    fn key(self) -> u32 {
        match self {
            Self::Commission => 1,
            Self::Release => 2,
            Self::Check(n) => 1_000 + n,
            Self::RaiseAlarm(n) => 1_000_000 + n,
        }
    }
}

/// Where a piece of equipment stands.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Phase {
    /// Being commissioned, checked or released: calls and timers move it.
    #[default]
    Working,
    /// Parked for an operator.
    Alarmed {
        /// Why.
        reason: String,
    },
    /// Released: the instance finished.
    Released,
}

/// One piece of equipment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Equipment {
    /// Where it stands.
    pub phase: Phase,
    /// The call being made (or the last one made).
    pub call: Call,
    /// Its attempt, from 1.
    pub attempt: u32,
    /// Good checks so far.
    pub passed: u32,
    /// Failed checks in a row.
    pub failed_in_a_row: u32,
    /// Checks made so far.
    pub checks: u32,
}

const CHECK: TimerId = TimerId::from_static("check");
const RETRY: TimerId = TimerId::from_static("retry");

impl Monitor {
    /// The monitor the `equipment_monitoring` example runs, calling the service at
    /// `base`: a check every 20 ms, released after 3 good ones, a failing call tried 6
    /// times from 20 ms up to 500 ms apart. Tools that replay the example's logs (the
    /// `keel` CLI's point-in-time view) build the same one.
    pub fn example(base: String) -> Self {
        Self {
            base,
            check_every: Duration::from_millis(20),
            checks: 3,
            retry: RetryPolicy::exponential()
                .attempts(6)
                .first_delay(Duration::from_millis(20))
                .max_delay(Duration::from_millis(500)),
        }
    }

    /// Emits the current call's request.
    fn send(&self, equipment: &Equipment, out: &mut Emitter<'_>) {
        let correlation: CorrelationId = out.cause().correlation;
        let key = IntentId::stable(correlation, equipment.call.key());
        let url = format!("{}/{}", self.base, equipment.call.path());
        let request = HttpRequest::post(url)
            .json(json!({ "saga": correlation.to_string() }))
            .timeout_ms(2_000)
            .idempotency_key(key.to_string());
        out.emit(request);
    }

    /// Starts `call` as its first attempt.
    fn start(&self, equipment: &mut Equipment, call: Call, out: &mut Emitter<'_>) {
        equipment.call = call;
        equipment.attempt = 1;
        self.send(equipment, out);
    }

    fn schedule_check(&self, now: Timestamp, out: &mut Emitter<'_>) {
        let due = now.plus_millis(millis(self.check_every));
        out.emit(IntentKind::ScheduleTimer { timer: CHECK, due });
    }

    /// The current call succeeded.
    fn succeeded(&self, equipment: &mut Equipment, now: Timestamp, out: &mut Emitter<'_>) {
        match equipment.call {
            Call::Commission => self.schedule_check(now, out),
            Call::Check(_) => {
                equipment.passed += 1;
                equipment.failed_in_a_row = 0;
                if equipment.passed >= self.checks {
                    self.start(equipment, Call::Release, out);
                } else {
                    self.schedule_check(now, out);
                }
            }
            Call::RaiseAlarm(_) => {
                let reason = "two checks in a row failed; the alarm is raised".to_owned();
                equipment.phase = Phase::Alarmed { reason };
            }
            Call::Release => equipment.phase = Phase::Released,
        }
    }

    /// The current call failed for good (after the retries the policy allows).
    fn gave_up(
        &self,
        equipment: &mut Equipment,
        reason: &str,
        now: Timestamp,
        out: &mut Emitter<'_>,
    ) {
        match equipment.call {
            Call::Check(_) if equipment.failed_in_a_row + 1 >= 2 => {
                equipment.failed_in_a_row += 1;
                self.start(equipment, Call::RaiseAlarm(equipment.checks), out);
            }
            Call::Check(_) => {
                equipment.failed_in_a_row += 1;
                self.schedule_check(now, out);
            }
            Call::Commission | Call::RaiseAlarm(_) | Call::Release => {
                let call = equipment.call.path();
                let reason = format!("`{call}` failed for good: {reason}");
                equipment.phase = Phase::Alarmed { reason };
            }
        }
    }

    /// The current call failed: try it again after the backoff, or give up.
    fn failed(
        &self,
        equipment: &mut Equipment,
        failure: &Failure,
        now: Timestamp,
        out: &mut Emitter<'_>,
    ) {
        let key = IntentId::stable(out.cause().correlation, equipment.call.key());
        let seed = jitter_seed(&key, equipment.attempt);
        let decision =
            self.retry
                .decide(equipment.attempt, failure.kind, failure.retry_after, seed);
        match decision {
            RetryDecision::RetryAfter(delay) => {
                let due = now.plus_millis(millis(delay));
                out.emit(IntentKind::ScheduleTimer { timer: RETRY, due });
            }
            _ => self.gave_up(equipment, &failure.reason, now, out),
        }
    }
}

impl Reducer for Monitor {
    type State = Equipment;
    type Action = Input<Event>;

    fn reduce_into(
        &self,
        equipment: &mut Equipment,
        action: Input<Event>,
        intents: &mut Vec<Intent>,
    ) {
        let now = action.now;
        let mut out = action.cause.emitter(intents);
        let outcome = match action.body {
            Event::Commission => return self.start(equipment, Call::Commission, &mut out),
            Event::Done(outcome) => outcome,
        };
        match outcome.result {
            OutcomeResult::TimerFired { timer } if timer == CHECK => {
                equipment.checks += 1;
                self.start(equipment, Call::Check(equipment.checks), &mut out);
            }
            OutcomeResult::TimerFired { .. } => {
                equipment.attempt += 1;
                self.send(equipment, &mut out);
            }
            OutcomeResult::Succeeded { .. } => self.succeeded(equipment, now, &mut out),
            OutcomeResult::Failed(failure) => self.failed(equipment, &failure, now, &mut out),
            OutcomeResult::TimedOut => {
                let timeout = Failure::new(FailureKind::Timeout, "the call timed out");
                self.failed(equipment, &timeout, now, &mut out);
            }
            // Outcomes this keel does not know yet: the call is treated as failed.
            _ => self.gave_up(equipment, "an outcome of an unknown kind", now, &mut out),
        }
    }
}

impl Durable for Monitor {
    type Event = Event;

    fn kind(&self) -> &str {
        KIND
    }

    fn status(&self, equipment: &Equipment) -> Status {
        match &equipment.phase {
            Phase::Working => Status::Running,
            Phase::Alarmed { reason } => Status::Parked {
                reason: reason.clone(),
            },
            Phase::Released => Status::Finished,
        }
    }
}

/// Whole milliseconds of `duration`, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
