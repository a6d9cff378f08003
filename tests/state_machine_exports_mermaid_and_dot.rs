//! A state machine exports itself as a Mermaid state diagram and as a Graphviz digraph,
//! deterministically and in declaration order.

use keel::machine::{Effect, Guard, Machine};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Light {
    Red,
    Green,
    Yellow,
    Off,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Signal {
    Tick,
    PowerCut,
}

#[derive(Clone, Debug, Default)]
struct Ctx {
    cars: u32,
}

fn traffic_light() -> Machine<Light, Signal, Ctx> {
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
            s.on(Signal::Tick)
                .when(Guard::new("cars_waiting", |ctx: &Ctx, _| ctx.cars > 0))
                .to(Light::Yellow)
                .on(Signal::Tick)
                .to(Light::Green)
        })
        .state(Light::Yellow, |s| s.on(Signal::Tick).to(Light::Red))
        .terminal(Light::Off)
        .build()
        .expect("the machine is consistent")
}

#[test]
fn mermaid_shows_the_initial_state_guards_and_terminal_states() {
    assert_eq!(
        traffic_light().to_mermaid(),
        "stateDiagram-v2
    [*] --> Red
    Red --> Green : Tick
    Red --> Off : PowerCut
    Green --> Yellow : Tick [cars_waiting]
    Green --> Green : Tick
    Yellow --> Red : Tick
    Off --> [*]
"
    );
}

#[test]
fn dot_is_a_left_to_right_digraph_with_a_start_point_and_double_circled_terminals() {
    assert_eq!(
        traffic_light().to_dot(),
        r#"digraph "traffic_light" {
    rankdir=LR;
    node [shape=box, style=rounded];
    start [shape=point];
    s0 [label="Red"];
    s1 [label="Green"];
    s2 [label="Yellow"];
    s3 [label="Off", shape=doublecircle];
    start -> s0;
    s0 -> s1 [label="Tick"];
    s0 -> s3 [label="PowerCut"];
    s1 -> s2 [label="Tick [cars_waiting]"];
    s1 -> s1 [label="Tick"];
    s2 -> s0 [label="Tick"];
}
"#
    );
}

#[test]
fn exports_are_identical_for_identical_definitions() {
    let (a, b) = (traffic_light(), traffic_light());
    assert_eq!(a.to_mermaid(), b.to_mermaid());
    assert_eq!(a.to_dot(), b.to_dot());
}

#[test]
fn labels_that_would_break_the_syntax_are_escaped() {
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Step {
        Waiting { attempt: u8 },
        Done,
    }
    let machine: Machine<Step, &str> =
        Machine::builder("retry \"loop\"", Step::Waiting { attempt: 0 })
            .state(Step::Waiting { attempt: 0 }, |s| {
                s.on("fail: again;").to(Step::Done)
            })
            .terminal(Step::Done)
            .build()
            .unwrap();
    assert_eq!(
        machine.to_mermaid(),
        "stateDiagram-v2
    state \"Waiting { attempt#58; 0 }\" as s0
    [*] --> s0
    s0 --> Done : fail#58; again#59;
    Done --> [*]
"
    );
    let dot = machine.to_dot();
    assert!(dot.starts_with("digraph \"retry \\\"loop\\\"\" {"), "{dot}");
    assert!(
        dot.contains("s0 [label=\"Waiting { attempt: 0 }\"];"),
        "{dot}"
    );
}
