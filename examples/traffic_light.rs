//! A traffic light as a declarative keel state machine: states, a guarded transition,
//! entry and exit effects, and what the reducer returns at each step.
//!
//! It shows the core idea of keel in one screen: the machine is pure (time and ids are
//! inputs), every effect comes back as an intent (plain data with a stable id that the
//! runtime would use as its idempotency key), and the definition is checked when built
//! and can be drawn.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example traffic_light
//! ```

use keel::{
    CausationId, Cause, CorrelationId, Input, IntentKind, MachineState, Reducer, Timestamp,
};
use keel_demo::machines::{Light, Road, Signal, traffic_light};

fn describe(kind: &IntentKind) -> String {
    match kind {
        IntentKind::ScheduleTimer { timer, due } => format!("schedule timer `{timer}` at {due}"),
        IntentKind::CancelTimer { timer } => format!("cancel timer `{timer}`"),
        other => format!("{} intent", other.family()),
    }
}

fn main() -> Result<(), keel::Error> {
    let machine = traffic_light()?;
    let correlation = CorrelationId::from_u128(0x6b65_656c);
    let start = Timestamp::from_unix_millis(1_795_000_000_000);

    let cause = |n: u128| Cause::new(correlation, CausationId::from_u128(n));
    let (mut state, intents) = machine.start(Road::default(), Input::new(cause(0), start, ()));
    println!("start in {:?}", state.state);
    for intent in &intents {
        println!(
            "    intent {}  {}",
            intent.id.position,
            describe(&intent.kind)
        );
    }

    let script = [
        (30_000, Signal::Tick),
        (50_000, Signal::Tick), // nobody waiting: green again, timer restarted
        (55_000, Signal::CarArrived),
        (70_000, Signal::Tick), // someone waits: turns yellow
        (73_000, Signal::Tick),
        (80_000, Signal::PowerCut),
        (90_000, Signal::Tick), // Off is terminal: ignored
    ];
    for (step, (after_ms, signal)) in (1..).zip(script) {
        let now = start.plus_millis(after_ms);
        let before: MachineState<Light, Road> = state.clone();
        let arrow = match machine.enabled(&state, &signal) {
            Some(next) => format!("-> {next:?}"),
            None => "(no transition: ignored)".to_owned(),
        };
        let intents;
        (state, intents) = machine.reduce(state, Input::new(cause(step), now, signal));
        println!(
            "{signal:?} at +{}s: {:?} {arrow}  cars_waiting={} cycles={}",
            after_ms / 1000,
            before.state,
            state.context.cars_waiting,
            state.context.cycles
        );
        for intent in &intents {
            // The id is (correlation, causation, position): replaying this step gives
            // the same ids, so the runtime can deduplicate the effect.
            println!(
                "    intent {}  {}",
                intent.id.position,
                describe(&intent.kind)
            );
        }
    }

    println!("\nThe machine as Mermaid (paste into any Markdown that renders Mermaid):\n");
    println!("{}", machine.to_mermaid());
    Ok(())
}
