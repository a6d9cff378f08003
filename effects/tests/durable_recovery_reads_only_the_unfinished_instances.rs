//! The durable shell's recovery follows what is unfinished, not all history: on every
//! store backend, a restart over many finished instances and a few unfinished ones reads
//! the unfinished ones' records only (through the store's index of instances), resumes
//! each, and still refuses the finished ids; any instance can be rebuilt from its log as
//! of a record or a time.

use crate::common::stores::Backend;

use std::sync::Arc;

use keel_core::driver::{AsOf, Durable, Status};
use keel_core::{EventType, Input, Intent, IntentKind, Outcome, Reducer};
use keel_effects::durable::{DurableRuntime, rebuild};
use keel_effects::{Call, HandlerFuture};
use serde::{Deserialize, Serialize};

/// Makes one call when told to go, and finishes with its answer; until then it waits.
struct Job;

#[derive(Clone, Serialize, Deserialize)]
enum Event {
    Wait,
    Go,
    Done(Outcome),
}

impl From<Outcome> for Event {
    fn from(outcome: Outcome) -> Self {
        Self::Done(outcome)
    }
}

impl Reducer for Job {
    type State = bool;
    type Action = Input<Event>;

    fn reduce_into(&self, done: &mut bool, action: Input<Event>, out: &mut Vec<Intent>) {
        match action.body {
            Event::Wait => {}
            Event::Go => {
                action.cause.emitter(out).emit(IntentKind::Custom {
                    name: EventType::from_static("test.job"),
                    payload: serde_json::Value::Null,
                });
            }
            Event::Done(_) => *done = true,
        }
    }
}

impl Durable for Job {
    type Event = Event;

    fn kind(&self) -> &str {
        "job"
    }

    fn status(&self, done: &bool) -> Status {
        if *done {
            Status::Finished
        } else {
            Status::Running
        }
    }
}

fn answer(_call: Call) -> HandlerFuture {
    Box::pin(async { Ok(serde_json::json!("done")) })
}

const FINISHED: usize = 60;
const WAITING: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_the_logs_of_unfinished_instances_only() {
    for backend in Backend::available().await {
        let mut test = backend.open().await;
        let name = test.name;
        let start = |store| {
            DurableRuntime::builder(Job, store)
                .custom(EventType::from_static("test.job"), Arc::new(answer))
                .start()
        };
        let (runtime, _) = start(Arc::clone(&test.store))
            .await
            .expect("the shell starts");
        for n in 0..FINISHED {
            let id = format!("done-{n}").into();
            runtime.start(&id, false, Event::Go).await.expect("a start");
            let status = runtime.wait(&id).await.expect("wait");
            assert_eq!(status, Status::Finished, "[{name}]");
        }
        for n in 0..WAITING {
            let id = format!("waiting-{n}").into();
            runtime
                .start(&id, false, Event::Wait)
                .await
                .expect("a start");
        }
        runtime.shutdown().await;
        // Each finished job wrote 2 records, each waiting one 1.
        let head = test.store.head().await.expect("the head");
        assert_eq!(head, (2 * FINISHED + WAITING) as u64, "[{name}]");

        test.restart().await;
        let (runtime, recovered) = start(Arc::clone(&test.store)).await.expect("a restart");
        assert_eq!(
            (recovered.resumed, recovered.records),
            (WAITING, WAITING),
            "[{name}] {recovered:?}"
        );
        // The waiting ones go on; the finished ones stay taken.
        let id = "waiting-0".into();
        runtime
            .send(&id, Event::Go)
            .await
            .expect("a waiting job goes on");
        assert_eq!(runtime.wait(&id).await.expect("wait"), Status::Finished);
        let again = runtime.start(&"done-7".into(), false, Event::Go).await;
        assert!(
            matches!(
                again,
                Err(keel_effects::Error::Core(
                    keel_core::Error::InstanceExists { .. }
                ))
            ),
            "[{name}] {again:?}"
        );
        runtime.shutdown().await;

        // Point in time: `done-3` waited after its first record, and ended after its
        // second; a rebuild reads its log without running it.
        let id = "done-3".into();
        let then = rebuild(test.store.as_ref(), Job, &id, AsOf::Version(1)).await;
        let then = then.expect("a rebuild as of record 1");
        assert_eq!((then.instance.state, then.status), (false, Status::Running));
        assert_eq!(
            then.instance.in_flight.len(),
            1,
            "[{name}] its call was out"
        );
        let now = rebuild(test.store.as_ref(), Job, &id, AsOf::Latest).await;
        let now = now.expect("a rebuild as of now");
        assert_eq!((now.instance.state, now.version), (true, 2));
        let at = rebuild(test.store.as_ref(), Job, &id, AsOf::Time(then.time)).await;
        assert_eq!(at.expect("a rebuild as of a time").version, 1);
        let never = rebuild(test.store.as_ref(), Job, &"never".into(), AsOf::Latest).await;
        assert!(
            matches!(
                never,
                Err(keel_effects::Error::Core(
                    keel_core::Error::UnknownInstance { .. }
                ))
            ),
            "[{name}] {never:?}"
        );
        test.cleanup().await;
    }
}
