//! The rules of a saga: how one event moves it, step by step.
//!
//! - A stage's steps start together; the next stage starts when all are done.
//! - A failed attempt is retried by the step's policy, under the same intent id, so the
//!   service sees one idempotency key however often it is called.
//! - An attempt that timed out or failed transiently may still have taken effect, and so
//!   may the step: it is "maybe applied" from then on. Only a success settles that (or a
//!   check that refuses a success). A permanent refusal speaks for its own attempt
//!   only, and leaves the step maybe applied: a service that answers a retry with `409
//!   key in use` (or a redirect, or an error) may still be applying the first attempt.
//! - A success keel cannot use ([`Answer::Unusable`]: too big for the saga log, or its
//!   check panicked) ends the step at once, failed and maybe applied: its effect
//!   happened. On the pivot it passes the point of no return, and the saga parks going
//!   forward.
//! - A failure marked `maybe_applied` (a redirect after a POST, a body too big to read,
//!   a handler that panicked) leaves the step maybe applied whatever its class.
//! - A step that fails for good before the pivot turns the saga back: steps still in
//!   flight are awaited, then every completed step is compensated, last completed first,
//!   one at a time. After the pivot, a failure parks the saga instead.
//! - A step whose outcome is unknown (it failed for good while maybe applied) is never
//!   guessed at: the saga parks, naming it, rather than undo the steps before it or end.
//!   A late success is recorded whenever it comes, and the saga goes on from there; an
//!   operator may retry the step or skip it.
//! - A closure of the definition that panics fails its attempt permanently, naming the
//!   panic (see `guard`).

use keel_core::Timestamp;
use serde_json::Value;

use super::event::{
    Answer, OperatorCommand, Output, REASON_BYTES_MAX, Reanswer, SagaEvent, SagaTimer, Transition,
    cut,
};
use super::reducer::build_call;
use super::state::{Resume, SagaState, SagaStatus, StepPhase, StepState};
use std::time::Duration;

use keel_core::retry::{FailureKinds, RetryDecision};
use keel_core::{Failure, FailureKind};

use crate::definition::SagaDefinition;
use crate::guard::catching;
use crate::id::Phase;

/// One reduction in progress.
pub(super) struct Step<'a> {
    pub(super) def: &'a SagaDefinition,
    pub(super) state: &'a mut SagaState,
    pub(super) now: Timestamp,
    pub(super) out: &'a mut Output,
}

impl Step<'_> {
    pub(super) fn event(&mut self, event: &SagaEvent) -> bool {
        match event {
            SagaEvent::Started { input, .. } => self.started(input),
            SagaEvent::Answered {
                step,
                phase,
                attempt,
                answer,
            } => {
                if usize::from(*step) >= self.state.steps.len() || self.state.status.is_finished() {
                    return false;
                }
                match phase {
                    Phase::Action => self.action_answered(*step, *attempt, answer),
                    Phase::Compensation => self.compensation_answered(*step, *attempt, answer),
                }
            }
            SagaEvent::TimerFired { timer } => self.timer_fired(*timer),
            SagaEvent::CancelRequested { reason } => {
                if !self.can_turn_back() {
                    return false;
                }
                self.turn_back(format!("cancelled: {reason}"));
                self.advance();
                true
            }
            SagaEvent::Operator { command } => self.operator(command),
            SagaEvent::Recovered => self.recovered(),
        }
    }

    fn started(&mut self, input: &Value) -> bool {
        if self.state.status != SagaStatus::New {
            return false;
        }
        let state = &mut *self.state;
        state.input = input.clone();
        state.status = SagaStatus::Running;
        state.steps = vec![StepState::pending(); self.def.steps().len()];
        state.started_at = self.now;
        state.deadline = self.def.deadline_ms().map(|ms| self.now.plus_millis(ms));
        self.out.transitions.push(Transition::Started);
        if let Some(deadline) = state.deadline {
            self.out.timers.push((SagaTimer::Deadline, deadline));
        }
        self.start_stage();
        true
    }

    /// Whether a cancellation or the deadline can still turn the saga back.
    fn can_turn_back(&self) -> bool {
        self.state.status == SagaStatus::Running && !self.state.pivot_passed
    }

    fn start_stage(&mut self) {
        let stage = self.def.stages()[usize::from(self.state.stage)];
        for step in stage.steps() {
            self.start_attempt(step, Phase::Action);
        }
    }

    /// Starts the next attempt at `phase` of `step`. If its closure panics, the attempt
    /// still starts, with no call: the engine answers it as failed (see [`Reanswer`]).
    ///
    /// [`Reanswer`]: super::event::Reanswer
    fn start_attempt(&mut self, step: u16, phase: Phase) {
        let st = &self.state.steps[usize::from(step)];
        let attempt = match phase {
            Phase::Action => st.attempts + 1,
            Phase::Compensation => st.compensation_attempts + 1,
        };
        let call = build_call(self.def, self.state, step, phase, attempt);
        let timeout_at = self
            .def
            .step(step)
            .timeout()
            .map(|ms| self.now.plus_millis(ms));
        let st = &mut self.state.steps[usize::from(step)];
        match phase {
            Phase::Action => {
                st.attempts = attempt;
                st.phase = StepPhase::Running { timeout_at };
                self.out
                    .transitions
                    .push(Transition::StepStarted { step, attempt });
            }
            Phase::Compensation => {
                st.compensation_attempts = attempt;
                st.phase = StepPhase::Compensating { timeout_at };
                self.out
                    .transitions
                    .push(Transition::CompensationStarted { step, attempt });
            }
        }
        if let Some(due) = timeout_at {
            self.out.timers.push((
                SagaTimer::Timeout {
                    step,
                    phase,
                    attempt,
                },
                due,
            ));
        }
        match call {
            Ok(call) => self.out.calls.push(call),
            Err(failed) => self.out.reanswers.push(failed),
        }
    }

    fn action_answered(&mut self, step: u16, attempt: u16, answer: &Answer) -> bool {
        let st = &self.state.steps[usize::from(step)];
        match answer {
            Answer::Succeeded { value } => {
                // Every attempt shares one idempotency key, so a success answered to any
                // of them (late, or twice) is the one effect: take it while the step is
                // still open, including a step given up as unknown.
                let open = st.is_in_flight() || st.is_unknown();
                if !open {
                    return false;
                }
                if let Some(check) = &self.def.step(step).check {
                    match catching("the step's answer check", || check(value)) {
                        Ok(Ok(())) => {}
                        // The service answered for this key, and its answer says that
                        // the effect did not happen: that settles earlier doubts.
                        Ok(Err(reason)) => {
                            self.state.steps[usize::from(step)].maybe_applied = false;
                            let reason = format!("the answer was refused: {reason}");
                            self.action_failed(step, FailureKind::Permanent, reason, None, false);
                            return true;
                        }
                        // A success nobody could judge: recorded as such, in a record of
                        // its own, so that a replay does not run the check again.
                        Err(reason) => {
                            self.out.reanswers.push(Reanswer {
                                step,
                                phase: Phase::Action,
                                attempt,
                                answer: Answer::Unusable { reason },
                            });
                            return false;
                        }
                    }
                }
                self.complete(step, value.clone());
                true
            }
            Answer::Unusable { reason } => {
                // A success keel cannot use: the effect happened, so the step is settled
                // as failed but maybe applied, with no further call (the same key would
                // only bring the same answer). A step already given up as unknown stays so.
                if !st.is_in_flight() {
                    return false;
                }
                self.state.steps[usize::from(step)].maybe_applied = true;
                if self.def.pivot() == Some(step) {
                    self.pivot_took_effect();
                }
                self.action_failed(step, FailureKind::Permanent, reason.clone(), None, true);
                true
            }
            Answer::Failed(Failure {
                kind,
                reason,
                retry_after,
                maybe_applied,
            }) => {
                // A failure speaks only for its own attempt: an earlier attempt's failure
                // arriving late says nothing about the current one.
                if !matches!(st.phase, StepPhase::Running { .. }) || st.attempts != attempt {
                    return false;
                }
                self.action_failed(step, *kind, reason.clone(), *retry_after, *maybe_applied);
                true
            }
        }
    }

    fn complete(&mut self, step: u16, value: Value) {
        let was_parked = matches!(self.state.status, SagaStatus::NeedsIntervention { .. });
        let st = &mut self.state.steps[usize::from(step)];
        cancel_attempt_timers(self.out, step, Phase::Action, st);
        st.phase = StepPhase::Completed;
        st.result = Some(Box::new(value));
        st.maybe_applied = false;
        st.error = None;
        self.state.completed.push(step);
        self.out
            .transitions
            .push(Transition::StepCompleted { step });
        if self.def.pivot() == Some(step) && self.pivot_took_effect() {
            self.advance();
            return;
        }
        if was_parked {
            self.resume_if_settled("late answer");
        }
        self.advance();
    }

    /// The pivot took effect: the saga is past the point of no return. Returns whether
    /// it was turning back and goes forward again.
    fn pivot_took_effect(&mut self) -> bool {
        self.state.pivot_passed = true;
        if self.state.deadline.is_some() {
            self.out.cancelled.push(SagaTimer::Deadline);
        }
        // A pivot that takes effect while the saga was turning back (its answer came
        // late, after a timeout or a cancellation) still passes the point of no return.
        // Nothing was compensated yet: compensation waits for every step in flight and
        // every step of unknown outcome, and the pivot was one of them.
        if matches!(self.state.status, SagaStatus::Running) {
            return false;
        }
        self.state.status = SagaStatus::Running;
        self.state.compensation_reason = None;
        self.out.transitions.push(Transition::Resumed {
            by: "the pivot completed".to_owned(),
        });
        true
    }

    fn action_failed(
        &mut self,
        step: u16,
        class: FailureKind,
        mut reason: String,
        retry_after: Option<Duration>,
        maybe_applied: bool,
    ) {
        cut(&mut reason, REASON_BYTES_MAX);
        let policy = *self.def.step(step).retry_policy();
        let seed = self.jitter_seed(step);
        let keep_trying = self.keeps_trying(step, class);
        let now = self.now;
        let st = &mut self.state.steps[usize::from(step)];
        let attempt = st.attempts;
        cancel_attempt_timers(self.out, step, Phase::Action, st);
        // A permanent refusal speaks for the attempt it answers: nothing happened under
        // it. It does not undo an earlier attempt that may have applied: a service
        // answers `409 key in use` to a retry while the first attempt is still at work.
        if class.is_ambiguous() || maybe_applied {
            st.maybe_applied = true;
        }
        st.error = Some(reason.as_str().into());
        let decision = if keep_trying {
            let budget = u32::from(attempt - st.budget_from);
            saga_decision(&policy, budget, class, retry_after, seed)
        } else {
            RetryDecision::GiveUp
        };
        if let RetryDecision::RetryAfter(delay) = decision {
            let delay_ms = millis(delay);
            let due = now.plus_millis(delay_ms);
            st.phase = StepPhase::Backoff { due };
            self.out.timers.push((
                SagaTimer::Retry {
                    step,
                    phase: Phase::Action,
                    attempt: attempt + 1,
                },
                due,
            ));
            self.out.transitions.push(Transition::StepFailed {
                step,
                attempt,
                kind: class,
                reason,
                retry_in_ms: Some(delay_ms),
            });
            return;
        }
        st.phase = StepPhase::Failed;
        let unknown = st.maybe_applied;
        self.out.transitions.push(Transition::StepFailed {
            step,
            attempt,
            kind: class,
            reason: reason.clone(),
            retry_in_ms: None,
        });
        let name = &self.def.step(step).name;
        if self.state.status == SagaStatus::Running {
            if self.state.pivot_passed {
                self.park(
                    format!("step `{name}` failed after the pivot ({reason}): retry or skip it"),
                    Resume::Forward,
                );
            } else if unknown {
                self.turn_back(format!("step `{name}` may have taken effect: {reason}"));
            } else {
                self.turn_back(format!("step `{name}` failed: {reason}"));
            }
        } else {
            // A late answer settled a step the saga was parked on.
            self.resume_if_settled("late answer");
        }
        self.advance();
    }

    /// Whether a failed attempt of `step` is worth following up at all, given where the
    /// saga is going.
    fn keeps_trying(&self, step: u16, class: FailureKind) -> bool {
        let maybe_applied =
            self.state.steps[usize::from(step)].maybe_applied || class.is_ambiguous();
        match &self.state.status {
            SagaStatus::Running
            | SagaStatus::NeedsIntervention {
                resume: Resume::Forward,
                ..
            } => true,
            // Turning back: an attempt that surely did nothing needs no follow-up; one
            // that may have done something is retried to learn what it did.
            SagaStatus::Compensating { .. } | SagaStatus::NeedsIntervention { .. } => maybe_applied,
            _ => false,
        }
    }

    fn compensation_answered(&mut self, step: u16, attempt: u16, answer: &Answer) -> bool {
        let st = &self.state.steps[usize::from(step)];
        match answer {
            // A compensation's answer is not kept: one too big to keep is still a success.
            Answer::Succeeded { .. } | Answer::Unusable { .. } => {
                if !(st.is_compensating() || st.phase == StepPhase::Parked) {
                    return false;
                }
                let was_parked = st.phase == StepPhase::Parked;
                let st = &mut self.state.steps[usize::from(step)];
                cancel_attempt_timers(self.out, step, Phase::Compensation, st);
                st.phase = StepPhase::Compensated;
                st.error = None;
                self.state.compensated.push(step);
                self.out
                    .transitions
                    .push(Transition::StepCompensated { step });
                if was_parked {
                    self.resume_if_settled("late answer");
                }
                self.advance();
                true
            }
            Answer::Failed(Failure {
                kind,
                reason,
                retry_after,
                ..
            }) => {
                if !matches!(st.phase, StepPhase::Compensating { .. })
                    || st.compensation_attempts != attempt
                {
                    return false;
                }
                self.compensation_failed(step, *kind, reason.clone(), *retry_after);
                true
            }
        }
    }

    fn compensation_failed(
        &mut self,
        step: u16,
        class: FailureKind,
        mut reason: String,
        retry_after: Option<Duration>,
    ) {
        cut(&mut reason, REASON_BYTES_MAX);
        let policy = *self.def.step(step).compensation_retry_policy();
        let seed = self.jitter_seed(step) ^ 0x5A5A;
        let now = self.now;
        let st = &mut self.state.steps[usize::from(step)];
        let attempt = st.compensation_attempts;
        self.out.cancelled.push(SagaTimer::Timeout {
            step,
            phase: Phase::Compensation,
            attempt,
        });
        st.error = Some(reason.as_str().into());
        // Undoing is not optional: every class is retried but a permanent refusal,
        // which no number of retries will change.
        let budget = attempt - st.budget_from;
        let decision = saga_decision(
            &policy.retry_on(FailureKinds::RETRYABLE),
            u32::from(budget),
            class,
            retry_after,
            seed,
        );
        if let RetryDecision::RetryAfter(delay) = decision {
            let delay_ms = millis(delay);
            let due = now.plus_millis(delay_ms);
            st.phase = StepPhase::CompensationBackoff { due };
            self.out.timers.push((
                SagaTimer::Retry {
                    step,
                    phase: Phase::Compensation,
                    attempt: attempt + 1,
                },
                due,
            ));
            self.out.transitions.push(Transition::CompensationFailed {
                step,
                attempt,
                reason,
                retry_in_ms: Some(delay_ms),
            });
            return;
        }
        st.phase = StepPhase::Parked;
        self.out.transitions.push(Transition::CompensationFailed {
            step,
            attempt,
            reason: reason.clone(),
            retry_in_ms: None,
        });
        let name = &self.def.step(step).name;
        self.park(
            format!("compensation of step `{name}` failed after {attempt} attempts ({reason}): retry or skip it"),
            Resume::Compensate,
        );
    }

    fn timer_fired(&mut self, timer: SagaTimer) -> bool {
        if self.state.status.is_finished() {
            return false;
        }
        match timer {
            SagaTimer::Deadline => {
                if !self.can_turn_back() {
                    return false;
                }
                let ms = self.def.deadline_ms().unwrap_or_default();
                self.turn_back(format!("its deadline of {ms} ms passed"));
                self.advance();
                true
            }
            SagaTimer::Timeout {
                step,
                phase,
                attempt,
            } => {
                let Some(st) = self.state.steps.get(usize::from(step)) else {
                    return false;
                };
                let ms = self.def.step(step).timeout().unwrap_or_default();
                let reason = format!("no answer within {ms} ms");
                match phase {
                    Phase::Action
                        if matches!(st.phase, StepPhase::Running { .. })
                            && st.attempts == attempt =>
                    {
                        self.action_failed(step, FailureKind::Timeout, reason, None, false);
                        true
                    }
                    Phase::Compensation
                        if matches!(st.phase, StepPhase::Compensating { .. })
                            && st.compensation_attempts == attempt =>
                    {
                        self.compensation_failed(step, FailureKind::Timeout, reason, None);
                        true
                    }
                    _ => false,
                }
            }
            SagaTimer::Retry {
                step,
                phase,
                attempt,
            } => {
                let Some(st) = self.state.steps.get(usize::from(step)) else {
                    return false;
                };
                match phase {
                    Phase::Action
                        if matches!(st.phase, StepPhase::Backoff { .. })
                            && st.attempts + 1 == attempt =>
                    {
                        if self.keeps_trying(step, FailureKind::Unavailable) {
                            self.start_attempt(step, Phase::Action);
                        } else {
                            // Turned back meanwhile, and the failed attempts surely did
                            // nothing: no need to try again.
                            self.state.steps[usize::from(step)].phase = StepPhase::Failed;
                            self.advance();
                        }
                        true
                    }
                    Phase::Compensation
                        if matches!(st.phase, StepPhase::CompensationBackoff { .. })
                            && st.compensation_attempts + 1 == attempt =>
                    {
                        self.start_attempt(step, Phase::Compensation);
                        true
                    }
                    _ => false,
                }
            }
        }
    }

    fn recovered(&mut self) -> bool {
        let mut steps = Vec::new();
        for (index, st) in self.state.steps.iter_mut().enumerate() {
            if matches!(st.phase, StepPhase::Running { .. }) && !st.maybe_applied {
                st.maybe_applied = true;
                steps.push(u16::try_from(index).unwrap_or(u16::MAX));
            }
        }
        if steps.is_empty() {
            return false;
        }
        self.out.transitions.push(Transition::Recovered { steps });
        true
    }

    fn operator(&mut self, command: &OperatorCommand) -> bool {
        let SagaStatus::NeedsIntervention { resume, .. } = self.state.status else {
            return false;
        };
        match command {
            OperatorCommand::Resolve { note } => {
                self.state.status = SagaStatus::Resolved { note: note.clone() };
                self.out
                    .transitions
                    .push(Transition::Resolved { note: note.clone() });
                return true;
            }
            OperatorCommand::Retry | OperatorCommand::Skip => {}
        }
        let retry = *command == OperatorCommand::Retry;
        self.state.status = self.resumed_status(resume);
        self.out.transitions.push(Transition::Resumed {
            by: command.name().to_owned(),
        });
        for index in 0..self.state.steps.len() {
            let step = u16::try_from(index).unwrap_or(u16::MAX);
            let st = &mut self.state.steps[index];
            let stuck_forward = resume == Resume::Forward && st.phase == StepPhase::Failed;
            if st.phase == StepPhase::Parked {
                if retry {
                    st.budget_from = st.compensation_attempts;
                    self.start_attempt(step, Phase::Compensation);
                } else {
                    st.phase = StepPhase::Skipped;
                }
            } else if st.is_unknown() || stuck_forward {
                if retry {
                    st.budget_from = st.attempts;
                    self.start_attempt(step, Phase::Action);
                } else {
                    // Skipping a step of unknown outcome settles it as nothing to undo;
                    // skipping a failed step past the pivot counts it as done.
                    st.phase = StepPhase::Skipped;
                    st.maybe_applied = false;
                }
            }
        }
        self.advance();
        true
    }

    /// Turns the saga back: nothing new starts, and once nothing is in flight the
    /// completed steps are compensated.
    fn turn_back(&mut self, reason: String) {
        if self.state.deadline.is_some() {
            self.out.cancelled.push(SagaTimer::Deadline);
        }
        self.state.status = SagaStatus::Compensating {
            reason: reason.clone(),
        };
        self.state.compensation_reason = Some(reason.clone());
        self.out
            .transitions
            .push(Transition::Compensating { reason });
        for index in 0..self.state.steps.len() {
            let st = &mut self.state.steps[index];
            // A step waiting to retry after failures that surely did nothing needs no
            // further attempt now.
            if matches!(st.phase, StepPhase::Backoff { .. }) && !st.maybe_applied {
                let step = u16::try_from(index).unwrap_or(u16::MAX);
                self.out.cancelled.push(SagaTimer::Retry {
                    step,
                    phase: Phase::Action,
                    attempt: st.attempts + 1,
                });
                st.phase = StepPhase::Failed;
            }
        }
    }

    fn park(&mut self, reason: String, resume: Resume) {
        self.state.status = SagaStatus::NeedsIntervention {
            reason: reason.clone(),
            resume,
        };
        self.out
            .transitions
            .push(Transition::NeedsIntervention { reason });
    }

    fn resumed_status(&self, resume: Resume) -> SagaStatus {
        match resume {
            Resume::Forward => SagaStatus::Running,
            Resume::Compensate => SagaStatus::Compensating {
                reason: self.state.compensation_reason.clone().unwrap_or_default(),
            },
        }
    }

    /// Leaves intervention if a late answer settled what it was waiting on.
    fn resume_if_settled(&mut self, by: &str) {
        let SagaStatus::NeedsIntervention { resume, .. } = self.state.status else {
            return;
        };
        let stuck = self.state.steps.iter().any(|st| {
            st.phase == StepPhase::Parked
                || st.is_unknown()
                || (resume == Resume::Forward && st.phase == StepPhase::Failed)
        });
        if !stuck {
            self.state.status = self.resumed_status(resume);
            self.out
                .transitions
                .push(Transition::Resumed { by: by.to_owned() });
        }
    }

    /// Moves the saga on as far as its steps allow.
    fn advance(&mut self) {
        match self.state.status {
            SagaStatus::Running => {
                let stage = self.def.stages()[usize::from(self.state.stage)];
                if !stage
                    .steps()
                    .all(|step| self.state.steps[usize::from(step)].is_done())
                {
                    return;
                }
                self.state.stage += 1;
                if usize::from(self.state.stage) == self.def.stages().len() {
                    self.state.status = SagaStatus::Completed;
                    if self.state.deadline.is_some() && !self.state.pivot_passed {
                        self.out.cancelled.push(SagaTimer::Deadline);
                    }
                    self.out.transitions.push(Transition::Completed);
                } else {
                    self.start_stage();
                }
            }
            SagaStatus::Compensating { .. } => {
                let steps = &self.state.steps;
                if steps
                    .iter()
                    .any(|st| st.is_in_flight() || st.is_compensating())
                {
                    return;
                }
                // Undoing the steps before an unknown one first would break the order
                // of compensation should it turn out to have completed: wait for it.
                if let Some(index) = steps.iter().position(StepState::is_unknown) {
                    let st = &steps[index];
                    let name = &self.def.steps()[index].name;
                    let reason = format!(
                        "step `{name}` may have taken effect ({} attempt(s), the last: {}): retry it to ask again, or skip it if it did nothing",
                        st.attempts,
                        st.error.as_deref().unwrap_or("no answer"),
                    );
                    self.park(reason, Resume::Compensate);
                    return;
                }
                let next = self.state.completed.iter().rev().copied().find(|&step| {
                    self.state.steps[usize::from(step)].phase == StepPhase::Completed
                        && self.def.step(step).is_compensated()
                });
                match next {
                    Some(step) => self.start_attempt(step, Phase::Compensation),
                    None => {
                        let reason = self.state.compensation_reason.clone().unwrap_or_default();
                        self.state.status = SagaStatus::Compensated { reason };
                        self.out.transitions.push(Transition::Compensated);
                    }
                }
            }
            _ => {}
        }
    }

    /// Spreads the retries of different sagas and steps apart, deterministically.
    fn jitter_seed(&self, step: u16) -> u64 {
        let correlation = self.state.id.correlation().uuid().as_u128();
        (correlation as u64)
            ^ ((correlation >> 64) as u64)
            ^ u64::from(step).wrapping_mul(0x9E37_79B9)
    }
}

/// Cancels the timers of `phase` of `step` that its current attempt set: the attempt's
/// timeout, and the next attempt's start if it is waiting for one.
fn cancel_attempt_timers(out: &mut Output, step: u16, phase: Phase, st: &StepState) {
    let (attempt, waiting) = match phase {
        Phase::Action => (st.attempts, matches!(st.phase, StepPhase::Backoff { .. })),
        Phase::Compensation => (
            st.compensation_attempts,
            matches!(st.phase, StepPhase::CompensationBackoff { .. }),
        ),
    };
    out.cancelled.push(SagaTimer::Timeout {
        step,
        phase,
        attempt,
    });
    if waiting {
        out.cancelled.push(SagaTimer::Retry {
            step,
            phase,
            attempt: attempt + 1,
        });
    }
}

/// The retry policy's decision for a saga step: whether to retry is the policy's alone; a
/// `Retry-After` hint only lengthens the wait, however long it is (the policy's
/// `retry_after_max` does not make a saga give up). Replay depends on it: a saga log
/// records the status each answer led to, and logs written before the policy was shared
/// waited for any hint.
fn saga_decision(
    policy: &keel_core::RetryPolicy,
    attempt: u32,
    kind: FailureKind,
    retry_after: Option<Duration>,
    seed: u64,
) -> RetryDecision {
    match policy.decide(attempt, kind, None, seed) {
        RetryDecision::RetryAfter(wait) => {
            RetryDecision::RetryAfter(wait.max(retry_after.unwrap_or_default()))
        }
        RetryDecision::GiveUp => RetryDecision::GiveUp,
    }
}

/// A wait in whole milliseconds, as saga timers and transitions keep it.
fn millis(delay: Duration) -> u64 {
    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_retry_after_lengthens_a_saga_wait_and_never_ends_the_retries() {
        let policy = keel_core::RetryPolicy::exponential().without_jitter();
        let two_hours = Duration::from_secs(7_200);
        assert_eq!(
            saga_decision(&policy, 1, FailureKind::Transient, Some(two_hours), 0),
            RetryDecision::RetryAfter(two_hours)
        );
        assert_eq!(
            saga_decision(
                &policy,
                1,
                FailureKind::Transient,
                Some(Duration::from_millis(1)),
                0
            ),
            RetryDecision::RetryAfter(Duration::from_millis(100))
        );
        assert_eq!(
            saga_decision(&policy, 3, FailureKind::Transient, Some(two_hours), 0),
            RetryDecision::GiveUp
        );
        assert_eq!(
            saga_decision(&policy, 1, FailureKind::Permanent, Some(two_hours), 0),
            RetryDecision::GiveUp
        );
    }
}
