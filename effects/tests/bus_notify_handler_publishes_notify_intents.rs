//! `NotifyHandler` carries out a notify intent by publishing its envelope on its topic,
//! reports how many subscribers got it, and refuses every other kind of intent.

use keel_core::{
    CausationId, CorrelationId, Envelope, EventId, EventType, Intent, IntentId, IntentKind,
    TimerId, Timestamp, Topic,
};
use keel_effects::notify::{Bus, NotifyHandler, Overflow, SubscribeOptions};
use keel_effects::{Call, FailureKind, Handler, Metrics};
use serde_json::json;

fn call(kind: IntentKind) -> Call {
    let id = IntentId::new(CorrelationId::from_u128(1), CausationId::from_u128(2), 0);
    Call::new(Intent { id, kind }, "order-1".into(), Metrics::default())
}

fn notify(id: u128) -> IntentKind {
    let envelope = Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static("order.placed"),
        "shop",
        Timestamp::UNIX_EPOCH,
    )
    .build()
    .expect("a valid envelope");
    IntentKind::Notify {
        topic: Topic::from_static("order.placed"),
        envelope: Box::new(envelope),
    }
}

#[tokio::test]
async fn a_notify_intent_is_published_and_its_delivery_reported() {
    let bus = Bus::default();
    let mut roomy = bus
        .subscribe("order.*".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    let _full = bus
        .subscribe(
            "order.**".parse().unwrap(),
            SubscribeOptions::default()
                .capacity(1)
                .overflow(Overflow::DropNewest),
        )
        .unwrap();
    let handler = NotifyHandler::new(bus.clone());

    let first = handler.call(call(notify(1))).await.unwrap();
    assert_eq!(first, json!({ "delivered": 2, "dropped": 0, "evicted": 0 }));
    let second = handler.call(call(notify(2))).await.unwrap();
    assert_eq!(
        second,
        json!({ "delivered": 1, "dropped": 1, "evicted": 0 })
    );
    assert_eq!(roomy.recv().await.unwrap().id, EventId::from_u128(1));
}

#[tokio::test]
async fn any_other_intent_fails_permanently() {
    let handler = NotifyHandler::new(Bus::default());
    let failure = handler
        .call(call(IntentKind::CancelTimer {
            timer: TimerId::from_static("t"),
        }))
        .await
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Permanent);
    assert!(
        failure.reason.contains("cancel_timer"),
        "{}",
        failure.reason
    );
}
