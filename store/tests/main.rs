//! keel-store's behaviour tests, one file per behaviour, linked into one test binary.
//!
//! One binary rather than one per file: each of these links tokio, rusqlite and
//! tokio-postgres, and a dozen separate binaries cost minutes of linking and gigabytes of
//! disk (enough to fill CI's). The contract tests run against every backend this build
//! has (memory, SQLite, PostgreSQL when `KEEL_PG_URL` is set) from here, which is why the
//! backends are features of this crate and not crates of their own. Run one behaviour
//! with `cargo test -p keel-store --test behaviour store_matches_the_reference_model`.

mod common;

mod store_keeps_an_index_of_unfinished_instances;
mod store_lets_one_writer_lock_it_at_a_time;
mod store_loads_aggregates_from_snapshots_and_upcast_events;
mod store_matches_the_reference_model;
mod store_projection_applies_each_event_exactly_once;
mod store_projection_follows_new_commits_live;
mod store_refuses_an_event_id_repeated_with_other_content;
mod store_refuses_bad_input_with_typed_errors;
mod store_says_whether_trying_again_may_help;
mod store_subscription_catches_up_then_follows_live;
mod store_survives_sigkill;
mod store_trims_a_log_stream_before_a_position;
