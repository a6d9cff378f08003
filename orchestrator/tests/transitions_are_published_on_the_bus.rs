//! With a bus, every transition of a saga is published on it as `saga.*`, in the order
//! it happened, carrying the saga's correlation id and naming the saga (and the step,
//! for step transitions), so monitoring can follow sagas without reading the store.

use std::sync::Arc;

use keel_effects::Failure;
use keel_effects::notify::{Bus, SubscribeOptions, Subscription};
use keel_orchestrator::core::{Envelope, Payload};
use keel_orchestrator::{Orchestrator, RetryPolicy, SagaDefinition, SagaId, Step, StepAction};
use keel_store::MemoryStore;
use serde_json::json;

use crate::common::{Journal, saga_id, within};

fn order() -> SagaDefinition {
    SagaDefinition::builder("shop.order")
        .step(
            Step::new("reserve", |_| {
                StepAction::custom("stock.reserve", json!({}))
            })
            .compensate(|_| StepAction::custom("stock.release", json!({}))),
        )
        .step(
            Step::new("charge", |ctx| {
                StepAction::custom("payment.charge", json!({ "card": ctx.input()["card"] }))
            })
            .retry(RetryPolicy::none()),
        )
        .build()
        .expect("a valid saga")
}

/// Receives envelopes until one of type `last` (bounded).
async fn until(subscription: &mut Subscription, last: &str) -> Vec<Arc<Envelope>> {
    let mut seen = Vec::new();
    while seen.len() < 100 {
        let envelope = within(&format!("a transition before {last}"), subscription.recv())
            .await
            .expect("the bus lives");
        let done = envelope.event_type.as_str() == last;
        seen.push(envelope);
        if done {
            return seen;
        }
    }
    panic!("no {last} among the first 100 transitions");
}

fn data(envelope: &Envelope) -> &serde_json::Value {
    match &envelope.payload {
        Payload::Json(data) => data,
        Payload::Binary(_) => panic!("transitions carry JSON"),
    }
}

async fn orchestrator_on(bus: &Bus) -> Orchestrator {
    let journal = Journal::new();
    let charge = journal.ok("payment.charge", json!({ "charge": "ch-1" }));
    let declined = journal.failing("payment.charge", Failure::permanent("card declined"));
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(order())
        .bus(bus.clone())
        .handler("stock.reserve", journal.ok("stock.reserve", json!({})))
        .handler("stock.release", journal.ok("stock.release", json!({})))
        .handler("payment.charge", move |call: keel_effects::Call| {
            let bad = matches!(
                &call.intent.kind,
                keel_orchestrator::core::IntentKind::Custom { payload, .. } if payload["card"] == "bad"
            );
            if bad {
                keel_effects::Handler::call(&declined, call)
            } else {
                keel_effects::Handler::call(&charge, call)
            }
        })
        .start()
        .await
        .expect("the orchestrator starts");
    orchestrator
}

fn check_envelopes(seen: &[Arc<Envelope>], id: &SagaId) {
    for envelope in seen {
        assert_eq!(envelope.correlation_id, id.correlation(), "{envelope:?}");
        assert_eq!(envelope.subject.as_deref(), Some(id.as_str()));
        assert_eq!(envelope.source, "keel-orchestrator");
        let data = data(envelope);
        assert_eq!(data["saga"], id.as_str());
        assert_eq!(data["saga_type"], "shop.order");
    }
    let mut ids: Vec<_> = seen.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        seen.len(),
        "every transition has an id of its own"
    );
}

#[tokio::test(start_paused = true)]
async fn a_completing_saga_publishes_its_transitions_in_order() {
    let bus = Bus::default();
    let mut sagas = bus
        .subscribe("saga.**".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    let orchestrator = orchestrator_on(&bus).await;
    let id = saga_id("order-1");
    orchestrator
        .start_saga("shop.order", id.clone(), json!({ "card": "good" }))
        .await
        .unwrap();

    let seen = until(&mut sagas, "saga.completed").await;
    let types: Vec<&str> = seen.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "saga.started",
            "saga.step.started",
            "saga.step.completed",
            "saga.step.started",
            "saga.step.completed",
            "saga.completed",
        ]
    );
    check_envelopes(&seen, &id);
    let steps: Vec<_> = seen.iter().map(|e| data(e)["step_name"].clone()).collect();
    assert_eq!(
        steps,
        [
            json!(null),
            json!("reserve"),
            json!("reserve"),
            json!("charge"),
            json!("charge"),
            json!(null),
        ]
    );
    assert_eq!(data(&seen[5])["status"], "completed");
    orchestrator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_saga_turning_back_publishes_its_compensation() {
    let bus = Bus::default();
    let mut sagas = bus
        .subscribe("saga.**".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    let orchestrator = orchestrator_on(&bus).await;
    let id = saga_id("order-2");
    orchestrator
        .start_saga("shop.order", id.clone(), json!({ "card": "bad" }))
        .await
        .unwrap();

    let seen = until(&mut sagas, "saga.compensated").await;
    let types: Vec<&str> = seen.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "saga.started",
            "saga.step.started",
            "saga.step.completed",
            "saga.step.started",
            "saga.step.failed",
            "saga.compensating",
            "saga.step.compensating",
            "saga.step.compensated",
            "saga.compensated",
        ]
    );
    check_envelopes(&seen, &id);
    assert!(
        data(&seen[4])["transition"]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("card declined")),
        "{:?}",
        data(&seen[4])
    );
    assert_eq!(data(&seen[7])["step_name"], "reserve");
    orchestrator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn publishing_can_be_turned_off() {
    let bus = Bus::default();
    let mut sagas = bus
        .subscribe("saga.**".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    let journal = Journal::new();
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(order())
        .bus(bus.clone())
        .config(keel_orchestrator::OrchestratorConfig {
            publish_transitions: false,
            ..Default::default()
        })
        .handler("stock.reserve", journal.ok("stock.reserve", json!({})))
        .handler("payment.charge", journal.ok("payment.charge", json!({})))
        .start()
        .await
        .unwrap();
    let id = saga_id("order-3");
    orchestrator
        .start_saga("shop.order", id.clone(), json!({}))
        .await
        .unwrap();
    crate::common::settled(&orchestrator, &id).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(sagas.try_recv().is_none(), "nothing is published");
    orchestrator.shutdown().await;
}
