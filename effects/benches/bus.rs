//! Benchmarks the event bus: publish-to-delivery throughput to one subscriber, and
//! publish-to-delivery latency (p50, p99) with one envelope in flight and under load.
//!
//! Run with `cargo bench -p keel-effects --bench bus`. Each figure is the median of
//! several samples, printed one per line. Envelopes are built before the timed loops;
//! the publisher hands the bus an `Arc<Envelope>`, as fan-out does.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keel_core::{Envelope, EventId, EventType, Timestamp, Topic};
use keel_effects::notify::{Bus, SubscribeOptions};

const SAMPLES: usize = 7;
const THROUGHPUT_ENVELOPES: u64 = 1_000_000;
const LATENCY_ENVELOPES: usize = 20_000;
const CAPACITY: usize = 1024;

/// `count` distinct envelopes; each carries its index as its sequence number.
fn envelopes(count: usize) -> Vec<Arc<Envelope>> {
    (0..count)
        .map(|index| {
            let envelope = Envelope::builder(
                EventId::from_u128(index as u128 + 1),
                EventType::from_static("order.placed"),
                "bench",
                Timestamp::UNIX_EPOCH,
            )
            .sequence(index as u64)
            .build()
            .expect("a valid envelope");
            Arc::new(envelope)
        })
        .collect()
}

fn subscribe(bus: &Bus) -> keel_effects::notify::Subscription {
    let pattern = "order.*".parse().expect("a valid pattern");
    bus.subscribe(pattern, SubscribeOptions::default().capacity(CAPACITY))
        .expect("a valid capacity")
}

/// Envelopes per second from the first publish to the last delivery.
async fn throughput(pool: &[Arc<Envelope>]) -> f64 {
    let bus = Bus::default();
    let mut subscription = subscribe(&bus);
    let topic = Topic::from_static("order.placed");
    let consumer = tokio::spawn(async move {
        let mut received = 0_u64;
        while received < THROUGHPUT_ENVELOPES {
            let envelope = subscription.recv().await.expect("the bus outlives the run");
            black_box(envelope);
            received += 1;
        }
    });
    let started = Instant::now();
    for index in 0..THROUGHPUT_ENVELOPES {
        let envelope = Arc::clone(&pool[index as usize % pool.len()]);
        bus.publish(&topic, envelope)
            .await
            .expect("publish never fails");
    }
    consumer.await.expect("the consumer does not panic");
    THROUGHPUT_ENVELOPES as f64 / started.elapsed().as_secs_f64()
}

/// Publish-to-delivery latencies in nanoseconds, sorted. With `in_flight_one`, each
/// publish waits until the previous envelope was delivered; otherwise the publisher
/// floods the bus and the latency includes time spent queued.
async fn latencies(pool: &[Arc<Envelope>], in_flight_one: bool) -> Vec<u64> {
    let bus = Bus::default();
    let mut subscription = subscribe(&bus);
    let topic = Topic::from_static("order.placed");
    let base = Instant::now();
    let sent_ns: Arc<Vec<AtomicU64>> =
        Arc::new((0..pool.len()).map(|_| AtomicU64::new(0)).collect());
    let delivered = Arc::new(AtomicU64::new(0));
    let consumer = {
        let sent_ns = Arc::clone(&sent_ns);
        let delivered = Arc::clone(&delivered);
        let count = pool.len();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let envelope = subscription.recv().await.expect("the bus outlives the run");
                let now = base.elapsed().as_nanos() as u64;
                let sent = sent_ns[envelope.sequence as usize].load(Ordering::Acquire);
                latencies.push(now.saturating_sub(sent));
                delivered.fetch_add(1, Ordering::Release);
            }
            latencies
        })
    };
    for (index, envelope) in pool.iter().enumerate() {
        sent_ns[index].store(base.elapsed().as_nanos() as u64, Ordering::Release);
        bus.publish(&topic, Arc::clone(envelope))
            .await
            .expect("publish never fails");
        while in_flight_one && delivered.load(Ordering::Acquire) <= index as u64 {
            tokio::task::yield_now().await;
        }
    }
    let mut latencies = consumer.await.expect("the consumer does not panic");
    latencies.sort_unstable();
    latencies
}

fn percentile_us(sorted_ns: &[u64], percent: usize) -> f64 {
    let index = (sorted_ns.len() * percent / 100).min(sorted_ns.len() - 1);
    sorted_ns[index] as f64 / 1_000.0
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let pool = envelopes(LATENCY_ENVELOPES);

    runtime.block_on(async {
        // Warm up allocators, threads and caches once before measuring.
        throughput(&pool).await;
        tokio::time::sleep(Duration::from_millis(10)).await;

        let mut rates = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            rates.push(throughput(&pool).await);
        }
        println!(
            "bus publish-to-delivery throughput, 1 subscriber: {:.0} envelopes/s",
            median(rates)
        );

        for (label, in_flight_one) in [("1 in flight", true), ("flooded, capacity 1024", false)] {
            let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
            for _ in 0..SAMPLES {
                let sorted = latencies(&pool, in_flight_one).await;
                p50s.push(percentile_us(&sorted, 50));
                p99s.push(percentile_us(&sorted, 99));
            }
            println!(
                "bus publish-to-delivery latency p50, {label}: {:.2} µs",
                median(p50s)
            );
            println!(
                "bus publish-to-delivery latency p99, {label}: {:.2} µs",
                median(p99s)
            );
        }
    });
}
