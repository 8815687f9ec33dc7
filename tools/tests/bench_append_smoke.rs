//! Starts `sluice dev` (the README's run command) on its own ports, runs a short
//! `sluice-bench append --json` against it, and checks the report's shape (never its speed).
//! Then it stops `sluice dev` with SIGINT, as Ctrl-C would, and checks it exits cleanly.
//!
//! The brokers run two shards each (`threads.cpuThreadCount` 2), so one partition's replica
//! lives on the second shard of every broker: appends to it cross the shard channels on the
//! leader and Raft traffic crosses them on every broker. The other tests run one shard.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports of broker i: the defaults + 10 * (`PORT_OFFSET` + i), away from other tests and from a
/// developer's `sluice dev`.
const PORT_OFFSET: u16 = 300;
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

const REQUIRED_KEYS: &[&str] = &[
    "commit1_p50_us",
    "commit1_p99_us",
    "raw_fsync_p50_us",
    "raw_fsync_p99_us",
    "commit64_ops_per_s",
    "commit64_p50_us",
    "commit64_p99_us",
];

/// `sluice` sits next to `sluice-bench` in the target directory (`cargo test --workspace`
/// builds every package's binaries).
fn sluice_exe() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_sluice-bench"));
    bench.with_file_name("sluice")
}

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

#[test]
fn dev_cluster_serves_a_short_bench_run() {
    let exe = sluice_exe();
    assert!(
        exe.exists(),
        "{} is missing: run the workspace tests (bash scripts/test.sh), which build it",
        exe.display()
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-append-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut dev = Dev(Command::new(&exe)
        .args(["dev", "--port-offset", &PORT_OFFSET.to_string(), "--dir"])
        .arg(&dir)
        // Short timeouts: the cluster elects its leaders within a few seconds.
        .env("ZEEBE_BROKER_CLUSTER_ELECTIONTIMEOUT", "1000ms")
        .env("ZEEBE_BROKER_CLUSTER_HEARTBEATINTERVAL", "100ms")
        .env("ZEEBE_BROKER_DATA_LOGSEGMENTSIZE", "16MB")
        .env("ZEEBE_BROKER_THREADS_CPUTHREADCOUNT", "2")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting sluice dev"));
    let management = |i: u16| 9600 + 10 * (PORT_OFFSET + i);
    let deadline = Instant::now() + STARTUP_DEADLINE;
    while !(0..3).all(|i| get(management(i), "/ready").is_some_and(|(status, _)| status == 200)) {
        assert!(
            dev.0.try_wait().expect("polling sluice dev").is_none(),
            "sluice dev exited; logs in {}",
            dir.display()
        );
        assert!(
            Instant::now() < deadline,
            "the dev cluster was not ready within {STARTUP_DEADLINE:?}; logs in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let brokers: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", 26501 + 10 * (PORT_OFFSET + i)))
        .collect();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args(["append", "--json", "--duration-s", "1", "--raw-ops", "50"])
        .args(["--brokers", &brokers.join(",")])
        .arg("--raw-dir")
        .arg(dir.join("raw"))
        .output()
        .expect("running sluice-bench");
    assert!(
        output.status.success(),
        "sluice-bench failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8 output");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    for key in REQUIRED_KEYS {
        let value = report
            .get(*key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("missing or non-numeric {key}: {report}"));
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
    }
    assert_eq!(
        report.get("errors").and_then(serde_json::Value::as_u64),
        Some(0)
    );
    // Ctrl-C: sluice dev stops its brokers and exits 0.
    let pid = i32::try_from(dev.0.id()).expect("a pid fits i32");
    // SAFETY: signals the child this test started; `kill` has no memory effects.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = dev.0.try_wait().expect("polling sluice dev") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sluice dev did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "sluice dev exited with {status}");
    let _ = std::fs::remove_dir_all(&dir);
}
