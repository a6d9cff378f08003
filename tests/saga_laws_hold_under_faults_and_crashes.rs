//! The saga laws, checked over 10,000 simulated cases: random saga definitions (stages,
//! parallel groups, pivots, deadlines, retry policies, timeouts), services that fail,
//! time out, lose requests or answers, answer twice or late, keep working after a
//! timeout and answer a retry `409 key in use`, answer more than a record holds, or
//! panic; closures that panic; a store that goes away for a while; cancellations; and
//! crashes of the orchestrator before and after its commits. See `common/saga_sim.rs`.
//!
//! 1. every saga ends Completed, Compensated, or NeedsIntervention with a reason;
//! 2. the compensated steps are exactly the completed ones, in reverse completion order;
//! 3. a step that never started is never compensated; after the pivot nothing is;
//! 4. each step's effect is applied once per intent id, however many retries,
//!    redeliveries and crashes, and every effect the services applied is kept by a
//!    Completed saga, undone by a Compensated one, or named by a parked one (its step
//!    of unknown outcome, or its compensation parked); no record is refused by the store;
//! 5. the same seed gives the same history, byte for byte;
//! 6. rebuilding every saga from its log gives the live state.
//!
//! Then an operator retries, skips or resolves every parked saga with the services
//! healthy again (and the panicking closures fixed), and each must end cleanly; after a
//! retry, law 4 holds as at any clean end.
//!
//! A failing case prints its seed; `KEEL_SIM_SEED=N cargo test --test laws
//! a_single_seed_reruns_alone -- --nocapture` reruns it alone.

use std::collections::BTreeMap;

use crate::common::saga_sim::{World, check_after_intervention, check_laws};

/// Cases in the normal test run, split over shards that run in parallel.
const CASES: u64 = 10_000;
const SHARDS: u64 = 4;

#[derive(Debug, Default)]
struct Tally {
    outcomes: BTreeMap<&'static str, u64>,
    crashes: u64,
    interventions: BTreeMap<&'static str, u64>,
}

fn run_case(seed: u64, tally: &mut Tally) -> Result<(), String> {
    let mut world = World::new(seed);
    // The simulation's services and closures panic on purpose, and the orchestrator
    // must catch every such panic: one that gets out breaks the case, with its seed.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_case(&mut world, seed, tally)
    }))
    .unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|t| (*t).to_owned()))
            .unwrap_or_default();
        Err(format!("a panic got out of the orchestrator: {text}"))
    });
    if result.is_err() && std::env::var("KEEL_SIM_SEED").is_ok() {
        eprintln!("history:\n{}", world.readable_history());
    }
    result
}

fn check_case(world: &mut World, seed: u64, tally: &mut Tally) -> Result<(), String> {
    world.run()?;
    let broken = check_laws(world);
    if !broken.is_empty() {
        return Err(broken.join("\n"));
    }
    for state in world.engine.sagas() {
        *tally.outcomes.entry(state.status.name()).or_default() += 1;
    }
    tally.crashes += u64::from(world.crashes);

    let mut again = World::new(seed);
    again.run()?;
    if again.history() != world.history() {
        return Err("the same seed gave a different history".into());
    }

    let given = world.intervene();
    world.drain()?;
    let broken = check_after_intervention(world, &given);
    if !broken.is_empty() {
        return Err(broken.join("\n"));
    }
    for (_, command) in &given {
        *tally.interventions.entry(command.name()).or_default() += 1;
    }
    Ok(())
}

fn shard(index: u64) {
    let mut tally = Tally::default();
    for seed in (index..CASES).step_by(SHARDS as usize) {
        if let Err(broken) = run_case(seed, &mut tally) {
            panic!(
                "seed {seed} broke a saga law:\n{broken}\nrerun it alone: KEEL_SIM_SEED={seed} cargo test --test laws a_single_seed_reruns_alone -- --nocapture"
            );
        }
    }
    eprintln!("shard {index}: {tally:?}");
    // The cases must reach every kind of end, or the laws were checked on too little.
    for outcome in ["completed", "compensated", "needs_intervention"] {
        assert!(
            tally.outcomes.get(outcome).copied().unwrap_or(0) >= 20,
            "too few `{outcome}` in {tally:?}"
        );
    }
    assert!(tally.crashes >= 100, "too few crashes: {tally:?}");
    for command in ["retry", "skip", "resolve"] {
        assert!(
            tally.interventions.get(command).copied().unwrap_or(0) >= 5,
            "too few `{command}` in {tally:?}"
        );
    }
}

#[test]
fn saga_laws_hold_for_cases_0_mod_4() {
    shard(0);
}

#[test]
fn saga_laws_hold_for_cases_1_mod_4() {
    shard(1);
}

#[test]
fn saga_laws_hold_for_cases_2_mod_4() {
    shard(2);
}

#[test]
fn saga_laws_hold_for_cases_3_mod_4() {
    shard(3);
}

#[test]
fn a_single_seed_reruns_alone() {
    let Ok(seed) = std::env::var("KEEL_SIM_SEED") else {
        return; // nothing asked: the shards cover every seed
    };
    let seed: u64 = seed.parse().expect("KEEL_SIM_SEED is a number");
    let world = World::new(seed);
    eprintln!("seed {seed}: {:#?}", world.plan);
    let mut tally = Tally::default();
    if let Err(broken) = run_case(seed, &mut tally) {
        panic!("seed {seed} broke a saga law:\n{broken}");
    }
}
