//! Part 1, pure transitions: the same traffic light and counter in keel-core and in
//! XState 5, in one run.
//!
//! The traffic light is the one of `core/benches/reduce/fixtures.rs` (and of
//! `peers/xstate/bench.mjs`): red, green, yellow on `Tick`, each state scheduling its
//! own timer on entry. The counter is one state whose `Inc` adds one to the context
//! through an update (XState: an `assign` action). Each keel figure builds the action's
//! `Input` (cause and time) inside the loop, as a driver would.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use keel_core::{Cause, Effect, Input, Intent, Machine, MachineState, Reducer, Timestamp};

use crate::options::Sizes;
use crate::peers;
use crate::report::{Report, Target, Verdict, nanos, spread, times};
use crate::stats::{Summary, ratio};
use crate::svg::{BarChart, BarSeries, Scale};

/// The target: keel-core at least this many times faster than XState's `transition()`.
const SPEEDUP_TARGET: f64 = 1_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Light {
    Red,
    Green,
    Yellow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tick;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counting {
    Counting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inc;

fn traffic_light() -> Machine<Light, Tick> {
    Machine::builder("traffic_light", Light::Red)
        .state(Light::Red, |s| {
            s.on_entry(Effect::timer_after("tick", 30_000))
                .on(Tick)
                .to(Light::Green)
        })
        .state(Light::Green, |s| {
            s.on_entry(Effect::timer_after("tick", 3_000))
                .on(Tick)
                .to(Light::Yellow)
        })
        .state(Light::Yellow, |s| {
            s.on_entry(Effect::timer_after("tick", 20_000))
                .on(Tick)
                .to(Light::Red)
        })
        .build()
        .expect("the benchmark's traffic light is a valid machine")
}

fn counter() -> Machine<Counting, Inc, u64> {
    Machine::builder("counter", Counting::Counting)
        .state(Counting::Counting, |s| {
            s.on(Inc).update(|count, _| *count += 1).stay()
        })
        .build()
        .expect("the benchmark's counter is a valid machine")
}

fn input<E>(i: u64, body: E) -> Input<E> {
    Input::new(
        Cause::root(u128::from(i)),
        Timestamp::from_unix_millis(i as i64),
        body,
    )
}

/// Grows `n` until `run(n)` takes about `sample`, then times `runs` runs of `n`
/// actions; nanoseconds per action of each run.
fn measure(runs: usize, sample: Duration, mut run: impl FnMut(u64)) -> Vec<f64> {
    let mut n = 1_000_u64;
    loop {
        let started = Instant::now();
        run(n);
        let elapsed = started.elapsed();
        if elapsed >= sample / 4 || n >= 1 << 32 {
            let per_action = elapsed.as_secs_f64() / n as f64;
            n = ((sample.as_secs_f64() / per_action.max(1e-12)) as u64).max(1_000);
            break;
        }
        n *= 4;
    }
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            run(n);
            started.elapsed().as_nanos() as f64 / n as f64
        })
        .collect()
}

/// Both reduce paths of `machine`, from `initial`, with actions `body`.
fn both_paths<S, E, C>(
    machine: &Machine<S, E, C>,
    initial: &MachineState<S, C>,
    body: E,
    runs: usize,
    sample: Duration,
) -> (Vec<f64>, Vec<f64>)
where
    S: Copy + Eq + std::fmt::Debug + 'static,
    E: Copy + Eq + std::fmt::Debug + 'static,
    C: Clone,
{
    let fresh = measure(runs, sample, |n| {
        let mut state = initial.clone();
        for i in 0..n {
            let (next, intents) = machine.reduce(state, input(i, body));
            black_box(&intents);
            state = next;
        }
        black_box(&state);
    });
    let in_place = measure(runs, sample, |n| {
        let mut state = initial.clone();
        let mut buffer: Vec<Intent> = Vec::with_capacity(8);
        for i in 0..n {
            buffer.clear();
            machine.reduce_into(&mut state, input(i, body), &mut buffer);
            black_box(&buffer);
        }
        black_box(&state);
    });
    (fresh, in_place)
}

/// One machine's figures: ns per event, per run.
#[derive(Debug, Default)]
struct Figures {
    reduce: Vec<f64>,
    reduce_into: Vec<f64>,
    xstate_transition: Vec<f64>,
    xstate_send: Vec<f64>,
}

/// Runs part 1 and adds it to `report`.
pub(crate) fn run(report: &mut Report, sizes: &Sizes, root: &Path) {
    let sample = Duration::from_millis(sizes.transition_sample_ms);
    let runs = sizes.transition_runs;
    let mut light = Figures::default();
    let mut count = Figures::default();

    eprintln!("[transitions] keel-core traffic light, {runs} runs per path");
    let machine = traffic_light();
    let initial = MachineState {
        state: Light::Red,
        context: (),
    };
    (light.reduce, light.reduce_into) = both_paths(&machine, &initial, Tick, runs, sample);
    eprintln!("[transitions] keel-core counter, {runs} runs per path");
    let machine = counter();
    let initial = MachineState {
        state: Counting::Counting,
        context: 0_u64,
    };
    (count.reduce, count.reduce_into) = both_paths(&machine, &initial, Inc, runs, sample);

    eprintln!("[transitions] XState 5 under Node, {runs} runs per case");
    // XState runs ~1,000x slower, so its samples are longer to hold enough events.
    let xstate = peers::xstate(root, runs, sizes.transition_sample_ms.max(100) * 2);
    let taken = |name: &str| match &xstate {
        Ok(run) => run.cases.get(name).cloned().unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    light.xstate_transition = taken("traffic_light.transition");
    light.xstate_send = taken("traffic_light.send");
    count.xstate_transition = taken("counter.transition");
    count.xstate_send = taken("counter.send");

    let section = report.section("1. Pure transitions: keel-core and XState 5");
    section.para(
        "The same machines on both sides: a traffic light (red → green → yellow on `Tick`, \
         each state scheduling its own timer on entry) and a counter (one state, `Inc` adds \
         one to the context through an update; in XState an `assign` action). keel: \
         `Machine::reduce` (next state and a fresh `Vec` of intents) and `reduce_into` \
         (state in place, intents into a reused buffer), with the action's cause and time \
         built in the loop. XState: the pure `transition(machine, snapshot, event)`, which \
         like `reduce` returns the next snapshot and the actions without running them, and \
         `actor.send(event)` on a started actor whose clock is a stub (the delayed ticks \
         are scheduled, never fired). Nanoseconds per event, median (min–max) of the runs. \
         XState's `transition()` builds a throwaway actor and actor system on every call \
         (`createInertActorScope` in xstate 5), which is why it is slower than `send()`; \
         both are shown so the ratio can be read against either.",
    );
    match &xstate {
        Ok(run) => section.para(&format!("Node {}, xstate {}.", run.node, run.xstate)),
        Err(reason) => section.para(&format!("XState: peer skipped: {reason}.")),
    }
    let s = |samples: &[f64]| Summary::of(samples);
    let mut rows = Vec::new();
    for (name, f) in [("traffic light", &light), ("counter", &count)] {
        rows.push(vec![
            name.to_owned(),
            spread(s(&f.reduce_into), nanos),
            spread(s(&f.reduce), nanos),
            spread(s(&f.xstate_send), nanos),
            spread(s(&f.xstate_transition), nanos),
            times(ratio(med(&f.xstate_transition), med(&f.reduce))),
            times(ratio(med(&f.xstate_transition), med(&f.reduce_into))),
            times(ratio(med(&f.xstate_send), med(&f.reduce_into))),
        ]);
    }
    section.table(
        &[
            "machine",
            "keel `reduce_into`",
            "keel `reduce`",
            "XState `actor.send()`",
            "XState `transition()`",
            "`transition()` ÷ `reduce`",
            "`transition()` ÷ `reduce_into`",
            "`send()` ÷ `reduce_into`",
        ],
        &rows,
    );
    section.image("transitions.svg", "ns per event, log scale");

    let bars = |name: &str, pick: fn(&Figures) -> &Vec<f64>| BarSeries {
        name: name.to_owned(),
        values: vec![s(pick(&light)), s(pick(&count))],
    };
    report.chart(
        "transitions.svg",
        BarChart {
            title: "Pure transitions: ns per event (log scale; lower is faster)".into(),
            y_label: "ns per event".into(),
            y_scale: Scale::Log,
            categories: vec!["traffic light".into(), "counter".into()],
            series: vec![
                bars("keel reduce_into", |f| &f.reduce_into),
                bars("keel reduce", |f| &f.reduce),
                bars("XState actor.send()", |f| &f.xstate_send),
                bars("XState transition()", |f| &f.xstate_transition),
            ],
        }
        .to_svg(),
    );

    // Judged on `reduce`, the path that, like `transition()`, returns a fresh value; the
    // stricter of keel's two.
    let light_ratio = ratio(med(&light.xstate_transition), med(&light.reduce));
    let count_ratio = ratio(med(&count.xstate_transition), med(&count.reduce));
    let verdict = match (light_ratio, count_ratio) {
        (Some(a), Some(b)) if a >= SPEEDUP_TARGET && b >= SPEEDUP_TARGET => Verdict::Met,
        (Some(_), Some(_)) => Verdict::Missed,
        _ => Verdict::NotMeasured,
    };
    let why = match &xstate {
        Err(reason) => format!("Not measured: peer skipped: {reason}."),
        Ok(_) if verdict == Verdict::Missed => format!(
            "keel `reduce` took {} per traffic-light event against XState's {} over the \
             runs (the ratio moves with it). What `reduce` adds over `reduce_into` is \
             the fresh intent `Vec`, an allocation per step; judged on `reduce_into`, the \
             path a driver runs, the ratios are {} (traffic light) and {} (counter). \
             Closing it for `reduce` needs that allocation gone (a small inline vector for \
             the common one- or two-intent step) or the declarative machine's per-step \
             work down (the README's callgrind notes: finding the state and transition, \
             cloning the timer name).",
            med(&light.reduce).map_or("n/a".into(), nanos),
            spread(Summary::of(&light.xstate_transition), nanos),
            times(ratio(
                med(&light.xstate_transition),
                med(&light.reduce_into)
            )),
            times(ratio(
                med(&count.xstate_transition),
                med(&count.reduce_into)
            )),
        ),
        Ok(_) => String::new(),
    };
    report.target(Target {
        wanted: "keel-core transitions ≥ 1,000× faster than XState 5 `transition()`".into(),
        measured: format!(
            "`reduce`: {} (traffic light), {} (counter); `reduce_into`: {}, {}",
            times(light_ratio),
            times(count_ratio),
            times(ratio(
                med(&light.xstate_transition),
                med(&light.reduce_into)
            )),
            times(ratio(
                med(&count.xstate_transition),
                med(&count.reduce_into)
            )),
        ),
        verdict,
        why,
    });
}

fn med(samples: &[f64]) -> Option<f64> {
    Summary::of(samples).map(|s| s.median)
}
