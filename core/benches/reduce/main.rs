//! `cargo bench -p keel-core --bench reduce`: nanoseconds per action through both reduce
//! paths, for a counter, a traffic light (hand-written and declarative) and an order
//! aggregate.
//!
//! A small runner instead of criterion keeps the build light: each case runs a warm-up,
//! then 15 samples of a fixed number of actions, and reports the median and the best
//! sample in ns per action. Targets on the 2-core reference machine: in-place path at or
//! under 15 ns, `Vec` path at or under 60 ns.

use std::hint::black_box;
use std::time::{Duration, Instant};

use keel_core::aggregate::{Aggregate, AggregateReducer, AggregateState};
use keel_core::{
    Cause, Input, Intent, IntentKind, MachineState, Reducer, StreamId, TimerId, Timestamp,
};

mod fixtures;

use fixtures::{Order, OrderCommand};

const SAMPLES: usize = 15;
const SAMPLE_TARGET: Duration = Duration::from_millis(40);

/// Times `run(n)` (which performs `n` actions) and returns (median, best) ns per action.
fn measure(mut run: impl FnMut(u64)) -> (f64, f64) {
    // Calibrate: grow n until one sample takes about SAMPLE_TARGET.
    let mut n = 1_000_u64;
    loop {
        let start = Instant::now();
        run(n);
        let elapsed = start.elapsed();
        if elapsed >= SAMPLE_TARGET / 4 || n >= 1 << 30 {
            let per_action = elapsed.as_secs_f64() / n as f64;
            n = ((SAMPLE_TARGET.as_secs_f64() / per_action) as u64).max(1_000);
            break;
        }
        n *= 4;
    }
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            run(n);
            start.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (samples[SAMPLES / 2], samples[0])
}

/// Runs both paths of `reducer` over actions made by `action(i)`.
fn bench_both<R>(name: &str, reducer: &R, initial: R::State, action: impl Fn(u64) -> R::Action)
where
    R: Reducer,
    R::State: Clone,
{
    let vec_path = measure(|n| {
        let mut state = initial.clone();
        for i in 0..n {
            let (next, intents) = reducer.reduce(state, action(i));
            black_box(&intents);
            state = next;
        }
        black_box(&state);
    });
    let in_place = measure(|n| {
        let mut state = initial.clone();
        let mut buffer: Vec<Intent> = Vec::with_capacity(16);
        for i in 0..n {
            buffer.clear();
            reducer.reduce_into(&mut state, action(i), &mut buffer);
            black_box(&buffer);
        }
        black_box(&state);
    });
    print_row(name, vec_path, in_place);
}

fn input<T>(i: u64, body: T) -> Input<T> {
    Input::new(
        Cause::root(u128::from(i)),
        Timestamp::from_unix_millis(i as i64),
        body,
    )
}

/// A counter: the smallest possible reducer, no intents.
struct Counter;

impl Reducer for Counter {
    type State = u64;
    type Action = Input<u64>;

    fn reduce_into(&self, state: &mut u64, action: Input<u64>, _intents: &mut Vec<Intent>) {
        *state = state.wrapping_add(action.body);
    }
}

/// A traffic light written by hand as a match: one timer intent per transition.
struct HandLight;

#[derive(Clone, Copy)]
enum Light {
    Red,
    Green,
    Yellow,
}

impl Reducer for HandLight {
    type State = Light;
    type Action = Input<()>;

    fn reduce_into(&self, state: &mut Light, action: Input<()>, intents: &mut Vec<Intent>) {
        let (next, after_ms) = match state {
            Light::Red => (Light::Green, 30_000),
            Light::Green => (Light::Yellow, 3_000),
            Light::Yellow => (Light::Red, 20_000),
        };
        *state = next;
        action
            .cause
            .emitter(intents)
            .emit(IntentKind::ScheduleTimer {
                timer: TimerId::from_static("tick"),
                due: action.now.plus_millis(after_ms),
            });
    }
}

/// The order aggregate's decide + apply, both ways, and then the whole adapter, which
/// also builds the envelopes of a `Persist` intent (JSON payloads: far from free).
fn bench_order() {
    let vec_path = measure(|n| {
        let mut order = Order::default();
        for i in 0..n {
            if let Ok(events) = order.decide(&OrderCommand::nth(i)) {
                events.iter().for_each(|e| order.apply(e));
            }
        }
        black_box(&order);
    });
    let in_place = measure(|n| {
        let mut order = Order::default();
        let mut events = Vec::with_capacity(4);
        for i in 0..n {
            events.clear();
            if order
                .decide_into(&OrderCommand::nth(i), &mut events)
                .is_ok()
            {
                events.iter().for_each(|e| order.apply(e));
            }
        }
        black_box(&order);
    });
    print_row("order aggregate (decide + apply)", vec_path, in_place);
    let adapter = AggregateReducer::<Order>::new("orders").expect("a valid source");
    let state = AggregateState::new(StreamId::from_static("order-1"));
    bench_both("order aggregate -> Persist intent", &adapter, state, |i| {
        input(i, OrderCommand::nth(i))
    });
}

fn print_row(name: &str, vec_path: (f64, f64), in_place: (f64, f64)) {
    println!(
        "{name:<34} {:>10.1} {:>10.1} {:>12.1} {:>10.1}",
        vec_path.0, vec_path.1, in_place.0, in_place.1
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful either.
    println!("keel-core reduce paths, ns per action (median and best of {SAMPLES} samples)");
    println!(
        "{:<34} {:>10} {:>10} {:>12} {:>10}",
        "reducer", "vec med", "vec best", "in-place med", "best"
    );
    bench_both("counter", &Counter, 0, |i| input(i, i));
    bench_both(
        "traffic light (hand-written)",
        &HandLight,
        Light::Red,
        |i| input(i, ()),
    );
    let machine = fixtures::traffic_light();
    let initial = MachineState {
        state: fixtures::Light::Red,
        context: (),
    };
    bench_both("traffic light (declarative)", &machine, initial, |i| {
        input(i, fixtures::Tick)
    });
    bench_order();
}
