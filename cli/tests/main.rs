//! The `keel` tool's behaviour tests, in one binary: it runs against stores that the
//! example program filled (in this process) and against a live orchestrator.

mod common;

mod keel_lists_and_purges_instances_through_the_index;
mod keel_never_prints_a_store_password;
mod keel_reads_a_store_an_example_filled;
mod keel_steers_a_parked_saga_through_a_running_orchestrator;
