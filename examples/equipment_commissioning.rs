//! Equipment commissioning as a keel saga: validate the equipment (a request on the bus,
//! answered by a validation service), configure its parameters, run its tests, activate
//! it. A failed validation stops it before anything happens; a failed test reverts the
//! configuration; activation is the pivot.
//!
//! The equipment service is a real HTTP server on 127.0.0.1 in this program, with a
//! durable ledger of its effects by idempotency key.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example equipment_commissioning -- --sagas 5 --fail-rate 0.2
//! ```
//!
//! Options: `--sagas N`, `--fail-rate P`, `--seed S`, `--db PATH`, `--resume`. The
//! program and the sagas are in the `keel-demo` crate (`demo/src`); this file picks which.

fn main() -> std::process::ExitCode {
    keel_demo::main(keel_demo::Example::EquipmentCommissioning)
}
