//! Deployment governance as a keel saga: ask the policy engine (a request on the bus),
//! deploy, verify health. A policy violation stops it before anything is deployed; a
//! failed deploy or health check rolls the deployment back.
//!
//! The deployment target is a real HTTP server on 127.0.0.1 in this program, with a
//! durable ledger of its effects by idempotency key.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example deployment_governance -- --sagas 5 --fail-rate 0.2
//! ```
//!
//! Options: `--sagas N`, `--fail-rate P`, `--seed S`, `--db PATH`, `--resume`. The
//! program and the sagas are in the `keel-demo` crate (`demo/src`); this file picks which.

fn main() -> std::process::ExitCode {
    keel_demo::main(keel_demo::Example::DeploymentGovernance)
}
