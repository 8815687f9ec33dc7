//! Scenario: a flush report reaches Raft after a truncation it predates.
//!
//! A follower's flush task completes a flush of entries from an old term and reads the journal's
//! durable index; before the driver hands that report to Raft, a new leader's append cuts those
//! entries and puts its own at the same indexes. Taken at face value the report vouches for the
//! new entries, which are not on disk, and the follower acknowledges them: a leader may commit
//! an entry that a crash then takes away. Reports carry the journal's truncation epoch, and Raft
//! keeps only what lies below every cut made since.
//!
//! The simulator flushes asynchronously (a report reaches Raft up to a few milliseconds after
//! its flush, and a cut waits for the flush in progress), and its checker compares what each
//! replica counts as durable with what its journal has synced. With the old behaviour planted
//! back (`InjectedBug::StaleFlushReport`) it must fail within `SEEDS` seeds; the same seeds pass
//! with the fix.

use sluice_log::raft::InjectedBug;
use sluice_log::sim::cluster::{SimConfig, SimReport, Simulation};

/// Seeds searched for the planted bug, and run without it.
const SEEDS: u64 = 100;

fn run(seed: u64, bug: Option<InjectedBug>) -> Result<SimReport, String> {
    let mut config = SimConfig::new(seed);
    config.bug = bug;
    Simulation::new(config).run().map_err(|f| f.to_string())
}

#[test]
fn taking_a_stale_flush_report_at_face_value_is_caught() {
    let caught = (0..SEEDS).find_map(|seed| {
        run(seed, Some(InjectedBug::StaleFlushReport))
            .err()
            .map(|failure| (seed, failure))
    });
    let (seed, failure) = caught.unwrap_or_else(|| {
        panic!("the simulator must catch stale flush reports within {SEEDS} seeds")
    });
    eprintln!("StaleFlushReport caught at seed {seed}: {failure}");
    assert!(
        failure.contains("durability: replica"),
        "caught by the durability rule, not by chance: {failure}"
    );
}

#[test]
fn the_same_seeds_pass_with_epochs_and_reports_do_go_stale() {
    let mut stale = 0;
    for seed in 0..SEEDS {
        let report = run(seed, None).unwrap_or_else(|failure| panic!("{failure}"));
        stale += report.stale_flush_reports;
    }
    assert!(
        stale > 0,
        "the runs must deliver reports that a truncation overtook, or they test nothing"
    );
    eprintln!("{SEEDS} seeds: {stale} flush reports reached Raft after a truncation");
}
