//! A small workflow reducer for runtime tests: each command emits the intents it names,
//! and the state logs every action applied, so a test can replay them by hand.

#![allow(dead_code, unreachable_pub)] // Each test crate uses a different part.

use keel_core::{
    CausationId, Cause, CorrelationId, EventType, Input, Intent, IntentKind, Outcome,
    OutcomeResult, Reducer, TimerId, Timestamp,
};
use serde_json::json;

/// What a command asks the workflow to emit.
#[derive(Debug, Clone, PartialEq)]
pub enum Emit {
    /// A custom intent named `test.effect` carrying this tag.
    Effect(u32),
    /// Schedule timer `name` at `due_ms`.
    Timer(&'static str, i64),
    /// Cancel timer `name`.
    Cancel(&'static str),
}

/// The workflow's messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// A command from outside.
    Command(Vec<Emit>),
    /// An outcome fed back.
    Outcome(Outcome),
}

impl From<Outcome> for Msg {
    fn from(outcome: Outcome) -> Self {
        Self::Outcome(outcome)
    }
}

/// Everything the workflow saw, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Log {
    pub applied: Vec<Input<Msg>>,
    pub succeeded: u32,
    pub failed: u32,
    pub timed_out: u32,
    pub fired: Vec<String>,
}

/// The workflow.
#[derive(Debug, Clone, Copy)]
pub struct Workflow;

impl Reducer for Workflow {
    type State = Log;
    type Action = Input<Msg>;

    fn reduce_into(&self, log: &mut Log, action: Input<Msg>, intents: &mut Vec<Intent>) {
        log.applied.push(action.clone());
        let mut out = action.cause.emitter(intents);
        match action.body {
            Msg::Command(emits) => {
                for emit in emits {
                    out.emit(match emit {
                        Emit::Effect(tag) => IntentKind::Custom {
                            name: effect(),
                            payload: json!({ "tag": tag }),
                        },
                        Emit::Timer(name, due_ms) => IntentKind::ScheduleTimer {
                            timer: TimerId::from_static(name),
                            due: Timestamp::from_unix_millis(due_ms),
                        },
                        Emit::Cancel(name) => IntentKind::CancelTimer {
                            timer: TimerId::from_static(name),
                        },
                    });
                }
            }
            Msg::Outcome(outcome) => match outcome.result {
                OutcomeResult::Succeeded { .. } => log.succeeded += 1,
                OutcomeResult::Failed(_) => log.failed += 1,
                OutcomeResult::TimedOut => log.timed_out += 1,
                OutcomeResult::TimerFired { timer } => log.fired.push(timer.to_string()),
                _ => {}
            },
        }
    }
}

/// The name of the workflow's custom effect.
pub fn effect() -> EventType {
    EventType::from_static("test.effect")
}

/// A command action with a fixed cause, at `now_ms`.
pub fn command(causation: u128, now_ms: i64, emits: Vec<Emit>) -> Input<Msg> {
    Input::new(
        Cause::new(
            CorrelationId::from_u128(1),
            CausationId::from_u128(causation),
        ),
        Timestamp::from_unix_millis(now_ms),
        Msg::Command(emits),
    )
}
