//! `sluice-sim`: runs the deterministic Raft simulation of one partition over many seeds.
//!
//! ```text
//! sluice-sim [--seeds N] [--first-seed S] [--seed S] [--steps N] [--replicas N] [--bug NAME] [--json]
//! ```
//!
//! Each seed runs a partition's replicas (real Raft cores over real journals on in-memory crash
//! disks) through a fault phase and a calm phase, checking Raft's safety rules after every step
//! (see `sluice_log::sim::cluster`). A failure prints the seed and the command that replays it;
//! the exit status is 1 if any seed failed. `--json` prints one object with `seeds`, `failures`,
//! `failed_seeds`, `commits_total`, `acknowledged_total`, `crashes_total`, `torn_flushes_total`,
//! `snapshots_taken_total`, `snapshots_installed_total`, `transfers_total`, `elapsed_s`.
//! `--bug AckUnflushed|VoteIgnoresLog|StaleFlushReport` plants a known bug in every replica, to see the checkers
//! catch it.
//!
//! ```text
//! sluice-sim engine [--seeds N] [--first-seed S] [--seed S] [--steps N] [--partitions N] [--bug NAME] [--json]
//! ```
//!
//! `engine` runs whole partitions with the workflow engine instead (see
//! `sluice_tools::engine_sim`): Raft, journals and engines on three simulated brokers under
//! faults, with a BPMN workload, checked for exactly-once effects of acknowledged commands,
//! equal engine states and liveness. `--steps` is the fault phase in virtual ms; a calm phase
//! follows until the workload drains. It prints one summary line per seed. `--bug
//! RespondBeforeCommit|ProcessBeforeCaughtUp|KeepSpeculativeState` plants a driver bug.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sluice_log::raft::InjectedBug;
use sluice_log::sim::cluster::{SimConfig, Simulation};

const USAGE: &str = "usage: sluice-sim [--seeds N] [--first-seed S] [--seed S] [--steps N] \
                     [--replicas N] [--bug AckUnflushed|VoteIgnoresLog|StaleFlushReport] [--json]";

/// Replicas a simulated partition may have.
const REPLICAS_MAX: u64 = 9;

#[derive(Debug)]
struct Args {
    first_seed: u64,
    seeds: u64,
    steps: u64,
    replicas: u64,
    bug: Option<InjectedBug>,
    json: bool,
}

fn number(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<u64> {
    let value = args
        .next()
        .with_context(|| format!("{flag} needs a value"))?;
    value
        .parse()
        .with_context(|| format!("{flag}: not a number: {value}"))
}

fn parse_args() -> Result<Args> {
    let defaults = SimConfig::new(0);
    let mut parsed = Args {
        first_seed: 0,
        seeds: 100,
        steps: defaults.steps,
        replicas: defaults.replicas,
        bug: None,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seeds" => parsed.seeds = number(&mut args, "--seeds")?,
            "--first-seed" => parsed.first_seed = number(&mut args, "--first-seed")?,
            "--seed" => {
                parsed.first_seed = number(&mut args, "--seed")?;
                parsed.seeds = 1;
            }
            "--steps" => parsed.steps = number(&mut args, "--steps")?,
            "--replicas" => parsed.replicas = number(&mut args, "--replicas")?,
            "--bug" => {
                let name = args.next().context("--bug needs a name")?;
                parsed.bug = Some(match name.as_str() {
                    "AckUnflushed" => InjectedBug::AckUnflushed,
                    "VoteIgnoresLog" => InjectedBug::VoteIgnoresLog,
                    "StaleFlushReport" => InjectedBug::StaleFlushReport,
                    other => bail!(
                        "unknown bug {other:?}; known: AckUnflushed, VoteIgnoresLog, StaleFlushReport"
                    ),
                });
            }
            "--json" => parsed.json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if parsed.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if !(1..=REPLICAS_MAX).contains(&parsed.replicas) {
        bail!("--replicas must be 1 to {REPLICAS_MAX}");
    }
    if parsed.steps <= defaults.calm_steps {
        bail!(
            "--steps must exceed the {} calm steps at the end of a run",
            defaults.calm_steps
        );
    }
    Ok(parsed)
}

#[derive(Debug, Serialize)]
struct Summary {
    seeds: u64,
    failures: u64,
    failed_seeds: Vec<u64>,
    commits_total: u64,
    acknowledged_total: u64,
    crashes_total: u64,
    torn_flushes_total: u64,
    snapshots_taken_total: u64,
    snapshots_installed_total: u64,
    transfers_total: u64,
    elapsed_s: f64,
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("engine") {
        return engine::main(std::env::args().skip(2));
    }
    let args = parse_args()?;
    let started = Instant::now();
    let mut summary = Summary {
        seeds: args.seeds,
        failures: 0,
        failed_seeds: Vec::new(),
        commits_total: 0,
        acknowledged_total: 0,
        crashes_total: 0,
        torn_flushes_total: 0,
        snapshots_taken_total: 0,
        snapshots_installed_total: 0,
        transfers_total: 0,
        elapsed_s: 0.0,
    };
    for seed in args.first_seed..args.first_seed + args.seeds {
        let mut config = SimConfig::new(seed);
        config.steps = args.steps;
        config.replicas = args.replicas;
        config.bug = args.bug;
        match Simulation::new(config).run() {
            Ok(report) => {
                summary.commits_total += report.commits;
                summary.acknowledged_total += report.acknowledged;
                summary.crashes_total += report.crashes;
                summary.torn_flushes_total += report.torn_flushes;
                summary.snapshots_taken_total += report.snapshots_taken;
                summary.snapshots_installed_total += report.snapshots_installed;
                summary.transfers_total += report.transfers;
            }
            Err(failure) => {
                eprintln!("{failure}");
                summary.failures += 1;
                summary.failed_seeds.push(seed);
            }
        }
    }
    summary.elapsed_s = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} seeds, {} failed{}; {} proposals acknowledged, {} commit advances, {} crashes \
             ({} during a flush), {} snapshots taken, {} installed from a leader, {} leadership \
             transfers asked; {:.1} s",
            summary.seeds,
            summary.failures,
            if summary.failed_seeds.is_empty() {
                String::new()
            } else {
                format!(" ({:?})", summary.failed_seeds)
            },
            summary.acknowledged_total,
            summary.commits_total,
            summary.crashes_total,
            summary.torn_flushes_total,
            summary.snapshots_taken_total,
            summary.snapshots_installed_total,
            summary.transfers_total,
            summary.elapsed_s
        );
    }
    if summary.failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// `sluice-sim engine`: the simulation of partitions with the workflow engine.
mod engine {
    use std::time::Instant;

    use anyhow::{Context, Result, bail};
    use serde::Serialize;
    use sluice_tools::engine_sim::{EngineSimBug, EngineSimConfig, run_config};

    use super::number;

    const USAGE: &str = "usage: sluice-sim engine [--seeds N] [--first-seed S] [--seed S] \
                         [--steps N] [--partitions N] [--bug RespondBeforeCommit|\
                         ProcessBeforeCaughtUp|KeepSpeculativeState] [--json]";

    /// Partitions a simulated cluster may have.
    const PARTITIONS_MAX: u64 = 16;

    #[derive(Debug, Default, Serialize)]
    struct Summary {
        seeds: u64,
        failures: u64,
        failed_seeds: Vec<u64>,
        entries_committed_total: u64,
        instances_completed_total: u64,
        jobs_completed_total: u64,
        messages_correlated_total: u64,
        crashes_total: u64,
        snapshots_taken_total: u64,
        snapshots_installed_total: u64,
        leader_changes_total: u64,
        elapsed_s: f64,
    }

    pub(super) fn main(mut args: impl Iterator<Item = String>) -> Result<()> {
        let defaults = EngineSimConfig::new(0);
        let (mut first_seed, mut seeds, mut steps) = (0, 20, defaults.fault_steps);
        let mut partitions = u64::from(defaults.partitions);
        let (mut bug, mut json) = (None, false);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--seeds" => seeds = number(&mut args, "--seeds")?,
                "--first-seed" => first_seed = number(&mut args, "--first-seed")?,
                "--seed" => {
                    first_seed = number(&mut args, "--seed")?;
                    seeds = 1;
                }
                "--steps" => steps = number(&mut args, "--steps")?,
                "--partitions" => partitions = number(&mut args, "--partitions")?,
                "--bug" => {
                    let name = args.next().context("--bug needs a name")?;
                    bug = Some(
                        EngineSimBug::from_name(&name)
                            .with_context(|| format!("unknown bug {name:?}\n{USAGE}"))?,
                    );
                }
                "--json" => json = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(());
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        if seeds == 0 {
            bail!("--seeds must be at least 1");
        }
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            bail!("--partitions must be 1 to {PARTITIONS_MAX}");
        }
        let started = Instant::now();
        let mut summary = Summary {
            seeds,
            ..Summary::default()
        };
        for seed in first_seed..first_seed + seeds {
            let mut config = EngineSimConfig::new(seed);
            config.fault_steps = steps;
            config.partitions = u32::try_from(partitions).expect("checked above");
            config.bug = bug;
            match run_config(config) {
                Ok(report) => {
                    if !json {
                        println!("{report}");
                    }
                    summary.entries_committed_total += report.entries_committed;
                    summary.instances_completed_total += report.instances_completed;
                    summary.jobs_completed_total += report.jobs_completed;
                    summary.messages_correlated_total += report.messages_correlated;
                    summary.crashes_total += report.crashes;
                    summary.snapshots_taken_total += report.snapshots_taken;
                    summary.snapshots_installed_total += report.snapshots_installed;
                    summary.leader_changes_total += report.leader_changes;
                }
                Err(failure) => {
                    eprintln!("{failure}");
                    summary.failures += 1;
                    summary.failed_seeds.push(seed);
                }
            }
        }
        summary.elapsed_s = started.elapsed().as_secs_f64();
        if json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            println!(
                "{} seeds, {} failed{}; {} entries committed, {} instances completed, {} jobs \
                 completed, {} messages correlated, {} crashes, {} snapshots taken, {} \
                 installed, {} leader changes; {:.1} s",
                summary.seeds,
                summary.failures,
                if summary.failed_seeds.is_empty() {
                    String::new()
                } else {
                    format!(" ({:?})", summary.failed_seeds)
                },
                summary.entries_committed_total,
                summary.instances_completed_total,
                summary.jobs_completed_total,
                summary.messages_correlated_total,
                summary.crashes_total,
                summary.snapshots_taken_total,
                summary.snapshots_installed_total,
                summary.leader_changes_total,
                summary.elapsed_s
            );
        }
        if summary.failures > 0 {
            std::process::exit(1);
        }
        Ok(())
    }
}
