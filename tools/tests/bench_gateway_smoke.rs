//! Starts `sluice dev` on its own ports and runs two short `sluice-bench` gateway runs against
//! its gRPC gateway: as fast as possible with pushed jobs, then `--rate 50` with long-polled
//! jobs. Checks the JSON's shape and that instances completed (never a speed), and that the
//! HTML report was written.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Ports of broker i: the defaults + 10 * (`PORT_OFFSET` + i), away from other tests and from a
/// developer's `sluice dev`.
const PORT_OFFSET: u16 = 340;

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
    let dev = common::start_dev(
        &common::sluice_exe(env!("CARGO_BIN_EXE_sluice-bench")),
        PORT_OFFSET,
        "bench-gateway-smoke",
    );
    let dir = dev.dir.clone();
    let gateway = dev.gateway.clone();

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
