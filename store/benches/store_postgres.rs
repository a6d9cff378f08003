//! Benchmarks the PostgreSQL event store against a live server: append throughput with
//! 64 concurrent writers, single-append latency (p50, p99), bulk load, and replay of one
//! long stream by `read_stream` paging.
//!
//! Run with
//! `KEEL_PG_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p keel-store --bench store_postgres`.
//! Without `KEEL_PG_URL` it prints that it skipped. It works in a schema of its own,
//! dropped at the end, on a 2-worker tokio runtime; one figure per line, about a minute.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keel_core::{Envelope, EventId, EventType, ExpectedVersion, Payload, StreamId, Timestamp};
use keel_store::postgres::{PostgresConfig, PostgresStore};
use keel_store::{APPEND_EVENTS_MAX, EventStore, READ_LIMIT_MAX};

const WRITERS: u128 = 64;
const THROUGHPUT_DURATION: Duration = Duration::from_secs(10);
const LATENCY_APPENDS: usize = 2_000;
const LATENCY_DURATION: Duration = Duration::from_secs(10);
const REPLAY_EVENTS: u64 = 1_000_000;
/// The bulk load stops here even if short of `REPLAY_EVENTS` (the count used is printed).
const LOAD_DURATION: Duration = Duration::from_secs(60);

/// Ids of different phases never collide: the phase is in the high bits.
fn event(phase: u128, index: u128) -> Envelope {
    Envelope::builder(
        EventId::from_u128(phase << 96 | index),
        EventType::from_static("order.placed"),
        "bench",
        Timestamp::UNIX_EPOCH,
    )
    .payload(Payload::Json(
        serde_json::json!({ "order": index as u64, "total": 42.5 }),
    ))
    .build()
    .expect("a valid envelope")
}

fn main() {
    let Ok(url) = std::env::var("KEEL_PG_URL") else {
        println!("skipped: KEEL_PG_URL not set");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(&url));
}

async fn run(url: &str) {
    let config = PostgresConfig {
        schema: format!("keel_bench_{}", uuid::Uuid::new_v4().simple()),
        ..PostgresConfig::default()
    };
    let store = PostgresStore::connect(url, config)
        .await
        .expect("connecting to KEEL_PG_URL");
    concurrent_appends(&store).await;
    append_latency(&store).await;
    replay(&store).await;
    store
        .drop_schema()
        .await
        .expect("dropping the bench schema");
}

/// `WRITERS` tasks, each appending one event at a time to its own stream.
async fn concurrent_appends(store: &PostgresStore) {
    let appended = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + THROUGHPUT_DURATION;
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (store, appended) = (store.clone(), Arc::clone(&appended));
            tokio::spawn(async move {
                let stream = StreamId::from(format!("writer-{writer}"));
                let mut index = 0;
                while Instant::now() < deadline {
                    let envelope = event(1, writer << 32 | index);
                    store
                        .append(&stream, ExpectedVersion::Any, &[envelope])
                        .await
                        .expect("an append");
                    appended.fetch_add(1, Ordering::Relaxed);
                    index += 1;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer task");
    }
    let seconds = started.elapsed().as_secs_f64();
    let events = appended.load(Ordering::Relaxed);
    println!(
        "append, {WRITERS} concurrent writers, 1 event each: {:.0} events/s ({events} in {seconds:.1} s)",
        events as f64 / seconds
    );
}

/// One writer, one event per append, one append in flight.
async fn append_latency(store: &PostgresStore) {
    let stream = StreamId::from("latency");
    let mut samples = Vec::with_capacity(LATENCY_APPENDS);
    let deadline = Instant::now() + LATENCY_DURATION;
    for index in 0..LATENCY_APPENDS as u128 {
        if Instant::now() >= deadline {
            break;
        }
        let envelope = event(2, index);
        let started = Instant::now();
        store
            .append(&stream, ExpectedVersion::Any, &[envelope])
            .await
            .expect("an append");
        samples.push(started.elapsed());
    }
    samples.sort();
    let percentile = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    println!(
        "append latency, 1 event, 1 in flight: p50 {:.0} µs, p99 {:.0} µs ({} appends)",
        percentile(50).as_secs_f64() * 1e6,
        percentile(99).as_secs_f64() * 1e6,
        samples.len()
    );
}

/// Loads one long stream in full-size batches, then reads it back page by page.
async fn replay(store: &PostgresStore) {
    let stream = StreamId::from("replay");
    let started = Instant::now();
    let mut loaded = 0u64;
    while loaded < REPLAY_EVENTS && started.elapsed() < LOAD_DURATION {
        let batch: Vec<Envelope> = (loaded..loaded + APPEND_EVENTS_MAX as u64)
            .map(|index| event(3, u128::from(index)))
            .collect();
        store
            .append(&stream, ExpectedVersion::Exact(loaded), &batch)
            .await
            .expect("a bulk append");
        loaded += batch.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "bulk load, {APPEND_EVENTS_MAX} events per append: {:.0} events/s ({loaded} in {seconds:.1} s)",
        loaded as f64 / seconds
    );

    // The first read after a bulk load also sets PostgreSQL's hint bits on every row
    // (writing the pages again), so it is slower than any later one: report both.
    for pass in ["first read after the load", "again, warm"] {
        let started = Instant::now();
        let read = read_stream_to_end(store, &stream).await;
        assert_eq!(read, loaded, "a replay reads every event once");
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "replay by read_stream, pages of {READ_LIMIT_MAX}, {pass}: {:.0} events/s ({read} in {seconds:.1} s)",
            read as f64 / seconds
        );
    }
}

/// Reads `stream` from its start, page by page; returns how many events it read.
async fn read_stream_to_end(store: &PostgresStore, stream: &StreamId) -> u64 {
    let mut from = 1;
    let mut read = 0u64;
    loop {
        let page = store
            .read_stream(stream, from, READ_LIMIT_MAX)
            .await
            .expect("a page");
        let Some(last) = page.last() else {
            return read;
        };
        from = last.version + 1;
        read += page.len() as u64;
    }
}
