//! Event-sourced aggregates: decide what a command means, apply what happened.
//!
//! An [`Aggregate`] is the state of one entity (an order, an account) rebuilt from the
//! events of its stream. It answers a command in two pure steps:
//!
//! - [`decide`](Aggregate::decide): given the current state, either the events that the
//!   command causes or a typed rejection. Nothing changes yet.
//! - [`apply`](Aggregate::apply): one event moves the state on. Applying cannot fail: an
//!   event is a fact that already happened.
//!
//! Because the state is only ever changed by `apply`, the state a live run reaches equals
//! [`fold`]ing its stored events, and equals resuming from a [`Snapshot`] and folding the
//! events after it. `tests/aggregate_replay_equals_live.rs` checks both laws.
//!
//! # Layout
//!
//! - this module: [`Aggregate`], [`DomainEvent`] (an event that can be stored), [`fold`].
//! - [`Versioned`] and [`Snapshot`]: a state with its stream version, applied with
//!   gap checks, loaded from stored envelopes through an
//!   [`UpcasterChain`](crate::upcast::UpcasterChain).
//! - [`AggregateReducer`] and [`AggregateState`]: any aggregate as a
//!   [`Reducer`](crate::Reducer) whose accepted commands become one
//!   [`Persist`](crate::IntentKind::Persist) intent.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::EventType;

mod adapter;
mod versioned;

pub use adapter::{AggregateReducer, AggregateState, Refusal};
pub use versioned::{Snapshot, Versioned, decode};

/// The state of one event-sourced entity, with its decision and evolution functions.
///
/// Both functions are pure: no clock, no randomness, no I/O. What varies arrives in the
/// command. A rejection is a value of the aggregate's own type, usually an enum deriving
/// `thiserror::Error`, never a panic.
///
/// `decide_into` is the one to implement; it appends to a buffer the caller reuses, so a
/// hot loop that decides many commands allocates nothing for the events list.
/// [`decide`](Self::decide) wraps it for code that wants a fresh `Vec`.
///
/// ```
/// use keel_core::aggregate::{Aggregate, DomainEvent, fold};
/// use keel_core::EventType;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Default, PartialEq)]
/// enum Order {
///     #[default]
///     New,
///     Placed { total_cents: u64 },
///     Paid,
///     Shipped,
///     Cancelled,
/// }
///
/// enum OrderCommand {
///     Place { total_cents: u64 },
///     Pay { cents: u64 },
///     Ship,
///     Cancel,
/// }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// #[serde(tag = "type", rename_all = "snake_case")]
/// enum OrderEvent {
///     Placed { total_cents: u64 },
///     Paid { cents: u64 },
///     Shipped,
///     Cancelled,
/// }
///
/// #[derive(Debug, PartialEq, thiserror::Error)]
/// enum OrderRejection {
///     #[error("the order was already placed")]
///     AlreadyPlaced,
///     #[error("the order has not been placed")]
///     NotPlaced,
///     #[error("the order is already paid")]
///     AlreadyPaid,
///     #[error("the order costs {expected} cents, not {offered}")]
///     WrongAmount { expected: u64, offered: u64 },
///     #[error("the order must be paid before it ships")]
///     NotPaid,
///     #[error("the order has shipped")]
///     AlreadyShipped,
///     #[error("the order was cancelled")]
///     Cancelled,
/// }
///
/// impl Aggregate for Order {
///     type Command = OrderCommand;
///     type Event = OrderEvent;
///     type Rejection = OrderRejection;
///
///     fn decide_into(
///         &self,
///         command: &OrderCommand,
///         events: &mut Vec<OrderEvent>,
///     ) -> Result<(), OrderRejection> {
///         use OrderCommand as C;
///         use OrderRejection as R;
///         let event = match (self, command) {
///             (Order::Cancelled, _) => return Err(R::Cancelled),
///             (Order::New, C::Place { total_cents }) => {
///                 OrderEvent::Placed { total_cents: *total_cents }
///             }
///             (_, C::Place { .. }) => return Err(R::AlreadyPlaced),
///             (Order::New, C::Pay { .. } | C::Cancel) => return Err(R::NotPlaced),
///             (Order::Placed { total_cents }, C::Pay { cents }) if cents == total_cents => {
///                 OrderEvent::Paid { cents: *cents }
///             }
///             (Order::Placed { total_cents }, C::Pay { cents }) => {
///                 return Err(R::WrongAmount { expected: *total_cents, offered: *cents });
///             }
///             (Order::Paid | Order::Shipped, C::Pay { .. }) => return Err(R::AlreadyPaid),
///             (Order::New | Order::Placed { .. }, C::Ship) => return Err(R::NotPaid),
///             (Order::Paid, C::Ship) => OrderEvent::Shipped,
///             (Order::Shipped, C::Ship | C::Cancel) => return Err(R::AlreadyShipped),
///             (Order::Placed { .. } | Order::Paid, C::Cancel) => OrderEvent::Cancelled,
///         };
///         events.push(event);
///         Ok(())
///     }
///
///     fn apply(&mut self, event: &OrderEvent) {
///         *self = match event {
///             OrderEvent::Placed { total_cents } => Order::Placed { total_cents: *total_cents },
///             OrderEvent::Paid { .. } => Order::Paid,
///             OrderEvent::Shipped => Order::Shipped,
///             OrderEvent::Cancelled => Order::Cancelled,
///         };
///     }
/// }
///
/// // Storing events needs a type name per event; see `DomainEvent`.
/// impl DomainEvent for OrderEvent {
///     fn event_type(&self) -> EventType {
///         EventType::from_static(match self {
///             OrderEvent::Placed { .. } => "order.placed",
///             OrderEvent::Paid { .. } => "order.paid",
///             OrderEvent::Shipped => "order.shipped",
///             OrderEvent::Cancelled => "order.cancelled",
///         })
///     }
/// }
///
/// let mut order = Order::default();
/// let mut history = Vec::new();
/// for command in [OrderCommand::Place { total_cents: 4200 }, OrderCommand::Pay { cents: 4200 }] {
///     for event in order.decide(&command)? {
///         order.apply(&event);
///         history.push(event);
///     }
/// }
/// assert_eq!(order, Order::Paid);
/// assert_eq!(order.decide(&OrderCommand::Pay { cents: 4200 }), Err(OrderRejection::AlreadyPaid));
/// assert_eq!(fold::<Order>(&history), order); // replay equals live
/// # Ok::<(), OrderRejection>(())
/// ```
pub trait Aggregate {
    /// What the aggregate is asked to do.
    type Command;
    /// What happened to it; the only way its state changes.
    type Event;
    /// Why a command was refused: a typed domain answer, not an error of the machinery.
    type Rejection;

    /// Decides what `command` means in the current state: appends the events it causes
    /// to `events` (leaving what the buffer held untouched), or refuses it.
    ///
    /// A rejecting implementation should push nothing; callers discard whatever a
    /// rejected decision pushed. Accepting with no events (an idempotent repeat) is
    /// allowed.
    fn decide_into(
        &self,
        command: &Self::Command,
        events: &mut Vec<Self::Event>,
    ) -> Result<(), Self::Rejection>;

    /// Decides what `command` means, returning the events in a fresh `Vec`.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Rejection> {
        let mut events = Vec::new();
        self.decide_into(command, &mut events)?;
        Ok(events)
    }

    /// Moves the state on by one event. Total: an event is a fact, so applying one never
    /// fails; an aggregate that meets an event it cannot explain keeps its state.
    fn apply(&mut self, event: &Self::Event);
}

/// An event that can be stored: it serialises to the JSON payload of an
/// [`Envelope`](crate::Envelope) and names its type.
///
/// The payload is the event's own serde form, decoded with the same serde form, so an
/// enum works best internally tagged (`#[serde(tag = "type")]`): each payload is then a
/// flat JSON object that upcaster steps can edit field by field.
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The schema version new events are written with, unless
    /// [`schema_version`](Self::schema_version) says otherwise for a variant. Raise it
    /// (and register an upcaster step) when the payload's shape changes.
    const SCHEMA_VERSION: u32 = 1;

    /// The stored type of this event, such as `order.placed`. Return
    /// [`EventType::from_static`] literals: they cost no allocation.
    fn event_type(&self) -> EventType;

    /// The schema version of this event's payload. Override it when the variants of an
    /// event enum evolve separately, so that each matches the current version its type
    /// has in the [`UpcasterChain`](crate::upcast::UpcasterChain).
    fn schema_version(&self) -> u32 {
        Self::SCHEMA_VERSION
    }
}

/// Replays `events` in order onto a fresh aggregate.
///
/// Stream versions are not checked here; use [`Versioned`] for events read from a store.
pub fn fold<'a, A>(events: impl IntoIterator<Item = &'a A::Event>) -> A
where
    A: Aggregate + Default,
    A::Event: 'a,
{
    let mut state = A::default();
    for event in events {
        state.apply(event);
    }
    state
}
