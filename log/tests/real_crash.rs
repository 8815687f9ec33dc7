//! Scenario: real process crashes on a real disk.
//!
//! The test re-executes its own binary as a child (`crash_child`, which does nothing unless
//! `SLUICE_CRASH_CHILD` names a directory). The child opens the journal with the production
//! `DmaStorage` (glommio, `O_DIRECT`), runs the background flusher and several concurrent
//! appenders, and prints `durable <index>` for every index `wait_durable` acknowledged. The parent
//! kills it with `SIGKILL` at a random moment, reopens the journal itself, and checks that every
//! acknowledged index is present and intact and the log contiguous; the next child goes on
//! appending to the same journal.
//!
//! Payloads derive from the index alone, so any batch can be checked whichever run wrote it.
//! `SLUICE_CRASH_CYCLES` (default 30) sets the number of kills, `SLUICE_CRASH_SEED` replays one
//! schedule of kill delays.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use sluice_log::{
    BatchMeta, DmaStorage, Error, FlushPolicy, Journal, JournalConfig, spawn_flusher,
};

const CHILD_ENV: &str = "SLUICE_CRASH_CHILD";
const APPENDERS: usize = 6;
/// A child not killed stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(10);
/// The child compacts when it has more segments than this, to bound the disk the test uses.
const SEGMENTS_MAX: usize = 12;
const IO_MEMORY_BYTES: usize = 1 << 20;

fn config() -> JournalConfig {
    JournalConfig {
        segment_bytes: 1 << 20,
        batch_bytes_max: 16 << 10,
        pending_bytes_max: 4 << 20,
        flush_bytes_max: 256 << 10,
        index_interval_bytes: 16 << 10,
        first_index: 1,
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The payload of batch `index`: 1..=6000 bytes, all derived from the index.
fn payload(index: u64) -> Vec<u8> {
    let mut state = index;
    let len = usize::try_from(1 + splitmix(&mut state) % 6000).expect("small");
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        bytes.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

fn meta(index: u64) -> BatchMeta {
    BatchMeta {
        term: 1,
        timestamp_ms: index,
        record_count: 1,
    }
}

/// Marks the child's report lines: the harness may print `test crash_child ... ` before them on
/// the same line.
const MARK: &str = "@@ ";

fn say(line: &str) {
    // Straight to fd 1, past the test harness's output capture.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}{line}").expect("stdout");
    out.flush().expect("stdout");
}

/// Set by the parent: "1" makes the child open its journal write-through.
const WRITE_THROUGH_ENV: &str = "SLUICE_CRASH_CHILD_WRITE_THROUGH";

fn executor() -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(Placement::Unbound).io_memory(IO_MEMORY_BYTES)
}

/// The child: append, wait durable, report, until killed (or `CHILD_LIFETIME` passes).
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let write_through = std::env::var(WRITE_THROUGH_ENV).is_ok_and(|v| v == "1");
    executor().make().expect("executor").run(async move {
        let storage = if write_through {
            DmaStorage::open_write_through(&dir).await.expect("storage")
        } else {
            DmaStorage::open(&dir).await.expect("storage")
        };
        let (journal, report) = Journal::open(storage, config()).await.expect("child open");
        say(&format!(
            "open {} {}",
            report.first_index, report.next_index
        ));
        let journal = Rc::new(journal);
        let flusher = spawn_flusher(journal.clone(), FlushPolicy::Immediate);
        let deadline = Instant::now() + CHILD_LIFETIME;
        let mut tasks = Vec::new();
        for _ in 0..APPENDERS {
            let journal = journal.clone();
            tasks.push(glommio::spawn_local(async move {
                while Instant::now() < deadline {
                    let index = journal.next_index();
                    match journal.append(meta(index), &payload(index)) {
                        Ok(got) => assert_eq!(got, index),
                        Err(Error::PendingFull { .. }) => {
                            glommio::timer::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                        Err(e) => panic!("append: {e}"),
                    }
                    journal.wait_durable(index).await.expect("durable");
                    say(&format!("durable {index}"));
                    if journal.segment_count() > SEGMENTS_MAX {
                        let keep_from = journal.durable_index().saturating_sub(2000);
                        journal.compact_before(keep_from).await.expect("compact");
                    }
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        journal.close();
        flusher.await;
    });
}

/// What the parent found on reopening.
#[derive(Debug, Clone, Copy)]
struct Found {
    first: u64,
    next: u64,
    cut: bool,
}

/// Reopens the journal in a fresh glommio executor and checks batches `[from, next)`.
fn verify(dir: &Path, from: u64) -> Found {
    let dir = dir.to_path_buf();
    executor()
        .name("verify")
        .spawn(move || async move {
            let storage = DmaStorage::open(&dir).await.expect("storage");
            let (journal, report) = Journal::open(storage, config())
                .await
                .unwrap_or_else(|e| panic!("reopen after SIGKILL failed: {e}"));
            let (first, next) = (journal.first_index(), journal.next_index());
            assert_eq!((report.first_index, report.next_index), (first, next));
            let start = from.clamp(first, next);
            let mut reader = journal.reader(start);
            for index in start..next {
                let batch = reader
                    .next(&journal)
                    .await
                    .unwrap_or_else(|e| panic!("reading {index}: {e}"))
                    .unwrap_or_else(|| panic!("the log ends at {index}, next is {next}"));
                assert_eq!(batch.index, index);
                assert_eq!(batch.timestamp_ms, index, "metadata of {index}");
                assert!(
                    batch.payload == payload(index),
                    "payload of {index} differs"
                );
            }
            assert!(reader.next(&journal).await.expect("end").is_none());
            Found {
                first,
                next,
                cut: report.dropped_tail.is_some(),
            }
        })
        .expect("spawn verifier")
        .join()
        .expect("verifier")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

/// One child run: spawn, let it work for a random while, SIGKILL. Returns the acknowledged
/// indexes it printed.
fn run_child(dir: &Path, log: &Path, rng: &mut u64, cycle: u64) -> Vec<u64> {
    let stderr = std::fs::File::create(log).expect("child log");
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        // Odd cycles write through (`O_DSYNC`), even ones write then fdatasync: both modes
        // must recover everything acknowledged, also from a log the other mode wrote.
        .env(WRITE_THROUGH_ENV, if cycle % 2 == 1 { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped");
    let (lines_tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Some((_, report)) = line.split_once(MARK) else {
                continue;
            };
            if lines_tx.send(report.to_owned()).is_err() {
                break;
            }
        }
    });

    let early = splitmix(rng).is_multiple_of(6);
    let delay = Duration::from_millis(5 + splitmix(rng) % 145);
    let mut acked = Vec::new();
    if early {
        // Kill during startup or recovery now and then.
        std::thread::sleep(Duration::from_millis(splitmix(rng) % 40));
    } else {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.starts_with("open ") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "cycle {cycle}: the child did not open the journal; its stderr:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
        }
        std::thread::sleep(delay);
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    reader.join().expect("reader");
    for line in lines.try_iter() {
        if let Some(index) = line.strip_prefix("durable ") {
            acked.push(index.parse().expect("an index"));
        }
    }
    assert!(
        status.code().is_none(),
        "cycle {cycle}: the child exited by itself ({status}); stderr:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    acked
}

#[test]
fn sigkill_never_loses_an_acknowledged_batch() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let cycles = env_u64("SLUICE_CRASH_CYCLES").unwrap_or(30);
    let seed = env_u64("SLUICE_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
            .try_into()
            .unwrap_or(1)
    });
    eprintln!("real_crash: {cycles} cycles, replay with SLUICE_CRASH_SEED={seed}");
    // Under the target directory: a real disk file system (O_DIRECT fails on tmpfs).
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sluice-real-crash-{}", std::process::id()));
    let dir = base.join("journal");
    let log = base.join("child.stderr");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&dir).expect("test dir");

    let started = Instant::now();
    let mut rng = seed;
    let (mut acked_total, mut cuts, mut verified_to) = (0u64, 0u64, 1u64);
    let mut acked_max = 0u64;
    for cycle in 0..cycles {
        let acked = run_child(&dir, &log, &mut rng, cycle);
        acked_total += acked.len() as u64;
        // A full check every tenth cycle; otherwise from a little before the last check.
        let from = if cycle % 10 == 9 {
            1
        } else {
            verified_to.saturating_sub(200)
        };
        let found = verify(&dir, from);
        cuts += u64::from(found.cut);
        for index in &acked {
            assert!(
                *index < found.next,
                "seed {seed} cycle {cycle}: acknowledged index {index} lost (next {})",
                found.next
            );
        }
        acked_max = acked.iter().copied().max().unwrap_or(0).max(acked_max);
        assert!(
            found.next > acked_max,
            "seed {seed} cycle {cycle}: the log went backwards"
        );
        assert!(
            found.first <= acked_max.max(1),
            "compaction keeps recent batches"
        );
        verified_to = found.next;
    }
    let found = verify(&dir, 1);
    eprintln!(
        "real_crash: {acked_total} acknowledged batches, log {}..{}, {cuts} torn tails cut, {:?}",
        found.first,
        found.next,
        started.elapsed()
    );
    assert!(acked_total > 0, "a run that commits nothing proves nothing");
    let _ = std::fs::remove_dir_all(&base);
}
