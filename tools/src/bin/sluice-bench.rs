//! `sluice-bench`: load generators against a running Sluice cluster.
//!
//! ```text
//! sluice-bench [gateway] [--gateway HOST:PORT] [--duration SECONDS] [--warmup SECONDS]
//!                        [--workers N] [--rate N] [--in-flight N] [--activate stream|poll]
//!                        [--json] [--report PATH]
//! sluice-bench append [--brokers ADDR,ADDR,...] [--partitions 1,2,3] [--payload-bytes 1024]
//!                     [--duration-s 10] [--outstanding 64] [--raw-dir DIR] [--raw-ops 2000]
//!                     [--json] [--raw-only]
//! ```
//!
//! The first argument names the workload; without one (the first argument is an option, or
//! nothing), the gateway workload runs.
//!
//! `gateway` (`sluice_tools::bench`, where the work is done) drives the Zeebe gRPC gateway as
//! an application would: it deploys a one-service-task process, starts instances with
//! `CreateProcessInstance` (as fast as `--in-flight` creations allow, or `--rate` per second
//! on a fixed schedule) while `--workers` job workers take the jobs (pushed by
//! `StreamActivatedJobs`, or long-polled with `--activate poll`) and complete them. An
//! instance's latency runs from its creation's send (or scheduled start) to the OK of the
//! `CompleteJob` that ends it. It prints a progress line every second, then percentiles of
//! instance latency and of each RPC, throughput and errors by gRPC code (`--json`: one JSON
//! object on stdout with `pi_per_s`, `pi_p50_ms`, `pi_p99_ms`, `pi_p999_ms`, `errors`, ...),
//! and writes a self-contained HTML report with percentile and throughput plots. It exits
//! non-zero when it cannot reach the gateway or no instance completed.
//!
//! `append` measures commit latency through the brokers' internal command API
//! (`sluice_broker::client_api`) against the raw disk, in one run:
//!
//! 1. raw baseline: `--raw-ops` times 4 KiB `pwrite` + `fdatasync` at successive offsets of a
//!    fresh file opened with `O_DIRECT` and preallocated (16 MiB, `fallocate`) in `--raw-dir`,
//!    which should be on the disk the brokers write to (the file is removed afterwards);
//! 2. leader discovery: one small append per partition through `AppendClient` (30 s at most),
//!    which also warms up the cluster;
//! 3. `commit1`: one append of `--payload-bytes` at a time, round-robin over the partitions,
//!    each sent to the partition's leader over a kept connection, for `--duration-s`;
//! 4. `commit64`: `--outstanding` appends in flight in total, spread round-robin over the
//!    partitions and pipelined over one connection per leader (one thread each), for
//!    `--duration-s`;
//! 5. the raw baseline again, as a noise check.
//!
//! The reported `raw_fsync_p50_us` / `raw_fsync_p99_us` are percentiles of both raw runs merged
//! into one histogram (`2 * --raw-ops` samples); each run's own figures are reported too
//! (`raw_fsync_start_*`, `raw_fsync_end_*`). `commit1_p50_ratio` is `commit1_p50_us /
//! raw_fsync_p50_us`, and likewise for p99.
//!
//! `--raw-only` runs only the two raw baselines, back to back (no cluster needed). `--json`
//! prints one JSON object on stdout and the table on stderr.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use hdrhistogram::Histogram;
use serde::Serialize;
use sluice_broker::client_api::{
    AppendClient, ClientApiError, Connection, PAYLOAD_BYTES_MAX, Response,
};
use sluice_tools::bench;
use sluice_tools::bench::args::{GatewayArgs, Parsed};

const USAGE_HEAD: &str = "\
usage: sluice-bench [workload] [options]

workloads:
  gateway  (the default) instance latency and throughput through the Zeebe gRPC gateway
  append   commit latency and throughput of appends, against the raw disk
";

const USAGE_APPEND: &str = "\
sluice-bench append [--brokers ADDR,...] [--partitions 1,2,3] [--payload-bytes 1024]
                    [--duration-s 10] [--outstanding 64] [--raw-dir DIR] [--raw-ops 2000]
                    [--json] [--raw-only]
  --brokers        command-API addresses (default: those of `sluice dev`,
                   127.0.0.1:26501,127.0.0.1:26511,127.0.0.1:26521)
  --partitions     partitions to append to (default 1,2,3)
  --payload-bytes  bytes per append (default 1024, at most 4 MiB)
  --duration-s     seconds of each timed phase (default 10)
  --outstanding    appends in flight in the pipelined phase (default 64)
  --raw-dir        where the raw disk baseline writes (default ./sluice-data/bench-raw);
                   put it on the brokers' disk
  --raw-ops        4 KiB write+fdatasync samples per raw baseline (default 2000)
  --json           one JSON object on stdout, the table on stderr
  --raw-only       only the raw disk baselines, no cluster";

fn usage() -> String {
    format!("{USAGE_HEAD}\n{}\n\n{USAGE_APPEND}", bench::args::USAGE)
}

const BROKERS_DEFAULT: &str = "127.0.0.1:26501,127.0.0.1:26511,127.0.0.1:26521";
const PARTITIONS_DEFAULT: [u32; 3] = [1, 2, 3];
const PAYLOAD_BYTES_DEFAULT: usize = 1024;
const DURATION_S_DEFAULT: f64 = 10.0;
const DURATION_S_MAX: f64 = 3600.0;
const OUTSTANDING_DEFAULT: usize = 64;
const OUTSTANDING_MAX: usize = 4096;
const RAW_DIR_DEFAULT: &str = "./sluice-data/bench-raw";
const RAW_OPS_DEFAULT: u64 = 2000;
const RAW_OPS_MAX: u64 = 1_000_000;
const BROKERS_MAX: usize = 256;
const PARTITIONS_MAX: usize = 8192;

/// Bytes of one raw write, and the alignment `O_DIRECT` needs for buffer, offset and length.
const RAW_WRITE_BYTES: usize = 4096;
/// Size of the preallocated raw file; writes wrap around to its start when they reach its end.
const RAW_FILE_BYTES: u64 = 16 << 20;
/// A raw write+fdatasync p50 below this is no disk: the raw directory is likely in memory
/// (tmpfs), and the report says so.
const RAW_IN_MEMORY_SUSPECT_US: u64 = 20;

/// How long leader discovery waits for each partition.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An append still unanswered after this long fails the run.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before retrying an append answered `NotLeader` or `Unavailable`.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// A phase stops with an error after this many failed appends.
const ERRORS_MAX: u64 = 100_000;
/// The payload of the discovery appends.
const WARMUP_PAYLOAD: &[u8] = b"sluice-bench warm-up";
/// Latency histograms cover 1 µs to 60 s.
const HISTOGRAM_MAX_US: u64 = 60_000_000;
/// Request ids of pipelined worker `i` start at `i << WORKER_REQUEST_ID_SHIFT`.
const WORKER_REQUEST_ID_SHIFT: u32 = 48;

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Command {
    Help,
    Gateway(GatewayArgs),
    Append(AppendArgs),
}

#[derive(Debug, Clone, PartialEq)]
struct AppendArgs {
    brokers: Vec<SocketAddr>,
    partitions: Vec<u32>,
    payload_bytes: usize,
    duration_s: f64,
    outstanding: usize,
    raw_dir: PathBuf,
    raw_ops: u64,
    json: bool,
    raw_only: bool,
}

/// A command line that cannot be run; printed with the usage.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage_error(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

fn parse_brokers(value: &str) -> Result<Vec<SocketAddr>, UsageError> {
    let mut brokers = Vec::new();
    for item in value.split(',').map(str::trim) {
        let addr = item
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                usage_error(format!(
                    "--brokers: {item:?} is not a host:port address (e.g. 127.0.0.1:26501)"
                ))
            })?;
        brokers.push(addr);
    }
    if brokers.len() > BROKERS_MAX {
        return Err(usage_error(format!(
            "--brokers: {} addresses, at most {BROKERS_MAX}",
            brokers.len()
        )));
    }
    Ok(brokers)
}

fn parse_partitions(value: &str) -> Result<Vec<u32>, UsageError> {
    let mut partitions = Vec::new();
    for item in value.split(',').map(str::trim) {
        let partition: u32 = item.parse().map_err(|_| {
            usage_error(format!(
                "--partitions: {item:?} is not a partition id (a comma-separated list such as \
                 1,2,3)"
            ))
        })?;
        if partition == 0 {
            return Err(usage_error("--partitions: partition ids start at 1"));
        }
        if partitions.contains(&partition) {
            return Err(usage_error(format!(
                "--partitions: partition {partition} is listed twice"
            )));
        }
        if partitions.len() == PARTITIONS_MAX {
            return Err(usage_error(format!(
                "--partitions: at most {PARTITIONS_MAX} partitions"
            )));
        }
        partitions.push(partition);
    }
    Ok(partitions)
}

fn parse_integer<T: TryFrom<u64>>(
    flag: &str,
    value: &str,
    min: u64,
    max: u64,
) -> Result<T, UsageError> {
    let parsed: u64 = value
        .parse()
        .map_err(|_| usage_error(format!("{flag}: {value:?} is not a whole number")))?;
    if !(min..=max).contains(&parsed) {
        return Err(usage_error(format!(
            "{flag} must be between {min} and {max}, got {parsed}"
        )));
    }
    T::try_from(parsed).map_err(|_| usage_error(format!("{flag}: {parsed} is too large here")))
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, UsageError> {
    let mut args = args.into_iter().peekable();
    match args.peek().map(String::as_str) {
        Some("append") => {
            args.next();
        }
        Some("-h" | "--help" | "help") => return Ok(Command::Help),
        Some(other) if other != "gateway" && !other.starts_with('-') => {
            return Err(usage_error(format!(
                "unknown workload {other:?}; the workloads are: gateway (the default), append"
            )));
        }
        _ => {
            if args.peek().is_some_and(|first| first == "gateway") {
                args.next();
            }
            return match bench::args::parse(args) {
                Ok(Parsed::Help) => Ok(Command::Help),
                Ok(Parsed::Run(gateway)) => Ok(Command::Gateway(gateway)),
                Err(error) => Err(usage_error(error.0)),
            };
        }
    }
    let mut parsed = AppendArgs {
        brokers: parse_brokers(BROKERS_DEFAULT)?,
        partitions: PARTITIONS_DEFAULT.to_vec(),
        payload_bytes: PAYLOAD_BYTES_DEFAULT,
        duration_s: DURATION_S_DEFAULT,
        outstanding: OUTSTANDING_DEFAULT,
        raw_dir: PathBuf::from(RAW_DIR_DEFAULT),
        raw_ops: RAW_OPS_DEFAULT,
        json: false,
        raw_only: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| usage_error(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--brokers" => parsed.brokers = parse_brokers(&value()?)?,
            "--partitions" => parsed.partitions = parse_partitions(&value()?)?,
            "--payload-bytes" => {
                parsed.payload_bytes =
                    parse_integer(&flag, &value()?, 1, PAYLOAD_BYTES_MAX as u64)?;
            }
            "--duration-s" => {
                let value = value()?;
                let seconds: f64 = value
                    .parse()
                    .map_err(|_| usage_error(format!("--duration-s: {value:?} is not a number")))?;
                if !(seconds > 0.0 && seconds <= DURATION_S_MAX) {
                    return Err(usage_error(format!(
                        "--duration-s must be above 0 and at most {DURATION_S_MAX}, got {value}"
                    )));
                }
                parsed.duration_s = seconds;
            }
            "--outstanding" => {
                parsed.outstanding = parse_integer(&flag, &value()?, 1, OUTSTANDING_MAX as u64)?;
            }
            "--raw-dir" => parsed.raw_dir = PathBuf::from(value()?),
            "--raw-ops" => parsed.raw_ops = parse_integer(&flag, &value()?, 1, RAW_OPS_MAX)?,
            "--json" => parsed.json = true,
            "--raw-only" => parsed.raw_only = true,
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(usage_error(format!("unknown option {other:?}"))),
        }
    }
    Ok(Command::Append(parsed))
}

// ---------------------------------------------------------------------------------------------
// Histograms
// ---------------------------------------------------------------------------------------------

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).context("creating a latency histogram")
}

fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// Percentiles of one histogram, in µs.
#[derive(Debug, Clone, Copy, Serialize)]
#[expect(clippy::struct_field_names, reason = "the unit belongs in each name")]
struct Percentiles {
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            p50_us: histogram.value_at_quantile(0.50),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
        }
    }
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn ratio(numerator: u64, denominator: u64) -> f64 {
    numerator as f64 / denominator.max(1) as f64
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

// ---------------------------------------------------------------------------------------------
// Raw disk baseline
// ---------------------------------------------------------------------------------------------

/// Reserves `bytes` of disk for `file` (unwritten extents, like a new journal segment).
fn preallocate(file: &File, bytes: u64) -> Result<()> {
    let length = libc::off_t::try_from(bytes).context("preallocation size")?;
    // SAFETY: `fallocate` takes only integers and touches no memory of ours; `file` owns the
    // descriptor and keeps it open for the whole call.
    let status = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, length) };
    if status != 0 {
        return Err(std::io::Error::last_os_error()).context(
            "preallocating the raw file (fallocate); use a --raw-dir on a filesystem that \
             supports it, e.g. ext4 or xfs",
        );
    }
    Ok(())
}

/// `ops` times: 4 KiB `pwrite` at the next offset of `path` (created, `O_DIRECT`, `file_bytes`
/// preallocated; offsets wrap around at its end) then `fdatasync`. Returns each write+sync
/// latency in µs.
fn measure_raw_fsync_in(path: &Path, ops: u64, file_bytes: u64) -> Result<Histogram<u64>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| {
            format!(
                "opening {} with O_DIRECT (tmpfs and some filesystems refuse it: pass a \
                 --raw-dir on the disk the brokers write to)",
                path.display()
            )
        })?;
    preallocate(&file, file_bytes)?;
    // O_DIRECT needs a 4096-aligned buffer: take the aligned 4 KiB inside an 8 KiB vector
    // (no unsafe allocation needed).
    let mut backing = vec![0x5Au8; 2 * RAW_WRITE_BYTES];
    let start = backing.as_ptr().align_offset(RAW_WRITE_BYTES);
    ensure!(
        start <= RAW_WRITE_BYTES,
        "could not align the raw write buffer to {RAW_WRITE_BYTES} bytes"
    );
    let buffer = &mut backing[start..start + RAW_WRITE_BYTES];
    let blocks = (file_bytes / RAW_WRITE_BYTES as u64).max(1);
    let mut histogram = new_histogram()?;
    for op in 0..ops {
        buffer[..8].copy_from_slice(&op.to_le_bytes());
        let offset = (op % blocks) * RAW_WRITE_BYTES as u64;
        let started = Instant::now();
        file.write_all_at(buffer, offset)
            .with_context(|| format!("raw O_DIRECT write to {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("raw fdatasync of {}", path.display()))?;
        record(&mut histogram, started.elapsed());
    }
    Ok(histogram)
}

/// The raw baseline in `dir` (created if missing); the file is removed afterwards.
fn measure_raw_fsync(dir: &Path, ops: u64) -> Result<Histogram<u64>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the raw baseline directory {}", dir.display()))?;
    let path = dir.join(format!("sluice-bench-raw-{}.dat", std::process::id()));
    let result = measure_raw_fsync_in(&path, ops, RAW_FILE_BYTES);
    let removed = match std::fs::remove_file(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    };
    let histogram = result?;
    removed.with_context(|| format!("removing {}", path.display()))?;
    Ok(histogram)
}

#[derive(Debug, Clone, Serialize)]
#[expect(
    clippy::struct_field_names,
    reason = "the names are the JSON report's keys"
)]
struct RawReport {
    raw_dir: String,
    raw_ops: u64,
    /// p50 of both raw runs merged.
    raw_fsync_p50_us: u64,
    /// p99 of both raw runs merged.
    raw_fsync_p99_us: u64,
    raw_fsync_p999_us: u64,
    raw_fsync_start_p50_us: u64,
    raw_fsync_start_p99_us: u64,
    raw_fsync_end_p50_us: u64,
    raw_fsync_end_p99_us: u64,
    raw_fsync_combined: &'static str,
}

fn raw_report(
    dir: &Path,
    ops: u64,
    start: &Histogram<u64>,
    end: &Histogram<u64>,
) -> Result<RawReport> {
    let mut both = start.clone();
    both.add(end).context("merging the raw histograms")?;
    let both = Percentiles::of(&both);
    let start = Percentiles::of(start);
    let end = Percentiles::of(end);
    Ok(RawReport {
        raw_dir: dir.display().to_string(),
        raw_ops: ops,
        raw_fsync_p50_us: both.p50_us,
        raw_fsync_p99_us: both.p99_us,
        raw_fsync_p999_us: both.p999_us,
        raw_fsync_start_p50_us: start.p50_us,
        raw_fsync_start_p99_us: start.p99_us,
        raw_fsync_end_p50_us: end.p50_us,
        raw_fsync_end_p99_us: end.p99_us,
        raw_fsync_combined: "percentiles of the start and end runs merged into one histogram",
    })
}

// ---------------------------------------------------------------------------------------------
// Cluster phases
// ---------------------------------------------------------------------------------------------

/// Appends a small payload to every partition through `client`, which finds the leaders.
fn discover_leaders(
    client: &mut AppendClient,
    partitions: &[u32],
    timeout: Duration,
) -> Result<BTreeMap<u32, SocketAddr>> {
    let mut leaders = BTreeMap::new();
    for &partition in partitions {
        let leader = find_leader(client, partition, timeout)?;
        leaders.insert(partition, leader);
    }
    Ok(leaders)
}

fn find_leader(client: &mut AppendClient, partition: u32, timeout: Duration) -> Result<SocketAddr> {
    match client.append(partition, WARMUP_PAYLOAD, timeout) {
        Ok(_) => {}
        Err(error @ ClientApiError::Timeout { .. }) => {
            let brokers: Vec<String> = client.brokers().iter().map(ToString::to_string).collect();
            bail!(
                "no broker committed an append to partition {partition} within {} s: is \
                 `sluice dev` running? (brokers tried: {}; {error})",
                timeout.as_secs_f64(),
                brokers.join(", ")
            );
        }
        Err(error) => {
            return Err(anyhow!(error).context(format!("appending to partition {partition}")));
        }
    }
    client
        .leader_of(partition)
        .with_context(|| format!("the client forgot the leader of partition {partition}"))
}

fn resolve(address: &str) -> Option<SocketAddr> {
    address.to_socket_addrs().ok()?.next()
}

#[derive(Debug)]
struct PhaseResult {
    histogram: Histogram<u64>,
    ops: u64,
    errors: u64,
    elapsed: Duration,
}

/// Sends one append to `leader` over its kept connection and waits for its answer.
fn append_once(
    connections: &mut HashMap<SocketAddr, Connection>,
    leader: SocketAddr,
    request_id: u64,
    partition: u32,
    payload: &[u8],
) -> Result<Response, ClientApiError> {
    let connection = match connections.entry(leader) {
        std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
        std::collections::hash_map::Entry::Vacant(entry) => {
            entry.insert(Connection::connect(leader, CONNECT_TIMEOUT)?)
        }
    };
    connection.send_append(request_id, partition, payload)?;
    connection.flush()?;
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        let response = connection.recv(deadline.saturating_duration_since(Instant::now()))?;
        if response.request_id() == request_id {
            return Ok(response);
        }
    }
}

/// One append at a time, round-robin over the partitions, each to its leader.
fn run_commit1(
    client: &mut AppendClient,
    leaders: &mut BTreeMap<u32, SocketAddr>,
    partitions: &[u32],
    payload: &[u8],
    duration: Duration,
) -> Result<PhaseResult> {
    let mut connections: HashMap<SocketAddr, Connection> = HashMap::new();
    let mut histogram = new_histogram()?;
    let mut ops = 0;
    let mut errors = 0;
    let mut request_id = 0u64;
    let started = Instant::now();
    let end = started + duration;
    let mut turn = 0;
    while Instant::now() < end {
        let partition = partitions[turn % partitions.len()];
        turn += 1;
        let leader = *leaders
            .get(&partition)
            .with_context(|| format!("no leader known for partition {partition}"))?;
        request_id += 1;
        let op_started = Instant::now();
        let outcome = append_once(&mut connections, leader, request_id, partition, payload);
        let problem = match outcome {
            Ok(Response::Appended { .. }) => {
                record(&mut histogram, op_started.elapsed());
                ops += 1;
                continue;
            }
            Ok(Response::Invalid { message, .. }) => {
                bail!("the broker rejected an append to partition {partition}: {message}")
            }
            Ok(Response::NotLeader {
                leader: Some((_, address)),
                ..
            }) if resolve(&address).is_some_and(|hint| hint != leader) => {
                if let Some(hint) = resolve(&address) {
                    leaders.insert(partition, hint);
                }
                errors += 1;
                None
            }
            Ok(other) => Some(format!("{other:?}")),
            Err(error) => {
                connections.remove(&leader);
                Some(error.to_string())
            }
        };
        if let Some(problem) = problem {
            errors += 1;
            ensure!(
                errors <= ERRORS_MAX,
                "commit1: {errors} failed appends, the last: {problem}"
            );
            std::thread::sleep(RETRY_BACKOFF);
            let leader = find_leader(client, partition, DISCOVERY_TIMEOUT)
                .with_context(|| format!("finding the leader again after: {problem}"))?;
            leaders.insert(partition, leader);
        }
        ensure!(errors <= ERRORS_MAX, "commit1: {errors} failed appends");
    }
    Ok(PhaseResult {
        histogram,
        ops,
        errors,
        elapsed: started.elapsed(),
    })
}

/// Keeps one append in flight for each of `slots` (the partition of each slot) over one
/// connection to `leader` until `end`, then waits for the answers still due.
fn pipelined_worker(
    leader: SocketAddr,
    slots: &[u32],
    payload: &[u8],
    end: Instant,
    first_request_id: u64,
) -> Result<PhaseResult> {
    let started = Instant::now();
    let mut connection = Connection::connect(leader, CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to the leader {leader}"))?;
    let mut histogram = new_histogram()?;
    let mut ops = 0;
    let mut errors = 0;
    let mut next_request_id = first_request_id;
    // request id → (slot, sent at)
    let mut in_flight: HashMap<u64, (usize, Instant)> = HashMap::with_capacity(slots.len());
    // Slots waiting to resend after NotLeader or Unavailable: (slot, resume at), in time order.
    let mut paused: VecDeque<(usize, Instant)> = VecDeque::new();
    let mut to_send: Vec<usize> = (0..slots.len()).collect();
    let mut last_completion = started;
    loop {
        let now = Instant::now();
        while let Some(&(slot, resume_at)) = paused.front() {
            if resume_at > now {
                break;
            }
            paused.pop_front();
            to_send.push(slot);
        }
        if now < end {
            for slot in to_send.drain(..) {
                connection.send_append(next_request_id, slots[slot], payload)?;
                in_flight.insert(next_request_id, (slot, Instant::now()));
                next_request_id += 1;
            }
            connection.flush()?;
        } else {
            to_send.clear();
            paused.clear();
        }
        if in_flight.is_empty() && paused.is_empty() && to_send.is_empty() {
            break;
        }
        // Wait for an answer, or until the next paused slot may resend.
        let wait = paused.front().map_or(ANSWER_TIMEOUT, |&(_, resume_at)| {
            resume_at.saturating_duration_since(now)
        });
        let mut wait = wait.min(ANSWER_TIMEOUT);
        loop {
            let response = match connection.recv(wait) {
                Ok(response) => response,
                Err(ClientApiError::Timeout { .. }) => break,
                Err(error) => {
                    return Err(anyhow!(error).context(format!("commit64: leader {leader}")));
                }
            };
            // Drain whatever else already arrived without blocking, then send anew.
            wait = Duration::ZERO;
            let Some((slot, sent_at)) = in_flight.remove(&response.request_id()) else {
                errors += 1;
                continue;
            };
            match response {
                Response::Appended { .. } => {
                    let answered = Instant::now();
                    record(&mut histogram, answered.duration_since(sent_at));
                    ops += 1;
                    last_completion = answered;
                    to_send.push(slot);
                }
                Response::Invalid { message, .. } => {
                    bail!(
                        "the broker rejected an append to partition {}: {message}",
                        slots[slot]
                    )
                }
                Response::NotLeader { .. }
                | Response::Unavailable { .. }
                | Response::Overloaded { .. } => {
                    errors += 1;
                    ensure!(
                        errors <= ERRORS_MAX,
                        "commit64: {errors} failed appends at {leader}, the last: {response:?}"
                    );
                    paused.push_back((slot, Instant::now() + RETRY_BACKOFF));
                }
                Response::Processed { .. } => {
                    bail!("commit64: {leader} answered an append as an engine command")
                }
            }
        }
        if let Some((_, sent_at)) = in_flight.values().min_by_key(|(_, sent_at)| *sent_at) {
            ensure!(
                sent_at.elapsed() < ANSWER_TIMEOUT,
                "commit64: {leader} left an append unanswered for {} s",
                ANSWER_TIMEOUT.as_secs()
            );
        }
    }
    Ok(PhaseResult {
        histogram,
        ops,
        errors,
        elapsed: last_completion.duration_since(started),
    })
}

/// `outstanding` appends in flight, slot `k` on partition `partitions[k % n]`, pipelined over
/// one connection (and thread) per leader.
fn run_commit_pipelined(
    leaders: &BTreeMap<u32, SocketAddr>,
    partitions: &[u32],
    outstanding: usize,
    payload: &[u8],
    duration: Duration,
) -> Result<PhaseResult> {
    let mut slots_by_leader: BTreeMap<SocketAddr, Vec<u32>> = BTreeMap::new();
    for slot in 0..outstanding {
        let partition = partitions[slot % partitions.len()];
        let leader = *leaders
            .get(&partition)
            .with_context(|| format!("no leader known for partition {partition}"))?;
        slots_by_leader.entry(leader).or_default().push(partition);
    }
    let started = Instant::now();
    let end = started + duration;
    let results: Vec<Result<PhaseResult>> = std::thread::scope(|scope| {
        let workers: Vec<_> = slots_by_leader
            .iter()
            .enumerate()
            .map(|(index, (leader, slots))| {
                let first_request_id = (index as u64) << WORKER_REQUEST_ID_SHIFT;
                scope
                    .spawn(move || pipelined_worker(*leader, slots, payload, end, first_request_id))
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("a commit64 worker thread panicked")))
            })
            .collect()
    });
    let mut merged = PhaseResult {
        histogram: new_histogram()?,
        ops: 0,
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for result in results {
        let result = result?;
        merged
            .histogram
            .add(&result.histogram)
            .context("merging the commit64 histograms")?;
        merged.ops += result.ops;
        merged.errors += result.errors;
    }
    merged.elapsed = started.elapsed();
    Ok(merged)
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
struct Report {
    payload_bytes: usize,
    duration_s: f64,
    partitions: Vec<u32>,
    outstanding: usize,
    brokers: Vec<String>,
    leaders: BTreeMap<u32, String>,
    #[serde(flatten)]
    raw: RawReport,
    commit1_p50_us: u64,
    commit1_p99_us: u64,
    commit1_p999_us: u64,
    commit1_ops: u64,
    commit1_ops_per_s: f64,
    commit1_errors: u64,
    commit64_p50_us: u64,
    commit64_p99_us: u64,
    commit64_p999_us: u64,
    commit64_ops: u64,
    commit64_ops_per_s: f64,
    commit64_errors: u64,
    commit1_p50_ratio: f64,
    commit1_p99_ratio: f64,
    errors: u64,
}

fn build_report(
    args: &AppendArgs,
    leaders: &BTreeMap<u32, SocketAddr>,
    raw: RawReport,
    commit1: &PhaseResult,
    commit64: &PhaseResult,
) -> Report {
    let one = Percentiles::of(&commit1.histogram);
    let pipelined = Percentiles::of(&commit64.histogram);
    Report {
        payload_bytes: args.payload_bytes,
        duration_s: args.duration_s,
        partitions: args.partitions.clone(),
        outstanding: args.outstanding,
        brokers: args.brokers.iter().map(ToString::to_string).collect(),
        leaders: leaders
            .iter()
            .map(|(partition, leader)| (*partition, leader.to_string()))
            .collect(),
        commit1_p50_ratio: ratio(one.p50_us, raw.raw_fsync_p50_us),
        commit1_p99_ratio: ratio(one.p99_us, raw.raw_fsync_p99_us),
        raw,
        commit1_p50_us: one.p50_us,
        commit1_p99_us: one.p99_us,
        commit1_p999_us: one.p999_us,
        commit1_ops: commit1.ops,
        commit1_ops_per_s: per_second(commit1.ops, commit1.elapsed),
        commit1_errors: commit1.errors,
        commit64_p50_us: pipelined.p50_us,
        commit64_p99_us: pipelined.p99_us,
        commit64_p999_us: pipelined.p999_us,
        commit64_ops: commit64.ops,
        commit64_ops_per_s: per_second(commit64.ops, commit64.elapsed),
        commit64_errors: commit64.errors,
        errors: commit1.errors + commit64.errors,
    }
}

const TABLE_HEADER: [&str; 5] = ["phase", "ops", "p50 µs", "p99 µs", "throughput"];

fn print_raw_rows(raw: &RawReport, out: &mut dyn Write) -> std::io::Result<()> {
    let rows = [
        (
            "raw 4K write+fdatasync, start",
            raw.raw_fsync_start_p50_us,
            raw.raw_fsync_start_p99_us,
            raw.raw_ops,
        ),
        (
            "raw 4K write+fdatasync, end",
            raw.raw_fsync_end_p50_us,
            raw.raw_fsync_end_p99_us,
            raw.raw_ops,
        ),
        (
            "raw 4K write+fdatasync, both",
            raw.raw_fsync_p50_us,
            raw.raw_fsync_p99_us,
            2 * raw.raw_ops,
        ),
    ];
    for (name, p50, p99, ops) in rows {
        writeln!(out, "{name:<34} {ops:>9} {p50:>9} {p99:>9}")?;
    }
    if raw.raw_fsync_p50_us < RAW_IN_MEMORY_SUSPECT_US {
        writeln!(
            out,
            "note: a raw fdatasync p50 below {RAW_IN_MEMORY_SUSPECT_US} µs is no disk: {} is \
             likely in memory (tmpfs); pass a --raw-dir on the brokers' disk",
            raw.raw_dir
        )?;
    }
    Ok(())
}

fn print_header(out: &mut dyn Write) -> std::io::Result<()> {
    let [phase, ops, p50, p99, throughput] = TABLE_HEADER;
    writeln!(
        out,
        "{phase:<34} {ops:>9} {p50:>9} {p99:>9} {throughput:>12}"
    )
}

fn print_table(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "sluice-bench append: partitions {:?}, {}-byte payloads, {} s per phase, {} outstanding",
        report.partitions, report.payload_bytes, report.duration_s, report.outstanding
    )?;
    let leaders: Vec<String> = report
        .leaders
        .iter()
        .map(|(partition, leader)| format!("{partition} → {leader}"))
        .collect();
    writeln!(out, "leaders: {}", leaders.join(", "))?;
    print_header(out)?;
    print_raw_rows(&report.raw, out)?;
    let commit1 = format!("{:.0} op/s", report.commit1_ops_per_s);
    let commit64 = format!("{:.0} op/s", report.commit64_ops_per_s);
    let rows = [
        (
            "commit, 1 outstanding".to_owned(),
            report.commit1_ops,
            report.commit1_p50_us,
            report.commit1_p99_us,
            commit1,
        ),
        (
            format!("commit, {} outstanding", report.outstanding),
            report.commit64_ops,
            report.commit64_p50_us,
            report.commit64_p99_us,
            commit64,
        ),
    ];
    for (name, ops, p50, p99, throughput) in rows {
        writeln!(
            out,
            "{name:<34} {ops:>9} {p50:>9} {p99:>9} {throughput:>12}"
        )?;
    }
    writeln!(
        out,
        "commit1 p50 / raw p50: {:.2}; commit1 p99 / raw p99: {:.2} (raw: both runs merged)",
        report.commit1_p50_ratio, report.commit1_p99_ratio
    )?;
    writeln!(
        out,
        "errors (NotLeader, Unavailable, retried): {} (commit1 {}, commit{} {})",
        report.errors, report.commit1_errors, report.outstanding, report.commit64_errors
    )
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

fn progress(args: &AppendArgs, message: &str) {
    if !args.json {
        eprintln!("{message}");
    }
}

fn run_raw_only(args: &AppendArgs) -> Result<()> {
    progress(args, "raw baseline (1 of 2)…");
    let start = measure_raw_fsync(&args.raw_dir, args.raw_ops)?;
    progress(args, "raw baseline (2 of 2)…");
    let end = measure_raw_fsync(&args.raw_dir, args.raw_ops)?;
    let raw = raw_report(&args.raw_dir, args.raw_ops, &start, &end)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&raw).context("serializing the report")?
        );
    }
    let mut out: Box<dyn Write> = if args.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let [phase, ops, p50, p99, _] = TABLE_HEADER;
    writeln!(out, "{phase:<34} {ops:>9} {p50:>9} {p99:>9}")?;
    print_raw_rows(&raw, &mut out)?;
    Ok(())
}

/// Every phase against the cluster; `discovery_timeout` bounds the wait for each partition.
fn run_append(args: &AppendArgs, discovery_timeout: Duration) -> Result<Report> {
    let duration = Duration::from_secs_f64(args.duration_s);
    let payload = vec![0xA5; args.payload_bytes];

    progress(args, "raw baseline (start)…");
    let raw_start = measure_raw_fsync(&args.raw_dir, args.raw_ops)?;

    progress(args, "finding the partition leaders…");
    let mut client = AppendClient::new(args.brokers.clone());
    let mut leaders = discover_leaders(&mut client, &args.partitions, discovery_timeout)?;

    progress(args, "commit, 1 outstanding…");
    let commit1 = run_commit1(
        &mut client,
        &mut leaders,
        &args.partitions,
        &payload,
        duration,
    )?;

    progress(args, &format!("commit, {} outstanding…", args.outstanding));
    let commit64 = run_commit_pipelined(
        &leaders,
        &args.partitions,
        args.outstanding,
        &payload,
        duration,
    )?;

    progress(args, "raw baseline (end)…");
    let raw_end = measure_raw_fsync(&args.raw_dir, args.raw_ops)?;
    let raw = raw_report(&args.raw_dir, args.raw_ops, &raw_start, &raw_end)?;
    Ok(build_report(args, &leaders, raw, &commit1, &commit64))
}

fn run(args: &AppendArgs) -> Result<()> {
    if args.raw_only {
        return run_raw_only(args);
    }
    let report = run_append(args, DISCOVERY_TIMEOUT)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("serializing the report")?
        );
        print_table(&report, &mut std::io::stderr())?;
    } else {
        print_table(&report, &mut std::io::stdout())?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        Ok(Command::Gateway(args)) => match bench::run(&args) {
            Ok(summary) if summary.completed > 0 => ExitCode::SUCCESS,
            Ok(summary) => {
                eprintln!(
                    "sluice-bench: no instance completed ({} created, {} errors); is the \
                     gateway at {} serving its partitions?",
                    summary.created, summary.errors, summary.gateway
                );
                ExitCode::FAILURE
            }
            Err(error) => {
                eprintln!("sluice-bench: {error:#}");
                ExitCode::FAILURE
            }
        },
        Ok(Command::Append(args)) => match run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("sluice-bench: {error:#}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("sluice-bench: {error}\n\n{}", usage());
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_broker::client_api::{Request, RequestDecoder, encode_response};
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    fn parse(args: &[&str]) -> Result<Command, UsageError> {
        parse_args(args.iter().map(|arg| (*arg).to_owned()))
    }

    fn parse_append(args: &[&str]) -> AppendArgs {
        match parse(args) {
            Ok(Command::Append(args)) => args,
            other => panic!("expected append arguments, got {other:?}"),
        }
    }

    fn parse_error(args: &[&str]) -> String {
        parse(args).expect_err("invalid arguments").to_string()
    }

    #[test]
    fn defaults_are_the_sluice_dev_cluster() {
        let args = parse_append(&["append"]);
        assert_eq!(
            args.brokers,
            vec![
                SocketAddr::from(([127, 0, 0, 1], 26501)),
                SocketAddr::from(([127, 0, 0, 1], 26511)),
                SocketAddr::from(([127, 0, 0, 1], 26521)),
            ]
        );
        assert_eq!(args.partitions, vec![1, 2, 3]);
        assert_eq!(args.payload_bytes, 1024);
        assert!((args.duration_s - 10.0).abs() < f64::EPSILON);
        assert_eq!(args.outstanding, 64);
        assert_eq!(args.raw_dir, PathBuf::from("./sluice-data/bench-raw"));
        assert_eq!(args.raw_ops, 2000);
        assert!(!args.json && !args.raw_only);
    }

    #[test]
    fn every_option_parses() {
        let args = parse_append(&[
            "append",
            "--brokers",
            "127.0.0.1:1, 127.0.0.1:2",
            "--partitions",
            "4,2",
            "--payload-bytes",
            "100",
            "--duration-s",
            "0.5",
            "--outstanding",
            "8",
            "--raw-dir",
            "/x/y",
            "--raw-ops",
            "10",
            "--json",
            "--raw-only",
        ]);
        assert_eq!(
            args.brokers,
            vec![
                SocketAddr::from(([127, 0, 0, 1], 1)),
                SocketAddr::from(([127, 0, 0, 1], 2))
            ]
        );
        assert_eq!(args.partitions, vec![4, 2]);
        assert_eq!(args.payload_bytes, 100);
        assert!((args.duration_s - 0.5).abs() < f64::EPSILON);
        assert_eq!(args.outstanding, 8);
        assert_eq!(args.raw_dir, PathBuf::from("/x/y"));
        assert_eq!(args.raw_ops, 10);
        assert!(args.json && args.raw_only);
        assert_eq!(parse(&["--help"]).expect("help"), Command::Help);
        assert_eq!(parse(&["append", "-h"]).expect("help"), Command::Help);
    }

    #[test]
    fn the_gateway_workload_is_the_default() {
        let gateway = |args: &[&str]| match parse(args) {
            Ok(Command::Gateway(args)) => args,
            other => panic!("{args:?}: expected the gateway workload, got {other:?}"),
        };
        assert_eq!(gateway(&[]), GatewayArgs::default());
        assert_eq!(gateway(&["gateway"]), GatewayArgs::default());
        assert_eq!(gateway(&["--rate", "50"]).rate, 50);
        let args = gateway(&["gateway", "--json", "--activate", "poll", "--workers", "2"]);
        assert!(args.json && args.workers == 2);
        assert_eq!(args.activation, bench::args::Activation::Poll);
        assert_eq!(parse(&["gateway", "-h"]).expect("help"), Command::Help);
        assert_eq!(parse(&["help"]).expect("help"), Command::Help);
        assert!(usage().contains("--activate stream|poll") && usage().contains("--raw-only"));
    }

    #[test]
    fn bad_arguments_are_clear_errors() {
        let cases: [(&[&str], &str); 14] = [
            (
                &["gateway", "--raw-ops", "5"],
                "unknown option \"--raw-ops\"",
            ),
            (
                &["load"],
                "unknown workload \"load\"; the workloads are: gateway (the default), append",
            ),
            (&["append", "--nope"], "unknown option \"--nope\""),
            (
                &["append", "--payload-bytes"],
                "--payload-bytes needs a value",
            ),
            (&["append", "--payload-bytes", "x"], "not a whole number"),
            (&["append", "--payload-bytes", "0"], "between 1 and"),
            (
                &["append", "--payload-bytes", "7405569"],
                "between 1 and 7405568",
            ),
            (
                &["append", "--outstanding", "0"],
                "--outstanding must be between",
            ),
            (
                &["append", "--duration-s", "0"],
                "--duration-s must be above 0",
            ),
            (
                &["append", "--duration-s", "NaN"],
                "--duration-s must be above 0",
            ),
            (&["append", "--partitions", "1,1"], "listed twice"),
            (&["append", "--partitions", "0"], "start at 1"),
            (&["append", "--partitions", ""], "not a partition id"),
            (
                &["append", "--brokers", "nohost"],
                "not a host:port address",
            ),
        ];
        for (args, expected) in cases {
            let error = parse_error(args);
            assert!(error.contains(expected), "{args:?}: {error:?}");
        }
    }

    /// A directory for a test, under the system temp dir; removed by the test.
    fn test_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("sluice-bench-{name}-{}", std::process::id()))
    }

    /// Whether `dir`'s filesystem accepts `O_DIRECT` (tmpfs does not).
    fn supports_o_direct(dir: &Path) -> bool {
        std::fs::create_dir_all(dir).expect("create the test dir");
        let probe = dir.join("probe");
        let supported = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .is_ok();
        drop(std::fs::remove_file(&probe));
        supported
    }

    #[test]
    fn raw_baseline_measures_and_cleans_up() {
        let dir = test_dir("raw");
        if !supports_o_direct(&dir) {
            eprintln!("skipped: {} does not support O_DIRECT", dir.display());
            std::fs::remove_dir_all(&dir).expect("remove the test dir");
            return;
        }
        let histogram = measure_raw_fsync(&dir.join("nested"), 20).expect("raw baseline");
        assert_eq!(histogram.len(), 20);
        assert!(histogram.value_at_quantile(0.5) >= 1);
        // The file is gone; the directory stays.
        let left: Vec<_> = std::fs::read_dir(dir.join("nested"))
            .expect("the raw dir exists")
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let report = raw_report(&dir, 20, &histogram, &histogram).expect("report");
        assert_eq!(report.raw_fsync_p50_us, report.raw_fsync_start_p50_us);
        std::fs::remove_dir_all(&dir).expect("remove the test dir");
    }

    #[test]
    fn raw_baseline_wraps_around_the_preallocated_file() {
        let dir = test_dir("raw-wrap");
        if !supports_o_direct(&dir) {
            std::fs::remove_dir_all(&dir).expect("remove the test dir");
            return;
        }
        let path = dir.join("wrap.dat");
        let file_bytes = 4 * RAW_WRITE_BYTES as u64;
        let histogram = measure_raw_fsync_in(&path, 7, file_bytes).expect("raw baseline");
        assert_eq!(histogram.len(), 7);
        let size = std::fs::metadata(&path).expect("metadata").len();
        assert_eq!(size, file_bytes);
        std::fs::remove_dir_all(&dir).expect("remove the test dir");
    }

    #[test]
    fn raw_baseline_in_an_unusable_dir_says_what_to_do() {
        let error = measure_raw_fsync(Path::new("/proc/sluice-bench-cannot-create"), 1)
            .expect_err("cannot create");
        assert!(
            format!("{error:#}").contains("creating the raw baseline directory"),
            "{error:#}"
        );
    }

    // --- against fake brokers --------------------------------------------------------------

    const FAKE_LIFETIME: Duration = Duration::from_secs(30);
    const FAKE_POLL: Duration = Duration::from_millis(5);

    /// A fake command API on 127.0.0.1: every connection on its own thread; every append to
    /// `led` partitions is committed (with an increasing index), every other one is answered
    /// `NotLeader` pointing to `redirect`.
    struct FakeBroker {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        appends: Arc<AtomicU64>,
        thread: std::thread::JoinHandle<()>,
    }

    impl FakeBroker {
        fn start(led: Vec<u32>, redirect: Option<SocketAddr>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
            let addr = listener.local_addr().expect("address");
            listener.set_nonblocking(true).expect("non-blocking");
            let stop = Arc::new(AtomicBool::new(false));
            let appends = Arc::new(AtomicU64::new(0));
            let (thread_stop, thread_appends) = (Arc::clone(&stop), Arc::clone(&appends));
            let thread = std::thread::spawn(move || {
                let started = Instant::now();
                let mut connections = Vec::new();
                while !thread_stop.load(Ordering::Relaxed) && started.elapsed() < FAKE_LIFETIME {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(FAKE_POLL);
                        continue;
                    };
                    let (stop, appends, led) = (
                        Arc::clone(&thread_stop),
                        Arc::clone(&thread_appends),
                        led.clone(),
                    );
                    connections.push(std::thread::spawn(move || {
                        serve_connection(stream, &stop, &appends, &led, redirect);
                    }));
                }
                for connection in connections {
                    connection.join().expect("fake connection thread");
                }
            });
            Self {
                addr,
                stop,
                appends,
                thread,
            }
        }

        fn finish(self) -> u64 {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.join().expect("fake broker thread");
            self.appends.load(Ordering::Relaxed)
        }
    }

    fn serve_connection(
        mut stream: TcpStream,
        stop: &AtomicBool,
        appends: &AtomicU64,
        led: &[u32],
        redirect: Option<SocketAddr>,
    ) {
        let started = Instant::now();
        stream.set_nonblocking(false).expect("blocking");
        stream.set_read_timeout(Some(FAKE_POLL)).expect("timeout");
        let mut decoder = RequestDecoder::new();
        let mut chunk = vec![0; 64 << 10];
        while !stop.load(Ordering::Relaxed) && started.elapsed() < FAKE_LIFETIME {
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(read) => decoder.push(&chunk[..read]),
                Err(_) => continue,
            }
            let mut out = Vec::new();
            while let Some(request) = decoder.next_request().expect("valid requests") {
                let Request::Append {
                    request_id,
                    partition_id,
                    ..
                } = request
                else {
                    panic!("the fake broker serves appends only");
                };
                let response = if led.contains(&partition_id) {
                    let index = appends.fetch_add(1, Ordering::Relaxed) + 1;
                    Response::Appended { request_id, index }
                } else {
                    Response::NotLeader {
                        request_id,
                        leader: redirect.map(|addr| (9, addr.to_string())),
                    }
                };
                encode_response(&response, &mut out);
            }
            if stream.write_all(&out).is_err() {
                return;
            }
        }
    }

    #[test]
    fn append_phases_against_fake_brokers() {
        let leader = FakeBroker::start(vec![1, 3], None);
        let other_leader = FakeBroker::start(vec![2], None);
        // A follower of everything, naming the first leader (wrongly, for partition 2: the
        // first leader then redirects nowhere, and the client rotates to the other).
        let follower = FakeBroker::start(Vec::new(), Some(leader.addr));
        let dir = test_dir("phases");
        let raw_dir = if supports_o_direct(&dir) {
            dir.clone()
        } else {
            eprintln!("raw phase skipped: {} refuses O_DIRECT", dir.display());
            std::fs::remove_dir_all(&dir).expect("remove the test dir");
            return;
        };
        let args = AppendArgs {
            brokers: vec![follower.addr, other_leader.addr],
            partitions: vec![1, 2, 3],
            payload_bytes: 100,
            duration_s: 0.3,
            outstanding: 8,
            raw_dir,
            raw_ops: 5,
            json: true,
            raw_only: false,
        };
        let report = run_append(&args, Duration::from_secs(10)).expect("a full run");
        assert_eq!(report.leaders.get(&1), Some(&leader.addr.to_string()));
        assert_eq!(report.leaders.get(&2), Some(&other_leader.addr.to_string()));
        assert_eq!(report.leaders.get(&3), Some(&leader.addr.to_string()));
        assert!(
            report.commit1_ops > 0 && report.commit64_ops > 0,
            "{report:?}"
        );
        assert!(report.commit64_p50_us >= 1 && report.commit1_p99_us >= report.commit1_p50_us);
        assert_eq!(report.errors, 0);
        assert!(report.commit64_ops_per_s > 0.0);

        let json = serde_json::to_value(&report).expect("serialize");
        for key in [
            "commit1_p50_us",
            "commit1_p99_us",
            "raw_fsync_p50_us",
            "raw_fsync_p99_us",
            "commit64_ops_per_s",
            "commit1_p50_ratio",
            "commit1_p99_ratio",
            "commit64_p50_us",
            "commit64_p99_us",
            "errors",
            "payload_bytes",
            "duration_s",
            "partitions",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        let mut table = Vec::new();
        print_table(&report, &mut table).expect("print");
        let table = String::from_utf8(table).expect("UTF-8");
        assert!(table.contains("commit, 8 outstanding"), "{table}");

        let committed = leader.finish() + other_leader.finish();
        // Every measured op plus the three discovery appends.
        assert_eq!(committed, report.commit1_ops + report.commit64_ops + 3);
        follower.finish();
        std::fs::remove_dir_all(&dir).expect("remove the test dir");
    }

    #[test]
    fn discovery_fails_clearly_when_no_broker_answers() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        drop(listener);
        let mut client = AppendClient::new(vec![addr]);
        let error = discover_leaders(&mut client, &[1], Duration::from_millis(200))
            .expect_err("nobody listens");
        let message = format!("{error:#}");
        assert!(message.contains("is `sluice dev` running?"), "{message}");
        assert!(message.contains(&addr.to_string()), "{message}");
    }
}
