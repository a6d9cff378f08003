//! Replay equals live: the state an aggregate reaches while deciding commands equals the
//! state rebuilt from the events it persisted (stored as JSON, some rewritten in an old
//! schema and lifted back by the upcasters), and equals resuming from a snapshot taken at
//! any point and folding the rest.

use crate::common::aggregate_order as order;

use keel::aggregate::{Snapshot, Versioned, decode, fold};
use keel::{Envelope, ExpectedVersion, IntentKind};
use order::{Order, OrderEvent, as_written_by_version_1, bytes, chain, command, run_live};
use proptest::prelude::*;

/// The persisted envelopes as a store would return them: through JSON, and, where
/// `old_schema` says so, as the previous program version wrote them.
fn stored(envelopes: Vec<Envelope>, old_schema: &[bool]) -> Vec<Envelope> {
    envelopes
        .into_iter()
        .zip(old_schema.iter().cycle())
        .map(|(envelope, &old)| {
            let text = serde_json::to_string(&envelope).expect("envelopes serialise");
            let envelope: Envelope = serde_json::from_str(&text).expect("and decode");
            if old {
                as_written_by_version_1(envelope)
            } else {
                envelope
            }
        })
        .collect()
}

proptest! {
    #[test]
    fn folding_the_persisted_events_reaches_the_live_state(
        commands in prop::collection::vec(command(), 0..40),
        old_schema in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let (live, intents) = run_live(&commands);
        let stored = stored(order::persisted(&intents), &old_schema);
        prop_assert_eq!(stored.len() as u64, live.version());

        let replayed = Versioned::<Order>::load(None, &chain(), &stored)
            .expect("everything the aggregate persisted loads back");
        prop_assert_eq!(replayed.version(), live.version());
        prop_assert_eq!(bytes(replayed.state()), bytes(live.aggregate()));

        let events: Vec<OrderEvent> = stored
            .iter()
            .map(|envelope| decode(&chain(), envelope).expect("decodes"))
            .collect();
        prop_assert_eq!(bytes(&fold::<Order>(&events)), bytes(live.aggregate()));
    }

    #[test]
    fn a_snapshot_at_any_point_plus_the_rest_reaches_the_live_state(
        commands in prop::collection::vec(command(), 0..40),
        old_schema in prop::collection::vec(any::<bool>(), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let (live, intents) = run_live(&commands);
        let stored = stored(order::persisted(&intents), &old_schema);
        let cut = cut.index(stored.len() + 1);

        let before = Versioned::<Order>::load(None, &chain(), &stored[..cut]).expect("loads");
        // A snapshot is stored too: take it through JSON.
        let text = serde_json::to_string(&before.snapshot()).expect("snapshots serialise");
        let snapshot: Snapshot<Order> = serde_json::from_str(&text).expect("and decode");
        prop_assert_eq!(snapshot.version, cut as u64);

        let resumed = Versioned::load(Some(snapshot), &chain(), &stored[cut..]).expect("loads");
        prop_assert_eq!(resumed.version(), live.version());
        prop_assert_eq!(bytes(resumed.state()), bytes(live.aggregate()));
    }

    #[test]
    fn each_persist_expects_the_version_its_decision_was_made_against(
        commands in prop::collection::vec(command(), 0..40),
    ) {
        let (_, intents) = run_live(&commands);
        let mut version = 0_u64;
        for intent in &intents {
            let IntentKind::Persist { expected_version, events, .. } = &intent.kind else {
                panic!("an aggregate emits only Persist intents, got {intent:?}");
            };
            let expected = if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            };
            prop_assert_eq!(*expected_version, expected);
            prop_assert!(!events.is_empty());
            for event in events {
                version += 1;
                prop_assert_eq!(event.sequence, version);
            }
        }
    }
}
