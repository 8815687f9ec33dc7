//! The harness of the real-process cluster tests (`tests/cluster_*.rs`): brokers run as
//! `sluice broker --config FILE` processes on 127.0.0.1, and the tests kill, stop, continue and
//! restart them.
//!
//! - [`Cluster::start`] writes certificates and configurations with `sluice_broker::dev` into a
//!   fresh directory under Cargo's `CARGO_TARGET_TMPDIR`, and starts the brokers with the test
//!   timeouts of [`test_env`]. Each broker's output goes to `broker-{i}.log` there.
//! - Every wait is [`Cluster::wait_until`]: a probe polled until it answers `Ok` or a deadline
//!   passes, when the test fails with the description and the probe's last answer. Each poll
//!   also fails the test at once if a broker that should be running has exited.
//! - [`Cluster`] is the guard of its processes: dropping it (at the end of the test or while a
//!   panic unwinds) SIGKILLs every broker still running and waits for it. When the test failed,
//!   it prints the last lines of every broker's log and keeps the directory (its path is
//!   printed); otherwise it removes the directory, unless `SLUICE_IT_KEEP` is set. Brokers also
//!   get SIGKILL from the kernel if the thread that started them dies (`PR_SET_PDEATHSIG`), so
//!   none outlives a test process killed outright; the tests start every broker from the test's
//!   own thread for that reason. SIGKILL rather than SIGTERM: a broker stopped with SIGSTOP
//!   would hold a SIGTERM pending forever.
//! - [`Writer`] appends unique payloads from a thread and records every acknowledgement.
//! - [`read_journals`] reads stopped replicas' journals, and [`check_journals`] checks
//!   acknowledged appends and agreement between replicas.

#![allow(
    dead_code,
    reason = "every test binary compiles this module and uses a different part of it"
)]

pub mod gateway;
pub mod rogue;
pub mod serving;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sluice_broker::client_api::{AppendClient, ClientApiError};
use sluice_broker::dev::{self, COMMAND_API_PORT, DevOptions, INTERNAL_API_PORT, MANAGEMENT_PORT};
use sluice_broker::partitioning::{
    ClusterShape, NodeId, PartitionId, PartitionLayout, round_robin,
};

/// `cluster.electionTimeout` of the test brokers.
pub const ELECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// `cluster.heartbeatInterval` of the test brokers.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// `data.logSegmentSize` of the test brokers; [`read_journals`] opens journals with it.
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// Pause between two probes of [`Cluster::wait_until`].
pub const POLL: Duration = Duration::from_millis(100);
/// Bound of one management HTTP request (connect, send, read the whole answer).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a broker may take to exit after SIGTERM.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a broker may take to be reaped after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading one set of journals may take.
const JOURNAL_READ_TIMEOUT: Duration = Duration::from_mins(1);
/// Lines of each broker's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// The `ZEEBE_BROKER_*` overrides every test broker runs with: short Raft timeouts and small
/// segments.
#[must_use]
pub fn test_env() -> Vec<(String, String)> {
    vec![
        (
            "ZEEBE_BROKER_CLUSTER_ELECTIONTIMEOUT".to_owned(),
            format!("{}ms", ELECTION_TIMEOUT.as_millis()),
        ),
        (
            "ZEEBE_BROKER_CLUSTER_HEARTBEATINTERVAL".to_owned(),
            format!("{}ms", HEARTBEAT_INTERVAL.as_millis()),
        ),
        (
            "ZEEBE_BROKER_DATA_LOGSEGMENTSIZE".to_owned(),
            format!("{}MB", SEGMENT_BYTES >> 20),
        ),
    ]
}

/// The `ROUND_ROBIN` layout the brokers of `options` compute.
#[must_use]
pub fn layout_of(options: &DevOptions) -> PartitionLayout {
    let shape = ClusterShape::new(
        options.brokers,
        options.partitions,
        options.replication_factor,
    )
    .expect("the test's cluster shape is valid");
    round_robin(shape)
}

/// Node ids of the replicas of `partition_id` in `layout`, highest priority first.
#[must_use]
pub fn replicas_of(layout: &PartitionLayout, partition_id: PartitionId) -> Vec<NodeId> {
    layout
        .replicas_of(partition_id)
        .expect("the partition exists in the layout")
        .iter()
        .map(|replica| replica.node_id)
        .collect()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The local addresses of the TCP sockets listening on `port`, from `/proc/net/tcp{,6}`.
#[must_use]
pub fn listening_addresses(port: u16) -> Vec<IpAddr> {
    const LISTEN: &str = "0A";
    let mut addresses = Vec::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(table) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(&state)) = (fields.get(1), fields.get(3)) else {
                continue;
            };
            let Some((address, local_port)) = local.split_once(':') else {
                continue;
            };
            if state == LISTEN && u16::from_str_radix(local_port, 16) == Ok(port) {
                addresses.push(proc_address(address));
            }
        }
    }
    addresses
}

/// An address as `/proc/net/tcp{,6}` prints it: 32-bit words in hex, each in host byte order.
fn proc_address(hex: &str) -> IpAddr {
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks(8)
        .flat_map(|word| {
            let word = std::str::from_utf8(word).expect("hex digits");
            u32::from_str_radix(word, 16)
                .unwrap_or_else(|error| panic!("`{hex}` in /proc/net/tcp: {error}"))
                .to_ne_bytes()
        })
        .collect();
    match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let octets: [u8; 16] = bytes.try_into().expect("16 bytes");
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        other => panic!("`{hex}` in /proc/net/tcp is {other} bytes long"),
    }
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// One broker process slot: its configuration, its log, and the running child if any.
#[derive(Debug)]
pub struct Broker {
    /// Its node id (the rogue of a foreign-CA test shares a node id with a cluster broker, so
    /// this is not always its position in [`Cluster::brokers`]).
    pub node_id: NodeId,
    /// `network.portOffset`: its ports are the defaults plus ten times this.
    pub port_offset: u32,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its log (standard output and error, appended across restarts).
    pub log: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// `ZEEBE_BROKER_*` overrides it starts with.
    pub env: RefCell<Vec<(String, String)>>,
    child: RefCell<Option<Child>>,
    /// Stopped with SIGSTOP and not continued yet.
    paused: Cell<bool>,
    starts: Cell<u32>,
}

impl Broker {
    /// Command API address.
    #[must_use]
    pub fn command_api(&self) -> SocketAddr {
        loopback(dev::port(COMMAND_API_PORT, self.port_offset, 0))
    }

    /// Internal (QUIC) address.
    #[must_use]
    pub fn internal_api(&self) -> SocketAddr {
        loopback(dev::port(INTERNAL_API_PORT, self.port_offset, 0))
    }

    /// Management (HTTP) address.
    #[must_use]
    pub fn management(&self) -> SocketAddr {
        loopback(dev::port(MANAGEMENT_PORT, self.port_offset, 0))
    }

    /// The journal directory of its replica of `partition_id`.
    #[must_use]
    pub fn journal_dir(&self, partition_id: PartitionId) -> PathBuf {
        self.data_dir
            .join(format!("partition-{partition_id}"))
            .join("journal")
    }

    fn pid(&self) -> Option<libc::pid_t> {
        self.child
            .borrow()
            .as_ref()
            .map(|child| libc::pid_t::try_from(child.id()).expect("pids fit in pid_t"))
    }
}

/// A set of broker processes and the directory they work in; the guard that kills them.
#[derive(Debug)]
pub struct Cluster {
    /// The test's name, for messages.
    pub name: String,
    /// Configurations, certificates, data and logs.
    pub dir: PathBuf,
    /// What [`dev::write_cluster`] was asked for.
    pub options: DevOptions,
    /// Every broker process slot; the first `options.brokers` are node ids `0..brokers`.
    pub brokers: Vec<Broker>,
    /// The management token [`dev::write_cluster`] wrote; [`Cluster::post`] sends it.
    pub management_token: String,
    exe: PathBuf,
    started: Instant,
}

impl Cluster {
    /// Writes a loopback cluster of `options` (certificates and configurations) into a fresh
    /// directory and starts every broker with [`test_env`].
    #[must_use]
    pub fn start(name: &str, options: DevOptions) -> Cluster {
        let cluster = Cluster::create(name, options);
        for index in 0..cluster.brokers.len() {
            cluster.spawn(index);
        }
        cluster
    }

    /// Like [`Cluster::start`] without starting any broker.
    #[must_use]
    pub fn create(name: &str, options: DevOptions) -> Cluster {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}-{nanos}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("removing a stale test directory");
        }
        let configs = dev::write_cluster(&options, &dir).expect("writing the cluster's files");
        let brokers = (0u32..)
            .zip(configs)
            .map(|(index, config)| Broker {
                node_id: index,
                port_offset: options.port_offset + index,
                config,
                log: dir.join(format!("broker-{index}.log")),
                data_dir: dir.join(format!("broker-{index}")).join("data"),
                env: RefCell::new(test_env()),
                child: RefCell::new(None),
                paused: Cell::new(false),
                starts: Cell::new(0),
            })
            .collect();
        let management_token = std::fs::read_to_string(dev::token_path(&dir))
            .expect("reading the cluster's management token")
            .trim()
            .to_owned();
        let cluster = Cluster {
            name: name.to_owned(),
            dir,
            options,
            brokers,
            management_token,
            exe: PathBuf::from(env!("CARGO_BIN_EXE_sluice")),
            started: Instant::now(),
        };
        cluster.note(&format!(
            "{} brokers, {} partitions, replication factor {}, port offset {}, in {}",
            cluster.options.brokers,
            cluster.options.partitions,
            cluster.options.replication_factor,
            cluster.options.port_offset,
            cluster.dir.display()
        ));
        cluster
    }

    /// Adds a broker slot (not started) that runs `config`, logging to `{name}.log`; returns
    /// its position in [`Cluster::brokers`].
    pub fn add_broker(
        &mut self,
        name: &str,
        node_id: NodeId,
        port_offset: u32,
        config: PathBuf,
        data_dir: PathBuf,
        env: Vec<(String, String)>,
    ) -> usize {
        let index = self.brokers.len();
        self.brokers.push(Broker {
            node_id,
            port_offset,
            config,
            log: self.dir.join(format!("{name}.log")),
            data_dir,
            env: RefCell::new(env),
            child: RefCell::new(None),
            paused: Cell::new(false),
            starts: Cell::new(0),
        });
        index
    }

    /// The layout of the cluster's partitions.
    #[must_use]
    pub fn layout(&self) -> PartitionLayout {
        layout_of(&self.options)
    }

    /// Time since the cluster was created.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Prints a progress line (shown for failing tests, or with `--nocapture`).
    pub fn note(&self, message: &str) {
        println!(
            "[{} +{:.2}s] {message}",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Appends a marker line to broker `index`'s log, so its log shows what the test did.
    fn mark_log(&self, index: usize, message: &str) {
        let broker = &self.brokers[index];
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&broker.log)
        {
            let _ = writeln!(
                file,
                "==== test harness at +{:.3}s: {message} ====",
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// Starts broker `index`, which must not be running.
    pub fn spawn(&self, index: usize) {
        let broker = &self.brokers[index];
        assert!(
            broker.child.borrow().is_none(),
            "broker {index} is already running"
        );
        broker.starts.set(broker.starts.get() + 1);
        let message = format!(
            "starting broker {index} (start #{}) with {:?}",
            broker.starts.get(),
            broker.env.borrow()
        );
        self.mark_log(index, &message);
        self.note(&message);
        let child =
            spawn_broker_process(&self.exe, &broker.config, &broker.log, &broker.env.borrow())
                .unwrap_or_else(|error| panic!("starting broker {index}: {error}"));
        *broker.child.borrow_mut() = Some(child);
        broker.paused.set(false);
    }

    /// Whether broker `index` has a process (running or paused).
    #[must_use]
    pub fn is_up(&self, index: usize) -> bool {
        self.brokers[index].child.borrow().is_some()
    }

    /// Whether broker `index` has a process that is not paused: it should answer.
    #[must_use]
    pub fn is_live(&self, index: usize) -> bool {
        self.is_up(index) && !self.brokers[index].paused.get()
    }

    /// Sends `signal` to broker `index`'s process.
    fn signal(&self, index: usize, signal: libc::c_int, name: &str) {
        let pid = self.brokers[index]
            .pid()
            .unwrap_or_else(|| panic!("broker {index} is not running; cannot send {name}"));
        self.mark_log(index, &format!("sending {name}"));
        self.note(&format!("{name} to broker {index} (pid {pid})"));
        // SAFETY: `kill` has no memory effects; `pid` is a child this process started and has
        // not reaped (the `Child` is still held), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "sending {name} to broker {index}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to `timeout` for broker `index` to exit; its status, or `None` at the deadline.
    pub fn wait_exit(&self, index: usize, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = {
                let mut slot = self.brokers[index].child.borrow_mut();
                let child = slot.as_mut()?;
                let status = child
                    .try_wait()
                    .unwrap_or_else(|error| panic!("waiting for broker {index}: {error}"));
                if status.is_some() {
                    *slot = None;
                }
                status
            };
            if let Some(status) = status {
                self.brokers[index].paused.set(false);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9`: crashes broker `index` and reaps it.
    pub fn kill(&self, index: usize) {
        self.signal(index, libc::SIGKILL, "SIGKILL");
        let status = self.wait_exit(index, KILL_TIMEOUT);
        assert!(
            status.is_some(),
            "broker {index} was not reaped within {KILL_TIMEOUT:?} of SIGKILL"
        );
    }

    /// SIGSTOP: freezes broker `index` (its sockets stay open, it answers nothing).
    pub fn pause(&self, index: usize) {
        self.signal(index, libc::SIGSTOP, "SIGSTOP");
        self.brokers[index].paused.set(true);
    }

    /// SIGCONT: resumes a paused broker.
    pub fn resume(&self, index: usize) {
        self.signal(index, libc::SIGCONT, "SIGCONT");
        self.brokers[index].paused.set(false);
    }

    /// Asks every broker in `indexes` to shut down (SIGTERM), then waits for each to exit
    /// successfully within [`SHUTDOWN_TIMEOUT`]; fails the test otherwise.
    pub fn terminate(&self, indexes: &[usize]) {
        for &index in indexes {
            if self.brokers[index].paused.get() {
                self.resume(index);
            }
            self.signal(index, libc::SIGTERM, "SIGTERM");
        }
        let started = Instant::now();
        for &index in indexes {
            let remaining = SHUTDOWN_TIMEOUT.saturating_sub(started.elapsed());
            match self.wait_exit(index, remaining) {
                Some(status) => {
                    self.note(&format!(
                        "broker {index} exited ({status}) {:.2} s after SIGTERM",
                        started.elapsed().as_secs_f64()
                    ));
                    assert!(
                        status.success(),
                        "broker {index} exited with {status} after SIGTERM; a graceful \
                         shutdown exits 0 (see its log)"
                    );
                }
                None => panic!(
                    "broker {index} did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM \
                     (see its log)"
                ),
            }
        }
    }

    /// Starts every broker of the cluster and waits (up to `wait` each) until every partition
    /// has a settled leader.
    pub fn spawn_all_and_elect(&self, wait: Duration) {
        for index in self.cluster_brokers() {
            self.spawn(index);
        }
        for partition_id in 1..=self.options.partitions {
            self.wait_until(
                &format!("partition {partition_id} to elect a leader"),
                wait,
                || self.settled_leader(partition_id),
            );
        }
    }

    /// SIGTERM to every running broker; see [`Cluster::terminate`].
    pub fn terminate_all(&self) {
        let up: Vec<usize> = (0..self.brokers.len()).filter(|&i| self.is_up(i)).collect();
        self.terminate(&up);
    }

    /// Fails the test if a broker that should be running has exited.
    pub fn assert_no_exits(&self) {
        for (index, broker) in self.brokers.iter().enumerate() {
            let mut slot = broker.child.borrow_mut();
            if let Some(child) = slot.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                *slot = None;
                drop(slot);
                panic!(
                    "broker {index} exited unexpectedly ({status}) at +{:.2}s; see its log",
                    self.started.elapsed().as_secs_f64()
                );
            }
        }
    }

    /// Polls `probe` every [`POLL`] until it answers `Ok`, and returns that. Fails the test
    /// with `what` and the probe's last answer if `timeout` passes first, or at once if a
    /// broker exits unexpectedly. The bound is `timeout` plus one probe.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Result<T, String>,
    ) -> T {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut polls = 0u32;
        loop {
            self.assert_no_exits();
            polls += 1;
            match probe() {
                Ok(value) => {
                    self.note(&format!(
                        "{what}: after {:.2} s",
                        started.elapsed().as_secs_f64()
                    ));
                    return value;
                }
                Err(last) => {
                    let now = Instant::now();
                    assert!(
                        now < deadline,
                        "timed out after {:.2} s ({polls} polls) waiting for {what}; last \
                         answer: {last}",
                        started.elapsed().as_secs_f64()
                    );
                    std::thread::sleep(POLL.min(deadline - now));
                }
            }
        }
    }

    /// Command API addresses of the cluster's brokers (node ids `0..options.brokers`).
    #[must_use]
    pub fn command_apis(&self) -> Vec<SocketAddr> {
        self.cluster_brokers()
            .map(|index| self.brokers[index].command_api())
            .collect()
    }

    /// Positions in [`Cluster::brokers`] of the cluster's own brokers.
    pub fn cluster_brokers(&self) -> std::ops::Range<usize> {
        0..usize::try_from(self.options.brokers).expect("few brokers")
    }

    // -----------------------------------------------------------------------------------------
    // Management API
    // -----------------------------------------------------------------------------------------

    /// `GET path` on broker `index`'s management API: (status, body).
    pub fn get(&self, index: usize, path: &str) -> Result<(u16, String), String> {
        http(self.brokers[index].management(), "GET", path, HTTP_TIMEOUT)
    }

    /// `POST path` on broker `index`'s management API with the cluster's management token:
    /// (status, body).
    pub fn post(
        &self,
        index: usize,
        path: &str,
        timeout: Duration,
    ) -> Result<(u16, String), String> {
        let authorization = format!("Bearer {}", self.management_token);
        let reply = http_request(
            self.brokers[index].management(),
            "POST",
            path,
            &[("Authorization", &authorization)],
            "",
            timeout,
        )?;
        Ok((reply.status, reply.body))
    }

    /// `GET path`, requiring 200; the body.
    pub fn get_ok(&self, index: usize, path: &str) -> Result<String, String> {
        match self.get(index, path)? {
            (200, body) => Ok(body),
            (status, body) => Err(format!(
                "broker {index}: GET {path} answered {status}: {}",
                body.trim()
            )),
        }
    }

    /// Broker `index`'s `/actuator/cluster`.
    pub fn cluster_view(&self, index: usize) -> Result<ClusterView, String> {
        let body = self.get_ok(index, "/actuator/cluster")?;
        serde_json::from_str(&body)
            .map_err(|error| format!("broker {index}: /actuator/cluster: {error}: {body}"))
    }

    /// Broker `index`'s `/actuator/partitions`, by partition id.
    pub fn partitions_view(
        &self,
        index: usize,
    ) -> Result<BTreeMap<PartitionId, PartitionView>, String> {
        let body = self.get_ok(index, "/actuator/partitions")?;
        let views: BTreeMap<String, PartitionView> = serde_json::from_str(&body)
            .map_err(|error| format!("broker {index}: /actuator/partitions: {error}: {body}"))?;
        views
            .into_iter()
            .map(|(id, view)| {
                id.parse::<PartitionId>()
                    .map(|id| (id, view))
                    .map_err(|error| format!("broker {index}: partition id {id:?}: {error}"))
            })
            .collect()
    }

    /// Broker `index`'s view of `partition_id`.
    pub fn partition_view(
        &self,
        index: usize,
        partition_id: PartitionId,
    ) -> Result<PartitionView, String> {
        self.partitions_view(index)?
            .remove(&partition_id)
            .ok_or_else(|| format!("broker {index} reports no replica of partition {partition_id}"))
    }

    /// Sum of the metric `name` over all its label sets in broker `index`'s `/metrics`.
    pub fn metric(&self, index: usize, name: &str) -> Result<f64, String> {
        let text = self.get_ok(index, "/metrics")?;
        metric_sum(&text, name)
            .ok_or_else(|| format!("broker {index}: no metric {name} in /metrics"))
    }

    /// The leader of `partition_id` as its live replicas see it: the replica that says
    /// LEADER, with every live replica naming it in the same term. `Err` while they do not
    /// agree (electing, or a stale leader remains).
    pub fn settled_leader(
        &self,
        partition_id: PartitionId,
    ) -> Result<(usize, PartitionView), String> {
        let layout = self.layout();
        let mut views = Vec::new();
        for node in replicas_of(&layout, partition_id) {
            let index = index_of(node);
            if self.is_live(index) {
                views.push((index, self.partition_view(index, partition_id)?));
            }
        }
        let leaders: Vec<&(usize, PartitionView)> = views
            .iter()
            .filter(|(_, view)| view.role == "LEADER")
            .collect();
        let [(leader, leader_view)] = leaders.as_slice() else {
            return Err(format!(
                "partition {partition_id}: {} live replicas say LEADER; views: {views:?}",
                leaders.len()
            ));
        };
        for (index, view) in &views {
            if view.leader != Some(node_of(*leader)) || view.term != leader_view.term {
                return Err(format!(
                    "partition {partition_id}: broker {index} does not follow broker {leader} in \
                     term {}: {view:?}",
                    leader_view.term
                ));
            }
        }
        Ok((*leader, leader_view.clone()))
    }

    /// Waits until every live replica of `partition_id` has flushed what its leader has
    /// committed (each `durableIndex` at least the leader's `commitIndex`).
    pub fn wait_replicas_synced(&self, partition_id: PartitionId, timeout: Duration) -> u64 {
        let layout = self.layout();
        self.wait_until(
            &format!(
                "every live replica of partition {partition_id} to flush the leader's commit index"
            ),
            timeout,
            || {
                let (leader, leader_view) = self.settled_leader(partition_id)?;
                let target = leader_view.commit_index;
                for node in replicas_of(&layout, partition_id) {
                    let index = index_of(node);
                    if !self.is_live(index) {
                        continue;
                    }
                    let view = self.partition_view(index, partition_id)?;
                    if view.durable_index < target {
                        return Err(format!(
                            "broker {index} has durableIndex {} < leader {leader}'s commitIndex \
                             {target}",
                            view.durable_index
                        ));
                    }
                }
                Ok(target)
            },
        )
    }

    /// Waits until `writer` has `count` acknowledgements in all.
    pub fn wait_for_acks(&self, writer: &Writer, count: usize, timeout: Duration) {
        self.wait_until(
            &format!("{count} acknowledged appends in all"),
            timeout,
            || {
                let acks = writer.ack_count();
                if acks >= count {
                    Ok(())
                } else {
                    Err(format!(
                        "{acks} acknowledged; last failure: {:?}",
                        writer.last_failure().map(|failure| failure.error)
                    ))
                }
            },
        );
    }

    /// Reads every replica's journal of `partition_id`; the brokers must be stopped.
    pub fn read_journals(&self, partition_id: PartitionId) -> Vec<(String, Vec<Entry>)> {
        let layout = self.layout();
        let dirs: Vec<(String, PathBuf)> = replicas_of(&layout, partition_id)
            .into_iter()
            .map(|node| {
                let index = index_of(node);
                assert!(
                    !self.is_up(index),
                    "broker {index} must be stopped before its journal is read"
                );
                (
                    format!("broker {index}"),
                    self.brokers[index].journal_dir(partition_id),
                )
            })
            .collect();
        let journals = read_journals(dirs).unwrap_or_else(|error| {
            panic!("reading the journals of partition {partition_id}: {error}")
        });
        for (label, entries) in &journals {
            self.note(&format!(
                "partition {partition_id}, {label}: journal holds {} entries (last index {:?})",
                entries.len(),
                entries.last().map(|entry| entry.index)
            ));
        }
        journals
    }
}

/// The position in [`Cluster::brokers`] of the cluster broker `node_id`.
#[must_use]
pub fn index_of(node_id: NodeId) -> usize {
    usize::try_from(node_id).expect("small node id")
}

/// The node id of the cluster broker at `index` of [`Cluster::brokers`].
#[must_use]
pub fn node_of(index: usize) -> NodeId {
    NodeId::try_from(index).expect("small index")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (index, broker) in self.brokers.iter().enumerate() {
            let Some(mut child) = broker.child.borrow_mut().take() else {
                continue;
            };
            let _ = child.kill();
            let deadline = Instant::now() + KILL_TIMEOUT;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("[{}] broker {index} not reaped after SIGKILL", self.name);
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        if std::thread::panicking() {
            let mut out = String::new();
            for (index, broker) in self.brokers.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "---- last {LOG_TAIL_LINES} lines of broker {index} ({}) ----",
                    broker.log.display()
                );
                out.push_str(&log_tail(&broker.log, LOG_TAIL_LINES));
            }
            eprintln!(
                "{out}---- [{}] failed at +{:.2}s; configurations, data and logs kept in {} ----",
                self.name,
                self.started.elapsed().as_secs_f64(),
                self.dir.display()
            );
        } else if std::env::var_os("SLUICE_IT_KEEP").is_some() {
            println!("[{}] kept {}", self.name, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The last `lines` lines of the file at `path`.
#[must_use]
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let mut tail = all[all.len().saturating_sub(lines)..].join("\n");
            tail.push('\n');
            tail
        }
        Err(error) => format!("(cannot read {}: {error})\n", path.display()),
    }
}

/// Starts `sluice broker --config config` with its output appended to `log`, the `ZEEBE_*`
/// variables of this process removed and `env` added. The child gets SIGKILL when the thread
/// that started it dies.
fn spawn_broker_process(
    exe: &Path,
    config: &Path,
    log: &Path,
    env: &[(String, String)],
) -> std::io::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    let mut command = Command::new(exe);
    command
        .arg("broker")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ZEEBE_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().map(|(key, value)| (key, value)));
    let parent = libc::pid_t::try_from(std::process::id()).expect("pids fit in pid_t");
    // SAFETY: between fork and exec the closure only calls `prctl` and `getppid`, which are
    // async-signal-safe, and builds an `io::Error` from a raw code, which does not allocate.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before `prctl`: then no signal would ever come.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    command.spawn()
}

// ---------------------------------------------------------------------------------------------
// HTTP and JSON
// ---------------------------------------------------------------------------------------------

/// One HTTP/1.1 request with an empty body to `addr`, the whole exchange bounded by `timeout`:
/// (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let reply = http_request(addr, method, path, &[], "", timeout)?;
    Ok((reply.status, reply.body))
}

/// An answer of [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The headers as sent (names as written).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl HttpReply {
    /// The first header named `name` (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// One HTTP/1.1 request to `addr` with extra `headers` and `body` (sent with its
/// `Content-Length`), the whole exchange bounded by `timeout`.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Result<HttpReply, String> {
    let deadline = Instant::now() + timeout;
    let fail = |what: &str, error: &dyn std::fmt::Display| {
        format!("{method} http://{addr}{path}: {what}: {error}")
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|error| fail("connecting", &error))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|error| fail("setting a timeout", &error))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(
        head,
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .map_err(|error| fail("sending", &error))?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(fail(
                "reading",
                &format!("no complete answer within {timeout:?}"),
            ));
        }
        stream
            .set_read_timeout(Some(remaining))
            .map_err(|error| fail("setting a timeout", &error))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => answer.extend_from_slice(&chunk[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(fail("reading", &error)),
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail("parsing", &format!("no end of head in {answer:?}")))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| fail("parsing", &format!("bad status line in {head:?}")))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok(HttpReply {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// The sum of the samples of metric `name` (all label sets) in Prometheus text; `None` if it
/// has none.
#[must_use]
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = rest
            .rsplit(' ')
            .next()
            .and_then(|value| value.parse::<f64>().ok())?;
        *sum.get_or_insert(0.0) += value;
    }
    sum
}

/// `GET /actuator/cluster`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// `cluster.clusterSize`.
    pub cluster_size: u32,
    /// `cluster.partitionsCount`.
    pub partitions_count: u32,
    /// `cluster.replicationFactor`.
    pub replication_factor: u32,
    /// Bumped by every topology change.
    pub topology_version: u64,
    /// Known members.
    pub brokers: Vec<BrokerView>,
}

impl ClusterView {
    /// The member `node_id`.
    #[must_use]
    pub fn broker(&self, node_id: NodeId) -> Option<&BrokerView> {
        self.brokers.iter().find(|broker| broker.node_id == node_id)
    }
}

/// One member in `/actuator/cluster`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerView {
    /// Its node id.
    pub node_id: NodeId,
    /// Its internal (QUIC) address.
    pub address: String,
    /// `ALIVE`, `SUSPECT`, `DEAD` or `LEFT`.
    pub state: String,
    /// Its command API address, once gossiped.
    pub command_api: Option<String>,
    /// Its management address, once gossiped.
    pub management: Option<String>,
    /// Its replicas.
    pub partitions: Vec<ReplicaView>,
}

/// One replica of a member in `/actuator/cluster`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    /// The partition.
    pub partition_id: PartitionId,
    /// `LEADER`, `FOLLOWER` or `INACTIVE`.
    pub role: String,
    /// The term of that role.
    pub term: u64,
}

/// One local replica in `GET /actuator/partitions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionView {
    /// `LEADER`, `FOLLOWER` or `CANDIDATE`.
    pub role: String,
    /// Raft term.
    pub term: u64,
    /// The leader it knows.
    pub leader: Option<NodeId>,
    /// The priority-preferred leader.
    pub preferred_leader: NodeId,
    /// Highest committed index known.
    pub commit_index: u64,
    /// Last index in its log.
    pub last_index: u64,
    /// Highest index flushed.
    pub durable_index: u64,
    /// Appends it answered committed (as leader).
    pub appends_committed: u64,
    /// Appends it answered unavailable.
    pub appends_failed: u64,
    /// The last flush error, if any.
    pub flush_error: Option<String>,
    /// Why the replica is down (a storage error; it is being reopened), while it is.
    #[serde(default)]
    pub down: Option<String>,
    /// Times the replica went down since its broker started.
    #[serde(default)]
    pub failures: u64,
    /// Highest index whose records are in its engine.
    #[serde(default)]
    pub applied_index: u64,
    /// Engine snapshots it wrote.
    #[serde(default)]
    pub snapshots_taken: u64,
    /// Snapshots it installed from a leader.
    #[serde(default)]
    pub snapshots_installed: u64,
}

// ---------------------------------------------------------------------------------------------
// Appending
// ---------------------------------------------------------------------------------------------

/// An acknowledged append.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The payload sent.
    pub payload: Vec<u8>,
    /// The index the broker said it is committed at.
    pub index: u64,
    /// When the append was sent.
    pub started: Instant,
    /// When the acknowledgement came.
    pub finished: Instant,
}

/// A failed append (nothing acknowledged; it may still have been committed).
#[derive(Debug, Clone)]
pub struct Failure {
    /// The payload sent.
    pub payload: Vec<u8>,
    /// When the append was sent.
    pub started: Instant,
    /// When it gave up.
    pub finished: Instant,
    /// Why.
    pub error: String,
}

/// A thread that appends `{prefix}{seq}` payloads to one partition, one at a time, until
/// stopped, recording every acknowledgement and failure.
#[derive(Debug)]
pub struct Writer {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    failures: Arc<Mutex<Vec<Failure>>>,
    ack_count: Arc<AtomicUsize>,
    done: mpsc::Receiver<()>,
    append_timeout: Duration,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts appending to `partition_id` through `brokers` (command API addresses), each
    /// append bounded by `append_timeout`, with `pause` between appends. It stops on its own
    /// after `lifetime`, so a test that forgets it cannot hang.
    #[must_use]
    pub fn start(
        brokers: Vec<SocketAddr>,
        partition_id: PartitionId,
        prefix: &str,
        append_timeout: Duration,
        pause: Duration,
        lifetime: Duration,
    ) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let ack_count = Arc::new(AtomicUsize::new(0));
        let (done_sender, done) = mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            let acks = Arc::clone(&acks);
            let failures = Arc::clone(&failures);
            let ack_count = Arc::clone(&ack_count);
            let prefix = prefix.to_owned();
            std::thread::Builder::new()
                .name(format!("writer-p{partition_id}"))
                .spawn(move || {
                    let born = Instant::now();
                    let mut client = AppendClient::new(brokers);
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) && born.elapsed() < lifetime {
                        seq += 1;
                        let payload = format!("{prefix}{seq}").into_bytes();
                        let started = Instant::now();
                        let result = client.append(partition_id, &payload, append_timeout);
                        let finished = Instant::now();
                        match result {
                            Ok(index) => {
                                lock(&acks).push(Ack {
                                    payload,
                                    index,
                                    started,
                                    finished,
                                });
                                ack_count.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => {
                                let rejected = matches!(error, ClientApiError::Rejected { .. });
                                lock(&failures).push(Failure {
                                    payload,
                                    started,
                                    finished,
                                    error: error.to_string(),
                                });
                                if rejected {
                                    // Retrying cannot help; the test sees the failure.
                                    break;
                                }
                            }
                        }
                        if !pause.is_zero() {
                            std::thread::sleep(pause);
                        }
                    }
                    let _ = done_sender.send(());
                })
                .expect("starting the writer thread")
        };
        Writer {
            stop,
            acks,
            failures,
            ack_count,
            done,
            append_timeout,
            thread: Some(thread),
        }
    }

    /// Acknowledgements so far.
    #[must_use]
    pub fn ack_count(&self) -> usize {
        self.ack_count.load(Ordering::Relaxed)
    }

    /// A copy of the acknowledgements so far.
    #[must_use]
    pub fn acks(&self) -> Vec<Ack> {
        lock(&self.acks).clone()
    }

    /// The first acknowledgement of an append sent at or after `instant`.
    #[must_use]
    pub fn first_ack_sent_after(&self, instant: Instant) -> Option<Ack> {
        lock(&self.acks)
            .iter()
            .find(|ack| ack.started >= instant)
            .cloned()
    }

    /// The last failure, for messages.
    #[must_use]
    pub fn last_failure(&self) -> Option<Failure> {
        lock(&self.failures).last().cloned()
    }

    /// A copy of the failures so far.
    #[must_use]
    pub fn failures(&self) -> Vec<Failure> {
        lock(&self.failures).clone()
    }

    /// Stops the thread (its last append finishes first) and returns every acknowledgement
    /// and failure.
    #[must_use]
    pub fn finish(mut self) -> (Vec<Ack>, Vec<Failure>) {
        self.stop.store(true, Ordering::Relaxed);
        let bound = self.append_timeout + Duration::from_secs(10);
        self.done
            .recv_timeout(bound)
            .unwrap_or_else(|error| panic!("the writer did not stop within {bound:?}: {error}"));
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the writer thread panicked");
        }
        (self.acks(), self.failures())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Not joined: if the test failed the thread may be inside an append; it ends on its
        // own within one append timeout and the process does not wait for it.
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Appends `payload` to `partition_id` with `client`; the acknowledgement.
pub fn append_ack(
    client: &mut AppendClient,
    partition_id: PartitionId,
    payload: &[u8],
    timeout: Duration,
) -> Result<Ack, String> {
    let started = Instant::now();
    let index = client
        .append(partition_id, payload, timeout)
        .map_err(|error| format!("append to partition {partition_id}: {error}"))?;
    Ok(Ack {
        payload: payload.to_vec(),
        index,
        started,
        finished: Instant::now(),
    })
}

/// Appends `payload` to `partition_id` with a fresh client; the committed index.
pub fn append_once(
    brokers: Vec<SocketAddr>,
    partition_id: PartitionId,
    payload: &[u8],
    timeout: Duration,
) -> Result<u64, String> {
    AppendClient::new(brokers)
        .append(partition_id, payload, timeout)
        .map_err(|error| format!("append to partition {partition_id}: {error}"))
}

// ---------------------------------------------------------------------------------------------
// Journals
// ---------------------------------------------------------------------------------------------

/// One journal entry (one Raft entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Raft index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// The payload (empty for a leader's first entry of its term).
    pub payload: Vec<u8>,
}

/// Reads each `(label, journal directory)` whole, in a glommio executor on its own thread,
/// bounded by a deadline. The brokers that wrote them must have exited.
pub fn read_journals(dirs: Vec<(String, PathBuf)>) -> Result<Vec<(String, Vec<Entry>)>, String> {
    for (label, dir) in &dirs {
        if !dir.is_dir() {
            return Err(format!("{label}: no journal directory {}", dir.display()));
        }
    }
    let (sender, receiver) = mpsc::channel();
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("journal-reader")
        .io_memory(1 << 20)
        .spawn(move || async move {
            let mut out = Vec::new();
            for (label, dir) in dirs {
                match read_journal(&dir).await {
                    Ok(entries) => out.push((label, entries)),
                    Err(error) => {
                        let _ = sender.send(Err(format!("{label} ({}): {error}", dir.display())));
                        return;
                    }
                }
            }
            let _ = sender.send(Ok(out));
        })
        .map_err(|error| format!("starting a glommio executor: {error}"))?;
    let result = receiver
        .recv_timeout(JOURNAL_READ_TIMEOUT)
        .map_err(|error| format!("reading journals took over {JOURNAL_READ_TIMEOUT:?}: {error}"))?;
    handle
        .join()
        .map_err(|error| format!("the journal reader failed: {error}"))?;
    result
}

/// Reads one journal whole (opening it runs recovery, as a broker start would).
async fn read_journal(dir: &Path) -> Result<Vec<Entry>, String> {
    let storage = sluice_log::DmaStorage::open(dir)
        .await
        .map_err(|error| format!("opening storage: {error}"))?;
    let config = sluice_log::JournalConfig {
        segment_bytes: SEGMENT_BYTES,
        ..sluice_log::JournalConfig::default()
    };
    let (journal, _report) = sluice_log::Journal::open(storage, config)
        .await
        .map_err(|error| format!("opening the journal: {error}"))?;
    let mut reader = journal.reader(journal.first_index());
    let mut entries = Vec::new();
    let result = loop {
        match reader.next(&journal).await {
            Ok(Some(batch)) => entries.push(Entry {
                index: batch.index,
                term: batch.term,
                payload: batch.payload,
            }),
            Ok(None) => break Ok(entries),
            Err(error) => break Err(format!("reading after {} entries: {error}", entries.len())),
        }
    };
    journal.close();
    result
}

/// Checks that sequential appends were acknowledged at strictly increasing indexes: an append
/// sent after another was acknowledged must commit after it.
pub fn check_ack_order(acks: &[Ack]) -> Result<(), String> {
    for pair in acks.windows(2) {
        if pair[1].index <= pair[0].index {
            return Err(format!(
                "{:?} was acknowledged at index {} after {:?} at index {}",
                show(&pair[1].payload),
                pair[1].index,
                show(&pair[0].payload),
                pair[0].index
            ));
        }
    }
    Ok(())
}

/// What [`check_journals`] verified.
#[derive(Debug, Clone)]
pub struct JournalCheck {
    /// Acknowledged appends found in every journal.
    pub acks: usize,
    /// Highest acknowledged index.
    pub max_ack_index: u64,
    /// Indexes on which every journal agrees, from the first.
    pub agreed_prefix: u64,
}

fn show(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

/// Checks the journals of one partition's replicas against the acknowledged appends:
///
/// 1. each journal holds consecutive indexes starting at 1 (no snapshots yet), with terms that
///    never decrease;
/// 2. every acknowledged append is in **every** journal at the acknowledged index, with the
///    acknowledged payload;
/// 3. the journals agree (term and payload) on every index up to the highest acknowledged one;
/// 4. Raft's log matching, beyond that: where two journals hold the same index with the same
///    term, they hold the same payload.
pub fn check_journals(
    journals: &[(String, Vec<Entry>)],
    acks: &[Ack],
) -> Result<JournalCheck, String> {
    let mut problems = Vec::new();
    let by_index: Vec<BTreeMap<u64, &Entry>> = journals
        .iter()
        .map(|(label, entries)| {
            check_sequence(label, entries, &mut problems);
            entries.iter().map(|entry| (entry.index, entry)).collect()
        })
        .collect();
    let labels: Vec<&str> = journals.iter().map(|(label, _)| label.as_str()).collect();
    check_acks(&labels, &by_index, acks, &mut problems);
    let max_ack_index = acks.iter().map(|ack| ack.index).max().unwrap_or(0);
    let agreed_prefix = agreed_prefix(&by_index);
    if agreed_prefix < max_ack_index {
        let index = agreed_prefix + 1;
        let detail: Vec<String> = labels
            .iter()
            .zip(&by_index)
            .map(|(label, map)| match map.get(&index) {
                Some(entry) => format!("{label}: term {} {:?}", entry.term, show(&entry.payload)),
                None => format!("{label}: absent"),
            })
            .collect();
        problems.push(format!(
            "the journals diverge at index {index}, below the highest acknowledged index \
             {max_ack_index}: {}",
            detail.join("; ")
        ));
    }
    check_log_matching(&labels, &by_index, &mut problems);
    if problems.is_empty() {
        Ok(JournalCheck {
            acks: acks.len(),
            max_ack_index,
            agreed_prefix,
        })
    } else {
        let count = problems.len();
        problems.truncate(30);
        Err(format!("{count} problems:\n{}", problems.join("\n")))
    }
}

/// Indexes consecutive from 1, terms never decreasing.
fn check_sequence(label: &str, entries: &[Entry], problems: &mut Vec<String>) {
    let mut previous: Option<&Entry> = None;
    for entry in entries {
        let expected = previous.map_or(1, |p| p.index + 1);
        if entry.index != expected {
            problems.push(format!(
                "{label}: index {} follows {:?}",
                entry.index,
                previous.map(|p| p.index)
            ));
            return;
        }
        if let Some(previous) = previous
            && entry.term < previous.term
        {
            problems.push(format!(
                "{label}: term {} at index {} after term {}",
                entry.term, entry.index, previous.term
            ));
        }
        previous = Some(entry);
    }
}

/// Every acknowledged append in every journal, at its index.
fn check_acks(
    labels: &[&str],
    by_index: &[BTreeMap<u64, &Entry>],
    acks: &[Ack],
    problems: &mut Vec<String>,
) {
    for ack in acks {
        for (label, map) in labels.iter().zip(by_index) {
            match map.get(&ack.index) {
                // A raw append is journaled behind its kind tag (0x00, see `sluice_broker::apply`).
                Some(entry)
                    if entry.payload.first() == Some(&sluice_broker::apply::ENTRY_RAW)
                        && entry.payload[1..] == ack.payload[..] => {}
                Some(entry) => problems.push(format!(
                    "{label}: acknowledged {:?} at index {}, but the journal holds {:?} (term {})",
                    show(&ack.payload),
                    ack.index,
                    show(&entry.payload),
                    entry.term
                )),
                None => problems.push(format!(
                    "{label}: acknowledged {:?} at index {} is missing (journal ends at {:?})",
                    show(&ack.payload),
                    ack.index,
                    map.keys().next_back()
                )),
            }
        }
    }
}

/// The highest index up to which every journal holds the same entries.
fn agreed_prefix(by_index: &[BTreeMap<u64, &Entry>]) -> u64 {
    let shortest = by_index
        .iter()
        .map(|map| map.keys().next_back().copied().unwrap_or(0))
        .min()
        .unwrap_or(0);
    let mut agreed = 0;
    for index in 1..=shortest {
        let entries: Vec<&Entry> = by_index
            .iter()
            .filter_map(|map| map.get(&index).copied())
            .collect();
        let same = entries
            .windows(2)
            .all(|pair| pair[0].term == pair[1].term && pair[0].payload == pair[1].payload);
        if !same || entries.len() != by_index.len() {
            break;
        }
        agreed = index;
    }
    agreed
}

/// Raft's log matching: the same index and term mean the same entry.
fn check_log_matching(
    labels: &[&str],
    by_index: &[BTreeMap<u64, &Entry>],
    problems: &mut Vec<String>,
) {
    for (a, map_a) in by_index.iter().enumerate() {
        for (b, map_b) in by_index.iter().enumerate().skip(a + 1) {
            let broken = map_a.iter().find(|(index, entry)| {
                map_b
                    .get(index)
                    .is_some_and(|other| other.term == entry.term && other.payload != entry.payload)
            });
            if let Some((index, entry)) = broken {
                problems.push(format!(
                    "log matching broken: {} and {} both hold term {} at index {index}, with \
                     different payloads ({:?} in {})",
                    labels[a],
                    labels[b],
                    entry.term,
                    show(&entry.payload),
                    labels[a]
                ));
            }
        }
    }
}
