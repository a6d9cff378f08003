//! Declarative state machines of the examples: the traffic light of
//! `cargo run --example traffic_light`, also drawn by `keel diagram traffic_light`.

use keel_core::{Effect, Guard, Machine};
use serde::{Deserialize, Serialize};

/// The light's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // The colours are the documentation.
pub enum Light {
    Red,
    Green,
    Yellow,
    Off,
}

/// What the light reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    /// The light's own timer fired.
    Tick,
    /// A car arrived at the sensor.
    CarArrived,
    /// The power went out.
    PowerCut,
}

/// The extended state: what the guard reads and the updates change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Road {
    /// Cars waiting at the cross street.
    pub cars_waiting: u32,
    /// Full red-green-yellow cycles so far.
    pub cycles: u32,
}

/// The traffic light machine, checked when built.
pub fn traffic_light() -> Result<Machine<Light, Signal, Road>, keel_core::Error> {
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
