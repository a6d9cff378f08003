//! Stored data that cannot be trusted gives a typed error, never a panic: a gap or a
//! reordering in stream versions is `VersionGap`, a garbage payload is `EventDecode`, a
//! schema this program cannot lift is `Upcast`.

use crate::common::aggregate_order as order;

use keel::aggregate::{Snapshot, Versioned};
use keel::{Envelope, Error, EventType, Payload};
use order::{Order, OrderCommand, chain, run_live};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A placed, paid and shipped order, as stored.
fn shipped_order() -> Vec<Envelope> {
    let (_, intents) = run_live(&[
        OrderCommand::Place {
            total_cents: 100,
            currency: "EUR".into(),
        },
        OrderCommand::Pay { cents: 100 },
        OrderCommand::Ship {
            carrier: "dhl".into(),
        },
    ]);
    order::persisted(&intents)
}

fn load(stored: &[Envelope]) -> Result<Versioned<Order>, Error> {
    Versioned::load(None, &chain(), stored)
}

#[test]
fn a_missing_version_is_a_gap() {
    let mut stored = shipped_order();
    stored.remove(1);
    assert_eq!(
        load(&stored).unwrap_err(),
        Error::VersionGap {
            expected: 2,
            actual: 3
        }
    );
}

#[test]
fn events_out_of_order_or_repeated_are_a_gap() {
    let mut stored = shipped_order();
    stored.swap(1, 2);
    assert!(matches!(
        load(&stored),
        Err(Error::VersionGap {
            expected: 2,
            actual: 3
        })
    ));
    let stored = shipped_order();
    let repeated = [stored[0].clone(), stored[0].clone()];
    assert!(matches!(
        load(&repeated),
        Err(Error::VersionGap {
            expected: 2,
            actual: 1
        })
    ));
}

#[test]
fn events_that_do_not_follow_the_snapshot_are_a_gap() {
    let stored = shipped_order();
    let snapshot = load(&stored[..1]).unwrap().into_snapshot();
    let err = Versioned::load(Some(snapshot), &chain(), &stored).unwrap_err();
    assert_eq!(
        err,
        Error::VersionGap {
            expected: 2,
            actual: 1
        }
    );
    let far_ahead = Snapshot {
        version: 7,
        state: Order::default(),
    };
    assert!(Versioned::load(Some(far_ahead), &chain(), &stored[1..]).is_err());
}

#[test]
fn a_garbage_payload_is_a_decode_error_naming_type_and_version() {
    let mut stored = shipped_order();
    stored[1].payload = Payload::Json(json!({ "type": "paid", "cents": "a lot" }));
    let err = load(&stored).unwrap_err();
    assert!(
        matches!(&err, Error::EventDecode { event_type, version: 2, .. } if event_type == "order.paid"),
        "{err:?}"
    );
}

#[test]
fn a_payload_that_contradicts_its_stored_type_is_a_decode_error() {
    let mut stored = shipped_order();
    stored[2].payload = Payload::Json(json!({ "type": "cancelled", "reason": "x" }));
    assert!(matches!(
        load(&stored),
        Err(Error::EventDecode { version: 3, .. })
    ));
}

#[test]
fn a_binary_payload_is_a_decode_error() {
    let mut stored = shipped_order();
    stored[0].payload = Payload::Binary(vec![0xde, 0xad]);
    assert!(matches!(
        load(&stored),
        Err(Error::EventDecode { version: 1, .. })
    ));
}

#[test]
fn a_schema_from_a_newer_program_is_an_upcast_error() {
    let mut stored = shipped_order();
    stored[0].schema_version = 3;
    let err = load(&stored).unwrap_err();
    assert!(
        matches!(&err, Error::Upcast { version: 3, reason, .. } if reason.contains("upgrade")),
        "{err:?}"
    );
}

#[test]
fn an_old_payload_that_its_upcaster_cannot_read_is_an_upcast_error() {
    let mut stored = shipped_order();
    stored[0].schema_version = 1;
    stored[0].payload = Payload::Json(json!([1, 2, 3]));
    assert!(matches!(
        load(&stored),
        Err(Error::Upcast { version: 1, .. })
    ));
}

/// Small arbitrary JSON.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::String),
        prop::sample::select(vec!["placed", "paid", "shipped"]).prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec!["type", "cents", "total_cents", "currency", "carrier"]),
                inner,
                0..4,
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

proptest! {
    #[test]
    fn tampered_stored_events_load_or_fail_with_a_typed_error(
        tamper in prop::collection::vec(
            (0..3_usize, 0..4_u64, 0..4_u32, json_value(), prop::sample::select(vec![
                "order.placed", "order.paid", "order.shipped", "order.unknown",
            ])),
            1..4,
        ),
    ) {
        let mut stored = shipped_order();
        for (index, sequence, schema_version, payload, event_type) in tamper {
            let envelope = &mut stored[index];
            envelope.sequence = sequence;
            envelope.schema_version = schema_version;
            envelope.payload = Payload::Json(payload);
            envelope.event_type = EventType::new(event_type).expect("valid");
        }
        match load(&stored) {
            Ok(_) | Err(Error::VersionGap { .. } | Error::EventDecode { .. } | Error::Upcast { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}
