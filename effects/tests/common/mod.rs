//! Fixtures shared by keel-effects' behaviour tests: a small workflow reducer, a real
//! HTTP server on 127.0.0.1, a subscriber that captures spans, and every store backend
//! (keel-store's `testing` module, the same the store's own tests use).

pub(crate) mod http_server;
pub(crate) mod spans;
pub(crate) mod workflow;

pub(crate) use keel_store::testing as stores;
