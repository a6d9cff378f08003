//! A request-reply step publishes its request on the bus and waits for the reply: the
//! saga goes on only once a responder has answered, and the reply (as CloudEvents JSON)
//! is the step's result. A step whose `check` refuses the reply (a policy that says no)
//! has failed for good: the saga turns back and undoes what it did.

use std::sync::Arc;

use keel_effects::notify::{Bus, SubscribeOptions};
use keel_orchestrator::core::{Envelope, EventId, EventType, MetaValue, Payload, Timestamp};
use keel_orchestrator::id::step_intent_id;
use keel_orchestrator::{
    Orchestrator, Phase, RetryPolicy, SagaDefinition, SagaStatus, Step, StepAction,
};
use keel_store::MemoryStore;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::common::{Journal, logged_status, saga_id, settled, within};

/// hold funds, ask the policy service (on the bus), then pay out.
fn payout() -> SagaDefinition {
    SagaDefinition::builder("bank.payout")
        .step(
            Step::new("hold", |ctx| {
                StepAction::custom("funds.hold", json!({ "user": ctx.input()["user"] }))
            })
            .compensate(|_| StepAction::custom("funds.release", json!({}))),
        )
        .step(
            Step::new("authorize", |ctx| {
                StepAction::request(
                    "policy.check",
                    "policy.check.requested",
                    json!({ "user": ctx.input()["user"] }),
                    60_000,
                )
            })
            .check(|reply| match reply["data"]["allowed"].as_bool() {
                Some(true) => Ok(()),
                _ => Err(format!("policy denied: {}", reply["data"]["why"])),
            })
            .retry(RetryPolicy::none()),
        )
        .step(Step::new("pay", |ctx| {
            StepAction::custom(
                "funds.pay",
                json!({ "approval": ctx.result("authorize")["data"]["approval"] }),
            )
        }))
        .build()
        .expect("a valid saga")
}

/// A policy service on the bus: each request it receives is passed to the test on
/// `seen`, and answered once `go` turns true: users named `mallory` are denied.
fn spawn_policy_service(
    bus: &Bus,
    go: watch::Receiver<bool>,
) -> mpsc::UnboundedReceiver<Arc<Envelope>> {
    let mut requests = bus
        .subscribe(
            "policy.check".parse().expect("a valid pattern"),
            SubscribeOptions::default(),
        )
        .expect("room for a subscriber");
    let (seen, seen_rx) = mpsc::unbounded_channel();
    let bus = bus.clone();
    tokio::spawn(async move {
        let mut number = 0_u128;
        while let Some(request) = requests.recv().await {
            let _ = seen.send(Arc::clone(&request));
            let mut go = go.clone();
            let _ = go.wait_for(|go| *go).await;
            let Payload::Json(asked) = &request.payload else {
                panic!("the request carries JSON");
            };
            let user = asked["user"].as_str().unwrap_or_default();
            let data: Value = if user == "mallory" {
                json!({ "allowed": false, "why": "on the deny list" })
            } else {
                json!({ "allowed": true, "approval": format!("ok-{user}") })
            };
            number += 1;
            let reply = Envelope::builder(
                EventId::from_u128(1_000 + number),
                EventType::from_static("policy.check.answered"),
                "policy",
                Timestamp::UNIX_EPOCH,
            )
            .payload(Payload::Json(data))
            .build()
            .expect("a valid reply");
            bus.reply(&request, reply)
                .await
                .expect("the reply is published");
        }
    });
    seen_rx
}

fn orchestrator(bus: &Bus, journal: &Journal) -> keel_orchestrator::OrchestratorBuilder {
    Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(payout())
        .bus(bus.clone())
        .handler(
            "funds.hold",
            journal.ok("funds.hold", json!({ "hold": "h-1" })),
        )
        .handler("funds.release", journal.ok("funds.release", json!({})))
        .handler(
            "funds.pay",
            journal.ok("funds.pay", json!({ "paid": true })),
        )
}

#[tokio::test(start_paused = true)]
async fn the_saga_goes_on_once_the_reply_comes_and_reads_it() {
    let bus = Bus::default();
    let (go, go_rx) = watch::channel(false);
    let mut seen = spawn_policy_service(&bus, go_rx);
    let journal = Journal::new();
    let (orchestrator, _) = orchestrator(&bus, &journal).start().await.unwrap();
    let id = saga_id("payout-ada");
    orchestrator
        .start_saga("bank.payout", id.clone(), json!({ "user": "ada" }))
        .await
        .unwrap();

    // The request reaches the service, carrying the saga's ids and the step's key.
    let request = within("the policy request", seen.recv()).await.unwrap();
    assert_eq!(request.event_type.as_str(), "policy.check.requested");
    assert_eq!(request.correlation_id, id.correlation());
    assert_eq!(request.subject.as_deref(), Some("payout-ada"));
    assert_eq!(request.payload, Payload::Json(json!({ "user": "ada" })));
    let key = step_intent_id(id.correlation(), 1, Phase::Action).to_string();
    assert_eq!(
        request.metadata.get("idempotencykey"),
        Some(&MetaValue::Text(key))
    );

    // Unanswered, the saga waits: still running, and the next step has not run.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(logged_status(&orchestrator, &id).await, SagaStatus::Running);
    assert!(journal.calls_to("funds.pay").is_empty());

    go.send_replace(true);
    assert_eq!(settled(&orchestrator, &id).await, SagaStatus::Completed);
    assert_eq!(journal.services(), ["funds.hold", "funds.pay"]);
    // The reply's data reached the next step.
    assert_eq!(
        journal.calls_to("funds.pay")[0].payload,
        json!({ "approval": "ok-ada" })
    );
    orchestrator.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reply_the_check_refuses_turns_the_saga_back() {
    let bus = Bus::default();
    let (_go, go_rx) = watch::channel(true);
    let _seen = spawn_policy_service(&bus, go_rx);
    let journal = Journal::new();
    let (orchestrator, _) = orchestrator(&bus, &journal).start().await.unwrap();
    let id = saga_id("payout-mallory");
    orchestrator
        .start_saga("bank.payout", id.clone(), json!({ "user": "mallory" }))
        .await
        .unwrap();

    let status = settled(&orchestrator, &id).await;
    let SagaStatus::Compensated { reason } = &status else {
        panic!("expected the saga turned back, got {status:?}");
    };
    assert!(
        reason.contains("`authorize`") && reason.contains("policy denied"),
        "the reason names the step and the refusal: {reason}"
    );
    // The hold was released; nothing was paid.
    assert_eq!(journal.services(), ["funds.hold", "funds.release"]);
    orchestrator.shutdown().await;
}
