//! Starts `sluice dev` on its own ports and runs two short `sluice-bench` gateway runs against
//! its gRPC gateway: as fast as possible with pushed jobs, then `--rate 50` with long-polled
//! jobs. Checks the JSON's shape and that instances completed (never a speed), and that the
//! HTML report was written.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Ports of broker i: the defaults + 10 * (`PORT_OFFSET` + i), away from other tests and from a
/// developer's `sluice dev`.
const PORT_OFFSET: u16 = 340;
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// How long `sluice dev` may take to stop its brokers on SIGINT, and how long a previous run's
/// brokers may hold this test's ports.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// `sluice` sits next to `sluice-bench` in the target directory (`cargo test --workspace`
/// builds every package's binaries).
fn sluice_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice-bench")).with_file_name("sluice")
}

/// `sluice dev`, stopped as Ctrl-C would when dropped: its brokers must release their ports.
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: signals the child this test started; `kill` has no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        stream,
        "GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    stream.read_to_string(&mut answer).is_ok() && answer.starts_with("HTTP/1.1 200")
}

/// Runs `sluice-bench` with `args` and `--json --report <report>`; returns its JSON.
fn bench(gateway: &str, report: &Path, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .args([
            "--gateway",
            gateway,
            "--duration",
            "2",
            "--warmup",
            "1",
            "--json",
        ])
        .args(args)
        .arg("--report")
        .arg(report)
        .output()
        .expect("running sluice-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sluice-bench {args:?} failed: {}\n{stderr}",
        output.status
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8 output");
    assert_eq!(stdout.lines().count(), 1, "one line of JSON: {stdout}");
    let summary: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let number = |key: &str| {
        summary[key]
            .as_f64()
            .unwrap_or_else(|| panic!("missing or non-numeric {key}: {summary}"))
    };
    assert!(number("pi_per_s") > 0.0, "{summary}\n{stderr}");
    assert!(
        summary["completed"].as_u64().is_some_and(|n| n > 0),
        "{summary}"
    );
    let (p50, p99, p999) = (
        number("pi_p50_ms"),
        number("pi_p99_ms"),
        number("pi_p999_ms"),
    );
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= p999,
        "percentiles out of order: {summary}"
    );
    assert!(summary["errors"].as_u64().is_some(), "{summary}");
    let series: Vec<&str> = summary["series"]
        .as_array()
        .expect("a series array")
        .iter()
        .filter_map(|series| series["name"].as_str())
        .collect();
    for name in ["instance", "CreateProcessInstance", "CompleteJob"] {
        assert!(series.contains(&name), "no {name} series: {summary}");
    }
    // The table goes to stderr with --json, the progress lines too.
    assert!(
        stderr.contains("p99.9 ms") && stderr.contains("created"),
        "{stderr}"
    );
    let page = std::fs::read_to_string(report).expect("the report was written");
    assert!(page.contains("<svg") && page.contains("sluice-bench-data"));
    assert!(!page.contains("src="), "the report loads nothing");
    summary
}

#[test]
fn gateway_workload_against_a_dev_cluster() {
    let exe = sluice_exe();
    assert!(
        exe.exists(),
        "{} is missing: run the workspace tests (bash scripts/test.sh), which build it",
        exe.display()
    );
    let gateway = format!("127.0.0.1:{}", 26500 + 10 * PORT_OFFSET);
    // A gateway already answering here would be another run's cluster, not this one.
    let deadline = Instant::now() + STOP_DEADLINE;
    while TcpStream::connect(&gateway).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{gateway} is in use (a sluice dev with --port-offset {PORT_OFFSET} still running?)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-gateway-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut dev = Dev(Command::new(&exe)
        .args(["dev", "--port-offset", &PORT_OFFSET.to_string(), "--dir"])
        .arg(&dir)
        // Short timeouts: the cluster elects its leaders within a few seconds.
        .env("ZEEBE_BROKER_CLUSTER_ELECTIONTIMEOUT", "1000ms")
        .env("ZEEBE_BROKER_CLUSTER_HEARTBEATINTERVAL", "100ms")
        .env("ZEEBE_BROKER_DATA_LOGSEGMENTSIZE", "16MB")
        .stdout(Stdio::null())
        .spawn()
        .expect("starting sluice dev"));
    let management = |i: u16| 9600 + 10 * (PORT_OFFSET + i);
    let deadline = Instant::now() + STARTUP_DEADLINE;
    while !(0..3).all(|i| ready(management(i))) {
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

    // As fast as possible, jobs pushed; the report's directory does not exist yet.
    let fast = bench(&gateway, &dir.join("reports").join("r.html"), &[]);
    assert_eq!(fast["activate"], "stream");
    assert_eq!(fast["rate"], 0);

    // On a schedule, jobs long-polled.
    let paced = bench(
        &gateway,
        &dir.join("r-poll.html"),
        &["--rate", "50", "--activate", "poll"],
    );
    assert_eq!(paced["activate"], "poll");
    assert_eq!(paced["rate"], 50);
    let names: Vec<&str> = paced["series"]
        .as_array()
        .expect("series")
        .iter()
        .filter_map(|series| series["name"].as_str())
        .collect();
    assert!(names.contains(&"ActivateJobs"), "{paced}");
    // 50/s for 2 s: about 100 instances (a few may still be unanswered at the window's end).
    let created = paced["created"].as_u64().expect("created");
    assert!((50..=101).contains(&created), "{paced}");

    drop(dev);
    let _ = std::fs::remove_dir_all(&dir);
}
