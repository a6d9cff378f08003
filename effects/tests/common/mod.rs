//! Fixtures shared by keel-effects' behaviour tests: reference stores, a small workflow
//! reducer, and a real HTTP server on 127.0.0.1.

pub(crate) mod http_server;
pub(crate) mod stores;
pub(crate) mod workflow;
