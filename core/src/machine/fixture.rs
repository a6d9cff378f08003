//! The traffic light the unit tests of this module share.

use serde_json::json;

use super::{Effect, Guard, Machine};
use crate::envelope::EventType;
use crate::intent::IntentKind;

#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum Light {
    Red,
    Green,
    Yellow,
    Off,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum Signal {
    Tick,
    PowerCut,
}

#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Road {
    pub(super) cars_waiting: u32,
    pub(super) cycles: u32,
}

/// The custom intent Yellow -> Red emits, between Yellow's exit and Red's entry.
pub(super) fn cycled() -> IntentKind {
    IntentKind::Custom {
        name: EventType::from_static("light.cycled"),
        payload: json!({}),
    }
}

/// Every state arms "tick" on entry and cancels it on exit; Green stays green until
/// cars wait; Yellow -> Red counts a cycle and emits [`cycled`]; Off is terminal.
pub(super) fn traffic_light() -> Machine<Light, Signal, Road> {
    Machine::builder("traffic_light", Light::Red)
        .state(Light::Red, |s| {
            s.on_entry(Effect::timer_after("tick", 30_000))
                .on_exit(Effect::cancel_timer("tick"))
                .on(Signal::Tick)
                .to(Light::Green)
                .on(Signal::PowerCut)
                .to(Light::Off)
        })
        .state(Light::Green, |s| {
            s.on_entry(Effect::timer_after("tick", 20_000))
                .on_exit(Effect::cancel_timer("tick"))
                .on(Signal::Tick)
                .when(Guard::new("cars_waiting", |road: &Road, _| {
                    road.cars_waiting > 0
                }))
                .to(Light::Yellow)
                .on(Signal::Tick)
                .to(Light::Green)
                .on(Signal::PowerCut)
                .to(Light::Off)
        })
        .state(Light::Yellow, |s| {
            s.on_entry(Effect::timer_after("tick", 3_000))
                .on_exit(Effect::cancel_timer("tick"))
                .on(Signal::Tick)
                .update(|road: &mut Road, _| road.cycles += 1)
                .emit(Effect::intent(cycled()))
                .to(Light::Red)
                .on(Signal::PowerCut)
                .to(Light::Off)
        })
        .terminal(Light::Off)
        .build()
        .expect("the fixture is a valid machine")
}
