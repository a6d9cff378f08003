//! An aggregate loads from its store as the latest snapshot plus the events after it,
//! each stored payload lifted to the current schema on read; the result equals folding
//! every event from the start.

use keel_core::aggregate::{Aggregate, DomainEvent};
use keel_core::{
    Envelope, EventId, EventType, ExpectedVersion, Payload, StreamId, Timestamp, UpcasterChain,
};
use keel_store::aggregate::{load_aggregate, save_snapshot};
use keel_store::{EventStore, MemoryStore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    total: u64,
    additions: u32,
}

/// Version 2 names the field `amount`; version 1 called it `n`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Added {
    amount: u64,
}

impl DomainEvent for Added {
    const SCHEMA_VERSION: u32 = 2;

    fn event_type(&self) -> EventType {
        EventType::from_static("tally.added")
    }
}

impl Aggregate for Tally {
    type Command = u64;
    type Event = Added;
    type Rejection = ();

    fn decide_into(&self, amount: &u64, events: &mut Vec<Added>) -> Result<(), ()> {
        events.push(Added { amount: *amount });
        Ok(())
    }

    fn apply(&mut self, event: &Added) {
        self.total += event.amount;
        self.additions += 1;
    }
}

fn rename_n_to_amount(mut payload: Value) -> Result<Value, String> {
    let n = payload
        .get("n")
        .cloned()
        .ok_or("no `n` in a version 1 payload")?;
    payload["amount"] = n;
    payload.as_object_mut().map(|object| object.remove("n"));
    Ok(payload)
}

fn chain() -> UpcasterChain {
    UpcasterChain::builder()
        .current("tally.added", 2)
        .step("tally.added", 1, rename_n_to_amount)
        .build()
        .expect("a valid chain")
}

/// Event `i` of the stream: the first half written by version 1 of the program.
fn stored(i: u64) -> Envelope {
    let (version, payload) = if i <= 5 {
        (1, json!({ "n": i }))
    } else {
        (2, json!({ "amount": i }))
    };
    Envelope::builder(
        EventId::from_u128(u128::from(i)),
        EventType::from_static("tally.added"),
        "tally",
        Timestamp::UNIX_EPOCH,
    )
    .schema_version(version)
    .payload(Payload::Json(payload))
    .build()
    .expect("a valid envelope")
}

#[tokio::test]
async fn old_events_are_lifted_on_read_and_a_snapshot_shortens_the_fold() {
    let store = MemoryStore::new();
    let stream = StreamId::from("tally-1");
    let events: Vec<Envelope> = (1..=10).map(stored).collect();
    store
        .append(&stream, ExpectedVersion::NoStream, &events[..6])
        .await
        .unwrap();

    let full = load_aggregate::<Tally>(&store, &chain(), &stream)
        .await
        .unwrap();
    assert_eq!((full.state().total, full.version()), (21, 6));

    save_snapshot(&store, &stream, &full).await.unwrap();
    store
        .append(&stream, ExpectedVersion::Exact(6), &events[6..])
        .await
        .unwrap();
    let resumed = load_aggregate::<Tally>(&store, &chain(), &stream)
        .await
        .unwrap();
    assert_eq!(
        resumed.state(),
        &Tally {
            total: 55,
            additions: 10
        }
    );
    assert_eq!(resumed.version(), 10);

    // Without the snapshot, the full fold gives the same state.
    let other = MemoryStore::new();
    other
        .append(&stream, ExpectedVersion::NoStream, &events)
        .await
        .unwrap();
    let folded = load_aggregate::<Tally>(&other, &chain(), &stream)
        .await
        .unwrap();
    assert_eq!(folded.state(), resumed.state());
}

#[tokio::test]
async fn a_stream_without_events_loads_as_the_default_aggregate() {
    let loaded = load_aggregate::<Tally>(&MemoryStore::new(), &chain(), &StreamId::from("none"))
        .await
        .unwrap();
    assert_eq!((loaded.state(), loaded.version()), (&Tally::default(), 0));
}
