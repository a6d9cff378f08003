//! The durable shell refuses to start an id whose log exists (the instance finished, in
//! this run or an earlier one) as `InstanceExists`, and a handler that panics, before or
//! after returning its future, fails its call as a permanent, maybe applied failure that
//! the reducer is told about.

use std::sync::Arc;

use keel_core::driver::{Durable, Status};
use keel_core::{EventType, Input, Intent, IntentKind, Outcome, OutcomeResult, Reducer};
use keel_effects::durable::DurableRuntime;
use keel_effects::{Call, HandlerFuture};
use keel_store::{EventStore, MemoryStore};
use serde::{Deserialize, Serialize};

/// Makes one call, and finishes with what became of it.
struct OneCall;

#[derive(Clone, Serialize, Deserialize)]
enum Event {
    Go,
    Done(Outcome),
}

impl From<Outcome> for Event {
    fn from(outcome: Outcome) -> Self {
        Self::Done(outcome)
    }
}

impl Reducer for OneCall {
    type State = Option<OutcomeResult>;
    type Action = Input<Event>;

    fn reduce_into(&self, state: &mut Self::State, action: Input<Event>, out: &mut Vec<Intent>) {
        match action.body {
            Event::Go => {
                action.cause.emitter(out).emit(IntentKind::Custom {
                    name: EventType::from_static("test.call"),
                    payload: serde_json::Value::Null,
                });
            }
            Event::Done(outcome) => *state = Some(outcome.result),
        }
    }
}

impl Durable for OneCall {
    type Event = Event;

    fn kind(&self) -> &str {
        "onecall"
    }

    fn status(&self, state: &Self::State) -> Status {
        match state {
            Some(_) => Status::Finished,
            None => Status::Running,
        }
    }
}

fn answers(call: Call) -> HandlerFuture {
    let _ = call;
    Box::pin(async { Ok(serde_json::json!("done")) })
}

#[tokio::test]
async fn an_id_whose_log_exists_is_refused_in_this_run_and_the_next() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let start = || {
        DurableRuntime::builder(OneCall, Arc::clone(&store))
            .custom(EventType::from_static("test.call"), Arc::new(answers))
            .start()
    };
    let (runtime, _) = start().await.expect("the shell starts");
    let id = "c-1".into();
    runtime
        .start(&id, None, Event::Go)
        .await
        .expect("a new id starts");
    assert_eq!(runtime.wait(&id).await.expect("wait"), Status::Finished);
    let again = runtime.start(&id, None, Event::Go).await;
    assert!(
        matches!(
            again,
            Err(keel_effects::Error::Core(
                keel_core::Error::InstanceExists { .. }
            ))
        ),
        "{again:?}"
    );
    runtime.shutdown().await;

    let (runtime, recovered) = start().await.expect("a second shell starts on the store");
    // Its log is not even read: the store's index says it finished.
    assert_eq!(
        (recovered.resumed, recovered.records),
        (0, 0),
        "{recovered:?}"
    );
    let again = runtime.start(&id, None, Event::Go).await;
    assert!(
        matches!(
            again,
            Err(keel_effects::Error::Core(
                keel_core::Error::InstanceExists { .. }
            ))
        ),
        "{again:?}"
    );
    assert_eq!(
        runtime.wait(&id).await.expect("from the log"),
        Status::Finished
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_handler_that_panics_fails_its_call_for_good_as_maybe_applied() {
    fn panics_at_once(_call: Call) -> HandlerFuture {
        panic!("a handler bug, before any future")
    }
    fn panics_later(_call: Call) -> HandlerFuture {
        Box::pin(async { panic!("a handler bug, inside the future") })
    }
    let handlers: [fn(Call) -> HandlerFuture; 2] = [panics_at_once, panics_later];
    for handler in handlers {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let (runtime, _) = DurableRuntime::builder(OneCall, store)
            .custom(EventType::from_static("test.call"), Arc::new(handler))
            .config(keel_effects::durable::DurableConfig {
                lock_writer: false,
                ..Default::default()
            })
            .start()
            .await
            .expect("the shell starts");
        let id = "c-1".into();
        runtime.start(&id, None, Event::Go).await.expect("start");
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), runtime.wait(&id));
        assert_eq!(
            status.await.expect("the call is answered").expect("wait"),
            Status::Finished
        );
        runtime.shutdown().await;
    }
}
