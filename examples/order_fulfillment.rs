//! Order fulfilment as a keel saga: place the order, charge the payment, reserve the
//! inventory, ship. A refused allocation refunds the payment and cancels the order; the
//! shipment is the pivot, after which the saga only goes forward.
//!
//! The payment, inventory, order and shipping services are a real HTTP server on
//! 127.0.0.1 in this program, keeping a durable ledger of every effect by idempotency
//! key; kill the program with SIGKILL and rerun it with `--resume --db PATH` to see every
//! saga finish with no effect applied twice.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example order_fulfillment -- --sagas 5 --fail-rate 0.2
//! ```
//!
//! Options: `--sagas N`, `--fail-rate P`, `--seed S`, `--db PATH`, `--resume`. The
//! program and the sagas are in the `keel-demo` crate (`demo/src`); this file picks which.

fn main() -> std::process::ExitCode {
    keel_demo::main(keel_demo::Example::OrderFulfillment)
}
