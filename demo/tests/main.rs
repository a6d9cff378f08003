//! The example programs' behaviour tests, one file per behaviour, in one binary. They run
//! the real programs (`keel-example NAME`): real SQLite files, real HTTP services on
//! 127.0.0.1, real processes killed with SIGKILL.

mod common;

mod an_example_killed_with_sigkill_finishes_on_resume;
mod equipment_monitoring_killed_with_sigkill_goes_on_on_resume;
mod every_example_ends_with_a_clean_summary;
