//! Equipment monitoring as a user's own reducer, not a saga, run durably by keel: each
//! piece of equipment is commissioned by an HTTP call, checked on a timer, released
//! after three good checks, and parked for an operator with an alarm after two failed
//! checks in a row. Calls that fail for a while are retried after a backoff under the
//! same idempotency key.
//!
//! The equipment service is a real HTTP server on 127.0.0.1 in this program, with a
//! durable ledger of its effects by idempotency key; the store is a SQLite file.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example equipment_monitoring -- --instances 1000 --fail-rate 0.2
//! ```
//!
//! Options: `--instances N`, `--fail-rate P`, `--seed S`, `--db PATH`, `--resume`. Kill
//! it with SIGKILL and run it again with `--resume --db PATH`: every instance goes on.
//! The reducer is `keel_demo::monitoring` (`demo/src/monitoring.rs`); the program around
//! it is `demo/src/monitoring_run.rs`.

fn main() -> std::process::ExitCode {
    keel_demo::monitoring_run::main_with(std::env::args().skip(1))
}
