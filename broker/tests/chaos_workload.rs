//! Chaos with real processes: three brokers, three partitions, replication factor 3, a gRPC
//! workload through all three gateways, and a minute (`SLUICE_CHAOS_SECS`) of seeded faults.
//!
//! 1. The brokers start, `one_task.bpmn` is deployed, and the workload starts
//!    ([`workload`]): on each gateway, creators create instances (each with a `creation`
//!    variable naming it) and a worker activates and completes their jobs.
//! 2. Faults, drawn from the seed ([`schedule`]): one broker at a time is killed (`kill -9`,
//!    started again after 1–8 s) or frozen (SIGSTOP, SIGCONT after 1–6 s). After each, the test
//!    waits until that broker is ready and has caught up with every partition's leader, then
//!    leaves the cluster healthy for 2–6 s. So at most one broker is ever down, frozen or
//!    behind, and every partition keeps a quorum.
//! 3. Creations stop; the workers go on until the job of every acknowledged creation has been
//!    completed, then for a job timeout longer, so that a completion acknowledged but lost
//!    would bring its job back.
//! 4. The checks of [`checks`]: no creation refused by a gateway whose broker was live, every
//!    acknowledged creation's job completed, one instance per creation, no acknowledged
//!    completion lost, no job vanished. Then no broker log holds `panicked`, every partition
//!    still serves creations through every gateway, and every broker shuts down cleanly.
//!
//! The seed fixes the fault schedule (which broker, which fault, how long, the gaps), not how
//! the faults interleave with the workload: brokers and clients are real processes and tasks.
//! The test prints its seed and the command that replays the schedule:
//! `SLUICE_CHAOS_SEED=<seed> SLUICE_CHAOS_SECS=<n> cargo test --release -p sluice-broker --test
//! chaos_workload -- --nocapture`.

mod common;

#[path = "chaos_workload/checks.rs"]
mod checks;
#[path = "chaos_workload/schedule.rs"]
mod schedule;
#[path = "chaos_workload/workload.rs"]
mod workload;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Cluster, POLL, node_of};
use sluice_broker::dev::DevOptions;
use sluice_broker::partitioning::PartitionId;

use checks::Window;
use schedule::{FaultKind, Schedule, Settings};
use workload::Workload;

const PORT_OFFSET: u32 = 410;
const BROKERS: usize = 3;
const PARTITIONS: u32 = 3;
/// Bound of the waits on the cluster's start and on each broker's recovery.
const WAIT: Duration = Duration::from_mins(1);
/// Acknowledged creations each gateway must have served before the first fault.
const WARM_UP_CREATIONS: usize = 5;
/// Bound of the drain: every acknowledged creation's job completed after the faults.
const DRAIN_MAX: Duration = Duration::from_mins(4);
/// How long past the last acknowledged completion plus the job timeout the workers poll: the
/// engine times the job out when due, and a long poll takes up to two seconds to ask again.
const SWEEP_MARGIN: Duration = Duration::from_secs(5);

/// Prints the replay command when the test fails, whatever failed.
struct ReplayOnFailure(String);

impl Drop for ReplayOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "chaos_workload failed; replay its fault schedule with:\n    {}",
                self.0
            );
        }
    }
}

/// One fault as it happened.
#[derive(Debug, Clone, Copy)]
struct Injected {
    fault: schedule::Fault,
    /// When the broker was hurt and when its gateway could answer again.
    window: Window,
    /// When it was ready and caught up.
    recovered: Instant,
}

#[test]
fn chaos_workload() {
    let settings = Settings::from_env();
    let replay = settings.replay_command();
    println!(
        "chaos_workload: seed {} for {} s; replay with:\n    {replay}",
        settings.seed,
        settings.chaos.as_secs()
    );
    let _replay = ReplayOnFailure(replay.clone());

    let options = DevOptions {
        dir: None,
        brokers: u32::try_from(BROKERS).expect("few brokers"),
        partitions: PARTITIONS,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::create("chaos_workload", options);
    let origin = Instant::now()
        .checked_sub(cluster.elapsed())
        .expect("the cluster was created after the machine booted");
    for index in cluster.cluster_brokers() {
        cluster.spawn(index);
    }
    wait_settled(&cluster);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut deployer = common::serving::client(&runtime, PORT_OFFSET, 0);
    common::serving::deploy_one_task(&runtime, &mut deployer);
    drop(deployer);

    let mut workload = Workload::start(PORT_OFFSET, BROKERS);
    cluster.wait_until(
        &format!("{WARM_UP_CREATIONS} acknowledged creations through every gateway"),
        WAIT,
        || {
            workload.assert_running();
            let served = acknowledged_per_gateway(&workload);
            if served.iter().all(|&count| count >= WARM_UP_CREATIONS) {
                Ok(())
            } else {
                Err(format!("acknowledged per gateway: {served:?}"))
            }
        },
    );

    let chaos_started = Instant::now();
    let injected = inject_faults(&cluster, &mut workload, settings);
    let chaos_took = chaos_started.elapsed();
    cluster.note(&format!(
        "{} faults in {:.1} s; creations stop",
        injected.len(),
        chaos_took.as_secs_f64()
    ));

    workload.stop_creating();
    wait_settled(&cluster);
    drain(&cluster, &mut workload);
    let records = workload.stop();

    let windows: Vec<Window> = injected.iter().map(|fault| fault.window).collect();
    let verdict = checks::judge(&records, &windows, origin);
    let panics = panics_in_logs(&cluster);
    let mut report = vec![format!(
        "chaos_workload: seed {}, {} s of faults ({:.1} s with the last recovery), {:.1} s in all",
        settings.seed,
        settings.chaos.as_secs(),
        chaos_took.as_secs_f64(),
        origin.elapsed().as_secs_f64()
    )];
    report.push(describe_faults(&injected, origin));
    report.extend(checks::describe(&verdict.counts));
    report.push(format!("replay: {replay}"));
    println!("{}", report.join("\n  "));

    let mut problems = verdict.violations;
    if !panics.is_empty() {
        problems.push(format!(
            "broker logs hold panics:\n    {}",
            panics.join("\n    ")
        ));
    }
    if injected.is_empty() {
        problems.push("no fault was injected: the run tested nothing".to_owned());
    }
    if verdict.counts.completed_acknowledged == 0 {
        problems.push("no job was completed: the run tested nothing".to_owned());
    }
    assert!(
        problems.is_empty(),
        "{} broken rules:\n  {}\n(seed {}; replay: {replay})",
        problems.len(),
        problems.join("\n  "),
        settings.seed
    );

    common::serving::assert_still_serving(&cluster, &runtime, PORT_OFFSET);
    cluster.terminate_all();
    let panics = panics_in_logs(&cluster);
    assert!(
        panics.is_empty(),
        "broker logs hold panics after the shutdown:\n    {}",
        panics.join("\n    ")
    );
}

/// Acknowledged creations so far, per gateway.
fn acknowledged_per_gateway(workload: &Workload) -> Vec<usize> {
    workload.read(|records| {
        let mut served = vec![0; BROKERS];
        for creation in &records.creations {
            if creation.outcome.is_ok() {
                served[creation.gateway] += 1;
            }
        }
        served
    })
}

/// Waits until every partition has a leader all its live replicas follow.
fn wait_settled(cluster: &Cluster) {
    for partition_id in 1..=PARTITIONS {
        cluster.wait_until(
            &format!("partition {partition_id} to have a leader its replicas follow"),
            WAIT,
            || cluster.settled_leader(partition_id),
        );
    }
}

/// Sleeps for `duration`, failing the test at once if a broker exits or the workload panics.
fn sleep_watching(cluster: &Cluster, workload: &mut Workload, duration: Duration) {
    let until = Instant::now() + duration;
    loop {
        cluster.assert_no_exits();
        workload.assert_running();
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep(POLL.min(until - now));
    }
}

/// Draws faults from the schedule and injects them, one at a time, until the run's time is
/// spent; returns what was done. Every broker is running, continued and caught up at the end.
fn inject_faults(cluster: &Cluster, workload: &mut Workload, settings: Settings) -> Vec<Injected> {
    let started = Instant::now();
    let mut injected = Vec::new();
    for fault in Schedule::new(settings.seed, BROKERS) {
        sleep_watching(cluster, workload, fault.gap);
        if started.elapsed() >= settings.chaos {
            break;
        }
        cluster.note(&format!(
            "fault {}: {} broker {} for {:.3} s (after a {:.3} s gap)",
            injected.len() + 1,
            fault.kind.name(),
            fault.broker,
            fault.length.as_secs_f64(),
            fault.gap.as_secs_f64()
        ));
        let start = Instant::now();
        let end = match fault.kind {
            FaultKind::Kill => {
                cluster.kill(fault.broker);
                sleep_watching(cluster, workload, fault.length);
                cluster.spawn(fault.broker);
                wait_gateway_accepts(cluster, fault.broker)
            }
            FaultKind::Freeze => {
                cluster.pause(fault.broker);
                sleep_watching(cluster, workload, fault.length);
                cluster.resume(fault.broker);
                Instant::now()
            }
        };
        wait_caught_up(cluster, fault.broker);
        injected.push(Injected {
            fault,
            window: Window {
                broker: fault.broker,
                start,
                end,
            },
            recovered: Instant::now(),
        });
    }
    injected
}

/// Waits until broker `index`'s gateway accepts TCP connections; when it did.
fn wait_gateway_accepts(cluster: &Cluster, index: usize) -> Instant {
    let address = std::net::SocketAddr::from((
        [127, 0, 0, 1],
        sluice_broker::dev::port(
            sluice_broker::dev::GATEWAY_PORT,
            PORT_OFFSET,
            u32::try_from(index).expect("few brokers"),
        ),
    ));
    cluster.wait_until(
        &format!("broker {index}'s gateway to accept connections"),
        WAIT,
        || {
            TcpStream::connect_timeout(&address, POLL)
                .map(|_| Instant::now())
                .map_err(|error| format!("{address}: {error}"))
        },
    )
}

/// Waits until broker `index` is ready (every replica knows a leader), every partition has a
/// leader its live replicas follow, and `index`'s replicas have flushed what each leader had
/// committed once that was so.
fn wait_caught_up(cluster: &Cluster, index: usize) {
    cluster.wait_until(
        &format!("broker {index} to be ready"),
        WAIT,
        || match cluster.get(index, "/ready")? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("/ready answered {status}: {}", body.trim())),
        },
    );
    let mut targets: BTreeMap<PartitionId, u64> = BTreeMap::new();
    for partition_id in 1..=PARTITIONS {
        let (_, leader) = cluster.wait_until(
            &format!("partition {partition_id} to have a leader its replicas follow"),
            WAIT,
            || cluster.settled_leader(partition_id),
        );
        targets.insert(partition_id, leader.commit_index);
    }
    cluster.wait_until(
        &format!(
            "broker {index} (node {}) to catch up with {targets:?}",
            node_of(index)
        ),
        WAIT,
        || {
            for (&partition_id, &target) in &targets {
                let view = cluster.partition_view(index, partition_id)?;
                if view.durable_index < target {
                    return Err(format!(
                        "partition {partition_id}: durableIndex {} < {target}",
                        view.durable_index
                    ));
                }
            }
            Ok(())
        },
    );
}

/// Waits (at most [`DRAIN_MAX`]) until the job of every acknowledged creation is completed, then
/// lets the workers poll until a job whose acknowledged completion was lost would have come
/// back.
fn drain(cluster: &Cluster, workload: &mut Workload) {
    let started = Instant::now();
    cluster.wait_until(
        "the job of every acknowledged creation to be completed",
        DRAIN_MAX,
        || {
            cluster.assert_no_exits();
            workload.assert_running();
            workload.read(|records| {
                let pending = checks::pending(records);
                match pending.first() {
                    None => Ok(()),
                    Some(first) => Err(format!(
                        "{} acknowledged creations wait, the first creation {} ({:?})",
                        pending.len(),
                        first.id,
                        first.outcome
                    )),
                }
            })
        },
    );
    let last = workload
        .read(checks::last_acknowledged_completion)
        .unwrap_or(started);
    let sweep_until = last.max(Instant::now()) + workload::JOB_TIMEOUT + SWEEP_MARGIN;
    let sweep = sweep_until.saturating_duration_since(Instant::now());
    cluster.note(&format!(
        "every acknowledged creation's job completed after {:.1} s; the workers poll {:.1} s more",
        started.elapsed().as_secs_f64(),
        sweep.as_secs_f64()
    ));
    sleep_watching(cluster, workload, sweep);
}

/// Lines of the brokers' logs that say a thread panicked.
fn panics_in_logs(cluster: &Cluster) -> Vec<String> {
    let mut found = Vec::new();
    for (index, broker) in cluster.brokers.iter().enumerate() {
        let bytes = std::fs::read(&broker.log)
            .unwrap_or_else(|error| panic!("reading {}: {error}", broker.log.display()));
        let text = String::from_utf8_lossy(&bytes);
        found.extend(
            text.lines()
                .filter(|line| line.contains("panicked"))
                .map(|line| format!("broker {index}: {line}")),
        );
    }
    found
}

/// One line on the faults: how many of each kind, and each one's times.
fn describe_faults(injected: &[Injected], origin: Instant) -> String {
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for fault in injected {
        *by_kind.entry(fault.fault.kind.name()).or_default() += 1;
    }
    let each: Vec<String> = injected
        .iter()
        .map(|fault| {
            let since = |instant: Instant| instant.saturating_duration_since(origin).as_secs_f64();
            format!(
                "{} broker {} at +{:.1}s, serving again +{:.1}s, caught up +{:.1}s",
                fault.fault.kind.name(),
                fault.fault.broker,
                since(fault.window.start),
                since(fault.window.end),
                since(fault.recovered)
            )
        })
        .collect();
    format!(
        "faults: {} in all {by_kind:?}\n    {}",
        injected.len(),
        each.join("\n    ")
    )
}
