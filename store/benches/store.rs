//! Benchmarks the SQLite event store with `synchronous=FULL` (every acknowledged append
//! is on disk), in a fresh directory under the system's temp dir.
//!
//! Run with `cargo bench -p keel-store --bench store` (about a minute), or add
//! `-- --quick` (or set `KEEL_BENCH_QUICK=1`) for a run of a few seconds. One line per
//! figure:
//!
//! 1. durable appends per second from 64 concurrent writers, each appending one-event
//!    batches to its own stream in a loop: group commit folds them into shared fsyncs
//!    (target on the 2-core reference machine: at least 200,000 events per second),
//!    with the writer thread's CPU time per event and how busy it was (Linux only);
//! 2. the latency of one append with a single writer (p50, p99): one fsync each;
//! 3. ingest of one large stream in batches of 10,000 events;
//! 4. replay of that stream: `read_stream` page by page, folding a payload field
//!    (target: at least 2,000,000 events per second), then the same with the next page
//!    read while the current one is folded, and a replay of the whole store with
//!    `read_all`.
//!
//! `KEEL_BENCH_ONLY_CONCURRENT=1` stops after the first figure, for profiling the
//! writer alone (e.g. under `valgrind --tool=callgrind --toggle-collect='*Writer::run*'`).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::{Envelope, EventId, EventType, ExpectedVersion, Payload, StreamId, Timestamp};
use keel_store::sqlite::{SqliteConfig, SqliteStore};
use keel_store::{APPEND_EVENTS_MAX, EventStore, READ_LIMIT_MAX, RecordedEvent};
use serde_json::json;

const WRITERS: u64 = 64;

/// Sizes for a full or a quick run.
struct Sizes {
    throughput_for: Duration,
    latency_appends: usize,
    replay_events: u64,
}

const FULL: Sizes = Sizes {
    throughput_for: Duration::from_secs(8),
    latency_appends: 2_000,
    replay_events: 1_000_000,
};

const QUICK: Sizes = Sizes {
    throughput_for: Duration::from_secs(2),
    latency_appends: 300,
    replay_events: 100_000,
};

/// A directory of its own under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("keel-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("the temp dir is writable");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small but realistic event: subject, sequence and a two-field JSON payload.
fn event(id: u128, sequence: u64) -> Envelope {
    let mut envelope = Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static("order.item.added"),
        "bench",
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000),
    )
    .subject("order-1")
    .sequence(sequence)
    .build()
    .expect("a valid envelope");
    envelope.payload = Payload::Json(json!({"n": sequence, "sku": "abc-123"}));
    envelope
}

fn open(dir: &TempDir, name: &str) -> Arc<SqliteStore> {
    let store = SqliteStore::open(dir.0.join(name), SqliteConfig::default())
        .expect("the store opens in a fresh directory");
    Arc::new(store)
}

/// Events per second appended by `WRITERS` tasks in `duration`, and the writer
/// thread's CPU time per event.
async fn concurrent_appends(
    store: Arc<SqliteStore>,
    duration: Duration,
) -> (f64, Option<Duration>) {
    let started = Instant::now();
    // The thread names itself once it runs, so it may not be found yet: it has used next
    // to nothing then.
    let writer_cpu_before = writer_cpu().unwrap_or_default();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let stream = StreamId::from(format!("writer-{writer}"));
                let mut appended = 0_u64;
                while Instant::now() < deadline {
                    let id = u128::from(writer) << 64 | u128::from(appended + 1);
                    let batch = [event(id, appended + 1)];
                    store
                        .append(&stream, ExpectedVersion::Exact(appended), &batch)
                        .await
                        .expect("a writer owns its stream");
                    appended += 1;
                }
                appended
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("the writer finishes");
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    // Read while `store` still holds the writer thread.
    let cpu = writer_cpu().map(|after| {
        after.saturating_sub(writer_cpu_before) / u32::try_from(total).unwrap_or(u32::MAX).max(1)
    });
    (rate, cpu)
}

/// The CPU time of the store's writer thread so far (user and system), from Linux's
/// `/proc/self/task/*/schedstat`; `None` elsewhere. Throughput alone cannot tell a
/// writer that burns CPU from one that waits for fsync on a shared disk.
fn writer_cpu() -> Option<Duration> {
    // Threads come and go (tokio's blocking pool) while this reads: skip what vanished.
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() == "keel-sqlite-wri" {
            let schedstat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            let nanos = schedstat.split_whitespace().next()?.parse().ok()?;
            return Some(Duration::from_nanos(nanos));
        }
    }
    None
}

/// The latency of each of `count` appends from one writer, sorted.
async fn append_latencies(store: Arc<SqliteStore>, count: usize) -> Vec<Duration> {
    let stream = StreamId::from("latency");
    let mut latencies = Vec::with_capacity(count);
    for index in 0..count as u64 {
        let batch = [event(u128::from(index) + 1, index + 1)];
        let started = Instant::now();
        store
            .append(&stream, ExpectedVersion::Exact(index), &batch)
            .await
            .expect("the only writer");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

/// Appends `count` events to `stream` in batches of `APPEND_EVENTS_MAX`; events/s.
async fn ingest(store: &SqliteStore, stream: &StreamId, count: u64) -> f64 {
    let started = Instant::now();
    let mut version = 0;
    while version < count {
        let size = (count - version).min(APPEND_EVENTS_MAX as u64);
        let batch: Vec<_> = (version + 1..=version + size)
            .map(|sequence| event(1 << 100 | u128::from(sequence), sequence))
            .collect();
        store
            .append(stream, ExpectedVersion::Exact(version), &batch)
            .await
            .expect("the only writer");
        version += size;
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// Folds one event: sums the payload's `n`, as a projection would.
fn fold(total: &mut u64, event: &RecordedEvent) {
    if let Payload::Json(payload) = &event.envelope.payload {
        *total += payload["n"].as_u64().unwrap_or(0);
    }
}

/// Replays `stream` page by page; events/s.
async fn replay(store: &SqliteStore, stream: &StreamId, count: u64) -> f64 {
    let started = Instant::now();
    let (mut next, mut total, mut seen) = (1, 0_u64, 0_u64);
    loop {
        let page = store
            .read_stream(stream, next, READ_LIMIT_MAX)
            .await
            .expect("the stream reads");
        let Some(last) = page.last() else { break };
        next = last.version + 1;
        seen += page.len() as u64;
        page.iter().for_each(|event| fold(&mut total, event));
    }
    assert_eq!(seen, count, "every event replayed");
    black_box(total);
    count as f64 / started.elapsed().as_secs_f64()
}

/// Replays `stream` with the next page's read in flight while a page is folded.
async fn replay_prefetching(store: Arc<SqliteStore>, stream: &StreamId, count: u64) -> f64 {
    let started = Instant::now();
    let page_size = READ_LIMIT_MAX as u64;
    let read = |from: u64| {
        let (store, stream) = (Arc::clone(&store), stream.clone());
        tokio::spawn(async move { store.read_stream(&stream, from, READ_LIMIT_MAX).await })
    };
    let (mut total, mut seen, mut from) = (0_u64, 0_u64, 1);
    let mut pending = read(from);
    loop {
        let page = pending
            .await
            .expect("the read task finishes")
            .expect("the stream reads");
        from += page_size;
        pending = read(from);
        if page.is_empty() {
            break;
        }
        seen += page.len() as u64;
        page.iter().for_each(|event| fold(&mut total, event));
    }
    assert_eq!(seen, count, "every event replayed");
    black_box(total);
    count as f64 / started.elapsed().as_secs_f64()
}

/// Replays the whole store by position; events/s.
async fn replay_all(store: &SqliteStore) -> f64 {
    let started = Instant::now();
    let (mut next, mut total, mut seen) = (1, 0_u64, 0_u64);
    loop {
        let page = store
            .read_all(next, READ_LIMIT_MAX)
            .await
            .expect("the store reads");
        let Some(last) = page.last() else { break };
        next = last.position + 1;
        seen += page.len() as u64;
        page.iter().for_each(|event| fold(&mut total, event));
    }
    black_box(total);
    seen as f64 / started.elapsed().as_secs_f64()
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick")
        || std::env::var_os("KEEL_BENCH_QUICK").is_some();
    let sizes = if quick { QUICK } else { FULL };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let dir = TempDir::new();
        println!("sqlite store in {}, synchronous=FULL", dir.0.display());

        let (rate, cpu) =
            concurrent_appends(open(&dir, "concurrent.keel"), sizes.throughput_for).await;
        println!("concurrent appends, {WRITERS} writers x 1 event: {rate:>12.0} events/s");
        if let Some(cpu) = cpu {
            println!(
                "  writer thread CPU per event:             {:>9.1} us ({:.0}% busy)",
                micros(cpu),
                micros(cpu) * rate / 1e4
            );
        }
        if std::env::var_os("KEEL_BENCH_ONLY_CONCURRENT").is_some() {
            return;
        }

        let latencies = append_latencies(open(&dir, "latency.keel"), sizes.latency_appends).await;
        let at = |quantile: f64| latencies[(latencies.len() as f64 * quantile) as usize];
        println!(
            "single append latency, 1 writer:         p50 {:>7.0} us, p99 {:>7.0} us",
            micros(at(0.50)),
            micros(at(0.99))
        );

        let store = open(&dir, "replay.keel");
        let stream = StreamId::from("replay");
        let count = sizes.replay_events;
        let rate = ingest(&store, &stream, count).await;
        println!("ingest, batches of {APPEND_EVENTS_MAX}:            {rate:>12.0} events/s");
        let rate = replay(&store, &stream, count).await;
        println!("replay read_stream, {count} events:     {rate:>12.0} events/s");
        let rate = replay_prefetching(Arc::clone(&store), &stream, count).await;
        println!("replay read_stream, next page prefetched: {rate:>12.0} events/s");
        let rate = replay_all(&store).await;
        println!("replay read_all, {count} events:        {rate:>12.0} events/s");
    });
}
