//! Fixtures shared by keel-effects' behaviour tests: reference stores, a small workflow
//! reducer, a real HTTP server on 127.0.0.1, a subscriber that captures spans, and child
//! processes to kill.

pub(crate) mod child;
pub(crate) mod http_server;
pub(crate) mod spans;
pub(crate) mod stores;
pub(crate) mod workflow;
