//! Declaring a saga: ordered steps and parallel groups, each step with an action, an
//! optional compensation, its retry policy and timeout; a pivot; a deadline.
//!
//! A definition is checked when built, so a saga that could never run correctly is an
//! error at start-up rather than a surprise in production. Actions are built by closures
//! from the saga's input and earlier results (data flow); the closures must be pure,
//! because recovery rebuilds the same intents from the same inputs.
//!
//! ```
//! use std::time::Duration;
//!
//! use keel_orchestrator::{RetryPolicy, SagaDefinition, Step, StepAction};
//! use serde_json::json;
//!
//! let fulfilment = SagaDefinition::builder("order.fulfilment")
//!     .step(
//!         Step::new("charge", |ctx| {
//!             StepAction::custom("payment.charge", json!({ "order": ctx.input()["order"] }))
//!         })
//!         .compensate(|ctx| {
//!             StepAction::custom("payment.refund", json!({ "charge": ctx.own_result()["id"] }))
//!         })
//!         .retry(RetryPolicy::exponential().attempts(5).first_delay(Duration::from_millis(50)))
//!         .timeout_ms(2_000),
//!     )
//!     .parallel([
//!         Step::new("reserve", |_| StepAction::custom("stock.reserve", json!({})))
//!             .compensate(|_| StepAction::custom("stock.release", json!({}))),
//!         Step::new("label", |_| StepAction::custom("shipping.label", json!({}))),
//!     ])
//!     .step(Step::new("ship", |_| StepAction::custom("shipping.ship", json!({}))).pivot())
//!     .deadline_ms(60_000)
//!     .build()?;
//! assert_eq!(fulfilment.steps().len(), 4);
//! # Ok::<(), keel_orchestrator::Error>(())
//! ```

mod diagram;

use std::fmt;
use std::sync::Arc;

use keel_core::{EventType, HttpRequest, Topic};
use serde_json::Value;

use crate::error::Error;
use crate::id::{SagaId, SagaType};
use crate::saga::StepState;

pub use keel_core::retry::{ATTEMPTS_MAX, RetryPolicy};

/// The most steps one saga may declare.
pub const STEPS_MAX: usize = 1_000;

/// The longest step name, in bytes.
pub const STEP_NAME_BYTES_MAX: usize = 64;

/// Builds a step's action (or compensation) from what the saga knows.
pub type BuildAction = Arc<dyn Fn(&StepContext<'_>) -> StepAction + Send + Sync>;

/// Checks a successful answer; an `Err` turns it into a definite failure of the step.
pub type CheckAnswer = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// What a step does: one effect, carried out through keel-effects.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StepAction {
    /// An HTTP call. Its idempotency key is the step's intent id, the same for every
    /// attempt, unless the request sets its own.
    Http(HttpRequest),
    /// A request on the bus, answered by a reply with the same correlation id.
    Request {
        /// Where to publish the request.
        topic: Topic,
        /// The request's type.
        event_type: EventType,
        /// The request's data.
        payload: Value,
        /// How long to wait for the reply.
        timeout_ms: u64,
    },
    /// An effect of the user's own kind, run by the handler registered for `name`.
    Custom {
        /// Selects the handler: `payment.charge`.
        name: EventType,
        /// The handler's input.
        payload: Value,
    },
}

impl StepAction {
    /// An HTTP call.
    pub fn http(request: HttpRequest) -> Self {
        Self::Http(request)
    }

    /// A custom effect. `name` must be lowercase dotted segments (checked at compile
    /// time for a literal, by a panic with the reason).
    pub fn custom(name: &'static str, payload: Value) -> Self {
        Self::Custom {
            name: EventType::from_static(name),
            payload,
        }
    }

    /// A request on the bus: published on `topic` as type `event_type`, answered within
    /// `timeout_ms`. The names are literals, checked like [`StepAction::custom`]'s.
    pub fn request(
        topic: &'static str,
        event_type: &'static str,
        payload: Value,
        timeout_ms: u64,
    ) -> Self {
        Self::Request {
            topic: Topic::from_static(topic),
            event_type: EventType::from_static(event_type),
            payload,
            timeout_ms,
        }
    }
}

/// What a step's action builder can read: the saga's id and input, and the results of
/// the steps that completed before it.
#[derive(Clone, Copy)]
pub struct StepContext<'a> {
    pub(crate) saga: &'a SagaId,
    pub(crate) input: &'a Value,
    pub(crate) definition: &'a SagaDefinition,
    pub(crate) steps: &'a [StepState],
    pub(crate) step: u16,
}

impl fmt::Debug for StepContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepContext")
            .field("saga", self.saga)
            .field("step", &self.definition.steps[usize::from(self.step)].name)
            .finish_non_exhaustive()
    }
}

impl<'a> StepContext<'a> {
    /// The saga's id.
    pub fn saga(&self) -> &'a SagaId {
        self.saga
    }

    /// The input the saga was started with.
    pub fn input(&self) -> &'a Value {
        self.input
    }

    /// The result of step `name`, if it completed; `Value::Null` otherwise, so that
    /// indexing into it reads as a missing field rather than a panic.
    pub fn result(&self, name: &str) -> &'a Value {
        self.definition
            .step_index(name)
            .and_then(|index| self.steps.get(usize::from(index)))
            .and_then(|step| step.result.as_deref())
            .unwrap_or(&Value::Null)
    }

    /// The result of the step being built (for its compensation); `Value::Null` when
    /// the step has none.
    pub fn own_result(&self) -> &'a Value {
        self.steps
            .get(usize::from(self.step))
            .and_then(|step| step.result.as_deref())
            .unwrap_or(&Value::Null)
    }

    /// The name of the step being built.
    pub fn step_name(&self) -> &'a str {
        &self.definition.steps[usize::from(self.step)].name
    }
}

/// One step of a saga.
#[derive(Clone)]
pub struct Step {
    pub(crate) name: String,
    pub(crate) action: BuildAction,
    pub(crate) compensation: Option<BuildAction>,
    pub(crate) retry: RetryPolicy,
    pub(crate) compensation_retry: RetryPolicy,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) pivot: bool,
    pub(crate) check: Option<CheckAnswer>,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("compensated", &self.compensation.is_some())
            .field("retry", &self.retry)
            .field("compensation_retry", &self.compensation_retry)
            .field("timeout_ms", &self.timeout_ms)
            .field("pivot", &self.pivot)
            .finish_non_exhaustive()
    }
}

/// Compensations are retried far longer than actions: undoing is not optional. Past
/// this, the saga is parked for an operator.
///
/// Twenty attempts from 100 ms doubling up to 30 s. (A saga waits out any `Retry-After`
/// a service sends, as a floor on the wait: `retry_after_max` does not apply to steps.)
pub const COMPENSATION_RETRY_DEFAULT: RetryPolicy = RetryPolicy::exponential().attempts(20);

impl Step {
    /// A step called `name` (lowercase letters, digits, `_` and `-`) whose action
    /// `action` builds. No compensation, the default retry policy, no timeout.
    pub fn new(
        name: impl Into<String>,
        action: impl Fn(&StepContext<'_>) -> StepAction + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            action: Arc::new(action),
            compensation: None,
            retry: RetryPolicy::default(),
            compensation_retry: COMPENSATION_RETRY_DEFAULT,
            timeout_ms: None,
            pivot: false,
            check: None,
        }
    }

    /// The intent that undoes this step; it runs only if the step completed and the
    /// saga later compensates.
    #[must_use]
    pub fn compensate(
        mut self,
        compensation: impl Fn(&StepContext<'_>) -> StepAction + Send + Sync + 'static,
    ) -> Self {
        self.compensation = Some(Arc::new(compensation));
        self
    }

    /// How the action is retried. A `Retry-After` from the service lengthens the wait
    /// however long it is; the policy's `retry_after_max` does not apply to saga steps.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How the compensation is retried before the saga is parked.
    #[must_use]
    pub fn compensation_retry(mut self, policy: RetryPolicy) -> Self {
        self.compensation_retry = policy;
        self
    }

    /// How long one attempt may wait for its answer before it counts as timed out.
    #[must_use]
    pub fn timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }

    /// Marks the point of no return: once this step has completed, the saga only goes
    /// forward, and nothing is compensated.
    #[must_use]
    pub fn pivot(mut self) -> Self {
        self.pivot = true;
        self
    }

    /// Checks each successful answer: `Err(reason)` makes it a definite failure (the
    /// service answered, and the answer is no), as for a policy that denies.
    #[must_use]
    pub fn check(
        mut self,
        check: impl Fn(&Value) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.check = Some(Arc::new(check));
        self
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the step has a compensation.
    pub fn is_compensated(&self) -> bool {
        self.compensation.is_some()
    }

    /// Whether the step is the pivot.
    pub fn is_pivot(&self) -> bool {
        self.pivot
    }

    /// The action's retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The compensation's retry policy.
    pub fn compensation_retry_policy(&self) -> &RetryPolicy {
        &self.compensation_retry
    }

    /// The per-attempt timeout, if any.
    pub fn timeout(&self) -> Option<u64> {
        self.timeout_ms
    }
}

/// A run of steps started together: one step, or a parallel group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// The index of its first step.
    pub first: u16,
    /// How many steps it holds.
    pub len: u16,
}

impl Stage {
    /// The indices of its steps.
    pub fn steps(&self) -> std::ops::Range<u16> {
        self.first..self.first + self.len
    }
}

/// A checked saga definition: what every saga of one type does.
#[derive(Debug)]
pub struct SagaDefinition {
    saga_type: SagaType,
    steps: Vec<Step>,
    stages: Vec<Stage>,
    pivot: Option<u16>,
    deadline_ms: Option<u64>,
}

impl SagaDefinition {
    /// Starts a definition for sagas of type `saga_type` (lowercase dotted segments).
    pub fn builder(saga_type: &str) -> SagaBuilder {
        SagaBuilder {
            saga_type: saga_type.to_owned(),
            stages: Vec::new(),
            deadline_ms: None,
        }
    }

    /// The saga type.
    pub fn saga_type(&self) -> &SagaType {
        &self.saga_type
    }

    /// Every step, in declaration order; a step's index here is its number in the log.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The pivot step's index, if there is one.
    pub fn pivot(&self) -> Option<u16> {
        self.pivot
    }

    /// How long a saga may run before it is cancelled, if limited.
    pub fn deadline_ms(&self) -> Option<u64> {
        self.deadline_ms
    }

    /// The index of the step called `name`.
    pub fn step_index(&self, name: &str) -> Option<u16> {
        self.steps
            .iter()
            .position(|step| step.name == name)
            .and_then(|index| u16::try_from(index).ok())
    }

    /// The step at `index`.
    pub(crate) fn step(&self, index: u16) -> &Step {
        &self.steps[usize::from(index)]
    }
}

/// Builds a [`SagaDefinition`]; see the [module docs](self).
#[derive(Debug)]
pub struct SagaBuilder {
    saga_type: String,
    stages: Vec<Vec<Step>>,
    deadline_ms: Option<u64>,
}

impl SagaBuilder {
    /// Adds a step that starts when every earlier stage has completed.
    #[must_use]
    pub fn step(mut self, step: Step) -> Self {
        self.stages.push(vec![step]);
        self
    }

    /// Adds a parallel group: its steps start together, and the saga moves on when all
    /// have completed. If one fails, the ones that completed are compensated (before
    /// the earlier steps).
    #[must_use]
    pub fn parallel(mut self, steps: impl IntoIterator<Item = Step>) -> Self {
        self.stages.push(steps.into_iter().collect());
        self
    }

    /// Cancels (and compensates) a saga still running this long after it started. A
    /// saga past its pivot is not cancelled: it can only go forward.
    #[must_use]
    pub fn deadline_ms(mut self, deadline_ms: u64) -> Self {
        self.deadline_ms = Some(deadline_ms);
        self
    }

    /// Checks the definition.
    pub fn build(self) -> Result<SagaDefinition, Error> {
        let saga_type = SagaType::new(self.saga_type.clone())?;
        let invalid = |reason: String| Error::InvalidDefinition {
            saga_type: self.saga_type.clone(),
            reason,
        };
        if self.stages.is_empty() {
            return Err(invalid(
                "it has no steps: add at least one with `.step(..)`".into(),
            ));
        }
        let count: usize = self.stages.iter().map(Vec::len).sum();
        if count > STEPS_MAX {
            return Err(invalid(format!(
                "it has {count} steps, over the limit of {STEPS_MAX}"
            )));
        }
        if self.deadline_ms == Some(0) {
            return Err(invalid("the deadline must be at least 1 ms".into()));
        }
        let mut steps: Vec<Step> = Vec::with_capacity(count);
        let mut stages = Vec::with_capacity(self.stages.len());
        let mut pivot = None;
        for (number, group) in self.stages.into_iter().enumerate() {
            if group.is_empty() {
                return Err(invalid(format!(
                    "stage {} is an empty parallel group",
                    number + 1
                )));
            }
            // Both fit: count is at most STEPS_MAX, far below u16::MAX.
            let first = u16::try_from(steps.len()).unwrap_or(u16::MAX);
            let len = u16::try_from(group.len()).unwrap_or(u16::MAX);
            for step in group {
                check_step_name(&step.name)
                    .map_err(|reason| invalid(format!("step `{}`: {reason}", step.name)))?;
                if steps.iter().any(|other| other.name == step.name) {
                    return Err(invalid(format!(
                        "two steps are called `{}`: step names must be unique",
                        step.name
                    )));
                }
                step.retry
                    .check()
                    .map_err(|err| invalid(format!("step `{}`: {err}", step.name)))?;
                step.compensation_retry
                    .check()
                    .map_err(|err| invalid(format!("step `{}` compensation: {err}", step.name)))?;
                if step.timeout_ms == Some(0) {
                    return Err(invalid(format!(
                        "step `{}`: the timeout must be at least 1 ms",
                        step.name
                    )));
                }
                if step.pivot {
                    if len > 1 {
                        return Err(invalid(format!(
                            "step `{}` is a pivot inside a parallel group: a pivot must be a step of its own",
                            step.name
                        )));
                    }
                    if pivot.is_some() {
                        return Err(invalid(
                            "it has two pivots: a saga has at most one point of no return".into(),
                        ));
                    }
                    pivot = Some(first);
                }
                steps.push(step);
            }
            stages.push(Stage { first, len });
        }
        Ok(SagaDefinition {
            saga_type,
            steps,
            stages,
            pivot,
            deadline_ms: self.deadline_ms,
        })
    }
}

fn check_step_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > STEP_NAME_BYTES_MAX {
        return Err("a step name must be 1 to 64 bytes long");
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-');
    if !name.bytes().all(allowed) {
        return Err("a step name may hold only a-z, 0-9, `_` and `-`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(name: &str) -> Step {
        Step::new(name, |_| StepAction::custom("x.do", json!(null)))
    }

    fn reason(result: Result<SagaDefinition, Error>) -> String {
        match result {
            Err(Error::InvalidDefinition { reason, .. }) => reason,
            other => panic!("expected an invalid definition, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_saga_is_refused() {
        assert!(reason(SagaDefinition::builder("a.b").build()).contains("no steps"));
    }

    #[test]
    fn duplicate_step_names_are_refused() {
        let built = SagaDefinition::builder("a.b")
            .step(step("x"))
            .parallel([step("y"), step("x")])
            .build();
        assert!(reason(built).contains("two steps are called `x`"));
    }

    #[test]
    fn a_pivot_in_a_parallel_group_or_a_second_pivot_is_refused() {
        let grouped = SagaDefinition::builder("a.b")
            .parallel([step("x").pivot(), step("y")])
            .build();
        assert!(reason(grouped).contains("inside a parallel group"));
        let twice = SagaDefinition::builder("a.b")
            .step(step("x").pivot())
            .step(step("y").pivot())
            .build();
        assert!(reason(twice).contains("two pivots"));
    }

    #[test]
    fn bad_names_policies_and_limits_are_refused() {
        assert!(
            reason(
                SagaDefinition::builder("a.b")
                    .step(step("Bad Name"))
                    .build()
            )
            .contains("a-z")
        );
        assert!(
            reason(SagaDefinition::builder("a.b").parallel([]).build())
                .contains("empty parallel group")
        );
        let zero = step("x").retry(RetryPolicy::exponential().attempts(0));
        assert!(
            reason(SagaDefinition::builder("a.b").step(zero).build())
                .contains("attempts must be 1")
        );
        let timeout = step("x").timeout_ms(0);
        assert!(reason(SagaDefinition::builder("a.b").step(timeout).build()).contains("timeout"));
        assert!(matches!(
            SagaDefinition::builder("Not A Type")
                .step(step("x"))
                .build(),
            Err(Error::InvalidName {
                what: "saga type",
                ..
            })
        ));
    }

    #[test]
    fn stages_number_steps_in_declaration_order() {
        let saga = SagaDefinition::builder("a.b")
            .step(step("a"))
            .parallel([step("b"), step("c")])
            .step(step("d").pivot())
            .build()
            .unwrap();
        let ranges: Vec<_> = saga.stages().iter().map(Stage::steps).collect();
        assert_eq!(ranges, [0..1, 1..3, 3..4]);
        assert_eq!(saga.pivot(), Some(3));
        assert_eq!(saga.step_index("c"), Some(2));
    }
}
