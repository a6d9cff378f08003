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
    CausationId, Cause, CorrelationId, Effect, Guard, Input, IntentKind, Machine, MachineState,
    Reducer, Timestamp,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Light {
    Red,
    Green,
    Yellow,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Signal {
    /// The light's own timer fired.
    Tick,
    /// A car arrived at the sensor.
    CarArrived,
    /// The power went out.
    PowerCut,
}

/// The extended state: what the guard reads and the updates change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Road {
    cars_waiting: u32,
    cycles: u32,
}

fn traffic_light() -> Result<Machine<Light, Signal, Road>, keel::Error> {
    let cars_waiting = Guard::new("cars_waiting", |road: &Road, _: &Signal| {
        road.cars_waiting > 0
    });
    Machine::<Light, Signal, Road>::builder("traffic_light", Light::Red)
        .state(Light::Red, |s| {
            s.on_entry(Effect::timer_after("tick", 30_000))
                .on_exit(Effect::cancel_timer("tick"))
                .on(Signal::Tick)
                .to(Light::Green)
                // Internal: count the car without leaving Red (its timer keeps running).
                .on(Signal::CarArrived)
                .update(|road, _| road.cars_waiting += 1)
                .stay()
                .on(Signal::PowerCut)
                .to(Light::Off)
        })
        .state(Light::Green, |s| {
            s.on_entry(Effect::timer_after("tick", 20_000))
                // Stay green while nobody waits at the cross street.
                .on(Signal::Tick)
                .when(cars_waiting)
                .update(|road, _| road.cars_waiting = 0)
                .to(Light::Yellow)
                .on(Signal::Tick)
                .to(Light::Green)
                .on(Signal::CarArrived)
                .update(|road, _| road.cars_waiting += 1)
                .stay()
                .on(Signal::PowerCut)
                .to(Light::Off)
        })
        .state(Light::Yellow, |s| {
            s.on_entry(Effect::timer_after("tick", 3_000))
                .on(Signal::Tick)
                .update(|road, _| road.cycles += 1)
                .to(Light::Red)
                .on(Signal::PowerCut)
                .to(Light::Off)
        })
        .terminal(Light::Off)
        .build()
}

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
