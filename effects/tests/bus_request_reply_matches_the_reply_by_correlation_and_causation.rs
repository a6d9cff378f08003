//! `Bus::request` returns the first envelope that continues the request's transaction
//! and names the request as its cause, on any topic; other envelopes do not answer it.

use keel_core::{CorrelationId, Envelope, EventId, EventType, Timestamp, Topic};
use keel_effects::Error;
use keel_effects::notify::{Bus, SubscribeOptions};

fn envelope(id: u128, event_type: &'static str) -> Envelope {
    Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static(event_type),
        "test",
        Timestamp::UNIX_EPOCH,
    )
    .build()
    .expect("a valid envelope")
}

#[tokio::test(start_paused = true)]
async fn a_responder_task_answers_the_request() {
    let bus = Bus::default();
    let mut questions = bus
        .subscribe("stock.query".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    let responder = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let question = questions.recv().await.unwrap();
            // Noise first: same transaction but another cause, then an unrelated reply.
            let mut unrelated = envelope(10, "stock.noise");
            unrelated.correlation_id = question.correlation_id;
            bus.publish(&Topic::from_static("stock.noise"), unrelated)
                .await
                .unwrap();
            let mut stranger = envelope(11, "stock.answered");
            stranger.correlation_id = CorrelationId::from_u128(99);
            stranger.causation_id = Some(question.id.into());
            bus.publish(&Topic::from_static("stock.answered"), stranger)
                .await
                .unwrap();

            let answer = Envelope::builder(
                EventId::from_u128(12),
                EventType::from_static("inventory.counted"),
                "warehouse",
                Timestamp::UNIX_EPOCH,
            )
            .caused_by(&question)
            .build()
            .unwrap();
            bus.publish(&Topic::from_static("inventory.counted"), answer)
                .await
                .unwrap();
        })
    };

    let question = envelope(1, "stock.query");
    let answer = bus
        .request(&Topic::from_static("stock.query"), question.clone(), 1_000)
        .await
        .unwrap();
    assert_eq!(answer.id, EventId::from_u128(12));
    assert_eq!(answer.correlation_id, question.correlation_id);
    assert_eq!(answer.causation_id, Some(question.id.into()));
    responder.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_reply_helper_sets_the_ids_and_still_reaches_subscribers() {
    let bus = Bus::default();
    let mut questions = bus
        .subscribe("stock.query".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    let mut answers = bus
        .subscribe(
            "stock.answered".parse().unwrap(),
            SubscribeOptions::default(),
        )
        .unwrap();
    let responder = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let question = questions.recv().await.unwrap();
            bus.reply(&question, envelope(2, "stock.answered"))
                .await
                .unwrap()
        })
    };
    let answer = bus
        .request(
            &Topic::from_static("stock.query"),
            envelope(1, "stock.query"),
            1_000,
        )
        .await
        .unwrap();
    assert_eq!(answer.causation_id, Some(EventId::from_u128(1).into()));
    assert_eq!(responder.await.unwrap().delivered, 1);
    assert!(std::sync::Arc::ptr_eq(
        &answers.try_recv().unwrap(),
        &answer
    ));
}

#[tokio::test(start_paused = true)]
async fn two_requests_with_one_id_cannot_wait_at_once() {
    let bus = Bus::default();
    let first = {
        let bus = bus.clone();
        tokio::spawn(async move {
            bus.request(
                &Topic::from_static("stock.query"),
                envelope(1, "stock.query"),
                100,
            )
            .await
        })
    };
    tokio::task::yield_now().await;
    let refused = bus
        .request(
            &Topic::from_static("stock.query"),
            envelope(1, "stock.query"),
            100,
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Core(_)), "{refused}");
    assert!(matches!(
        first.await.unwrap(),
        Err(Error::ReplyTimeout { .. })
    ));
}
