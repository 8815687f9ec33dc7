//! The gRPC gateway over TLS (`gateway.security.*`): three brokers, three partitions,
//! replication factor 3, each gateway serving the development certificate of its broker.
//!
//! First, misconfigured brokers must refuse to start, naming the key: a private key file that
//! does not exist, a private key path left unset, a key file that holds no key. Then the cluster
//! starts with TLS on every gateway, and a client trusting the cluster CA sees the topology,
//! deploys and creates through two gateways; a plaintext client to the TLS port fails, and so
//! does a client trusting another CA.

mod common;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use common::gateway::{self, Client};
use common::{Cluster, test_env};
use sluice_broker::dev::{self, DevOptions, GATEWAY_PORT};
use sluice_broker::gateway::proto::gateway_protocol as pb;
use sluice_engine::record::key_partition;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const PORT_OFFSET: u32 = 300;
/// The port offset of the misconfigured brokers, clear of the cluster's.
const MISCONFIGURED_PORT_OFFSET: u32 = 305;
const PARTITIONS: u32 = 3;
const WAIT: Duration = Duration::from_secs(20);
/// How long a misconfigured broker may take to exit.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of a connection attempt that must fail.
const FAILING_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A name in the development certificates' subject alternative names.
const TLS_DOMAIN: &str = "localhost";

fn gateway_port(port_offset: u32, index: u32) -> u16 {
    dev::port(GATEWAY_PORT, port_offset, index)
}

/// The `ZEEBE_BROKER_GATEWAY_SECURITY_*` variables that turn TLS on with `chain` and `key`.
fn tls_env(chain: Option<&Path>, key: Option<&Path>) -> Vec<(String, String)> {
    let mut env = vec![(
        "ZEEBE_BROKER_GATEWAY_SECURITY_ENABLED".to_owned(),
        "true".to_owned(),
    )];
    if let Some(chain) = chain {
        env.push((
            "ZEEBE_BROKER_GATEWAY_SECURITY_CERTIFICATECHAINPATH".to_owned(),
            chain.display().to_string(),
        ));
    }
    if let Some(key) = key {
        env.push((
            "ZEEBE_BROKER_GATEWAY_SECURITY_PRIVATEKEYPATH".to_owned(),
            key.display().to_string(),
        ));
    }
    env
}

/// A broker process started outside the cluster harness; killed (SIGKILL) and reaped when dropped.
struct Misconfigured {
    child: std::process::Child,
}

impl Drop for Misconfigured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts broker 0's configuration on its own ports and data directory with `env` added, and
/// waits up to [`REFUSAL_TIMEOUT`] for it to exit: its exit status (`None` if it kept running,
/// then it is killed) and its output.
fn start_misconfigured(
    cluster: &Cluster,
    name: &str,
    env: Vec<(String, String)>,
) -> (Option<ExitStatus>, String) {
    let log = cluster.dir.join(format!("misconfigured-{name}.log"));
    let out = std::fs::File::create(&log).expect("creating the log");
    let err = out.try_clone().expect("cloning the log handle");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .arg("broker")
        .arg("--config")
        .arg(&cluster.brokers[0].config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ZEEBE_") {
            command.env_remove(key);
        }
    }
    let data_dir = cluster.dir.join(format!("misconfigured-{name}"));
    command
        .envs(test_env())
        .env(
            "ZEEBE_BROKER_NETWORK_PORTOFFSET",
            MISCONFIGURED_PORT_OFFSET.to_string(),
        )
        .env("ZEEBE_BROKER_DATA_DIRECTORY", &data_dir)
        .envs(env);
    let mut broker = Misconfigured {
        child: command.spawn().expect("starting a broker"),
    };
    let deadline = std::time::Instant::now() + REFUSAL_TIMEOUT;
    let status = loop {
        if let Some(status) = broker.child.try_wait().expect("waiting for the broker") {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(broker);
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    cluster.note(&format!(
        "misconfigured broker ({name}): {status:?}; output: {}",
        output.trim()
    ));
    (status, output)
}

/// Asserts that the broker refused to start: it exited with a failure status and its output
/// names every one of `needles`.
fn assert_refused(name: &str, status: Option<ExitStatus>, output: &str, needles: &[&str]) {
    let status = status.unwrap_or_else(|| {
        panic!(
            "{name}: the broker kept running for {REFUSAL_TIMEOUT:?}; it should refuse to start. \
             Output: {output}"
        )
    });
    assert!(
        !status.success(),
        "{name}: the broker exited successfully; output: {output}"
    );
    for needle in needles {
        assert!(
            output.contains(needle),
            "{name}: the broker's output does not name {needle:?}: {output}"
        );
    }
}

fn tls_endpoint(port: u16, ca_pem: &[u8]) -> Endpoint {
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("a valid URL")
        .timeout(Duration::from_secs(15))
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name(TLS_DOMAIN),
        )
        .expect("a valid client TLS configuration")
}

async fn connect_tls(port: u16, ca_pem: &[u8]) -> Channel {
    gateway::connect(&tls_endpoint(port, ca_pem), WAIT).await
}

/// Connects with `endpoint` and calls Topology; the error, which must come within
/// [`FAILING_CONNECT_TIMEOUT`].
async fn topology_error(endpoint: Endpoint) -> String {
    let attempt = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| format!("connect: {error:?}"))?;
        Client::new(channel)
            .topology(pb::TopologyRequest {})
            .await
            .map(|_| ())
            .map_err(|status| format!("Topology: {status:?}"))
    };
    match tokio::time::timeout(FAILING_CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(())) => panic!("Topology answered a client that should have been refused"),
        Ok(Err(error)) => error,
        Err(elapsed) => panic!("a refused client got no answer ({elapsed})"),
    }
}

/// Creates a `one_task` instance (retrying `NOT_FOUND` while the deployment travels); its key.
async fn create(client: &mut Client) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        match client
            .create_process_instance(pb::CreateProcessInstanceRequest {
                bpmn_process_id: "one_task".to_owned(),
                version: -1,
                ..pb::CreateProcessInstanceRequest::default()
            })
            .await
        {
            Ok(created) => return created.into_inner().process_instance_key,
            Err(status) if status.code() == Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("creating an instance over TLS: {status:?}"),
        }
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, told step by step")]
fn gateway_tls() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: PARTITIONS,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::create("gateway_tls", options);
    let certs = cluster.dir.join("certs");
    let node_cert = |index: u32| certs.join(format!("node-{index}.pem"));
    let node_key = |index: u32| certs.join(format!("node-{index}-key.pem"));

    // Misconfigurations stop the broker before it serves, naming the key to fix.
    let absent_key = certs.join("absent-key.pem");
    let (status, output) = start_misconfigured(
        &cluster,
        "absent-key",
        tls_env(Some(&node_cert(0)), Some(&absent_key)),
    );
    assert_refused(
        "a private key file that does not exist",
        status,
        &output,
        &[
            "gateway.security.privateKeyPath",
            &absent_key.display().to_string(),
        ],
    );
    let (status, output) =
        start_misconfigured(&cluster, "unset-key", tls_env(Some(&node_cert(0)), None));
    assert_refused(
        "gateway.security.enabled without a private key path",
        status,
        &output,
        &["gateway.security.privateKeyPath"],
    );

    // The cluster, with TLS on every gateway.
    for index in cluster.cluster_brokers() {
        let node = u32::try_from(index).expect("few brokers");
        cluster.brokers[index]
            .env
            .borrow_mut()
            .extend(tls_env(Some(&node_cert(node)), Some(&node_key(node))));
        cluster.spawn(index);
    }
    for partition_id in 1..=PARTITIONS {
        cluster.wait_until(
            &format!("partition {partition_id} to elect a leader"),
            WAIT,
            || cluster.settled_leader(partition_id),
        );
    }
    let ca_pem = std::fs::read(certs.join("ca.pem")).expect("reading the CA certificate");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let mut client = Client::new(connect_tls(gateway_port(PORT_OFFSET, 0), &ca_pem).await);
        let topology = gateway::settled_topology(&mut client, 3, WAIT).await;
        assert_eq!(topology.cluster_size, 3);
        assert_eq!(topology.partitions_count, 3);
        cluster.note("Topology over TLS: 3 brokers, a leader per partition");

        let deployed = client
            .deploy_resource(pb::DeployResourceRequest {
                resources: vec![pb::Resource {
                    name: "one_task.bpmn".to_owned(),
                    content: gateway::bpmn("one_task.bpmn"),
                }],
                tenant_id: String::new(),
            })
            .await
            .expect("deploys over TLS")
            .into_inner();
        let Some(pb::deployment::Metadata::Process(process)) = &deployed.deployments[0].metadata
        else {
            panic!("a process was deployed: {deployed:?}");
        };
        assert_eq!(process.bpmn_process_id, "one_task");
        let created = create(&mut client).await;
        let mut other = Client::new(connect_tls(gateway_port(PORT_OFFSET, 2), &ca_pem).await);
        let created_elsewhere = create(&mut other).await;
        cluster.note(&format!(
            "deployed and created over TLS: instance {created} (partition {}) through broker \
             0, {created_elsewhere} (partition {}) through broker 2",
            key_partition(created),
            key_partition(created_elsewhere)
        ));

        // A plaintext client to the TLS port gets nothing.
        let plaintext =
            Endpoint::from_shared(format!("http://127.0.0.1:{}", gateway_port(PORT_OFFSET, 0)))
                .expect("a valid URL")
                .timeout(FAILING_CONNECT_TIMEOUT)
                .connect_timeout(FAILING_CONNECT_TIMEOUT);
        let error = topology_error(plaintext).await;
        cluster.note(&format!("a plaintext client fails: {error}"));

        // A client trusting another CA refuses the gateway's certificate.
        let other_ca =
            sluice_net::tls::CertificateAuthority::generate("another CA").expect("generating a CA");
        let error = topology_error(tls_endpoint(
            gateway_port(PORT_OFFSET, 0),
            other_ca.cert_pem().as_bytes(),
        ))
        .await;
        assert!(
            error.contains("UnknownIssuer") || error.contains("certificate"),
            "a client trusting another CA failed, but not on the certificate: {error}"
        );
        cluster.note(&format!("a client trusting another CA fails: {error}"));
    });
    cluster.assert_no_exits();
    for index in cluster.cluster_brokers() {
        let log = std::fs::read_to_string(&cluster.brokers[index].log).unwrap_or_default();
        assert!(
            log.contains("gRPC gateway on") && log.contains("(TLS)"),
            "broker {index} does not say its gateway serves TLS: {log}"
        );
    }
    drop(runtime);
    cluster.terminate_all();

    // A key file that holds no key must stop the broker too, naming the key: it is checked
    // at start-up, not when the gateway's thread builds its TLS acceptor.
    let garbage_key = certs.join("garbage-key.pem");
    std::fs::write(&garbage_key, "this is not a PEM private key\n").expect("writing a bad key");
    let (status, output) = start_misconfigured(
        &cluster,
        "garbage-key",
        tls_env(Some(&node_cert(0)), Some(&garbage_key)),
    );
    assert_refused(
        "a private key file that holds no key",
        status,
        &output,
        &["gateway.security.privateKeyPath"],
    );
}
