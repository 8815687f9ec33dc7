//! The engine simulation over many seeds: whole partitions (Raft + journal + engine) under
//! crashes, network faults and leadership changes, checked for exactly-once effects of
//! acknowledged commands, agreeing committed logs, equal engine states and liveness. A failure
//! prints the seed and the `sluice-sim engine` command that replays it.

use sluice_tools::engine_sim::{EngineSimBug, EngineSimConfig, run_config, run_seed};

/// Seeds per run of this test, and fault-phase steps (virtual ms) per seed.
const SEEDS: u64 = 16;
const FAULT_STEPS: u64 = 8_000;

#[test]
fn seeds_pass_every_check() {
    let mut failures = Vec::new();
    for seed in 0..SEEDS {
        match run_seed(seed, FAULT_STEPS) {
            Ok(report) => println!("{report}"),
            Err(failure) => failures.push(failure.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn one_seed_replays_exactly() {
    let first = run_seed(7, 3_000).expect("seed 7 passes");
    let second = run_seed(7, 3_000).expect("seed 7 passes");
    assert_eq!(first, second);
    assert!(first.instances_completed > 0 && first.crashes > 0);
}

#[test]
fn checks_catch_injected_bugs() {
    for bug in EngineSimBug::ALL {
        let caught = (0..8).find_map(|seed| {
            let mut config = EngineSimConfig::new(seed);
            config.fault_steps = 4_000;
            config.calm_steps_max = 10_000;
            config.bug = Some(bug);
            run_config(config).err()
        });
        let failure = caught.unwrap_or_else(|| panic!("no seed caught {bug:?}"));
        println!(
            "{bug:?} caught: {}",
            failure.reason.lines().next().unwrap_or("")
        );
        assert!(failure.replay.contains(&format!("--bug {bug:?}")));
    }
}
