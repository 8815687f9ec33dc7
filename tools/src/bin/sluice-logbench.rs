//! `sluice-logbench`: measures the journal against the raw disk it sits on, in one run.
//!
//! ```text
//! sluice-logbench --dir DIR [--json] [--quick] [--seconds N]
//! ```
//!
//! Phases, all on one glommio executor, each in its own subdirectory of `DIR`. Files are removed
//! only at the end: on a filesystem mounted with `discard`, removing them earlier would issue
//! discards that slow the phases after.
//!
//! 1. raw baselines through glommio `DmaFile` (`O_DIRECT`, `io_uring`), as the journal writes:
//!    4 KiB write + `fdatasync` into a fresh preallocated file (unwritten extents, like a new
//!    segment) and into already written blocks (overwrite), and sequential bandwidth with 1 MiB
//!    writes, several in flight, `fdatasync` at the end: once from one reused buffer, once from
//!    64 distinct buffers (one reused buffer stays cache-hot, which a virtual disk that copies
//!    the data rewards);
//! 2. one appender: append 1 KiB, wait until durable, repeat;
//! 3. 64 concurrent appenders of 1 KiB;
//! 4. 64 KiB batches back to back until all are durable.
//!
//! `--seconds N` sets the length of each timed phase (default 8, about 30 s in all; 0.4 with `--quick`).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use serde::Serialize;
use sluice_log::{
    BatchMeta, DmaStorage, Error as LogError, FlushPolicy, Journal, JournalConfig, spawn_flusher,
};

/// glommio's reactor memory: small, because `RLIMIT_MEMLOCK` is 8 MiB and it is registered with
/// three rings.
const IO_MEMORY_BYTES: usize = 2 << 20;
const SMALL_WRITE_BYTES: usize = 4096;
const SEQ_WRITE_BYTES: usize = 1 << 20;
const SEQ_DEPTH: usize = 4;
/// Distinct 1 MiB buffers of the second sequential baseline: as many as the journal's default
/// `pending_bytes_max` holds.
const SEQ_DISTINCT_BUFFERS: usize = 64;
const APPEND_PAYLOAD_BYTES: usize = 1024;
const APPENDERS: usize = 64;
const BIG_PAYLOAD_BYTES: usize = 64 << 10;
const PHASE_SECONDS_DEFAULT: f64 = 8.0;
const PHASE_SECONDS_QUICK: f64 = 0.4;
/// Upper bound of the raw small-write file: a phase stops early if it fills it.
const SMALL_FILE_BYTES: u64 = 256 << 20;
const SEQ_TOTAL_BYTES: u64 = 1 << 30;
const SEQ_TOTAL_BYTES_QUICK: u64 = 32 << 20;
/// Latency histograms cover 1 µs to 60 s.
const HISTOGRAM_MAX_US: u64 = 60_000_000;

const USAGE: &str = "usage: sluice-logbench --dir DIR [--json] [--quick] [--seconds N]";

#[derive(Debug)]
struct Args {
    dir: PathBuf,
    json: bool,
    quick: bool,
    phase_seconds: f64,
}

fn parse_args() -> Result<Args> {
    let mut dir = None;
    let mut json = false;
    let mut quick = false;
    let mut seconds = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = Some(PathBuf::from(args.next().context("--dir needs a value")?)),
            "--json" => json = true,
            "--quick" => quick = true,
            "--seconds" => {
                let value = args.next().context("--seconds needs a value")?;
                let parsed: f64 = value
                    .parse()
                    .with_context(|| format!("--seconds: not a number: {value}"))?;
                if !(parsed.is_finite() && parsed > 0.0) {
                    bail!("--seconds must be positive, got {value}");
                }
                seconds = Some(parsed);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let dir = dir.with_context(|| format!("--dir is required\n{USAGE}"))?;
    let phase_seconds = seconds.unwrap_or(if quick {
        PHASE_SECONDS_QUICK
    } else {
        PHASE_SECONDS_DEFAULT
    });
    Ok(Args {
        dir,
        json,
        quick,
        phase_seconds,
    })
}

/// Catches glommio's warnings, to tell whether registering the I/O buffers fell back.
struct WarnCapture {
    registration_failed: AtomicBool,
    messages: Mutex<Vec<String>>,
}

static WARNINGS: WarnCapture = WarnCapture {
    registration_failed: AtomicBool::new(false),
    messages: Mutex::new(Vec::new()),
};

impl log::Log for WarnCapture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        if message.contains("registering buffers") {
            self.registration_failed.store(true, Ordering::Relaxed);
        }
        if let Ok(mut messages) = self.messages.lock() {
            messages.push(message);
        }
    }

    fn flush(&self) {}
}

/// Latency percentiles of one phase, microseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Latency {
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    ops_per_s: f64,
}

impl Latency {
    #[expect(clippy::cast_precision_loss, reason = "counts and µs fit f64 well")]
    fn from(hist: &Histogram<u64>, elapsed: Duration) -> Self {
        Latency {
            p50_us: hist.value_at_quantile(0.50) as f64,
            p99_us: hist.value_at_quantile(0.99) as f64,
            p999_us: hist.value_at_quantile(0.999) as f64,
            ops_per_s: hist.len() as f64 / elapsed.as_secs_f64(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    phase_seconds: f64,
    quick: bool,
    io_buffers_registered: bool,

    raw_fsync_p50_us: f64,
    raw_fsync_p99_us: f64,
    raw_fsync_p999_us: f64,
    raw_fsync_ops_per_s: f64,
    raw_overwrite_fsync_p50_us: f64,
    raw_overwrite_fsync_p99_us: f64,
    raw_overwrite_fsync_p999_us: f64,
    raw_seq_mb_per_s: f64,
    /// The same from distinct buffers (the journal's pending memory), not one reused buffer.
    raw_seq_distinct_mb_per_s: f64,
    /// Sequential bandwidth with the journal's write pattern: `flush_bytes_max` writes one at a
    /// time, each followed by `fdatasync` (the key keeps its first name, from 8 MiB flushes).
    raw_seq_8m_sync_mb_per_s: f64,

    append1_p50_us: f64,
    append1_p99_us: f64,
    append1_p999_us: f64,
    append1_ops_per_s: f64,
    append1_fsyncs_per_append: f64,

    append64_p50_us: f64,
    append64_p99_us: f64,
    append64_p999_us: f64,
    append64_ops_per_s: f64,
    append64_fsyncs_per_append: f64,

    batch64k_mb_per_s: f64,
    batch64k_bytes: u64,
    batch64k_flushes: u64,

    ratio_append1_p50_to_raw_p50: f64,
    ratio_append1_p99_to_raw_p99: f64,
    ratio_append1_p999_to_raw_p999: f64,
    ratio_append64_to_append1_ops: f64,
    ratio_batch64k_to_raw_seq_bw: f64,
    ratio_batch64k_to_raw_seq_distinct_bw: f64,
}

/// glommio's error is not `Sync`, so it goes through `std::io::Error` to reach anyhow.
fn io_err(e: glommio::GlommioError<()>) -> std::io::Error {
    e.into()
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).context("creating a histogram")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[expect(clippy::cast_precision_loss, reason = "byte counts fit f64 well")]
fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

async fn create_preallocated(path: &Path, bytes: u64) -> Result<DmaFile> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .dma_open(path)
        .await
        .map_err(io_err)
        .with_context(|| format!("creating {}", path.display()))?;
    file.pre_allocate(bytes, false)
        .await
        .map_err(io_err)
        .with_context(|| format!("preallocating {}", path.display()))?;
    Ok(file)
}

/// 4 KiB write + `fdatasync` in a loop at offsets `start + i * 4 KiB`, wrapping at `end`; stops
/// after `duration` or, when `stop_at_end`, when it reaches `end`. Returns the latencies and the
/// offset reached.
async fn raw_small_writes(
    file: &DmaFile,
    range: (u64, u64),
    stop_at_end: bool,
    duration: Duration,
) -> Result<(Latency, u64)> {
    let (start, end) = range;
    let mut buffer = file.alloc_dma_buffer(SMALL_WRITE_BYTES);
    buffer.as_bytes_mut().fill(0xA5);
    let buffer = Rc::new(buffer);
    let mut hist = new_histogram()?;
    let mut offset = start;
    let began = Instant::now();
    let deadline = began + duration;
    while Instant::now() < deadline {
        if offset >= end {
            if stop_at_end {
                break;
            }
            offset = start;
        }
        let t0 = Instant::now();
        let written = file
            .write_rc_at(buffer.clone(), offset)
            .await
            .map_err(io_err)
            .context("raw 4 KiB write")?;
        if written != SMALL_WRITE_BYTES {
            bail!("short raw write: {written} bytes");
        }
        file.fdatasync()
            .await
            .map_err(io_err)
            .context("raw fdatasync")?;
        hist.saturating_record(micros(t0.elapsed()));
        offset += SMALL_WRITE_BYTES as u64;
    }
    Ok((Latency::from(&hist, began.elapsed()), offset))
}

/// How a sequential bandwidth run writes.
#[derive(Debug, Clone, Copy)]
struct SeqPattern {
    write_bytes: usize,
    depth: usize,
    /// `fdatasync` after every write (the journal's pattern: one flush write, one sync), not
    /// only at the end.
    sync_each: bool,
    /// Distinct buffers the writes take in turn. One buffer rewritten over and over stays in the
    /// CPU caches, which a virtual disk that copies the data (as this machine's does) turns into
    /// bandwidth no real data gets; a journal writes fresh data from all its pending memory.
    buffers: usize,
}

/// Sequential `O_DIRECT` bandwidth into a fresh preallocated file, `fdatasync` at the end.
/// Counts bytes until the last sync returns.
async fn raw_sequential(
    path: &Path,
    pattern: SeqPattern,
    total_bytes: u64,
    duration: Duration,
) -> Result<f64> {
    let file = Rc::new(create_preallocated(path, total_bytes).await?);
    let buffers: Rc<Vec<Rc<DmaBuffer>>> = Rc::new(
        (0..pattern.buffers.max(1))
            .map(|i| {
                let mut buffer = file.alloc_dma_buffer(pattern.write_bytes);
                buffer
                    .as_bytes_mut()
                    .fill(u8::try_from(i % 251).unwrap_or(0));
                Rc::new(buffer)
            })
            .collect(),
    );
    let next_offset = Rc::new(Cell::new(0u64));
    let began = Instant::now();
    let deadline = began + duration;
    let mut workers = Vec::with_capacity(pattern.depth);
    for _ in 0..pattern.depth {
        let (file, buffers, next_offset) = (file.clone(), buffers.clone(), next_offset.clone());
        workers.push(glommio::spawn_local(async move {
            let mut written_bytes = 0u64;
            loop {
                let offset = next_offset.get();
                if offset + pattern.write_bytes as u64 > total_bytes || Instant::now() >= deadline {
                    return Ok::<u64, anyhow::Error>(written_bytes);
                }
                next_offset.set(offset + pattern.write_bytes as u64);
                let turn = usize::try_from(offset / pattern.write_bytes as u64)?;
                let written = file
                    .write_rc_at(buffers[turn % buffers.len()].clone(), offset)
                    .await
                    .map_err(io_err)
                    .context("raw sequential write")?;
                if pattern.sync_each {
                    file.fdatasync()
                        .await
                        .map_err(io_err)
                        .context("raw sequential fdatasync")?;
                }
                written_bytes += written as u64;
            }
        }));
    }
    let mut bytes = 0;
    for worker in workers {
        bytes += worker.await?;
    }
    file.fdatasync()
        .await
        .map_err(io_err)
        .context("raw sequential fdatasync")?;
    let elapsed = began.elapsed();
    drop(buffers);
    if let Ok(file) = Rc::try_unwrap(file) {
        file.close()
            .await
            .map_err(io_err)
            .context("closing the sequential file")?;
    }
    Ok(mb_per_s(bytes, elapsed))
}

struct RawResults {
    fresh: Latency,
    overwrite: Latency,
    seq_mb_per_s: f64,
    seq_distinct_mb_per_s: f64,
    seq_journal_pattern_mb_per_s: f64,
}

async fn raw_phase(dir: &Path, phase: Duration, seq_total_bytes: u64) -> Result<RawResults> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("raw-small");
    let file = create_preallocated(&path, SMALL_FILE_BYTES).await?;
    // Warm-up, then fresh blocks of a preallocated file: each write converts an unwritten
    // extent, as appends into a new journal segment do.
    raw_small_writes(&file, (0, SMALL_FILE_BYTES), true, phase / 20).await?;
    let warm_end = SMALL_FILE_BYTES / 16;
    let (fresh, reached) =
        raw_small_writes(&file, (warm_end, SMALL_FILE_BYTES), true, phase).await?;
    // Overwrites of blocks written above: no extent conversion, pure data + cache flush.
    let (overwrite, _) = raw_small_writes(&file, (warm_end, reached), false, phase / 2).await?;
    file.close()
        .await
        .map_err(io_err)
        .context("closing the raw file")?;
    let seq = SeqPattern {
        write_bytes: SEQ_WRITE_BYTES,
        depth: SEQ_DEPTH,
        sync_each: false,
        buffers: 1,
    };
    let seq_mb_per_s =
        raw_sequential(&dir.join("raw-seq"), seq, seq_total_bytes, phase * 2).await?;
    let distinct = SeqPattern {
        buffers: SEQ_DISTINCT_BUFFERS,
        ..seq
    };
    let seq_distinct_mb_per_s = raw_sequential(
        &dir.join("raw-seq-distinct"),
        distinct,
        seq_total_bytes,
        phase * 2,
    )
    .await?;
    let journal_pattern = SeqPattern {
        write_bytes: usize::try_from(JournalConfig::default().flush_bytes_max)?,
        depth: 1,
        sync_each: true,
        buffers: 1,
    };
    let seq_journal_pattern_mb_per_s = raw_sequential(
        &dir.join("raw-seq-8m"),
        journal_pattern,
        seq_total_bytes,
        phase * 2,
    )
    .await?;
    Ok(RawResults {
        fresh,
        overwrite,
        seq_mb_per_s,
        seq_distinct_mb_per_s,
        seq_journal_pattern_mb_per_s,
    })
}

type SharedJournal = Rc<Journal<DmaStorage>>;

async fn open_journal(dir: &Path) -> Result<(SharedJournal, glommio::task::JoinHandle<()>)> {
    let storage = DmaStorage::open(dir)
        .await
        .with_context(|| format!("opening journal directory {}", dir.display()))?;
    let (journal, _) = Journal::open(storage, JournalConfig::default())
        .await
        .context("opening the journal")?;
    let journal = Rc::new(journal);
    let flusher = spawn_flusher(journal.clone(), FlushPolicy::Immediate);
    Ok((journal, flusher))
}

async fn close_journal(journal: SharedJournal, flusher: glommio::task::JoinHandle<()>) {
    journal.close();
    flusher.await;
}

const META: BatchMeta = BatchMeta {
    term: 1,
    timestamp_ms: 0,
    record_count: 1,
};

#[expect(clippy::cast_precision_loss, reason = "counters fit f64 well")]
fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b.max(1) as f64
}

/// Appenders that each append 1 KiB and wait until it is durable, in a loop, for `duration`.
async fn append_phase(dir: &Path, appenders: usize, duration: Duration) -> Result<(Latency, f64)> {
    let (journal, flusher) = open_journal(dir).await?;
    let payload: Rc<[u8]> = (0..APPEND_PAYLOAD_BYTES)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    // Warm-up.
    for _ in 0..20 {
        let index = journal.append(META, &payload)?;
        journal.wait_durable(index).await?;
    }
    let hist = Rc::new(RefCell::new(new_histogram()?));
    let stats_before = journal.stats();
    let began = Instant::now();
    let deadline = began + duration;
    let mut tasks = Vec::with_capacity(appenders);
    for _ in 0..appenders {
        let (journal, payload, hist) = (journal.clone(), payload.clone(), hist.clone());
        tasks.push(glommio::spawn_local(async move {
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let index = journal.append(META, &payload)?;
                journal.wait_durable(index).await?;
                hist.borrow_mut().saturating_record(micros(t0.elapsed()));
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = began.elapsed();
    let stats = journal.stats();
    let fsyncs_per_append = ratio(
        stats.syncs - stats_before.syncs,
        stats.appends - stats_before.appends,
    );
    close_journal(journal, flusher).await;
    let latency = Latency::from(&hist.borrow(), elapsed);
    Ok((latency, fsyncs_per_append))
}

struct BatchResults {
    mb_per_s: f64,
    bytes: u64,
    flushes: u64,
}

/// 64 KiB batches appended as fast as the pending buffer allows, yielding to the flusher when
/// glommio asks; when the buffer is full, waits for the next flush to complete. Measures until
/// every batch is durable.
async fn batch_phase(dir: &Path, total_bytes: u64, duration: Duration) -> Result<BatchResults> {
    let (journal, flusher) = open_journal(dir).await?;
    let payload: Vec<u8> = (0..BIG_PAYLOAD_BYTES)
        .map(|i| u8::try_from(i % 253).unwrap_or(0))
        .collect();
    let stats_before = journal.stats();
    let began = Instant::now();
    let deadline = began + duration;
    let mut bytes = 0u64;
    let mut last = None;
    while bytes < total_bytes && Instant::now() < deadline {
        match journal.append(META, &payload) {
            Ok(index) => {
                last = Some(index);
                bytes += BIG_PAYLOAD_BYTES as u64;
                // Cooperate as any CPU-bound task on a shard must. glommio reaps I/O
                // completions only between task-queue runs or when the preempt timer fires
                // (100 ms by default; shorter timers hang glommio 0.9 on this VM), so without
                // this the appender runs until the pending buffer is full while the flusher's
                // finished writes wait to be noticed. Every 16 batches = every 1 MiB.
                if index % 16 == 0 {
                    glommio::executor().yield_task_queue_now().await;
                }
            }
            Err(LogError::PendingFull { .. }) => {
                journal.wait_durable(journal.durable_index() + 1).await?;
            }
            Err(e) => return Err(e).context("appending a 64 KiB batch"),
        }
    }
    if let Some(index) = last {
        journal.wait_durable(index).await?;
    }
    let elapsed = began.elapsed();
    let flush_count = journal.stats().flushes - stats_before.flushes;
    close_journal(journal, flusher).await;
    Ok(BatchResults {
        mb_per_s: mb_per_s(bytes, elapsed),
        bytes,
        flushes: flush_count,
    })
}

async fn run_all(args: &Args, root: &Path) -> Result<Report> {
    // The iopoll probe (see sluice_log::DmaStorage::open) must be the first DmaFile this thread
    // opens, or reads fail with EOPNOTSUPP on devices without poll queues.
    DmaStorage::open(root)
        .await
        .with_context(|| format!("probing {}", root.display()))?;
    let phase = Duration::from_secs_f64(args.phase_seconds);
    let seq_total_bytes = if args.quick {
        SEQ_TOTAL_BYTES_QUICK
    } else {
        SEQ_TOTAL_BYTES
    };
    let progress = |what: &str| {
        if !args.json {
            eprintln!("sluice-logbench: {what}");
        }
    };

    progress("raw baselines");
    let raw = raw_phase(&root.join("raw"), phase, seq_total_bytes).await?;
    progress("one appender");
    let (append1, append1_fsyncs) = append_phase(&root.join("append1"), 1, phase).await?;
    progress("64 appenders");
    let (append64, append64_fsyncs) =
        append_phase(&root.join("append64"), APPENDERS, phase).await?;
    progress("64 KiB batches");
    let batches = batch_phase(&root.join("batch64k"), seq_total_bytes, phase * 2).await?;

    Ok(Report {
        phase_seconds: args.phase_seconds,
        quick: args.quick,
        io_buffers_registered: !WARNINGS.registration_failed.load(Ordering::Relaxed),
        raw_fsync_p50_us: raw.fresh.p50_us,
        raw_fsync_p99_us: raw.fresh.p99_us,
        raw_fsync_p999_us: raw.fresh.p999_us,
        raw_fsync_ops_per_s: raw.fresh.ops_per_s,
        raw_overwrite_fsync_p50_us: raw.overwrite.p50_us,
        raw_overwrite_fsync_p99_us: raw.overwrite.p99_us,
        raw_overwrite_fsync_p999_us: raw.overwrite.p999_us,
        raw_seq_mb_per_s: raw.seq_mb_per_s,
        raw_seq_distinct_mb_per_s: raw.seq_distinct_mb_per_s,
        raw_seq_8m_sync_mb_per_s: raw.seq_journal_pattern_mb_per_s,
        append1_p50_us: append1.p50_us,
        append1_p99_us: append1.p99_us,
        append1_p999_us: append1.p999_us,
        append1_ops_per_s: append1.ops_per_s,
        append1_fsyncs_per_append: append1_fsyncs,
        append64_p50_us: append64.p50_us,
        append64_p99_us: append64.p99_us,
        append64_p999_us: append64.p999_us,
        append64_ops_per_s: append64.ops_per_s,
        append64_fsyncs_per_append: append64_fsyncs,
        batch64k_mb_per_s: batches.mb_per_s,
        batch64k_bytes: batches.bytes,
        batch64k_flushes: batches.flushes,
        ratio_append1_p50_to_raw_p50: append1.p50_us / raw.fresh.p50_us,
        ratio_append1_p99_to_raw_p99: append1.p99_us / raw.fresh.p99_us,
        ratio_append1_p999_to_raw_p999: append1.p999_us / raw.fresh.p999_us,
        ratio_append64_to_append1_ops: append64.ops_per_s / append1.ops_per_s,
        ratio_batch64k_to_raw_seq_bw: batches.mb_per_s / raw.seq_mb_per_s,
        ratio_batch64k_to_raw_seq_distinct_bw: batches.mb_per_s / raw.seq_distinct_mb_per_s,
    })
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn print_table(r: &Report, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<34} {:>10} {:>10} {:>10} {:>12}",
        "phase", "p50 µs", "p99 µs", "p999 µs", "throughput"
    )?;
    let rows = [
        (
            "raw 4K write+fdatasync (fresh)",
            r.raw_fsync_p50_us,
            r.raw_fsync_p99_us,
            r.raw_fsync_p999_us,
            format!("{:.0} op/s", r.raw_fsync_ops_per_s),
        ),
        (
            "raw 4K write+fdatasync (overwrite)",
            r.raw_overwrite_fsync_p50_us,
            r.raw_overwrite_fsync_p99_us,
            r.raw_overwrite_fsync_p999_us,
            String::new(),
        ),
        (
            "append 1 KiB, 1 appender",
            r.append1_p50_us,
            r.append1_p99_us,
            r.append1_p999_us,
            format!("{:.0} op/s", r.append1_ops_per_s),
        ),
        (
            "append 1 KiB, 64 appenders",
            r.append64_p50_us,
            r.append64_p99_us,
            r.append64_p999_us,
            format!("{:.0} op/s", r.append64_ops_per_s),
        ),
    ];
    for (name, p50, p99, p999, throughput) in rows {
        writeln!(
            out,
            "{name:<34} {p50:>10.0} {p99:>10.0} {p999:>10.0} {throughput:>12}"
        )?;
    }
    writeln!(
        out,
        "raw sequential 1 MiB x{SEQ_DEPTH}: {:.0} MB/s from one buffer, {:.0} MB/s from \
         {SEQ_DISTINCT_BUFFERS}; {} MiB x1 + fdatasync each: {:.0} MB/s\n64 KiB batches: {:.0} MB/s \
         ({} flushes); fsyncs/append: 1 appender {:.3}, 64 appenders {:.3}",
        r.raw_seq_mb_per_s,
        r.raw_seq_distinct_mb_per_s,
        JournalConfig::default().flush_bytes_max >> 20,
        r.raw_seq_8m_sync_mb_per_s,
        r.batch64k_mb_per_s,
        r.batch64k_flushes,
        r.append1_fsyncs_per_append,
        r.append64_fsyncs_per_append
    )?;
    writeln!(out)?;
    print_ratios(r, out)
}

fn print_ratios(r: &Report, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<36} {:>8} {:>10} {:>8}",
        "ratio", "value", "target", ""
    )?;
    let ratios = [
        (
            "append1 p50 / raw p50",
            r.ratio_append1_p50_to_raw_p50,
            "<= 1.2",
            r.ratio_append1_p50_to_raw_p50 <= 1.2,
        ),
        (
            "append1 p99 / raw p99",
            r.ratio_append1_p99_to_raw_p99,
            "<= 1.5",
            r.ratio_append1_p99_to_raw_p99 <= 1.5,
        ),
        (
            "append64 op/s / append1 op/s",
            r.ratio_append64_to_append1_ops,
            ">= 10",
            r.ratio_append64_to_append1_ops >= 10.0,
        ),
        (
            "batch64k MB/s / raw seq MB/s",
            r.ratio_batch64k_to_raw_seq_bw,
            ">= 0.8",
            r.ratio_batch64k_to_raw_seq_bw >= 0.8,
        ),
        (
            "batch64k / raw seq, distinct buffers",
            r.ratio_batch64k_to_raw_seq_distinct_bw,
            ">= 0.8",
            r.ratio_batch64k_to_raw_seq_distinct_bw >= 0.8,
        ),
    ];
    for (name, value, target, ok) in ratios {
        writeln!(
            out,
            "{name:<36} {value:>8.2} {target:>10} {:>8}",
            verdict(ok)
        )?;
    }
    writeln!(
        out,
        "io buffers registered with io_uring: {}",
        if r.io_buffers_registered {
            "yes"
        } else {
            "no (fell back)"
        }
    )?;
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    // Only fails if a logger is already set, which nothing else does.
    let _ = log::set_logger(&WARNINGS);
    log::set_max_level(log::LevelFilter::Warn);

    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let root = args
        .dir
        .join(format!("sluice-logbench-{}", std::process::id()));
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name("sluice-logbench")
        .io_memory(IO_MEMORY_BYTES)
        .make()
        .map_err(io_err)
        .context("starting the glommio executor (check RLIMIT_MEMLOCK)")?;
    let result = executor.run(run_all(&args, &root));
    let cleanup = std::fs::remove_dir_all(&root);
    let report = result?;
    cleanup.with_context(|| format!("removing {}", root.display()))?;

    if let Ok(messages) = WARNINGS.messages.lock() {
        for message in messages.iter() {
            eprintln!("glommio warning: {message}");
        }
    }
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
