//! `sluice`: the Sluice broker binary.
//!
//! ```text
//! sluice broker --config FILE       run one broker (ZEEBE_BROKER_* variables override the file)
//! sluice dev [--dir DIR] [--brokers N] [--partitions N] [--replication-factor N] [--port-offset N]
//!                                   run a local cluster of broker processes on loopback
//! sluice certs --dir DIR [--nodes N]
//!                                   write a development CA and node certificates
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
use sluice_broker::config::BrokerConfig;
use sluice_broker::dev::{self, DevOptions};

const USAGE: &str = "usage:
  sluice broker --config FILE
  sluice dev [--dir DIR] [--brokers N] [--partitions N] [--replication-factor N] [--port-offset N]
  sluice certs --dir DIR [--nodes N]";

fn main() {
    if let Err(error) = run() {
        eprintln!("sluice: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match command.as_str() {
        "broker" => broker(&rest),
        "dev" => dev_cluster(&rest),
        "certs" => certs(&rest),
        "" | "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n{USAGE}"),
    }
}

/// Parses `--name value` pairs, refusing unknown names.
fn options(args: &[String], known: &[&str]) -> anyhow::Result<Vec<(String, String)>> {
    let mut parsed = Vec::new();
    let mut iter = args.iter();
    while let Some(name) = iter.next() {
        let key = name
            .strip_prefix("--")
            .filter(|key| known.contains(key))
            .with_context(|| format!("unknown option `{name}`\n{USAGE}"))?;
        let value = iter
            .next()
            .with_context(|| format!("option `{name}` needs a value"))?;
        parsed.push((key.to_owned(), value.clone()));
    }
    Ok(parsed)
}

fn number(name: &str, value: &str) -> anyhow::Result<u32> {
    value
        .parse()
        .with_context(|| format!("--{name} must be a whole number, got `{value}`"))
}

/// A flag set by SIGINT or SIGTERM, watched by a dedicated thread. The signals are blocked in
/// every thread started afterwards, so only that thread receives them.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    // SAFETY: `set` is a plain sigset_t initialised by sigemptyset before any other use; the
    // calls only read and write it and the thread's signal mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
        anyhow::ensure!(rc == 0, "blocking SIGINT and SIGTERM failed ({rc})");
        set
    };
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            let mut signal = 0;
            // SAFETY: `set` is a valid signal set and `signal` a valid out-pointer.
            unsafe {
                libc::sigwait(&raw const set, &raw mut signal);
            }
            flag.store(true, Ordering::Relaxed);
        })
        .context("starting the signal thread")?;
    Ok(stop)
}

fn environment() -> Vec<(String, String)> {
    std::env::vars().collect()
}

fn broker(args: &[String]) -> anyhow::Result<()> {
    let mut config_path = None;
    for (key, value) in options(args, &["config"])? {
        if key == "config" {
            config_path = Some(PathBuf::from(value));
        }
    }
    let config = BrokerConfig::load(config_path.as_deref(), &environment())?;
    let stop = stop_flag()?;
    sluice_broker::run::run(&config, stop)
}

fn dev_cluster(args: &[String]) -> anyhow::Result<()> {
    let mut options = DevOptions::default();
    for (key, value) in options_of(args)? {
        match key.as_str() {
            "dir" => options.dir = Some(PathBuf::from(value)),
            "brokers" => options.brokers = number(&key, &value)?,
            "partitions" => options.partitions = number(&key, &value)?,
            "replication-factor" => options.replication_factor = number(&key, &value)?,
            "port-offset" => options.port_offset = number(&key, &value)?,
            _ => unreachable!("options() refuses unknown names"),
        }
    }
    let stop = stop_flag()?;
    dev::run(&options, &|| stop.load(Ordering::Relaxed))
}

fn options_of(args: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    options(
        args,
        &[
            "dir",
            "brokers",
            "partitions",
            "replication-factor",
            "port-offset",
        ],
    )
}

fn certs(args: &[String]) -> anyhow::Result<()> {
    let mut dir = None;
    let mut nodes = 3;
    for (key, value) in options(args, &["dir", "nodes"])? {
        match key.as_str() {
            "dir" => dir = Some(PathBuf::from(value)),
            "nodes" => nodes = number(&key, &value)?,
            _ => unreachable!("options() refuses unknown names"),
        }
    }
    let dir = dir.context("`sluice certs` needs --dir DIR")?;
    let certs = sluice_net::tls::generate_dev_certs(&dir, nodes)?;
    println!(
        "wrote a development CA and {nodes} node certificates in {}",
        dir.display()
    );
    println!("{certs:#?}");
    println!(
        "set network.security.certificateAuthorityPath, certificateChainPath and privateKeyPath \
         of broker i to ca.pem, node-i.pem and node-i-key.pem"
    );
    Ok(())
}
