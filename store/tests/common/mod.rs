//! Fixtures shared by keel-store's behaviour tests: every backend opened fresh (the
//! library's `testing` module, shared with keel-effects' tests) and child processes to
//! kill.

pub(crate) mod child;

pub(crate) use keel_store::testing as stores;
