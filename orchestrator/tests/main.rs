//! keel-orchestrator's behaviour tests, one file per behaviour, linked into one test
//! binary: each links tokio, reqwest, axum, rusqlite and tokio-postgres, and a binary per
//! file would cost minutes of linking and gigabytes of disk. Run one behaviour with
//! `cargo test -p keel-orchestrator --test behaviour deadline_turns_a_slow_saga_back`.
//!
//! No mocks: real SQLite files, a real HTTP server on 127.0.0.1, the real in-process
//! bus, and PostgreSQL when `KEEL_PG_URL` names a server.

mod common;

mod a_panic_fails_its_attempt_and_the_shard_goes_on;
mod a_permanent_answer_after_a_timeout_leaves_the_step_maybe_applied;
mod a_second_orchestrator_on_one_store_is_refused_naming_the_holder;
mod a_start_past_the_timer_bound_is_refused;
mod a_store_outage_orphans_no_saga;
mod a_store_written_before_the_index_is_read_whole;
mod an_answer_too_big_for_a_record_fails_its_step_after_one_call;
mod an_undecodable_record_does_not_stop_recovery;
mod cancel_compensates_what_was_done_and_is_refused_past_the_pivot;
mod cancelled_timers_are_freed_when_cancelled;
mod deadline_turns_a_slow_saga_back;
mod failing_compensation_parks_the_saga_for_an_operator;
mod http_step_sends_one_idempotency_key_across_retries;
mod list_filters_by_status_and_type_and_status_reads_the_store;
mod request_reply_step_waits_for_the_reply_on_the_bus;
mod restart_resumes_unfinished_sagas_under_the_same_intent_ids;
mod saga_compensates_completed_steps_in_reverse_order;
mod saga_completes_its_steps_in_order_and_its_timeline_shows_each_step;
mod saga_runs_against_postgresql;
mod starting_a_saga_id_twice_is_refused;
mod transitions_are_published_on_the_bus;
mod wait_and_status_answer_at_once_for_a_saga_at_rest;
