//! The deterministic Raft simulation over many seeds (see `sluice_log::sim::cluster`).
//!
//! `SLUICE_SIM_SEEDS` (default 500) sets how many seeds run, from `SLUICE_SIM_FIRST_SEED`
//! (default 0). A failure prints its seed and the command that replays it.

use sluice_log::raft::InjectedBug;
use sluice_log::sim::cluster::{SimConfig, Simulation, run_seed};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
    })
}

#[test]
fn many_seeds_keep_every_invariant_and_make_progress() {
    let seeds = env_u64("SLUICE_SIM_SEEDS", 500);
    let first = env_u64("SLUICE_SIM_FIRST_SEED", 0);
    let mut failures = Vec::new();
    let mut commits = 0;
    let mut acknowledged = 0;
    let mut crashes = 0;
    let mut torn = 0;
    let mut installed = 0;
    let mut stale = 0;
    for seed in first..first + seeds {
        match run_seed(seed, 4000) {
            Ok(report) => {
                commits += report.commits;
                acknowledged += report.acknowledged;
                crashes += report.crashes;
                torn += report.torn_flushes;
                installed += report.snapshots_installed;
                stale += report.stale_flush_reports;
            }
            Err(failure) => {
                eprintln!("{failure}");
                failures.push(failure.seed);
            }
        }
    }
    eprintln!(
        "{seeds} seeds: {acknowledged} proposals acknowledged, {commits} commit advances, \
         {crashes} crashes ({torn} during a flush), {installed} snapshots installed from a leader, \
         {stale} flush reports overtaken by a truncation"
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
    assert!(crashes > seeds / 2, "crashes happen ({crashes})");
    assert!(torn > 0, "some crashes cut a flush");
    assert!(installed > 0, "some followers catch up by snapshot");
    assert!(
        stale > 0 || seeds < 100,
        "some flush reports reach Raft after a truncation"
    );
}

/// The checkers bite: with a known bug in every replica, some seed fails. Returns the first
/// failure, searching at most `SEEDS_FOR_A_BUG` seeds.
fn first_catch(bug: InjectedBug) -> Option<String> {
    (0..SEEDS_FOR_A_BUG).find_map(|seed| {
        let mut config = SimConfig::new(seed);
        config.bug = Some(bug);
        Simulation::new(config).run().err().map(|f| f.to_string())
    })
}

const SEEDS_FOR_A_BUG: u64 = 400;

#[test]
fn acknowledging_unflushed_entries_is_caught() {
    let failure = first_catch(InjectedBug::AckUnflushed)
        .expect("the simulator must catch followers acknowledging unflushed entries");
    eprintln!("AckUnflushed caught: {failure}");
}

#[test]
fn voting_for_a_stale_log_is_caught() {
    let failure = first_catch(InjectedBug::VoteIgnoresLog)
        .expect("the simulator must catch votes for candidates with stale logs");
    eprintln!("VoteIgnoresLog caught: {failure}");
}
