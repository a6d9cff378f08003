//! `cargo bench -p keel-orchestrator --bench saga`: sagas end to end.
//!
//! A 3-step saga whose steps are in-process services answering at once:
//!
//! 1. sagas per second end to end in memory (target 200,000/s), and their latency;
//! 2. the same on SQLite with `synchronous=FULL` (target 20,000/s);
//! 3. memory per idle saga: sagas waiting on a long retry timer (target under 1 KiB),
//!    read as resident-memory growth over a store that keeps nothing, so it counts
//!    everything the orchestrator keeps (allocator slack included) and no store cache;
//! 4. the time to resume 100,000 unfinished sagas after a restart, on SQLite.
//!
//! `KEEL_BENCH_SAGAS` scales the counts (default 100,000 in memory), `KEEL_BENCH_ONLY`
//! picks parts (`memory,sqlite,idle`), `KEEL_BENCH_SHARDS` sets the engines (2 and 4
//! measured alike on the 2-core machine: medians of 9 SQLite runs 17,354 and 17,728/s).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keel_effects::{Call, Failure, HandlerResult};
use keel_orchestrator::{
    Orchestrator, RetryPolicy, SagaDefinition, SagaId, SagaStatus, Step, StepAction,
};
use keel_store::EventStore;
use keel_store::MemoryStore;
use keel_store::sqlite::{SqliteConfig, SqliteStore};
use serde_json::json;

fn saga() -> SagaDefinition {
    let step = |name: &'static str, effect: &'static str, undo: &'static str| {
        Step::new(name, move |ctx| {
            StepAction::custom(effect, json!({ "order": ctx.input()["order"] }))
        })
        .compensate(move |_| StepAction::custom(undo, json!(null)))
        .timeout_ms(5_000)
    };
    SagaDefinition::builder("bench.order")
        .step(step("charge", "bench.charge", "bench.refund"))
        .step(step("reserve", "bench.reserve", "bench.release"))
        .step(step("ship", "bench.ship", "bench.cancel"))
        .build()
        .expect("a valid saga")
}

async fn ok(_call: Call) -> HandlerResult {
    Ok(json!({ "ok": true }))
}

/// The default configuration, with `KEEL_BENCH_SHARDS` engines if set.
fn config() -> keel_orchestrator::OrchestratorConfig {
    let mut config = keel_orchestrator::OrchestratorConfig::default();
    if let Some(shards) = std::env::var("KEEL_BENCH_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.shards = shards;
    }
    config
}

async fn orchestrator(store: Arc<dyn EventStore>) -> Orchestrator {
    let (orchestrator, _) = Orchestrator::builder(store)
        .saga(saga())
        .handler("bench.charge", ok)
        .handler("bench.reserve", ok)
        .handler("bench.ship", ok)
        .handler("bench.refund", ok)
        .handler("bench.release", ok)
        .handler("bench.cancel", ok)
        .config(config())
        .start()
        .await
        .expect("the orchestrator starts");
    orchestrator
}

/// Runs `count` sagas from `clients` concurrent clients (each starts one and waits for
/// it to end); returns sagas per second and the latency percentiles in microseconds.
async fn end_to_end(
    orchestrator: Arc<Orchestrator>,
    prefix: &str,
    count: u64,
    clients: u64,
) -> (f64, u64, u64) {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let orchestrator = Arc::clone(&orchestrator);
        let next = Arc::clone(&next);
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return latencies;
                }
                let id = SagaId::new(format!("{prefix}-{n}")).expect("a valid id");
                let begun = Instant::now();
                orchestrator
                    .start_saga("bench.order", id.clone(), json!({ "order": n }))
                    .await
                    .expect("started");
                let status = orchestrator.wait(&id).await.expect("ended");
                assert_eq!(status, SagaStatus::Completed);
                latencies.push(begun.elapsed().as_micros() as u64);
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a client"));
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (rate, at(0.5), at(0.99))
}

/// A store that acknowledges every append and keeps nothing: measuring memory with it
/// counts what the orchestrator keeps, not what a store caches.
struct NullStore {
    head: tokio::sync::watch::Sender<u64>,
}

impl NullStore {
    fn new() -> Self {
        Self {
            head: tokio::sync::watch::Sender::new(0),
        }
    }
}

fn ready<T: Send + 'static>(value: T) -> keel_store::StoreFuture<'static, T> {
    Box::pin(std::future::ready(Ok(value)))
}

impl EventStore for NullStore {
    fn append_with_intents<'a>(
        &'a self,
        _stream: &'a keel_core::StreamId,
        _expected: keel_core::ExpectedVersion,
        events: &'a [keel_core::Envelope],
        _intents: &'a [keel_core::Intent],
    ) -> keel_store::StoreFuture<'a, keel_store::Appended> {
        let n = events.len() as u64;
        ready(keel_store::Appended {
            first_version: 1,
            last_version: n,
            first_position: 1,
            deduplicated: false,
        })
    }
    fn read_stream<'a>(
        &'a self,
        _: &'a keel_core::StreamId,
        _: u64,
        _: usize,
    ) -> keel_store::StoreFuture<'a, Vec<keel_store::RecordedEvent>> {
        ready(Vec::new())
    }
    fn read_all(
        &self,
        _: u64,
        _: usize,
    ) -> keel_store::StoreFuture<'_, Vec<keel_store::RecordedEvent>> {
        ready(Vec::new())
    }
    fn stream_version<'a>(
        &'a self,
        _: &'a keel_core::StreamId,
    ) -> keel_store::StoreFuture<'a, u64> {
        ready(0)
    }
    fn head(&self) -> keel_store::StoreFuture<'_, u64> {
        ready(0)
    }
    fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head.subscribe()
    }
    fn pending_intents(&self, _: usize) -> keel_store::StoreFuture<'_, Vec<keel_core::Intent>> {
        ready(Vec::new())
    }
    fn complete_intents<'a>(
        &'a self,
        _: &'a [keel_core::IntentId],
    ) -> keel_store::StoreFuture<'a, ()> {
        ready(())
    }
    fn save_snapshot<'a>(
        &'a self,
        _: &'a keel_store::StoredSnapshot,
    ) -> keel_store::StoreFuture<'a, ()> {
        ready(())
    }
    fn load_snapshot<'a>(
        &'a self,
        _: &'a keel_core::StreamId,
    ) -> keel_store::StoreFuture<'a, Option<keel_store::StoredSnapshot>> {
        ready(None)
    }
    fn set_metadata<'a>(
        &'a self,
        _: &'a keel_core::StreamId,
        _: &'a serde_json::Value,
    ) -> keel_store::StoreFuture<'a, ()> {
        ready(())
    }
    fn metadata<'a>(
        &'a self,
        _: &'a keel_core::StreamId,
    ) -> keel_store::StoreFuture<'a, Option<serde_json::Value>> {
        ready(None)
    }
    fn instances<'a>(
        &'a self,
        _: &'a keel_store::InstanceQuery,
    ) -> keel_store::StoreFuture<'a, Vec<keel_store::InstanceEntry>> {
        ready(Vec::new())
    }
    fn read_unfinished<'a>(
        &'a self,
        _: Option<&'a str>,
        _: Option<(&'a keel_core::StreamId, u64)>,
        _: usize,
    ) -> keel_store::StoreFuture<'a, Vec<keel_store::RecordedEvent>> {
        ready(Vec::new())
    }
    fn unindexed_head(&self) -> keel_store::StoreFuture<'_, u64> {
        ready(0)
    }
    fn purge_finished<'a>(
        &'a self,
        _: Option<&'a str>,
        _: keel_core::Timestamp,
        _: usize,
    ) -> keel_store::StoreFuture<'a, u64> {
        ready(0)
    }
    fn trim<'a>(
        &'a self,
        _: &'a keel_core::StreamId,
        _: keel_store::Trim,
    ) -> keel_store::StoreFuture<'a, u64> {
        ready(0)
    }
    fn load_projection<'a>(
        &'a self,
        _: &'a str,
    ) -> keel_store::StoreFuture<'a, Option<keel_store::ProjectionState>> {
        ready(None)
    }
    fn save_projection<'a>(
        &'a self,
        _: &'a str,
        _: u64,
        _: &'a keel_store::ProjectionState,
    ) -> keel_store::StoreFuture<'a, ()> {
        ready(())
    }
    /// Never refused: the benchmark runs one orchestrator on it, and it keeps nothing
    /// a second one could spoil.
    fn lock_writer<'a>(
        &'a self,
        holder: &'a keel_store::LockHolder,
    ) -> keel_store::StoreFuture<'a, keel_store::WriterLock> {
        let lock = keel_store::WriterLock::new(holder.clone(), "null store", ());
        ready(lock)
    }
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// A saga whose first step fails once and then waits an hour to retry: idle.
fn idle_saga() -> SagaDefinition {
    SagaDefinition::builder("bench.idle")
        .step(
            Step::new("wait", |_| StepAction::custom("bench.fail", json!(null))).retry(
                RetryPolicy::exponential()
                    .attempts(2)
                    .first_delay(Duration::from_millis(3_600_000))
                    .max_delay(Duration::from_millis(3_600_000)),
            ),
        )
        .build()
        .expect("a valid saga")
}

async fn fail(_call: Call) -> HandlerResult {
    Err(Failure::unavailable("not now"))
}

async fn idle_orchestrator(store: Arc<dyn EventStore>) -> Arc<Orchestrator> {
    let (orchestrator, _) = Orchestrator::builder(store)
        .saga(idle_saga())
        .handler("bench.fail", fail)
        .start()
        .await
        .expect("the orchestrator starts");
    Arc::new(orchestrator)
}

/// Starts idle sagas `range` (ids `idle-N`) and waits until every one holds.
async fn start_idle(orchestrator: &Arc<Orchestrator>, range: std::ops::Range<u64>) -> Duration {
    let begun = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..64 {
        let orchestrator = Arc::clone(orchestrator);
        let range = range.clone();
        tasks.push(tokio::spawn(async move {
            for n in (range.start + client..range.end).step_by(64) {
                let id = SagaId::new(format!("idle-{n}")).expect("a valid id");
                orchestrator
                    .start_saga("bench.idle", id.clone(), json!(null))
                    .await
                    .expect("started");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a client");
    }
    // Let every first attempt fail and park on its retry timer.
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let held = orchestrator.live_count().await.expect("a count");
        if held as u64 >= range.end {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    begun.elapsed()
}

fn main() {
    let scale: u64 = std::env::var("KEEL_BENCH_SAGAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let only = std::env::var("KEEL_BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    runtime.block_on(async {
        // 1. Memory.
        for sample in 0..3 {
            if !run("memory") {
                break;
            }
            let orchestrator = Arc::new(orchestrator(Arc::new(MemoryStore::new())).await);
            let (rate, p50, p99) = end_to_end(Arc::clone(&orchestrator), &format!("m{sample}"), scale, 1_000).await;
            println!("memory: {scale} sagas, 1000 clients: {rate:>9.0} sagas/s, latency p50 {p50} us, p99 {p99} us");
            orchestrator.shutdown().await;
        }
        // 2. SQLite, synchronous=FULL.
        let dir = std::env::temp_dir().join(format!("keel-saga-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let durable = (scale / 5).max(1_000);
        for sample in 0..3 {
            if !run("sqlite") {
                break;
            }
            let path = dir.join(format!("sagas-{sample}.db"));
            let store = Arc::new(SqliteStore::open(&path, SqliteConfig::default()).expect("sqlite opens"));
            let orchestrator = Arc::new(orchestrator(store).await);
            let (rate, p50, p99) = end_to_end(Arc::clone(&orchestrator), "s", durable, 1_000).await;
            println!("sqlite (synchronous=FULL): {durable} sagas, 1000 clients: {rate:>9.0} sagas/s, latency p50 {p50} us, p99 {p99} us");
            orchestrator.shutdown().await;
        }
        if !run("idle") {
            return;
        }
        // 3. Memory per idle saga, over a store that keeps nothing, so the growth is what
        // the orchestrator itself keeps (state, timers, indexes), not a store's cache (an
        // SQLite store's page cache grows to 64 MiB as its file does). Measured over the
        // second half, so one-off growth (buffers, allocator arenas) settles in the first.
        let idle = idle_orchestrator(Arc::new(NullStore::new())).await;
        start_idle(&idle, 0..scale / 2).await;
        let before = resident_bytes();
        start_idle(&idle, scale / 2..scale).await;
        let after = resident_bytes();
        println!(
            "memory per idle saga (resident growth over the second {} sagas, store keeping nothing): {} bytes",
            scale - scale / 2,
            after.saturating_sub(before) / (scale - scale / 2)
        );
        idle.shutdown().await;
        // 4. Resume after a restart.
        let path = dir.join("resume.db");
        let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&path, SqliteConfig::default()).expect("sqlite opens"));
        let idle = idle_orchestrator(Arc::clone(&store)).await;
        let took = start_idle(&idle, 0..scale).await;
        println!("started {scale} idle sagas on sqlite in {took:?}");
        idle.shutdown().await;
        drop(idle);
        drop(store);
        let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&path, SqliteConfig::default()).expect("sqlite reopens"));
        let begun = Instant::now();
        let (resumed, recovered) = Orchestrator::builder(store)
            .saga(idle_saga())
            .handler("bench.fail", fail)
            .start()
            .await
            .expect("the orchestrator restarts");
        println!(
            "resume after restart: {} sagas from {} records in {:?}",
            recovered.resumed,
            recovered.records,
            begun.elapsed()
        );
        resumed.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}
