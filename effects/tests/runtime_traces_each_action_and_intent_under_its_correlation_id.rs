//! Every action the runtime reduces and every intent it carries out gets a span carrying
//! the workflow's correlation id, so that one workflow can be followed through the logs
//! even while others run beside it.

use crate::common::{spans, workflow};

use std::sync::Arc;
use std::time::Duration;

use keel_core::{CausationId, Cause, CorrelationId, Input, Timestamp};
use keel_effects::runtime::Runtime;
use keel_effects::{Call, InstanceId};
use serde_json::json;
use spans::{CapturedSpan, Spans};
use workflow::{Emit, Msg, Workflow, effect};

/// A command of workflow `correlation` asking for one custom effect.
fn one_effect(correlation: u128, causation: u128) -> Input<Msg> {
    let cause = Cause::new(
        CorrelationId::from_u128(correlation),
        CausationId::from_u128(causation),
    );
    Input::new(
        cause,
        Timestamp::UNIX_EPOCH,
        Msg::Command(vec![Emit::Effect(0)]),
    )
}

fn of_instance<'a>(spans: &'a [CapturedSpan], instance: &str) -> Vec<&'a CapturedSpan> {
    spans
        .iter()
        .filter(|span| span.field("instance") == Some(instance))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_action_and_the_intent_it_emits_each_get_a_span_with_the_correlation_id() {
    let (spans, _installed) = Spans::install();
    let runtime = Runtime::builder(Workflow)
        .custom(
            effect(),
            Arc::new(|_call: Call| async { Ok(json!("done")) }),
        )
        .build()
        .expect("a valid runtime");
    // Two workflows side by side, so that a span with the wrong correlation id shows.
    let workflows = [("a", 1_u128, 10_u128), ("b", 2, 20)];
    for (instance, correlation, causation) in workflows {
        let instance = InstanceId::from(instance);
        runtime
            .spawn(instance.clone(), Default::default())
            .expect("a fresh instance");
        runtime
            .send(&instance, one_effect(correlation, causation))
            .await
            .expect("sent");
    }
    let report = runtime.shutdown(Duration::from_secs(5)).await;
    assert!(
        report.instances.iter().all(|(_, log)| log.succeeded == 1),
        "{report:?}"
    );

    let actions = spans.named("keel.action");
    let intents = spans.named("keel.intent");
    for (instance, correlation, causation) in workflows {
        let command = Cause::new(
            CorrelationId::from_u128(correlation),
            CausationId::from_u128(causation),
        );
        let correlation = command.correlation.to_string();

        // The command, then the outcome of the intent it emitted.
        let actions = of_instance(&actions, instance);
        assert_eq!(actions.len(), 2, "{instance}: {actions:?}");
        for action in &actions {
            assert_eq!(
                action.field("correlation"),
                Some(correlation.as_str()),
                "{action:?}"
            );
        }
        let command_causation = command.causation.to_string();
        assert_eq!(
            actions[0].field("causation"),
            Some(command_causation.as_str())
        );

        let intents = of_instance(&intents, instance);
        let [intent] = intents.as_slice() else {
            panic!("{instance}: expected one intent span, got {intents:?}");
        };
        assert_eq!(intent.field("correlation"), Some(correlation.as_str()));
        let intent_id = command.intent_id(0).to_string();
        assert_eq!(intent.field("intent"), Some(intent_id.as_str()));
        assert_eq!(intent.field("family"), Some("custom"));

        // No span of this workflow is opened inside a span of another: a span entered
        // across an await would leak into whatever the task ran next.
        for span in actions.iter().chain(&intents) {
            for outer in spans.ancestors(span) {
                assert_eq!(
                    outer.field("correlation"),
                    Some(correlation.as_str()),
                    "{span:?} inside {outer:?}"
                );
            }
        }
    }
}
