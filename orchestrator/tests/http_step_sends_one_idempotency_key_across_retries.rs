//! An HTTP step is retried by its policy under one intent id, so the service sees one
//! `Idempotency-Key` on every attempt; once it succeeds, its result (the HTTP response
//! as a value) flows into the next step's input through `ctx.result(..)`. Against a real
//! axum server on 127.0.0.1 that answers `503` twice, then `201`.

use std::sync::Arc;
use std::time::Duration;

use keel_orchestrator::core::HttpRequest;
use keel_orchestrator::id::step_intent_id;
use keel_orchestrator::{
    FailureKind, Orchestrator, Phase, RetryPolicy, SagaDefinition, SagaStatus, Step, StepAction,
    Transition,
};
use keel_store::MemoryStore;
use serde_json::json;

use crate::common::http_server::PaymentServer;
use crate::common::{Journal, saga_id, settled, transitions};

fn checkout(charges_url: String) -> SagaDefinition {
    SagaDefinition::builder("shop.checkout")
        .step(
            Step::new("charge", move |ctx| {
                StepAction::http(
                    HttpRequest::post(charges_url.clone())
                        .json(json!({ "cents": ctx.input()["cents"] }))
                        .timeout_ms(5_000),
                )
            })
            // Short waits: this test runs on the real clock, against a real server.
            .retry(
                RetryPolicy::exponential()
                    .attempts(5)
                    .first_delay(Duration::from_millis(5))
                    .max_delay(Duration::from_millis(20)),
            ),
        )
        .step(Step::new("receipt", |ctx| {
            let charged = ctx.result("charge");
            StepAction::custom(
                "mail.receipt",
                json!({ "status": charged["status"], "charge": charged["body"]["charge"] }),
            )
        }))
        .build()
        .expect("a valid saga")
}

#[tokio::test]
async fn every_attempt_carries_the_same_key_and_the_response_feeds_the_next_step() {
    let server = PaymentServer::start(2).await;
    let journal = Journal::new();
    let (orchestrator, _) = Orchestrator::builder(Arc::new(MemoryStore::new()))
        .saga(checkout(server.url("/charges")))
        .http(server.handler())
        .handler(
            "mail.receipt",
            journal.ok("mail.receipt", json!({ "sent": true })),
        )
        .start()
        .await
        .unwrap();
    let id = saga_id("checkout-1");
    orchestrator
        .start_saga("shop.checkout", id.clone(), json!({ "cents": 4200 }))
        .await
        .unwrap();
    assert_eq!(settled(&orchestrator, &id).await, SagaStatus::Completed);

    // Three requests (two 503s, then the success), all with the step's intent id.
    let keys = server.keys();
    assert_eq!(keys.len(), 3, "{keys:?}");
    let expected = step_intent_id(id.correlation(), 0, Phase::Action).to_string();
    for key in &keys {
        assert_eq!(key.as_deref(), Some(expected.as_str()), "{keys:?}");
    }

    // The response, as the HTTP handler resolves it, is the step's result.
    let receipt = journal.calls_to("mail.receipt");
    assert_eq!(receipt.len(), 1);
    assert_eq!(
        receipt[0].payload,
        json!({ "status": 201, "charge": "ch_42" })
    );

    // The timeline shows two transient failures with a retry each, then the success.
    let timeline = orchestrator.timeline(&id).await.unwrap();
    let charge_attempts: Vec<Transition> = transitions(&timeline)
        .into_iter()
        .filter(|t| t.step() == Some(0))
        .collect();
    assert_eq!(charge_attempts.len(), 6, "{charge_attempts:?}");
    for (n, pair) in charge_attempts[..4].chunks(2).enumerate() {
        let attempt = n as u16 + 1;
        assert_eq!(pair[0], Transition::StepStarted { step: 0, attempt });
        assert!(
            matches!(
                &pair[1],
                Transition::StepFailed { step: 0, attempt: a, kind: FailureKind::Transient, retry_in_ms: Some(_), reason }
                    if *a == attempt && reason.contains("503")
            ),
            "{:?}",
            pair[1]
        );
    }
    assert_eq!(
        charge_attempts[4],
        Transition::StepStarted {
            step: 0,
            attempt: 3
        }
    );
    assert_eq!(charge_attempts[5], Transition::StepCompleted { step: 0 });
    orchestrator.shutdown().await;
}
