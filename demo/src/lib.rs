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
//! - [`monitoring`]: equipment monitoring, a user's own reducer (not a saga) on the
//!   durable driver; `monitoring_run` is its program (feature `http`).
//! - [`behaviour`]: how services and responders decide (a fail rate, a seed).
//! - [`report`]: timelines, the progress line, the summary line.
//! - `services`: the HTTP services the sagas call (feature `http`).
//! - `ledger`: the services' durable record of effects, by idempotency key (feature
//!   `http`).
//! - `run`: the program: store, services, orchestrator, sagas, report (feature `http`).
//! - `args`: the command line (feature `http`).
//!
//! # Features
//!
//! `http` (on by default) is the program: the services (axum), the HTTP client that
//! calls them (keel-effects' `http`) and the ledger (SQLite). Without it the crate is
//! the definitions, the machine and the report, which is what the `keel` CLI draws and
//! prints, and builds no HTTP server, client or TLS.

#[cfg(feature = "http")]
pub mod args;
pub mod behaviour;
#[cfg(feature = "http")]
pub mod ledger;
pub mod machines;
pub mod monitoring;
#[cfg(feature = "http")]
pub mod monitoring_run;
pub mod report;
#[cfg(feature = "http")]
pub mod run;
pub mod sagas;
#[cfg(feature = "http")]
pub mod services;

#[cfg(feature = "http")]
pub use run::main;
pub use sagas::Example;
