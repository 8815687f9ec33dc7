//! Runs `sluice-logbench --quick --json` and checks the report's shape (never its speed).

use std::process::Command;

const REQUIRED_KEYS: &[&str] = &[
    "raw_fsync_p50_us",
    "raw_fsync_p99_us",
    "raw_fsync_p999_us",
    "raw_seq_mb_per_s",
    "append1_p50_us",
    "append1_p99_us",
    "append1_p999_us",
    "append1_ops_per_s",
    "append64_p50_us",
    "append64_p99_us",
    "append64_p999_us",
    "append64_ops_per_s",
    "append64_fsyncs_per_append",
    "batch64k_mb_per_s",
    "ratio_append1_p50_to_raw_p50",
    "ratio_append1_p99_to_raw_p99",
    "ratio_append64_to_append1_ops",
    "ratio_batch64k_to_raw_seq_bw",
];

#[test]
fn quick_json_run_reports_every_key() {
    let dir = std::env::temp_dir().join(format!("sluice-logbench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice-logbench"))
        .args(["--quick", "--json", "--dir"])
        .arg(&dir)
        .output()
        .expect("running sluice-logbench");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("listing the temp dir")
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "sluice-logbench failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(leftovers.is_empty(), "left files behind: {leftovers:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8 output");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    for key in REQUIRED_KEYS {
        let value = report
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("missing or non-numeric {key}: {report}"));
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
    }
}
