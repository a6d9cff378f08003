//! A saga's state: where each step stands, and where the saga as a whole stands.
//!
//! Plain, serialisable data; only the reducer changes it. Rebuilding it from the saga
//! log gives the same value the live orchestrator held (a tested law).

use keel_core::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::{SagaId, SagaType};

/// Where a saga stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SagaStatus {
    /// Declared but not yet started (only before its first record).
    New,
    /// Going forward, step by step.
    Running,
    /// Undoing the completed steps, last completed first.
    Compensating {
        /// Why: the failure, cancellation or deadline that turned it back.
        reason: String,
    },
    /// Every step completed.
    Completed,
    /// Every completed step was undone.
    Compensated {
        /// Why it was compensated.
        reason: String,
    },
    /// Stopped for a person to decide: a compensation kept failing, a step's outcome is
    /// unknown, or a step failed past the pivot. See [`OperatorCommand`](super::OperatorCommand).
    NeedsIntervention {
        /// What is wrong, naming the step.
        reason: String,
        /// Which way the saga goes once the problem is dealt with.
        resume: Resume,
    },
    /// Closed by an operator after an intervention.
    Resolved {
        /// The operator's note.
        note: String,
    },
}

/// The direction a parked saga resumes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resume {
    /// Forward: it was past its pivot.
    Forward,
    /// Compensation.
    Compensate,
}

impl SagaStatus {
    /// The status as one lowercase word, for queries and tables.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Running => "running",
            Self::Compensating { .. } => "compensating",
            Self::Completed => "completed",
            Self::Compensated { .. } => "compensated",
            Self::NeedsIntervention { .. } => "needs_intervention",
            Self::Resolved { .. } => "resolved",
        }
    }

    /// Whether nothing more will happen to the saga.
    pub const fn is_finished(&self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Compensated { .. } | Self::Resolved { .. }
        )
    }

    /// Whether the saga has come to rest: finished, or waiting for an operator.
    pub const fn is_at_rest(&self) -> bool {
        self.is_finished() || matches!(self, Self::NeedsIntervention { .. })
    }

    /// The reason, for statuses that carry one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Compensating { reason }
            | Self::Compensated { reason }
            | Self::NeedsIntervention { reason, .. } => Some(reason),
            Self::Resolved { note } => Some(note),
            _ => None,
        }
    }
}

/// Where one step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum StepPhase {
    /// Not started; a step that never started is never compensated.
    Pending,
    /// An attempt at the action is out, awaiting its answer.
    Running {
        /// When the attempt times out, if the step has a timeout.
        timeout_at: Option<Timestamp>,
    },
    /// An attempt failed; the next starts at `due`.
    Backoff {
        /// When the next attempt starts.
        due: Timestamp,
    },
    /// The action succeeded.
    Completed,
    /// The action failed for good. If `maybe_applied` is set, no attempt got a definite
    /// answer and the effect may have happened.
    Failed,
    /// An attempt at the compensation is out.
    Compensating {
        /// When the attempt times out, if the step has a timeout.
        timeout_at: Option<Timestamp>,
    },
    /// A compensation attempt failed; the next starts at `due`.
    CompensationBackoff {
        /// When the next attempt starts.
        due: Timestamp,
    },
    /// The compensation succeeded.
    Compensated,
    /// The compensation failed past its retry limit; the saga waits for an operator.
    Parked,
    /// An operator skipped the step (or its compensation).
    Skipped,
}

/// One step's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// Where it stands.
    #[serde(flatten)]
    pub phase: StepPhase,
    /// Attempts at the action so far.
    pub attempts: u16,
    /// Attempts at the compensation so far.
    pub compensation_attempts: u16,
    /// Attempts that count against the retry policy start after this many (an
    /// operator's retry grants a fresh budget without reusing attempt numbers).
    pub budget_from: u16,
    /// Whether the effect may have happened without a definite answer saying so.
    pub maybe_applied: bool,
    /// The action's answer, once it completed (boxed: most steps of an idle saga have
    /// none, and a pointer is a quarter of a `Value`).
    pub result: Option<Box<Value>>,
    /// The last failure, for people.
    pub error: Option<Box<str>>,
}

impl StepState {
    /// A step that has not started.
    pub const fn pending() -> Self {
        Self {
            phase: StepPhase::Pending,
            attempts: 0,
            compensation_attempts: 0,
            budget_from: 0,
            maybe_applied: false,
            result: None,
            error: None,
        }
    }

    /// Whether its action's effect counts as done going forward.
    pub const fn is_done(&self) -> bool {
        matches!(self.phase, StepPhase::Completed | StepPhase::Skipped)
    }

    /// Whether an attempt at the action is out or due.
    pub const fn is_in_flight(&self) -> bool {
        matches!(
            self.phase,
            StepPhase::Running { .. } | StepPhase::Backoff { .. }
        )
    }

    /// Whether a compensation attempt is out or due.
    pub const fn is_compensating(&self) -> bool {
        matches!(
            self.phase,
            StepPhase::Compensating { .. } | StepPhase::CompensationBackoff { .. }
        )
    }

    /// Whether the action failed for good without anyone knowing if it took effect.
    pub const fn is_unknown(&self) -> bool {
        matches!(self.phase, StepPhase::Failed) && self.maybe_applied
    }
}

/// One saga's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaState {
    /// The saga's id.
    pub id: SagaId,
    /// Its type.
    pub saga_type: SagaType,
    /// The input it was started with.
    pub input: Value,
    /// Where it stands.
    pub status: SagaStatus,
    /// The stage going forward (index into the definition's stages).
    pub stage: u16,
    /// Whether the pivot step has completed.
    pub pivot_passed: bool,
    /// Every step, by index.
    pub steps: Vec<StepState>,
    /// Steps in the order they completed.
    pub completed: Vec<u16>,
    /// Steps in the order they were compensated.
    pub compensated: Vec<u16>,
    /// Why it turned back, once it did.
    pub compensation_reason: Option<String>,
    /// When it is cancelled if still running, if its definition has a deadline.
    pub deadline: Option<Timestamp>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl SagaState {
    /// The state before the saga's first record.
    pub fn new(id: SagaId, saga_type: SagaType) -> Self {
        Self {
            id,
            saga_type,
            input: Value::Null,
            status: SagaStatus::New,
            stage: 0,
            pivot_passed: false,
            steps: Vec::new(),
            completed: Vec::new(),
            compensated: Vec::new(),
            compensation_reason: None,
            deadline: None,
            started_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        }
    }
}
