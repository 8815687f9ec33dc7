//! `sluice dev`: a local cluster of broker processes on loopback.
//!
//! It generates a development CA and one certificate per broker, writes one configuration file
//! per broker, starts each as `sluice broker --config FILE` with its output in a log file beside
//! it, prints where everything listens, and runs until interrupted (Ctrl-C or SIGTERM), then
//! stops the brokers. Ports follow Zeebe's `portOffset` convention: broker `i` listens on the
//! standard ports plus `10 * (port_offset + i)`.
//!
//! A broker that exits on its own is reported; the others keep running, so a developer can
//! watch failover. Children get SIGTERM if this process dies, so none outlives it.
//!
//! Each run draws a random management token (from `/dev/urandom`), writes it to
//! [`TOKEN_FILE_NAME`] in the cluster's directory (mode 0600) and points every broker's
//! `management.security.tokenFile` at it, so `POST /actuator/rebalance` works with
//! `Authorization: Bearer $(cat DIR/management-token)`; the banner prints the token and the
//! command. The fault switch stays off (`ZEEBE_BROKER_MANAGEMENT_FAULTS_ENABLED=true` in a
//! broker's environment turns it on, as the tests do).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

/// Gateway port of broker 0 (Zeebe's default).
pub const GATEWAY_PORT: u16 = 26500;
/// Command API port of broker 0 (Zeebe's default).
pub const COMMAND_API_PORT: u16 = 26501;
/// Internal (broker-to-broker) port of broker 0 (Zeebe's default).
pub const INTERNAL_API_PORT: u16 = 26502;
/// Management port of broker 0 (Zeebe's default).
pub const MANAGEMENT_PORT: u16 = 9600;
/// The file in the cluster's directory that holds its management token.
pub const TOKEN_FILE_NAME: &str = "management-token";
/// Random bytes in a generated management token (written as twice as many hex digits).
const TOKEN_RANDOM_BYTES: usize = 32;

/// The options of `sluice dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where configurations, certificates, data and logs go; a fresh temporary directory when
    /// absent (removed at exit).
    pub dir: Option<PathBuf>,
    /// Brokers to start.
    pub brokers: u32,
    /// `cluster.partitionsCount`.
    pub partitions: u32,
    /// `cluster.replicationFactor`.
    pub replication_factor: u32,
    /// The port offset of broker 0.
    pub port_offset: u32,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            dir: None,
            brokers: 3,
            partitions: 3,
            replication_factor: 3,
            port_offset: 0,
        }
    }
}

/// The port `base` of broker `index` under `port_offset`.
#[must_use]
pub fn port(base: u16, port_offset: u32, index: u32) -> u16 {
    let offset = (port_offset + index) * 10;
    u16::try_from(u32::from(base) + offset).expect("ports checked by the configuration")
}

/// The configuration file of broker `index` of a loopback cluster, without a management token
/// (changes through the management API are off): [`write_cluster`] appends [`management_yaml`].
#[must_use]
pub fn broker_yaml(options: &DevOptions, dir: &Path, index: u32) -> String {
    let certs = dir.join("certs");
    let contact_points: Vec<String> = (0..options.brokers)
        .map(|i| {
            format!(
                "127.0.0.1:{}",
                port(INTERNAL_API_PORT, options.port_offset, i)
            )
        })
        .collect();
    let mut yaml = String::new();
    let _ = writeln!(
        yaml,
        "# Broker {index} of a local cluster written by `sluice dev`."
    );
    let _ = writeln!(yaml, "cluster:");
    let _ = writeln!(yaml, "  nodeId: {index}");
    let _ = writeln!(yaml, "  clusterSize: {}", options.brokers);
    let _ = writeln!(yaml, "  partitionsCount: {}", options.partitions);
    let _ = writeln!(yaml, "  replicationFactor: {}", options.replication_factor);
    let _ = writeln!(
        yaml,
        "  initialContactPoints: [{}]",
        contact_points.join(", ")
    );
    let _ = writeln!(yaml, "network:");
    let _ = writeln!(yaml, "  host: 127.0.0.1");
    let _ = writeln!(yaml, "  portOffset: {}", options.port_offset + index);
    // The raw-append API of `sluice-bench append`, on loopback.
    let _ = writeln!(yaml, "  commandApi: {{ enabled: true }}");
    let _ = writeln!(yaml, "  security:");
    let _ = writeln!(
        yaml,
        "    certificateAuthorityPath: {}",
        certs.join("ca.pem").display()
    );
    let _ = writeln!(
        yaml,
        "    certificateChainPath: {}",
        certs.join(format!("node-{index}.pem")).display()
    );
    let _ = writeln!(
        yaml,
        "    privateKeyPath: {}",
        certs.join(format!("node-{index}-key.pem")).display()
    );
    let _ = writeln!(yaml, "data:");
    let _ = writeln!(
        yaml,
        "  directory: {}",
        dir.join(format!("broker-{index}")).join("data").display()
    );
    yaml
}

/// The `management` section that points a broker at the cluster's token file.
#[must_use]
pub fn management_yaml(token_file: &Path) -> String {
    format!(
        "management:\n  security:\n    tokenFile: {}\n",
        token_file.display()
    )
}

/// The path of the management token of the cluster in `dir`.
#[must_use]
pub fn token_path(dir: &Path) -> PathBuf {
    dir.join(TOKEN_FILE_NAME)
}

/// Draws a new management token: 32 bytes from `/dev/urandom`, in hex (64 characters).
pub fn generate_token() -> anyhow::Result<String> {
    let mut random = [0u8; TOKEN_RANDOM_BYTES];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut random,
    )
    .context("reading /dev/urandom")?;
    let mut token = String::with_capacity(2 * TOKEN_RANDOM_BYTES);
    for byte in random {
        let _ = write!(token, "{byte:02x}");
    }
    Ok(token)
}

/// Writes a new management token to [`token_path`]`(dir)`, readable by the owner only; returns
/// it.
pub fn write_token(dir: &Path) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let token = generate_token()?;
    let path = token_path(dir);
    // A token left by an earlier run may have other permissions: start from a fresh file.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("removing {}", path.display())),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{token}").with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// Writes certificates, the management token ([`write_token`]) and configuration files for a
/// loopback cluster into `dir`; returns the configuration paths. Each configuration is
/// [`broker_yaml`] followed by [`management_yaml`].
pub fn write_cluster(options: &DevOptions, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    sluice_net::tls::generate_dev_certs(&dir.join("certs"), options.brokers)?;
    write_token(dir)?;
    let management = management_yaml(&token_path(dir));
    let mut paths = Vec::new();
    for index in 0..options.brokers {
        let path = dir.join(format!("broker-{index}.yaml"));
        let yaml = broker_yaml(options, dir, index) + &management;
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

/// Starts `sluice broker --config path` with its output appended to `log`. The child gets
/// SIGTERM when this process dies.
pub fn spawn_broker(exe: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::new(exe);
    command
        .arg("broker")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: the closure only calls the async-signal-safe `prctl` between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("starting {} broker", exe.display()))
}

/// Runs `sluice dev` until `stop()` says so. See the module docs.
pub fn run(options: &DevOptions, stop: &dyn Fn() -> bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.brokers >= 1 && options.brokers <= 9,
        "--brokers must be between 1 and 9 (got {})",
        options.brokers
    );
    let (dir, temporary) = match &options.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("sluice-dev-{}", std::process::id())),
            true,
        ),
    };
    let configs = write_cluster(options, &dir)?;
    let exe = std::env::current_exe().context("finding the sluice executable")?;
    let mut children = Vec::new();
    for (index, config) in (0u32..).zip(&configs) {
        let log = dir.join(format!("broker-{index}.log"));
        children.push(Some(spawn_broker(&exe, config, &log)?));
    }
    println!(
        "sluice dev: {} brokers, {} partitions, replication factor {}; data, configs and logs in {}",
        options.brokers,
        options.partitions,
        options.replication_factor,
        dir.display()
    );
    println!("broker  command API        internal (QUIC)    management");
    for index in 0..options.brokers {
        let p = |base| port(base, options.port_offset, index);
        println!(
            "{index:>6}  127.0.0.1:{:<9} 127.0.0.1:{:<8} http://127.0.0.1:{}/ (log: broker-{index}.log)",
            p(COMMAND_API_PORT),
            p(INTERNAL_API_PORT),
            p(MANAGEMENT_PORT)
        );
    }
    let token_file = token_path(&dir);
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading {}", token_file.display()))?;
    println!(
        "management token (POST /actuator/rebalance needs it): {} (in {}); e.g.\n  curl -X POST -H \"Authorization: Bearer $(cat {})\" http://127.0.0.1:{}/actuator/rebalance",
        token.trim(),
        token_file.display(),
        token_file.display(),
        port(MANAGEMENT_PORT, options.port_offset, 0)
    );
    println!(
        "gRPC gateway (Zeebe protocol, plaintext): 127.0.0.1:{} (broker 0; broker i serves on {} + 10 i). Ctrl-C stops.",
        port(GATEWAY_PORT, options.port_offset, 0),
        port(GATEWAY_PORT, options.port_offset, 0)
    );
    while !stop() {
        for (index, slot) in children.iter_mut().enumerate() {
            if let Some(child) = slot
                && let Ok(Some(status)) = child.try_wait()
            {
                eprintln!(
                    "sluice dev: broker {index} exited ({status}); see {}",
                    dir.join(format!("broker-{index}.log")).display()
                );
                *slot = None;
            }
        }
        if children.iter().all(Option::is_none) {
            anyhow::bail!("every broker exited; see the logs in {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("sluice dev: stopping the brokers");
    for child in children.iter_mut().flatten() {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: signals a child this process started; `kill` has no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    for child in children.iter_mut().flatten() {
        let _ = child.wait();
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BrokerConfig;

    #[test]
    fn tokens_are_random_hex() {
        let first = generate_token().expect("a token");
        let second = generate_token().expect("a token");
        assert_eq!(first.len(), 2 * TOKEN_RANDOM_BYTES);
        assert!(
            first.bytes().all(|byte| byte.is_ascii_hexdigit()),
            "{first}"
        );
        assert_ne!(first, second);
    }

    #[test]
    fn brokers_read_the_token_file_the_cluster_writes() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("sluice-dev-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let first = write_token(&dir).expect("a token file");
        let token = write_token(&dir).expect("a token file, again");
        assert_ne!(first, token, "every run draws a new token");
        let mode = std::fs::metadata(token_path(&dir))
            .expect("the file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let options = DevOptions::default();
        let yaml = broker_yaml(&options, &dir, 1) + &management_yaml(&token_path(&dir));
        let config = BrokerConfig::from_yaml_str(&yaml, &[]).expect("a valid configuration");
        assert_eq!(
            config.management.read_token().expect("readable"),
            Some(token)
        );
        assert!(!config.management.faults.enabled);
        let without = BrokerConfig::from_yaml_str(&broker_yaml(&options, &dir, 1), &[])
            .expect("a valid configuration");
        assert_eq!(without.management.read_token().expect("no file"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
