//! What a saga reacts to ([`SagaEvent`]), what it does in return ([`Output`]), and what
//! happened to it ([`Transition`], the timeline).

use std::fmt;
use std::str::FromStr;

use keel_core::{Intent, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::{Phase, SagaType};
use keel_core::{Failure, FailureKind};

/// One input to a saga: what the saga log records, one record per event that changed
/// the saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SagaEvent {
    /// The saga was started.
    Started {
        /// Its type, naming its definition.
        saga_type: SagaType,
        /// Its input.
        input: Value,
    },
    /// A step's action or compensation answered.
    Answered {
        /// The step's index.
        step: u16,
        /// Action or compensation.
        phase: Phase,
        /// The attempt that was answered, from 1.
        attempt: u16,
        /// The answer.
        answer: Answer,
    },
    /// A timer came due.
    TimerFired {
        /// Which.
        timer: SagaTimer,
    },
    /// Someone asked for the saga to be cancelled.
    CancelRequested {
        /// Why, for the timeline.
        reason: String,
    },
    /// An operator acted on a saga that needs intervention.
    Operator {
        /// What they decided.
        command: OperatorCommand,
    },
    /// The orchestrator restarted with attempts of this saga in flight. Each is sent
    /// again, and the delivery from before the crash may still take effect: from now on
    /// only a definite answer says the step did nothing.
    Recovered,
}

/// What a service answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// It worked; `value` is the service's answer.
    Succeeded {
        /// The answer.
        value: Value,
    },
    /// It failed: keel-core's one [`Failure`] (kind, reason, retry-after, maybe
    /// applied), as handlers answer it. Records written before the failure was shared
    /// name the kind `class`, and still read.
    Failed(Failure),
    /// It answered success, but keel cannot use the answer: it is too big for a saga
    /// record, or the step's check panicked judging it. The effect happened; the step
    /// fails after this one call, maybe applied. The engine puts this in place of such a
    /// success (see [`Answer::bounded`]), so the log never holds what it cannot keep.
    Unusable {
        /// Why, naming the size and the limit, or the check's panic.
        reason: String,
    },
}

/// The longest failure reason kept, in bytes: a service's error body can be large, and
/// every reason is written to the saga log and its timeline.
pub const REASON_BYTES_MAX: usize = 1_024;

impl Answer {
    /// The answer a keel-effects handler gave.
    pub fn from_result(result: keel_effects::HandlerResult) -> Self {
        match result {
            Ok(value) => Self::Succeeded { value },
            Err(failure) => Self::Failed(failure),
        }
    }

    /// The answer as the saga log can keep it: a reason cut to [`REASON_BYTES_MAX`], and
    /// a success whose value takes more than `limit_bytes` as JSON replaced by
    /// [`Answer::Unusable`], naming its size and the limit.
    #[must_use]
    pub fn bounded(self, limit_bytes: usize) -> Self {
        match self {
            Self::Succeeded { value } => match json_size_within(&value, limit_bytes) {
                Ok(_) => Self::Succeeded { value },
                Err(size_bytes) => Self::Unusable {
                    reason: format!(
                        "it answered {size_bytes} bytes, more than the {limit_bytes} a saga record may hold for an answer: its effect happened but its answer cannot be kept"
                    ),
                },
            },
            Self::Failed(mut failure) => {
                cut(&mut failure.reason, REASON_BYTES_MAX);
                Self::Failed(failure)
            }
            Self::Unusable { mut reason } => {
                cut(&mut reason, REASON_BYTES_MAX);
                Self::Unusable { reason }
            }
        }
    }
}

/// The size of `value` as compact JSON: `Ok` if it is at most `limit_bytes`, else `Err`.
pub(crate) fn json_size_within(value: &Value, limit_bytes: usize) -> Result<usize, u64> {
    /// Counts bytes without keeping them.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serialising a `Value` cannot fail: its keys are strings.
    let size = match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    };
    if size <= limit_bytes {
        Ok(size)
    } else {
        Err(size as u64)
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, saying how much went.
pub(crate) fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let dropped = text.len();
    let mut end = max.saturating_sub(40);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    let dropped = dropped - end;
    text.push_str(&format!("… ({dropped} more bytes cut)"));
}

/// An operator's decision about a saga that needs intervention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum OperatorCommand {
    /// Try again what was stuck (with a fresh retry budget) and carry on.
    Retry,
    /// Treat what was stuck as settled (a parked compensation as done, a step of
    /// unknown outcome as not to be undone, a failed step past the pivot as done) and
    /// carry on.
    Skip,
    /// Close the saga as it is.
    Resolve {
        /// Why, for the timeline.
        note: String,
    },
}

impl OperatorCommand {
    /// `retry`, `skip` or `resolve`.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Skip => "skip",
            Self::Resolve { .. } => "resolve",
        }
    }
}

/// A saga's timers, named by what they are for.
///
/// Each names the attempt it belongs to, so a timer that outlived its attempt is
/// recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "timer", rename_all = "snake_case")]
pub enum SagaTimer {
    /// An attempt's answer is overdue.
    Timeout {
        /// The step.
        step: u16,
        /// Action or compensation.
        phase: Phase,
        /// The attempt.
        attempt: u16,
    },
    /// The next attempt is due.
    Retry {
        /// The step.
        step: u16,
        /// Action or compensation.
        phase: Phase,
        /// The attempt to start.
        attempt: u16,
    },
    /// The saga's deadline.
    Deadline,
}

impl fmt::Display for SagaTimer {
    /// `timeout/action/2/1`, `retry/compensation/0/3`, `deadline`: the [`TimerId`]
    /// text of the timer.
    ///
    /// [`TimerId`]: keel_core::TimerId
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout {
                step,
                phase,
                attempt,
            } => {
                write!(f, "timeout/{}/{step}/{attempt}", phase.as_str())
            }
            Self::Retry {
                step,
                phase,
                attempt,
            } => {
                write!(f, "retry/{}/{step}/{attempt}", phase.as_str())
            }
            Self::Deadline => f.write_str("deadline"),
        }
    }
}

impl SagaTimer {
    /// The timer's [`TimerId`](keel_core::TimerId): its text, as [`Display`](fmt::Display)
    /// writes it, built without the formatting machinery (every attempt sets one).
    pub fn timer_id(&self) -> keel_core::TimerId {
        let (kind, step, phase, attempt) = match *self {
            Self::Deadline => return keel_core::TimerId::from_static("deadline"),
            Self::Timeout {
                step,
                phase,
                attempt,
            } => ("timeout/", step, phase, attempt),
            Self::Retry {
                step,
                phase,
                attempt,
            } => ("retry/", step, phase, attempt),
        };
        let mut text = String::with_capacity(32);
        text.push_str(kind);
        text.push_str(phase.as_str());
        text.push('/');
        push_decimal(&mut text, step);
        text.push('/');
        push_decimal(&mut text, attempt);
        keel_core::TimerId::from(text)
    }
}

/// Appends `n` in decimal.
fn push_decimal(text: &mut String, mut n: u16) {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    loop {
        start -= 1;
        // A digit: `n % 10` is below 10.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        text.push(char::from(digit));
    }
}

impl FromStr for SagaTimer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "deadline" {
            return Ok(Self::Deadline);
        }
        let invalid = || {
            format!(
                "`{s}` is not a saga timer: expected `timeout|retry/action|compensation/STEP/ATTEMPT` or `deadline`"
            )
        };
        let (kind, rest) = s.split_once('/').ok_or_else(invalid)?;
        let (phase, rest) = rest.split_once('/').ok_or_else(invalid)?;
        let (step, attempt) = rest.split_once('/').ok_or_else(invalid)?;
        let phase = match phase {
            "action" => Phase::Action,
            "compensation" => Phase::Compensation,
            _ => return Err(invalid()),
        };
        // `u16::from_str` takes a leading `+`, which `Display` never writes.
        let number = |text: &str| match text.bytes().all(|b| b.is_ascii_digit()) {
            true => text.parse::<u16>().map_err(|_| invalid()),
            false => Err(invalid()),
        };
        let (step, attempt) = (number(step)?, number(attempt)?);
        match kind {
            "timeout" => Ok(Self::Timeout {
                step,
                phase,
                attempt,
            }),
            "retry" => Ok(Self::Retry {
                step,
                phase,
                attempt,
            }),
            _ => Err(invalid()),
        }
    }
}

/// One thing that happened to a saga: the timeline, and what is published on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "transition", rename_all = "snake_case")]
pub enum Transition {
    /// The saga started.
    Started,
    /// An attempt at a step's action went out.
    StepStarted {
        /// The step.
        step: u16,
        /// The attempt, from 1.
        attempt: u16,
    },
    /// A step's action succeeded.
    StepCompleted {
        /// The step.
        step: u16,
    },
    /// An attempt at a step's action failed.
    StepFailed {
        /// The step.
        step: u16,
        /// The attempt.
        attempt: u16,
        /// What kind of failure (`class` in records of schema 1, which still read).
        #[serde(alias = "class")]
        kind: FailureKind,
        /// What went wrong.
        reason: String,
        /// When the next attempt starts; `None` when the step has failed for good.
        retry_in_ms: Option<u64>,
    },
    /// The saga turned back.
    Compensating {
        /// Why.
        reason: String,
    },
    /// An attempt at a step's compensation went out.
    CompensationStarted {
        /// The step.
        step: u16,
        /// The attempt, from 1.
        attempt: u16,
    },
    /// A step was undone.
    StepCompensated {
        /// The step.
        step: u16,
    },
    /// An attempt at a compensation failed.
    CompensationFailed {
        /// The step.
        step: u16,
        /// The attempt.
        attempt: u16,
        /// What went wrong.
        reason: String,
        /// When the next attempt starts; `None` when the saga is parked.
        retry_in_ms: Option<u64>,
    },
    /// Every step completed.
    Completed,
    /// Every completed step was undone.
    Compensated,
    /// The saga stopped for an operator.
    NeedsIntervention {
        /// Why.
        reason: String,
    },
    /// The saga left intervention: an operator acted, or a late answer settled it.
    Resumed {
        /// What resumed it: `retry`, `skip`, or `late answer`.
        by: String,
    },
    /// The orchestrator restarted and sent the attempts in flight again.
    Recovered {
        /// The steps whose attempts were in flight.
        steps: Vec<u16>,
    },
    /// An operator closed the saga.
    Resolved {
        /// Their note.
        note: String,
    },
}

impl Transition {
    /// The envelope type this transition is published as: `saga.step.completed`.
    pub const fn event_type(&self) -> &'static str {
        match self {
            Self::Started => "saga.started",
            Self::StepStarted { .. } => "saga.step.started",
            Self::StepCompleted { .. } => "saga.step.completed",
            Self::StepFailed { .. } => "saga.step.failed",
            Self::Compensating { .. } => "saga.compensating",
            Self::CompensationStarted { .. } => "saga.step.compensating",
            Self::StepCompensated { .. } => "saga.step.compensated",
            Self::CompensationFailed { .. } => "saga.step.compensation_failed",
            Self::Completed => "saga.completed",
            Self::Compensated => "saga.compensated",
            Self::NeedsIntervention { .. } => "saga.needs_intervention",
            Self::Resumed { .. } => "saga.resumed",
            Self::Recovered { .. } => "saga.recovered",
            Self::Resolved { .. } => "saga.resolved",
        }
    }

    /// The step it concerns, if any.
    pub const fn step(&self) -> Option<u16> {
        match self {
            Self::StepStarted { step, .. }
            | Self::StepCompleted { step }
            | Self::StepFailed { step, .. }
            | Self::CompensationStarted { step, .. }
            | Self::StepCompensated { step }
            | Self::CompensationFailed { step, .. } => Some(*step),
            _ => None,
        }
    }
}

/// One attempt at a step's action or compensation, to carry out.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCall {
    /// The step.
    pub step: u16,
    /// Action or compensation.
    pub phase: Phase,
    /// The attempt, from 1.
    pub attempt: u16,
    /// The effect, with the step's stable id as its idempotency key.
    pub intent: Intent,
}

/// An answer keel gives an attempt itself, as a record of its own after the one that
/// led to it: the step's closure panicked building the call (no call went out), or its
/// check panicked judging a success. Recording it means a replay reads it from the log
/// instead of running the closure again, so replay equals live even once the closure
/// is fixed.
#[derive(Debug, Clone, PartialEq)]
pub struct Reanswer {
    /// The step.
    pub step: u16,
    /// Action or compensation.
    pub phase: Phase,
    /// The attempt, from 1.
    pub attempt: u16,
    /// The answer.
    pub answer: Answer,
}

impl Reanswer {
    /// The event that records it, bounded to `limit_bytes`.
    pub fn event(self, limit_bytes: usize) -> SagaEvent {
        SagaEvent::Answered {
            step: self.step,
            phase: self.phase,
            attempt: self.attempt,
            answer: self.answer.bounded(limit_bytes),
        }
    }

    /// An attempt that failed for good before its call went out, for `reason`.
    pub(crate) fn failed(step: u16, phase: Phase, attempt: u16, reason: String) -> Self {
        let answer = Answer::Failed(Failure::permanent(reason));
        Self {
            step,
            phase,
            attempt,
            answer,
        }
    }
}

/// What one reduction asks the driver to do, and what it recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// Attempts to carry out.
    pub calls: Vec<StepCall>,
    /// Answers keel gives attempts itself, each to record after this reduction's.
    pub reanswers: Vec<Reanswer>,
    /// Timers to set.
    pub timers: Vec<(SagaTimer, Timestamp)>,
    /// Timers no longer needed (a stale timer that fires anyway is ignored).
    pub cancelled: Vec<SagaTimer>,
    /// What happened.
    pub transitions: Vec<Transition>,
}

impl Output {
    /// Empties the buffers, keeping their capacity.
    pub fn clear(&mut self) {
        self.calls.clear();
        self.reanswers.clear();
        self.timers.clear();
        self.cancelled.clear();
        self.transitions.clear();
    }

    /// Whether there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
            && self.reanswers.is_empty()
            && self.timers.is_empty()
            && self.cancelled.is_empty()
            && self.transitions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_recorded_with_the_old_failure_shape_still_reads() {
        let event = SagaEvent::Answered {
            step: 1,
            phase: Phase::Action,
            attempt: 2,
            answer: Answer::Failed(
                Failure::transient("503").retry_after(std::time::Duration::from_millis(250)),
            ),
        };
        let now = serde_json::to_string(&event).expect("serialises");
        assert!(now.contains(r#""kind":"transient""#), "{now}");
        // Schema 1 named the kind `class` and wrote a null hint.
        let old = now.replace(r#""kind":"#, r#""class":"#);
        let unhinted = old.replace(r#""retry_after_ms":250"#, r#""retry_after_ms":null"#);
        let back: SagaEvent = serde_json::from_str(&old).expect("the old shape reads");
        assert_eq!(back, event);
        let back: SagaEvent = serde_json::from_str(&unhinted).expect("a null hint reads");
        let SagaEvent::Answered {
            answer: Answer::Failed(failure),
            ..
        } = back
        else {
            panic!("not a failed answer: {back:?}");
        };
        assert_eq!(failure, Failure::transient("503"));
    }

    #[test]
    fn timer_names_round_trip() {
        for timer in [
            SagaTimer::Deadline,
            SagaTimer::Timeout {
                step: 3,
                phase: Phase::Action,
                attempt: 2,
            },
            SagaTimer::Retry {
                step: 0,
                phase: Phase::Compensation,
                attempt: 9,
            },
        ] {
            assert_eq!(timer.to_string().parse::<SagaTimer>(), Ok(timer));
            assert_eq!(timer.timer_id().as_str(), timer.to_string());
        }
        let largest = SagaTimer::Timeout {
            step: u16::MAX,
            phase: Phase::Compensation,
            attempt: 10,
        };
        assert_eq!(largest.timer_id().as_str(), "timeout/compensation/65535/10");
        for bad in [
            "",
            "retry/action/1/1/1",
            "retry/action/+1/1",
            "retry/action/1",
            "nap/action/1/1",
            "retry/undo/1/1",
            "retry/action/x/1",
        ] {
            assert!(bad.parse::<SagaTimer>().is_err(), "{bad}");
        }
    }
}
