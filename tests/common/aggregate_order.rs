//! An order aggregate (place, pay, ship, cancel) shared by the `aggregate_*` tests, with
//! its upcaster chain, a strategy for commands and a driver that runs it live.
//!
//! Included with `#[path = "common/aggregate_order.rs"] mod order;`.

#![allow(dead_code)] // Each test crate uses a different part.

use keel::aggregate::{Aggregate, AggregateReducer, AggregateState, DomainEvent};
use keel::upcast::UpcasterChain;
use keel::{
    CausationId, Cause, CorrelationId, Envelope, EventType, Input, Intent, IntentKind, Payload,
    Reducer, StreamId, Timestamp,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Status {
    #[default]
    New,
    Placed,
    Paid,
    Shipped,
    Cancelled,
}

/// The state of one order, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Order {
    pub(crate) status: Status,
    pub(crate) total_cents: u64,
    pub(crate) currency: String,
    pub(crate) paid_cents: u64,
    pub(crate) refunded_cents: u64,
    pub(crate) carrier: Option<String>,
    pub(crate) cancel_reason: Option<String>,
}

/// What an order can be asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum OrderCommand {
    Place { total_cents: u64, currency: String },
    Pay { cents: u64 },
    Ship { carrier: String },
    Cancel { reason: String },
}

/// What happened to an order. `Placed` is at schema version 2: version 1 had no
/// currency, and every order was in euros.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum OrderEvent {
    Placed { total_cents: u64, currency: String },
    Paid { cents: u64 },
    Refunded { cents: u64 },
    Shipped { carrier: String },
    Cancelled { reason: String },
}

/// Why an order refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum OrderRejection {
    AlreadyPlaced,
    NotPlaced,
    ZeroAmount,
    Underpaid { expected: u64, offered: u64 },
    AlreadyPaid,
    NotPaid,
    AlreadyShipped,
    Cancelled,
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> EventType {
        EventType::from_static(match self {
            Self::Placed { .. } => "order.placed",
            Self::Paid { .. } => "order.paid",
            Self::Refunded { .. } => "order.refunded",
            Self::Shipped { .. } => "order.shipped",
            Self::Cancelled { .. } => "order.cancelled",
        })
    }

    fn schema_version(&self) -> u32 {
        match self {
            Self::Placed { .. } => 2,
            _ => 1,
        }
    }
}

impl Aggregate for Order {
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Rejection = OrderRejection;

    fn decide_into(
        &self,
        command: &OrderCommand,
        events: &mut Vec<OrderEvent>,
    ) -> Result<(), OrderRejection> {
        use OrderCommand as C;
        use OrderRejection as R;
        use Status as S;
        match (self.status, command) {
            (S::Cancelled, _) => return Err(R::Cancelled),
            (S::New, C::Place { total_cents: 0, .. }) => return Err(R::ZeroAmount),
            (
                S::New,
                C::Place {
                    total_cents,
                    currency,
                },
            ) => events.push(OrderEvent::Placed {
                total_cents: *total_cents,
                currency: currency.clone(),
            }),
            (_, C::Place { .. }) => return Err(R::AlreadyPlaced),
            (S::New, C::Pay { .. } | C::Cancel { .. }) => return Err(R::NotPlaced),
            (S::Placed, C::Pay { cents: 0 }) => return Err(R::ZeroAmount),
            (S::Placed, C::Pay { cents }) if *cents < self.total_cents => {
                return Err(R::Underpaid {
                    expected: self.total_cents,
                    offered: *cents,
                });
            }
            (S::Placed, C::Pay { cents }) => {
                // An overpayment is taken in full and the difference refunded at once.
                events.push(OrderEvent::Paid { cents: *cents });
                if *cents > self.total_cents {
                    let cents = cents - self.total_cents;
                    events.push(OrderEvent::Refunded { cents });
                }
            }
            (S::Paid | S::Shipped, C::Pay { .. }) => return Err(R::AlreadyPaid),
            (S::New | S::Placed, C::Ship { .. }) => return Err(R::NotPaid),
            (S::Paid, C::Ship { carrier }) => events.push(OrderEvent::Shipped {
                carrier: carrier.clone(),
            }),
            (S::Shipped, C::Ship { .. } | C::Cancel { .. }) => return Err(R::AlreadyShipped),
            (S::Placed | S::Paid, C::Cancel { reason }) => {
                events.push(OrderEvent::Cancelled {
                    reason: reason.clone(),
                });
                let kept = self.paid_cents - self.refunded_cents;
                if kept > 0 {
                    events.push(OrderEvent::Refunded { cents: kept });
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Placed {
                total_cents,
                currency,
            } => {
                self.status = Status::Placed;
                self.total_cents = *total_cents;
                self.currency.clone_from(currency);
            }
            OrderEvent::Paid { cents } => {
                self.status = Status::Paid;
                self.paid_cents += cents;
            }
            OrderEvent::Refunded { cents } => self.refunded_cents += cents,
            OrderEvent::Shipped { carrier } => {
                self.status = Status::Shipped;
                self.carrier = Some(carrier.clone());
            }
            OrderEvent::Cancelled { reason } => {
                self.status = Status::Cancelled;
                self.cancel_reason = Some(reason.clone());
            }
        }
    }
}

/// Version 1 of `order.placed` had no currency: every order was in euros.
fn placed_v1_to_v2(mut payload: Value) -> Result<Value, String> {
    let fields = payload
        .as_object_mut()
        .ok_or("an `order.placed` payload is an object")?;
    fields.insert("currency".into(), json!("EUR"));
    Ok(payload)
}

/// The chain that reads every order event ever written.
pub(crate) fn chain() -> UpcasterChain {
    UpcasterChain::builder()
        .current("order.placed", 2)
        .step("order.placed", 1, placed_v1_to_v2)
        .current("order.paid", 1)
        .current("order.refunded", 1)
        .current("order.shipped", 1)
        .current("order.cancelled", 1)
        .build()
        .expect("the order chain is consistent")
}

/// Rewrites a stored `order.placed` in euros as version 1 would have written it, so that
/// reading it back must go through the upcaster. Other envelopes are returned unchanged.
pub(crate) fn as_written_by_version_1(mut envelope: Envelope) -> Envelope {
    if envelope.event_type.as_str() != "order.placed" {
        return envelope;
    }
    if let Payload::Json(Value::Object(fields)) = &mut envelope.payload
        && fields.get("currency") == Some(&json!("EUR"))
    {
        fields.remove("currency");
        envelope.schema_version = 1;
    }
    envelope
}

/// Any command, with amounts drawn so that payments often match the total.
pub(crate) fn command() -> impl Strategy<Value = OrderCommand> {
    let cents = prop::sample::select(vec![0_u64, 100, 250, 400]);
    prop_oneof![
        1 => (cents.clone(), prop::sample::select(vec!["EUR", "USD"])).prop_map(
            |(total_cents, currency)| OrderCommand::Place {
                total_cents,
                currency: currency.to_owned(),
            }
        ),
        3 => cents.prop_map(|cents| OrderCommand::Pay { cents }),
        1 => "[a-z]{1,8}".prop_map(|carrier| OrderCommand::Ship { carrier }),
        1 => "\\PC{0,12}".prop_map(|reason| OrderCommand::Cancel { reason }),
    ]
}

/// The stream every test order lives in.
pub(crate) fn stream() -> StreamId {
    StreamId::from_static("order-42")
}

/// The adapter under test.
pub(crate) fn reducer() -> AggregateReducer<Order> {
    AggregateReducer::new("shop").expect("the source is not empty")
}

/// The `step`-th command of the order's workflow, with a time and cause that derive from
/// the step number.
pub(crate) fn input(step: usize, command: OrderCommand) -> Input<OrderCommand> {
    let step = step as u64;
    let cause = Cause::new(
        CorrelationId::from_u128(42),
        CausationId::from_u128(u128::from(step) + 1),
    );
    let now = Timestamp::from_unix_millis(1_700_000_000_000 + 1_000 * step as i64);
    Input::new(cause, now, command)
}

/// Runs the commands live through the adapter; returns the final state and every intent.
pub(crate) fn run_live(commands: &[OrderCommand]) -> (AggregateState<Order>, Vec<Intent>) {
    let reducer = reducer();
    let mut state = AggregateState::new(stream());
    let mut intents = Vec::new();
    for (step, command) in commands.iter().enumerate() {
        reducer.reduce_into(&mut state, input(step, command.clone()), &mut intents);
    }
    (state, intents)
}

/// The envelopes the intents ask to persist, in order.
pub(crate) fn persisted(intents: &[Intent]) -> Vec<Envelope> {
    intents
        .iter()
        .flat_map(|intent| match &intent.kind {
            IntentKind::Persist { events, .. } => events.clone(),
            other => panic!("an aggregate emits only Persist intents, got {other:?}"),
        })
        .collect()
}

/// The value as canonical JSON bytes, for byte-for-byte comparisons.
pub(crate) fn bytes(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("test values serialise")
}
