//! `keel-example NAME [OPTIONS]`: runs one of the example programs by name, like
//! `cargo run --example NAME -- [OPTIONS]` does, for tests and scripts that want one
//! binary for all three.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_default();
    if name == keel_demo::monitoring_run::NAME {
        return keel_demo::monitoring_run::main_with(args);
    }
    let Some(example) = keel_demo::Example::from_name(&name) else {
        let mut names: Vec<&str> = keel_demo::Example::ALL.iter().map(|e| e.name()).collect();
        names.push(keel_demo::monitoring_run::NAME);
        eprintln!(
            "usage: keel-example {} [OPTIONS]\n{}",
            names.join("|"),
            keel_demo::args::USAGE
        );
        return ExitCode::from(2);
    };
    keel_demo::run::main_with(example, args)
}
