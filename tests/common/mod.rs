//! Strategies and fixtures shared by the behaviour and property tests.

#![allow(dead_code, unreachable_pub)] // Each test crate uses a different part.

pub mod aggregate_order;
pub mod saga_sim;

use std::collections::BTreeMap;

use keel::{
    CausationId, CorrelationId, Envelope, EventId, EventType, MetaValue, Payload, Priority,
    Timestamp,
};
use proptest::prelude::*;
use serde_json::Value;

/// A lowercase dotted name: an event type or a topic.
pub fn dotted_name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9][a-z0-9_-]{0,6}", 1..5).prop_map(|segments| segments.join("."))
}

/// Arbitrary JSON, a few levels deep.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Finite floats only: JSON has no NaN or infinity.
        (-1.0e12..1.0e12_f64).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A metadata key that CloudEvents accepts and the envelope does not reserve.
fn metadata_key() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,11}".prop_filter("reserved by the envelope", |key| {
        !keel::envelope::RESERVED_ATTRIBUTES.contains(&key.as_str())
    })
}

fn meta_value() -> impl Strategy<Value = MetaValue> {
    prop_oneof![
        any::<bool>().prop_map(MetaValue::Bool),
        any::<i64>().prop_map(MetaValue::Integer),
        "\\PC{0,12}".prop_map(MetaValue::Text),
    ]
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        3 => json_value().prop_map(Payload::Json),
        1 => prop::collection::vec(any::<u8>(), 0..48).prop_map(Payload::Binary),
    ]
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Low),
        Just(Priority::Normal),
        Just(Priority::High)
    ]
}

/// Any valid envelope, every optional attribute sometimes present.
pub fn envelope() -> impl Strategy<Value = Envelope> {
    let ids = (
        any::<u128>(),
        any::<u128>(),
        prop::option::of(any::<u128>()),
    );
    let routing = (
        dotted_name(),
        "[a-z][a-z0-9/:.-]{0,20}",
        prop::option::of("\\PC{1,16}"),
        prop::option::of("[a-z0-9-]{1,16}"),
        any::<i64>(),
    );
    let rest = (
        any::<u64>(),
        1..=u32::MAX,
        priority(),
        prop::collection::btree_map(metadata_key(), meta_value(), 0..4),
        payload(),
    );
    (ids, routing, rest).prop_map(
        |(
            (id, correlation, causation),
            (event_type, source, target, subject, nanos),
            (sequence, schema_version, priority, metadata, payload),
        )| Envelope {
            id: EventId::from_u128(id),
            event_type: EventType::new(event_type).expect("the strategy makes valid types"),
            source,
            target,
            time: Timestamp::from_unix_nanos(nanos),
            correlation_id: CorrelationId::from_u128(correlation),
            causation_id: causation.map(CausationId::from_u128),
            subject,
            sequence,
            schema_version,
            priority,
            metadata: metadata.into_iter().collect::<BTreeMap<_, _>>(),
            payload,
        },
    )
}
