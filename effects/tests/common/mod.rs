//! Fixtures shared by keel-effects' behaviour tests: reference stores, a small workflow
//! reducer, a real HTTP server on 127.0.0.1, and a subscriber that captures spans.

pub(crate) mod http_server;
pub(crate) mod spans;
pub(crate) mod stores;
pub(crate) mod workflow;
