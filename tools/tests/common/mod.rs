//! `sluice dev` for the tools' end-to-end tests: started on its own ports with short Raft
//! timeouts, waited for until every broker is ready, stopped as Ctrl-C would when dropped.

#![allow(
    dead_code,
    reason = "every test binary compiles this module and uses a different part of it"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the dev cluster may take until every broker is ready.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// How long `sluice dev` may take to stop its brokers on SIGINT, and how long a previous run's
/// brokers may hold a test's ports.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// `sluice`, next to the test's own binary `sibling` in the target directory (`cargo test
/// --workspace` builds every package's binaries).
pub fn sluice_exe(sibling: &str) -> PathBuf {
    let exe = PathBuf::from(sibling).with_file_name("sluice");
    assert!(
        exe.exists(),
        "{} is missing: run the workspace tests (bash scripts/test.sh), which build it",
        exe.display()
    );
    exe
}

/// `sluice dev`, stopped as Ctrl-C would when dropped: its brokers (children that get SIGTERM
/// only when it dies) must release their ports before another run starts.
pub struct Dev {
    child: Child,
    /// Where its brokers keep their data and logs.
    pub dir: PathBuf,
    /// The gRPC gateway of broker 0, `127.0.0.1:PORT`.
    pub gateway: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signals the child this test started; `kill` has no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the management API on `port` answers `GET /ready` with 200.
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

/// Starts `sluice dev` (the binary `exe`) with `--port-offset port_offset` in a fresh directory
/// named after `name` under Cargo's test temporary directory; returns once its three brokers
/// are ready.
pub fn start_dev(exe: &Path, port_offset: u16, name: &str) -> Dev {
    let gateway = format!("127.0.0.1:{}", 26500 + 10 * port_offset);
    // A gateway already answering here would be another run's cluster, not this one.
    let deadline = Instant::now() + STOP_DEADLINE;
    while TcpStream::connect(&gateway).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{gateway} is in use (a sluice dev with --port-offset {port_offset} still running?)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let child = Command::new(exe)
        .args(["dev", "--port-offset", &port_offset.to_string(), "--dir"])
        .arg(&dir)
        // Short timeouts: the cluster elects its leaders within a few seconds.
        .env("ZEEBE_BROKER_CLUSTER_ELECTIONTIMEOUT", "1000ms")
        .env("ZEEBE_BROKER_CLUSTER_HEARTBEATINTERVAL", "100ms")
        .env("ZEEBE_BROKER_DATA_LOGSEGMENTSIZE", "16MB")
        .stdout(Stdio::null())
        .spawn()
        .expect("starting sluice dev");
    let mut dev = Dev {
        child,
        dir,
        gateway,
    };
    let management = |i: u16| 9600 + 10 * (port_offset + i);
    let deadline = Instant::now() + STARTUP_DEADLINE;
    while !(0..3).all(|i| ready(management(i))) {
        assert!(
            dev.child.try_wait().expect("polling sluice dev").is_none(),
            "sluice dev exited; logs in {}",
            dev.dir.display()
        );
        assert!(
            Instant::now() < deadline,
            "the dev cluster was not ready within {STARTUP_DEADLINE:?}; logs in {}",
            dev.dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    dev
}
