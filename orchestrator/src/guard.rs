//! Panics in user code become failures of one attempt, never of the orchestrator.
//!
//! A workflow author's code runs in two places: the closures of a definition (building
//! a step's action or compensation, checking an answer), which run inside the saga
//! reducer, and the handlers that carry out steps, which run on the shard's task. A
//! panic in either would otherwise unwind through the shard and stop every saga it owns.
//! Each is caught where it happens and becomes a `Permanent` failure that names the
//! panic, logged at error level; the saga reacts to it like to any other failure. A
//! handler's panic also counts as maybe applied (it may have acted before panicking); a
//! closure's does not (no call went out).
//!
//! (A build with `panic = "abort"` cannot catch anything: there a panic ends the process,
//! and recovery on the next start takes over.)

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Poll;

use keel_effects::{Call, Handler};

use crate::saga::Answer;
use keel_core::Failure;

/// The message a panic carried: its text, or a placeholder for a payload of another type.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Runs `f`, turning a panic into `Err` with `what` and the panic's message.
///
/// Unwind safety is asserted: the closures run here see the saga only through shared
/// references, so a panic cannot leave keel's own state half-changed.
pub(crate) fn catching<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let reason = format!("{what} panicked: {}", panic_message(payload.as_ref()));
        tracing::error!(%reason, "user code panicked; the attempt fails as permanent");
        reason
    })
}

/// The answer `handler` gives to `call`: its result, or a `Permanent` failure naming
/// the panic if it panicked while starting the call or while the call ran.
///
/// This is how the orchestrator calls every handler; it is public so that a test or a
/// simulation can run its own handlers exactly as the orchestrator would.
pub fn answer_of(handler: &dyn Handler, call: Call) -> impl Future<Output = Answer> + Send + use<> {
    let started = catching("the step's handler", || handler.call(call));
    async move {
        let mut running = match started {
            Ok(future) => future,
            Err(reason) => return panicked(reason),
        };
        // Polled inside `catch_unwind`; after a panic it is never polled again.
        std::future::poll_fn(|cx| {
            match catching("the step's handler", || running.as_mut().poll(cx)) {
                Ok(Poll::Pending) => Poll::Pending,
                Ok(Poll::Ready(result)) => Poll::Ready(Answer::from_result(result)),
                Err(reason) => Poll::Ready(panicked(reason)),
            }
        })
        .await
    }
}

/// A handler that panicked may have acted before it did: a permanent failure, maybe
/// applied, so a saga parks rather than take it as proof that nothing happened.
fn panicked(reason: String) -> Answer {
    Answer::Failed(Failure::permanent(reason).maybe_applied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::{CausationId, CorrelationId, FailureKind, Intent, IntentId, IntentKind};
    use keel_effects::{InstanceId, Metrics};
    use serde_json::json;

    fn call() -> Call {
        let intent = Intent {
            id: IntentId::new(CorrelationId::from_u128(1), CausationId::from_u128(2), 0),
            kind: IntentKind::Custom {
                name: keel_core::EventType::from_static("test.call"),
                payload: json!({}),
            },
        };
        Call::new(intent, InstanceId::from("saga"), Metrics::default())
    }

    fn ready<T>(future: impl Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("the test futures are ready at once"),
        }
    }

    #[test]
    fn a_handler_that_panics_while_running_fails_its_attempt_as_permanent() {
        let handler = |_: Call| async move {
            if true {
                panic!("the card reader caught fire");
            }
            Ok::<_, keel_effects::Failure>(json!(1))
        };
        let answer = ready(answer_of(&handler, call()));
        assert_eq!(
            answer,
            Answer::Failed(
                Failure::permanent("the step's handler panicked: the card reader caught fire")
                    .maybe_applied()
            )
        );
    }

    #[test]
    fn a_handler_that_panics_before_returning_its_future_fails_its_attempt_too() {
        struct Eager;
        impl Handler for Eager {
            fn call(&self, _: Call) -> keel_effects::HandlerFuture {
                let code = 7;
                panic!("refused to start: code {code}");
            }
        }
        let answer = ready(answer_of(&Eager, call()));
        assert!(
            matches!(&answer, Answer::Failed(Failure { kind: FailureKind::Permanent, reason, .. })
                if reason.ends_with("refused to start: code 7")),
            "{answer:?}"
        );
    }

    #[test]
    fn a_handler_that_answers_is_passed_through() {
        let handler = |_: Call| async { Ok::<_, keel_effects::Failure>(json!({ "id": 3 })) };
        let answer: Answer = ready(answer_of(&handler, call()));
        assert_eq!(
            answer,
            Answer::Succeeded {
                value: json!({ "id": 3 })
            }
        );
    }
}
