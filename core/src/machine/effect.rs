//! What a machine can attach to states and transitions: [`Effect`] templates and
//! [`Guard`]s.
//!
//! Both are plain data plus plain `fn` pointers, never closures: a machine is a pure,
//! deterministic value that can be shared across threads and rebuilt identically.

use std::fmt;

use crate::id::TimerId;
use crate::intent::IntentKind;
use crate::reducer::Emitter;
use crate::time::Timestamp;

/// An intent template, turned into an [`IntentKind`] when the entry, exit or transition
/// it belongs to fires.
///
/// Timer effects are relative: their due time is computed from the `now` of the action
/// being reduced. Timer names written as literals cost no allocation, so a machine whose
/// effects are timers allocates nothing per action when reduced into a reused buffer.
///
/// ```
/// use keel_core::machine::Effect;
/// use keel_core::{IntentKind, TimerId, Timestamp};
///
/// let effect = Effect::timer_after("payment-timeout", 5_000);
/// assert_eq!(
///     effect.to_intent(Timestamp::from_unix_millis(1_000)),
///     IntentKind::ScheduleTimer {
///         timer: TimerId::from_static("payment-timeout"),
///         due: Timestamp::from_unix_millis(6_000),
///     },
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Effect {
    /// Emit this intent as it is. Boxed: timer effects, the common case, stay small.
    Intent(Box<IntentKind>),
    /// Start (or restart) a timer due `after_ms` milliseconds after the action's `now`.
    ScheduleTimer {
        /// The timer's name.
        timer: TimerId,
        /// The delay from the action's `now`.
        after_ms: u64,
    },
    /// Cancel a timer.
    CancelTimer {
        /// The timer's name.
        timer: TimerId,
    },
}

impl Effect {
    /// Emits `kind` as it is, cloned each time the effect fires.
    pub fn intent(kind: impl Into<IntentKind>) -> Self {
        Self::Intent(Box::new(kind.into()))
    }

    /// Schedules `timer` to fire `after_ms` milliseconds after the action's `now`.
    pub fn timer_after(timer: impl Into<TimerId>, after_ms: u64) -> Self {
        Self::ScheduleTimer {
            timer: timer.into(),
            after_ms,
        }
    }

    /// Cancels `timer`; cancelling a timer that is not pending does nothing.
    pub fn cancel_timer(timer: impl Into<TimerId>) -> Self {
        Self::CancelTimer {
            timer: timer.into(),
        }
    }

    /// The intent this effect stands for when it fires at `now`.
    pub fn to_intent(&self, now: Timestamp) -> IntentKind {
        match self {
            Self::Intent(kind) => IntentKind::clone(kind),
            Self::ScheduleTimer { timer, after_ms } => IntentKind::ScheduleTimer {
                timer: timer.clone(),
                due: now.plus_millis(*after_ms),
            },
            Self::CancelTimer { timer } => IntentKind::CancelTimer {
                timer: timer.clone(),
            },
        }
    }

    /// Emits [`Effect::to_intent`]`(now)` through `out`.
    ///
    /// Each arm emits its own variant, so that a timer intent is written straight into
    /// the buffer instead of being assembled in a temporary and copied: this is the
    /// machine's hot path. Inlined into each machine's monomorphised reducer; the clone
    /// of an arbitrary intent is not, which keeps that loop small.
    #[inline]
    pub(super) fn emit(&self, out: &mut Emitter<'_>, now: Timestamp) {
        match self {
            Self::ScheduleTimer { timer, after_ms } => out.emit(IntentKind::ScheduleTimer {
                timer: timer.clone(),
                due: now.plus_millis(*after_ms),
            }),
            Self::CancelTimer { timer } => out.emit(IntentKind::CancelTimer {
                timer: timer.clone(),
            }),
            Self::Intent(kind) => out.emit(clone_out_of_line(kind)),
        };
    }
}

impl From<IntentKind> for Effect {
    fn from(kind: IntentKind) -> Self {
        Self::intent(kind)
    }
}

#[inline(never)]
fn clone_out_of_line(kind: &IntentKind) -> IntentKind {
    kind.clone()
}

/// A named condition on the context and the event that a transition needs to fire.
///
/// The name identifies the guard in build errors and in exported diagrams; two
/// transitions on the same event may not share it.
///
/// ```
/// use keel_core::machine::Guard;
///
/// let within_budget = Guard::new("within_budget", |spent: &u32, cost: &u32| spent + cost <= 100);
/// assert!(within_budget.allows(&60, &40));
/// assert!(!within_budget.allows(&61, &40));
/// ```
pub struct Guard<C, E> {
    name: &'static str,
    check: fn(&C, &E) -> bool,
}

impl<C, E> Guard<C, E> {
    /// A guard named `name` that lets a transition fire when `check` returns true.
    pub const fn new(name: &'static str, check: fn(&C, &E) -> bool) -> Self {
        Self { name, check }
    }

    /// The guard's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the guard lets the transition fire for this context and event.
    pub fn allows(&self, context: &C, event: &E) -> bool {
        (self.check)(context, event)
    }
}

// Written by hand so that guards are `Copy` and `Debug` whatever `C` and `E` are: only
// the name and a function pointer are stored.
impl<C, E> Clone for Guard<C, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C, E> Copy for Guard<C, E> {}

impl<C, E> fmt::Debug for Guard<C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reducer::Cause;

    #[test]
    fn a_timer_is_due_its_delay_after_the_action_time() {
        let at = Timestamp::from_unix_millis(10_000);
        assert_eq!(
            Effect::timer_after("retry", 250).to_intent(at),
            IntentKind::ScheduleTimer {
                timer: TimerId::from_static("retry"),
                due: Timestamp::from_unix_millis(10_250),
            }
        );
    }

    #[test]
    fn a_cancellation_names_its_timer() {
        assert_eq!(
            Effect::cancel_timer("retry").to_intent(Timestamp::UNIX_EPOCH),
            IntentKind::CancelTimer {
                timer: TimerId::from_static("retry"),
            }
        );
    }

    #[test]
    fn an_intent_effect_is_emitted_unchanged_whatever_the_time() {
        let kind = IntentKind::CancelTimer {
            timer: TimerId::from(String::from("owned")),
        };
        let effect = Effect::from(kind.clone());
        assert_eq!(effect.to_intent(Timestamp::from_unix_millis(5)), kind);
    }

    #[test]
    fn emitting_gives_the_same_intent_as_to_intent_for_every_kind() {
        let now = Timestamp::from_unix_millis(42);
        let effects = [
            Effect::timer_after("retry", 8),
            Effect::cancel_timer(String::from("retry")),
            Effect::intent(IntentKind::CancelTimer {
                timer: TimerId::from_static("other"),
            }),
        ];
        let mut intents = Vec::new();
        let mut out = Cause::root(3).emitter(&mut intents);
        for effect in &effects {
            effect.emit(&mut out, now);
        }
        let emitted: Vec<IntentKind> = intents.into_iter().map(|i| i.kind).collect();
        let expected: Vec<IntentKind> = effects.iter().map(|e| e.to_intent(now)).collect();
        assert_eq!(emitted, expected);
    }

    #[test]
    fn a_guard_debugs_as_its_name_and_copies_freely() {
        let guard: Guard<(), ()> = Guard::new("always_open", |_, _| true);
        let copy = guard;
        assert!(guard.allows(&(), &()) && copy.allows(&(), &()));
        assert_eq!(format!("{guard:?}"), "Guard { name: \"always_open\", .. }");
    }
}
