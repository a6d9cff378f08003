//! An internal transition (`.stay()`) updates the context and emits its own effects
//! without exiting or re-entering the state, so the state's timers are not restarted;
//! a self-transition declared with `.to(same)` does exit and re-enter.

use keel::machine::{Effect, Machine, MachineState};
use keel::{Cause, Input, IntentKind, Reducer, TimerId, Timestamp};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Door {
    Open,
    Closed,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Event {
    PersonPassed,
    Nudge,
    Close,
}

fn door() -> Machine<Door, Event, u32> {
    Machine::<Door, Event, u32>::builder("door", Door::Open)
        .state(Door::Open, |s| {
            s.on_entry(Effect::timer_after("auto-close", 5_000))
                .on_exit(Effect::cancel_timer("auto-close"))
                .on(Event::PersonPassed)
                .update(|count, _| *count += 1)
                .emit(Effect::timer_after("count-report", 60_000))
                .stay()
                .on(Event::Nudge)
                .to(Door::Open)
                .on(Event::Close)
                .to(Door::Closed)
        })
        .state(Door::Closed, |s| s)
        .build()
        .expect("the door machine is valid")
}

fn at(event: Event) -> Input<Event> {
    Input::new(Cause::root(1), Timestamp::from_unix_millis(1_000), event)
}

fn timers(intents: &[keel::Intent]) -> Vec<String> {
    intents
        .iter()
        .map(|intent| match &intent.kind {
            IntentKind::ScheduleTimer { timer, .. } => format!("schedule {timer}"),
            IntentKind::CancelTimer { timer } => format!("cancel {timer}"),
            other => other.family().to_owned(),
        })
        .collect()
}

#[test]
fn an_internal_transition_runs_only_its_own_updates_and_effects() {
    let open = MachineState {
        state: Door::Open,
        context: 0,
    };
    let (state, intents) = door().reduce(open, at(Event::PersonPassed));
    assert_eq!(
        state,
        MachineState {
            state: Door::Open,
            context: 1
        }
    );
    assert_eq!(timers(&intents), ["schedule count-report"]);
    let _ = TimerId::from_static("auto-close");
}

#[test]
fn a_self_transition_exits_and_re_enters_restarting_entry_timers() {
    let open = MachineState {
        state: Door::Open,
        context: 0,
    };
    let (state, intents) = door().reduce(open, at(Event::Nudge));
    assert_eq!(state.state, Door::Open);
    assert_eq!(
        timers(&intents),
        ["cancel auto-close", "schedule auto-close"]
    );
}
