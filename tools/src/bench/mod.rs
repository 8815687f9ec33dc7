//! `sluice-bench`'s gateway workload, kept apart from the binary so its parts test without a
//! server.
//!
//! ```text
//! let args = match bench::args::parse(rest_of_the_command_line)? { Parsed::Run(args) => args, .. };
//! let summary = bench::run(&args)?;      // deploys, runs, prints, writes the HTML report
//! if summary.completed == 0 { /* exit non-zero */ }
//! ```
//!
//! - [`args`]: the options and their defaults;
//! - [`tracker`]: the bookkeeping core, a value fed events with their times: instance
//!   latencies (create sent or scheduled → `CompleteJob` answered OK), RPC latencies, errors by
//!   gRPC code, per-second counts;
//! - [`workload`]: the tokio driver: creators, job workers (`StreamActivatedJobs` or
//!   `ActivateJobs`), the progress line;
//! - [`report`]: the summary (`--json`), the text table and the HTML report.

pub mod args;
pub mod report;
pub mod tracker;
pub mod workload;

use std::io::Write;
use std::time::SystemTime;

use anyhow::{Context, Result};

use args::GatewayArgs;
use report::Summary;

/// Runs the gateway workload on a multi-threaded tokio runtime, then prints the summary (JSON
/// on stdout and the table on stderr with `--json`, else the table on stdout) and writes the
/// HTML report to `args.report`, creating its directory.
///
/// # Errors
///
/// When the gateway cannot be reached or refuses the deployment, or the report cannot be
/// written. Failed RPCs during the run are counted in the summary instead.
pub fn run(args: &GatewayArgs) -> Result<Summary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let measurements = runtime.block_on(workload::run(args))?;
    drop(runtime);
    let summary = Summary::new(args, &measurements);
    let page = report::html(&summary, &measurements, SystemTime::now());
    if let Some(parent) = args.report.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {} for the report", parent.display()))?;
    }
    std::fs::write(&args.report, page)
        .with_context(|| format!("writing the report to {}", args.report.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&summary).context("serializing the summary")?
        );
        report::write_table(&summary, &mut std::io::stderr())?;
    } else {
        let mut stdout = std::io::stdout().lock();
        report::write_table(&summary, &mut stdout)?;
        stdout.flush()?;
    }
    Ok(summary)
}
