//! The three example sagas, and the bus responders two of them ask.
//!
//! - **Order fulfilment**: place the order, charge the payment, reserve the inventory,
//!   ship (the pivot). A refused allocation refunds the payment and cancels the order.
//! - **Equipment commissioning**: validate the equipment (request-reply on the bus),
//!   configure its parameters, run its tests, activate it (the pivot). A failure
//!   reverts the configuration.
//! - **Deployment governance**: ask the policy engine (request-reply on the bus),
//!   deploy, verify health. A violation stops it before anything happens; a failed
//!   deploy or health check rolls the deployment back.

use std::sync::Arc;
use std::time::Duration;

use keel_core::{Envelope, EventId, EventType, HttpRequest, Payload, Timestamp};
use keel_effects::notify::{Bus, SubscribeOptions};
use keel_orchestrator::{RetryPolicy, SagaDefinition, Step, StepAction, StepContext};
use serde_json::{Value, json};

use crate::behaviour::{Behaviour, unit};

/// One of the example programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Example {
    /// `order_fulfillment`.
    OrderFulfillment,
    /// `equipment_commissioning`.
    EquipmentCommissioning,
    /// `deployment_governance`.
    DeploymentGovernance,
}

impl Example {
    /// Every example.
    pub const ALL: [Self; 3] = [
        Self::OrderFulfillment,
        Self::EquipmentCommissioning,
        Self::DeploymentGovernance,
    ];

    /// The example's name, as `cargo run --example` takes it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::OrderFulfillment => "order_fulfillment",
            Self::EquipmentCommissioning => "equipment_commissioning",
            Self::DeploymentGovernance => "deployment_governance",
        }
    }

    /// The example called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|example| example.name() == name)
    }

    /// Its saga type.
    pub const fn saga_type(self) -> &'static str {
        match self {
            Self::OrderFulfillment => "order.fulfillment",
            Self::EquipmentCommissioning => "equipment.commissioning",
            Self::DeploymentGovernance => "deployment.governance",
        }
    }

    /// The prefix of its saga ids: `order-17`.
    pub const fn id_prefix(self) -> &'static str {
        match self {
            Self::OrderFulfillment => "order",
            Self::EquipmentCommissioning => "equipment",
            Self::DeploymentGovernance => "deployment",
        }
    }

    /// The input of its `n`-th saga.
    pub fn input(self, n: u64) -> Value {
        match self {
            Self::OrderFulfillment => {
                json!({ "customer": format!("customer-{}", n % 97), "items": 1 + n % 4, "cents": 1_000 + (n * 137) % 9_000 })
            }
            Self::EquipmentCommissioning => {
                json!({ "equipment": format!("pump-{n}"), "site": format!("site-{}", n % 5), "rpm": 1_200 + n % 600 })
            }
            Self::DeploymentGovernance => {
                json!({ "service": format!("svc-{}", n % 13), "version": format!("1.{}.{}", n / 10, n % 10) })
            }
        }
    }

    /// Its saga definition, calling the services at `base` (`http://127.0.0.1:<port>`).
    pub fn definition(self, base: &str) -> SagaDefinition {
        let base: Arc<str> = base.into();
        let built = match self {
            Self::OrderFulfillment => SagaDefinition::builder(self.saga_type())
                .step(call(&base, "place-order", "orders", "place", |ctx| json!({ "customer": ctx.input()["customer"], "items": ctx.input()["items"] }))
                    .compensate(undo(&base, "orders", "cancel", |ctx| json!({ "order": ctx.own_result()["body"]["id"] }))))
                .step(call(&base, "charge-payment", "payments", "charge", |ctx| json!({ "order": ctx.result("place-order")["body"]["id"], "cents": ctx.input()["cents"] }))
                    .compensate(undo(&base, "payments", "refund", |ctx| json!({ "charge": ctx.own_result()["body"]["id"], "cents": ctx.input()["cents"] }))))
                .step(call(&base, "reserve-inventory", "inventory", "reserve", |ctx| json!({ "order": ctx.result("place-order")["body"]["id"], "items": ctx.input()["items"] }))
                    .compensate(undo(&base, "inventory", "release", |ctx| json!({ "reservation": ctx.own_result()["body"]["id"] }))))
                .step(call(&base, "ship", "shipping", "ship", |ctx| json!({ "order": ctx.result("place-order")["body"]["id"], "reservation": ctx.result("reserve-inventory")["body"]["id"] })).pivot())
                .deadline_ms(60_000)
                .build(),
            Self::EquipmentCommissioning => SagaDefinition::builder(self.saga_type())
                .step(
                    Step::new("validate-equipment", |ctx| {
                        StepAction::request("equipment.validate", "equipment.validation.requested", json!({ "saga": ctx.saga().as_str(), "equipment": ctx.input()["equipment"] }), 2_000)
                    })
                    .check(|reply| match reply["data"]["valid"].as_bool() {
                        Some(true) => Ok(()),
                        _ => Err(format!("the equipment failed validation: {}", reply["data"]["finding"])),
                    })
                    .retry(RetryPolicy::exponential().attempts(3).first_delay(Duration::from_millis(50)))
                    .timeout_ms(5_000),
                )
                .step(call(&base, "configure", "equipment", "configure", |ctx| json!({ "equipment": ctx.input()["equipment"], "rpm": ctx.input()["rpm"] }))
                    .compensate(undo(&base, "equipment", "revert", |ctx| json!({ "configuration": ctx.own_result()["body"]["id"] }))))
                .step(call(&base, "run-tests", "equipment", "test", |ctx| json!({ "equipment": ctx.input()["equipment"], "configuration": ctx.result("configure")["body"]["id"] })))
                .step(call(&base, "activate", "equipment", "activate", |ctx| json!({ "equipment": ctx.input()["equipment"] })).pivot())
                .build(),
            Self::DeploymentGovernance => SagaDefinition::builder(self.saga_type())
                .step(
                    Step::new("evaluate-policy", |ctx| {
                        StepAction::request("policy.evaluate", "policy.evaluation.requested", json!({ "saga": ctx.saga().as_str(), "service": ctx.input()["service"], "version": ctx.input()["version"] }), 2_000)
                    })
                    .check(|reply| match reply["data"]["allowed"].as_bool() {
                        Some(true) => Ok(()),
                        _ => Err(format!("the policy forbids it: {}", reply["data"]["violation"])),
                    })
                    .retry(RetryPolicy::exponential().attempts(3).first_delay(Duration::from_millis(50)))
                    .timeout_ms(5_000),
                )
                .step(call(&base, "deploy", "deployments", "apply", |ctx| json!({ "service": ctx.input()["service"], "version": ctx.input()["version"] }))
                    .compensate(undo(&base, "deployments", "rollback", |ctx| json!({ "deployment": ctx.own_result()["body"]["id"] }))))
                .step(call(&base, "verify-health", "deployments", "verify", |ctx| json!({ "deployment": ctx.result("deploy")["body"]["id"] })))
                .build(),
        };
        // The definitions above are fixed and valid: the example sagas' own tests
        // build every one of them.
        built.unwrap_or_else(|e| panic!("example saga `{}` is invalid: {e}", self.name()))
    }

    /// Starts the bus responders the saga asks (none for order fulfilment).
    pub fn spawn_responders(self, bus: &Bus, behaviour: Behaviour) -> Result<(), String> {
        let (pattern, answer): (&str, Answerer) = match self {
            Self::OrderFulfillment => return Ok(()),
            Self::EquipmentCommissioning => ("equipment.validate", |saga, b| {
                let valid = unit(&[saga, "validate"], b.seed) >= b.fail_rate;
                (
                    "equipment.validation.completed",
                    json!({ "valid": valid, "finding": if valid { "none" } else { "vibration out of range" } }),
                )
            }),
            Self::DeploymentGovernance => ("policy.evaluate", |saga, b| {
                let allowed = unit(&[saga, "policy"], b.seed) >= b.fail_rate;
                (
                    "policy.evaluation.completed",
                    json!({ "allowed": allowed, "violation": if allowed { "none" } else { "change freeze in effect" } }),
                )
            }),
        };
        let mut requests = bus
            .subscribe(
                pattern.parse().map_err(|e| format!("{e}"))?,
                SubscribeOptions::default(),
            )
            .map_err(|e| format!("the responder cannot subscribe: {e}"))?;
        let bus = bus.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                let Payload::Json(data) = &request.payload else {
                    continue;
                };
                let saga = data["saga"].as_str().unwrap_or_default();
                let (reply_type, body) = answer(saga, behaviour);
                let Ok(reply) = Envelope::builder(
                    EventId::derived(
                        keel_core::Cause::new(request.correlation_id, request.id.into())
                            .intent_id(0),
                        0,
                    ),
                    EventType::from_static(reply_type),
                    "example-responder",
                    Timestamp::UNIX_EPOCH,
                )
                .payload(Payload::Json(body))
                .build() else {
                    continue;
                };
                // A reply nobody waits for (the request timed out) is simply dropped.
                let _ = bus.reply(&request, reply).await;
            }
        });
        Ok(())
    }
}

/// How a responder answers a saga's request: the reply's type and data.
type Answerer = fn(&str, Behaviour) -> (&'static str, Value);

/// A step that POSTs to `base/service/operation` with `body` plus the saga's id.
fn call(
    base: &Arc<str>,
    name: &'static str,
    service: &'static str,
    operation: &'static str,
    body: impl Fn(&StepContext<'_>) -> Value + Send + Sync + 'static,
) -> Step {
    Step::new(name, request(base, service, operation, body))
        .retry(
            RetryPolicy::exponential()
                .attempts(5)
                .first_delay(Duration::from_millis(50))
                .max_delay(Duration::from_millis(2_000)),
        )
        .timeout_ms(5_000)
}

/// A compensation that POSTs to `base/service/operation`.
fn undo(
    base: &Arc<str>,
    service: &'static str,
    operation: &'static str,
    body: impl Fn(&StepContext<'_>) -> Value + Send + Sync + 'static,
) -> impl Fn(&StepContext<'_>) -> StepAction + Send + Sync + 'static {
    request(base, service, operation, body)
}

fn request(
    base: &Arc<str>,
    service: &'static str,
    operation: &'static str,
    body: impl Fn(&StepContext<'_>) -> Value + Send + Sync + 'static,
) -> impl Fn(&StepContext<'_>) -> StepAction + Send + Sync + 'static {
    let base = Arc::clone(base);
    move |ctx| {
        let mut json = body(ctx);
        json["saga"] = Value::String(ctx.saga().to_string());
        StepAction::http(
            HttpRequest::post(format!("{base}/{service}/{operation}"))
                .json(json)
                .timeout_ms(2_000),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_saga_builds_and_draws() {
        for example in Example::ALL {
            let definition = example.definition("http://127.0.0.1:1");
            assert_eq!(definition.saga_type().as_str(), example.saga_type());
            assert!(definition.to_mermaid().contains("completed"));
            assert_eq!(Example::from_name(example.name()), Some(example));
        }
    }
}
