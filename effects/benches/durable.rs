//! `cargo bench -p keel-effects --bench durable`: a user's reducer run durably by the
//! shell on SQLite (`synchronous=FULL`) and in memory, as instances grow.
//!
//! Each instance makes `STEPS` calls, one after the other: its first event and each
//! answer emit the next custom intent, to a handler that answers at once. Every action
//! (the first event, each answer) is one record, committed before what it caused is
//! performed. Printed: actions per second, and the p50/p99 time from `start` to its
//! record being committed. Figures vary with the machine's load: compare runs made one
//! after the other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::driver::{Durable, Status};
use keel_core::{EventType, Input, Intent, IntentKind, Outcome, Reducer};
use keel_effects::durable::DurableRuntime;
use keel_effects::{Call, HandlerResult};
use keel_store::sqlite::{SqliteConfig, SqliteStore};
use keel_store::{EventStore, MemoryStore};
use serde::{Deserialize, Serialize};

const STEPS: u64 = 10;

struct Counter;

#[derive(Clone, Serialize, Deserialize)]
enum Event {
    Add,
    Done(Outcome),
}

impl From<Outcome> for Event {
    fn from(outcome: Outcome) -> Self {
        Self::Done(outcome)
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct Count {
    added: u64,
    answered: u64,
}

impl Reducer for Counter {
    type State = Count;
    type Action = Input<Event>;

    fn reduce_into(&self, count: &mut Count, action: Input<Event>, intents: &mut Vec<Intent>) {
        if let Event::Done(_) = action.body {
            count.answered += 1;
        }
        if count.added < STEPS {
            count.added += 1;
            action.cause.emitter(intents).emit(IntentKind::Custom {
                name: EventType::from_static("bench.noop"),
                payload: serde_json::Value::Null,
            });
        }
    }
}

impl Durable for Counter {
    type Event = Event;

    fn kind(&self) -> &str {
        "counter"
    }

    fn status(&self, count: &Count) -> Status {
        match count.answered >= STEPS {
            true => Status::Finished,
            false => Status::Running,
        }
    }
}

async fn noop(_call: Call) -> HandlerResult {
    Ok(serde_json::Value::Null)
}

/// Runs `instances` instances to their end; returns records/s and the commit latencies.
async fn sample(store: Arc<dyn EventStore>, instances: u64, round: u64) -> (f64, Vec<Duration>) {
    let (runtime, _) = DurableRuntime::builder(Counter, store)
        .custom(EventType::from_static("bench.noop"), Arc::new(noop))
        .start()
        .await
        .expect("the shell starts");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..instances {
        let runtime = runtime.clone();
        tasks.spawn(async move {
            let id = format!("c-{round}-{n}").into();
            let sent = Instant::now();
            runtime
                .start(&id, Count::default(), Event::Add)
                .await
                .expect("start");
            let latency = sent.elapsed();
            runtime.wait(&id).await.expect("wait");
            latency
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.push(done.expect("a task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let records = runtime.stats().records;
    runtime.shutdown().await;
    (records as f64 / elapsed, latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dir = std::env::temp_dir().join(format!("keel-bench-durable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    println!("durable user reducer: {STEPS} calls per instance, one record per action");
    for instances in [100, 1_000, 10_000] {
        for backend in ["memory", "sqlite"] {
            let mut rates = Vec::new();
            let mut latencies = Vec::new();
            for round in 0..3 {
                let store: Arc<dyn EventStore> = match backend {
                    "memory" => Arc::new(MemoryStore::new()),
                    _ => {
                        let path = dir.join(format!("{instances}-{round}.db"));
                        Arc::new(SqliteStore::open(&path, SqliteConfig::default()).expect("db"))
                    }
                };
                let (rate, mut taken) = runtime.block_on(sample(store, instances, round));
                rates.push(rate);
                latencies.append(&mut taken);
            }
            rates.sort_by(f64::total_cmp);
            latencies.sort_unstable();
            println!(
                "{backend:>6} {instances:>6} instances: {:>8.0} actions/s (min {:.0}, max {:.0}); commit p50 {:?} p99 {:?}",
                rates[1],
                rates[0],
                rates[2],
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
