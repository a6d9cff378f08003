//! `cargo bench -p keel-effects --bench runtime`: actions per second through the
//! runtime across instances on a multi-threaded tokio runtime.
//!
//! Two workloads: actions that emit nothing (the cost of mailbox + reduce), and actions
//! that each emit one custom intent to a no-op handler, whose outcome comes back as a
//! second action (the cost of a full effect round trip, dedup record included). Target
//! on the 2-core reference machine: at least 1,000,000 actions per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::{
    CausationId, Cause, CorrelationId, EventType, Input, Intent, IntentKind, Outcome, Reducer,
    Timestamp,
};
use keel_effects::runtime::{Runtime, RuntimeConfig};
use keel_effects::{Call, HandlerResult};

const INSTANCES: usize = 64;
const SAMPLES: usize = 5;

struct Counter {
    emit: bool,
}

enum Msg {
    Add,
    Outcome,
}

impl From<Outcome> for Msg {
    fn from(_: Outcome) -> Self {
        Msg::Outcome
    }
}

impl Reducer for Counter {
    type State = u64;
    type Action = Input<Msg>;

    fn reduce_into(&self, count: &mut u64, action: Input<Msg>, intents: &mut Vec<Intent>) {
        *count += 1;
        if self.emit && matches!(action.body, Msg::Add) {
            action.cause.emitter(intents).emit(IntentKind::Custom {
                name: EventType::from_static("bench.noop"),
                payload: serde_json::Value::Null,
            });
        }
    }
}

async fn noop(_call: Call) -> HandlerResult {
    Ok(serde_json::Value::Null)
}

/// Sends `per_instance` actions to each of `INSTANCES` instances; returns actions/s.
async fn sample(emit: bool, per_instance: u64) -> f64 {
    let config = RuntimeConfig {
        outcome_record_capacity: 1 << 20,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::builder(Counter { emit })
        .custom(EventType::from_static("bench.noop"), Arc::new(noop))
        .config(config)
        .build()
        .expect("a valid runtime");
    for i in 0..INSTANCES {
        runtime
            .spawn(i.to_string().into(), 0)
            .expect("a fresh instance");
    }
    let start = Instant::now();
    let mut senders = Vec::new();
    for i in 0..INSTANCES {
        let runtime = runtime.clone();
        senders.push(tokio::spawn(async move {
            let id = i.to_string().into();
            for n in 0..per_instance {
                let cause = Cause::new(
                    CorrelationId::from_u128(i as u128),
                    CausationId::from_u128((i as u128) << 64 | u128::from(n)),
                );
                let action = Input::new(cause, Timestamp::UNIX_EPOCH, Msg::Add);
                runtime.send(&id, action).await.expect("the instance runs");
            }
        }));
    }
    for sender in senders {
        sender.await.expect("the sender finishes");
    }
    let report = runtime.shutdown(Duration::from_secs(60)).await;
    let elapsed = start.elapsed();
    let actions: u64 = report.instances.iter().map(|(_, count)| *count).sum();
    let expected = INSTANCES as u64 * per_instance * if emit { 2 } else { 1 };
    assert_eq!(actions, expected, "every action and outcome was reduced");
    actions as f64 / elapsed.as_secs_f64()
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!(
        "keel-effects runtime, {INSTANCES} instances, 2 worker threads (median of {SAMPLES} samples)"
    );
    for (name, emit, per_instance) in [
        ("actions, no intents", false, 20_000),
        ("actions + no-op effect round trips", true, 5_000),
    ] {
        let mut rates: Vec<f64> = (0..SAMPLES)
            .map(|_| tokio.block_on(sample(emit, per_instance)))
            .collect();
        rates.sort_by(f64::total_cmp);
        println!(
            "{name:<38} {:>12.0} actions/s (min {:.0}, max {:.0})",
            rates[SAMPLES / 2],
            rates[0],
            rates[SAMPLES - 1]
        );
    }
}
