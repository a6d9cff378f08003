//! The reducers the benchmark runs, besides the trivial ones in `main.rs`.

use keel_core::aggregate::{Aggregate, DomainEvent};
use keel_core::{Effect, EventType, Machine};
use serde::{Deserialize, Serialize};

/// Traffic-light states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Light {
    Red,
    Green,
    Yellow,
}

/// The traffic light's one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tick;

/// The same traffic light as the hand-written one, declared: one timer per entry.
pub(crate) fn traffic_light() -> Machine<Light, Tick> {
    Machine::builder("traffic_light", Light::Red)
        .state(Light::Red, |s| {
            s.on_entry(Effect::timer_after("tick", 30_000))
                .on(Tick)
                .to(Light::Green)
        })
        .state(Light::Green, |s| {
            s.on_entry(Effect::timer_after("tick", 3_000))
                .on(Tick)
                .to(Light::Yellow)
        })
        .state(Light::Yellow, |s| {
            s.on_entry(Effect::timer_after("tick", 20_000))
                .on(Tick)
                .to(Light::Red)
        })
        .build()
        .expect("the benchmark's machine is valid")
}

/// An order slot that is placed, paid, shipped and closed, over and over.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Order {
    status: Status,
    total_cents: u64,
    paid_cents: u64,
    shipped: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
enum Status {
    #[default]
    Open,
    Placed,
    Paid,
    Shipped,
}

/// Commands to an order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OrderCommand {
    Place { total_cents: u64 },
    Pay { cents: u64 },
    Ship,
    Close,
}

impl OrderCommand {
    /// The `i`-th command of the endless place, pay, ship, close cycle.
    pub(crate) fn nth(i: u64) -> Self {
        match i % 4 {
            0 => Self::Place {
                total_cents: 4_200 + i % 100,
            },
            1 => Self::Pay { cents: 1 << 20 },
            2 => Self::Ship,
            _ => Self::Close,
        }
    }
}

/// What happened to an order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) enum OrderEvent {
    Placed { total_cents: u64 },
    Paid { cents: u64 },
    Shipped,
    Closed,
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> EventType {
        EventType::from_static(match self {
            Self::Placed { .. } => "order.placed",
            Self::Paid { .. } => "order.paid",
            Self::Shipped => "order.shipped",
            Self::Closed => "order.closed",
        })
    }
}

/// Why an order refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    WrongStatus,
}

impl Aggregate for Order {
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Rejection = Rejection;

    fn decide_into(
        &self,
        command: &OrderCommand,
        events: &mut Vec<OrderEvent>,
    ) -> Result<(), Rejection> {
        match (self.status, *command) {
            (Status::Open, OrderCommand::Place { total_cents }) => {
                events.push(OrderEvent::Placed { total_cents })
            }
            (Status::Placed, OrderCommand::Pay { cents }) => events.push(OrderEvent::Paid {
                cents: cents.min(self.total_cents),
            }),
            (Status::Paid, OrderCommand::Ship) => events.push(OrderEvent::Shipped),
            (Status::Shipped, OrderCommand::Close) => events.push(OrderEvent::Closed),
            _ => return Err(Rejection::WrongStatus),
        }
        Ok(())
    }

    fn apply(&mut self, event: &OrderEvent) {
        match *event {
            OrderEvent::Placed { total_cents } => {
                self.status = Status::Placed;
                self.total_cents = total_cents;
                self.paid_cents = 0;
            }
            OrderEvent::Paid { cents } => {
                self.status = Status::Paid;
                self.paid_cents = cents;
            }
            OrderEvent::Shipped => {
                self.status = Status::Shipped;
                self.shipped += 1;
            }
            OrderEvent::Closed => self.status = Status::Open,
        }
    }
}
