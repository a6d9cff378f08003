//! The example sagas of keel, and the program each example runs.
//!
//! `cargo run --release --example order_fulfillment` (or `equipment_commissioning`,
//! `deployment_governance`) calls [`main`] with its [`Example`]: it opens a SQLite store
//! (a fresh file in a temporary directory unless `--db PATH`), starts the example's HTTP
//! services on 127.0.0.1 with their durable ledger beside the store, runs `--sagas N`
//! sagas through the orchestrator, prints each one's timeline (or a progress line and
//! the throughput for many), and ends with a summary counted from the store and the
//! services' ledger:
//!
//! ```text
//! summary: sagas=5 completed=3 compensated=2 needs_intervention=0 unfinished=0 duplicate_effects=0
//! ```
//!
//! Kill it with SIGKILL at any point and run it again with `--resume --db PATH`: every
//! saga finishes, and no service applies any step twice.
//!
//! # Layout
//!
//! - [`sagas`]: the three saga definitions and the bus responders they ask.
//! - [`machines`]: the traffic light, a declarative state machine.
//! - [`services`]: the HTTP services the sagas call.
//! - [`ledger`]: the services' durable record of effects, by idempotency key.
//! - [`run`]: the program: store, services, orchestrator, sagas, report.
//! - [`report`]: timelines, the progress line, the summary line.
//! - [`args`]: the command line.

pub mod args;
pub mod ledger;
pub mod machines;
pub mod report;
pub mod run;
pub mod sagas;
pub mod services;

pub use run::main;
pub use sagas::Example;
