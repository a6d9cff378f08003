//! keel's behaviour and property tests of the laws, one file per behaviour, linked into
//! one test binary so that linking them costs seconds, not minutes. Run one behaviour with
//! `cargo test --test laws aggregate_replay_equals_live`.

mod common;

mod aggregate_loading_bad_stored_events_is_a_typed_error;
mod aggregate_reducer_is_deterministic_and_its_paths_agree;
mod aggregate_rejects_commands_with_typed_errors;
mod aggregate_replay_equals_live;
mod core_stays_pure;
mod durable_driver_laws_hold_under_faults_and_crashes;
mod envelope_decoder_returns_only_typed_errors;
mod envelope_survives_the_cloudevents_round_trip;
mod reducer_paths_agree_and_are_deterministic;
mod saga_laws_hold_under_faults_and_crashes;
mod state_machine_exports_mermaid_and_dot;
mod state_machine_ignores_events_without_an_enabled_transition;
mod state_machine_paths_agree;
mod state_machine_rejects_inconsistent_definitions;
mod state_machine_runs_exit_transition_and_entry_effects_in_order;
mod state_machine_stays_put_on_an_internal_transition;
mod timer_queue_behaves_like_its_reference_model;
mod topic_patterns_obey_their_laws;
mod upcast_chains_reach_the_current_version;
