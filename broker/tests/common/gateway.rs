//! Helpers of the tests that drive the cluster as a Zeebe client does (`tests/gateway_*.rs`,
//! `tests/engine_*.rs`, `tests/dashboard_browser.rs`): the test BPMN files, connecting to a
//! gateway while it starts, waiting for a settled Topology, and the unary calls those tests
//! share, each with a gRPC deadline (`grpc-timeout`) the gateway answers by.

use std::time::Duration;

use sluice_broker::dev::{self, GATEWAY_PORT};
use sluice_broker::gateway::proto::gateway_protocol as pb;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

/// The generated Zeebe client.
pub type Client = pb::gateway_client::GatewayClient<Channel>;

/// The file `name` of `engine/testdata/bpmn/`.
pub fn bpmn(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../engine/testdata/bpmn/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|error| panic!("reading {path}: {error}"))
}

/// The plaintext gateway of broker `index` of a `sluice dev` layout at `port_offset`, with
/// `timeout` for every call.
pub fn plain_endpoint(port_offset: u32, index: u32, timeout: Duration) -> Endpoint {
    let url = format!(
        "http://127.0.0.1:{}",
        dev::port(GATEWAY_PORT, port_offset, index)
    );
    Endpoint::from_shared(url)
        .expect("a valid URL")
        .timeout(timeout)
}

/// Connects with `endpoint`, retrying while the gateway is not listening yet, for `wait`.
pub async fn connect(endpoint: &Endpoint, wait: Duration) -> Channel {
    let deadline = Instant::now() + wait;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the gateway at {} did not accept: {error:?}",
                    endpoint.uri()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits (up to `wait`) until Topology lists `brokers` brokers and exactly one leader for each
/// of its partitions.
pub async fn settled_topology(
    client: &mut Client,
    brokers: usize,
    wait: Duration,
) -> pb::TopologyResponse {
    let deadline = Instant::now() + wait;
    loop {
        let topology = client
            .topology(pb::TopologyRequest {})
            .await
            .expect("Topology answers")
            .into_inner();
        let one_leader_each = (1..=topology.partitions_count).all(|partition_id| {
            topology
                .brokers
                .iter()
                .flat_map(|broker| &broker.partitions)
                .filter(|p| {
                    p.partition_id == partition_id
                        && p.role == i32::from(pb::partition::PartitionBrokerRole::Leader)
                })
                .count()
                == 1
        });
        if topology.brokers.len() == brokers && topology.partitions_count > 0 && one_leader_each {
            return topology;
        }
        assert!(
            Instant::now() < deadline,
            "topology did not settle: {topology:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `message` with a gRPC deadline (`grpc-timeout`).
pub fn with_deadline<T>(message: T, deadline: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(deadline);
    request
}

/// Deploys the files `names` of `engine/testdata/bpmn/` in one request.
pub async fn deploy(
    client: &mut Client,
    names: &[&str],
    deadline: Duration,
) -> pb::DeployResourceResponse {
    let resources = names
        .iter()
        .map(|&name| pb::Resource {
            name: name.to_owned(),
            content: bpmn(name),
        })
        .collect();
    client
        .deploy_resource(with_deadline(
            pb::DeployResourceRequest {
                resources,
                tenant_id: String::new(),
            },
            deadline,
        ))
        .await
        .unwrap_or_else(|status| panic!("deploying {names:?}: {status:?}"))
        .into_inner()
}

/// Creates an instance of the newest version of `process` with `variables` on the partition
/// the gateway picks (round-robin); its key, which carries that partition.
pub async fn create(
    client: &mut Client,
    process: &str,
    variables: &str,
    deadline: Duration,
) -> i64 {
    client
        .create_process_instance(with_deadline(
            pb::CreateProcessInstanceRequest {
                bpmn_process_id: process.to_owned(),
                version: -1,
                variables: variables.to_owned(),
                ..pb::CreateProcessInstanceRequest::default()
            },
            deadline,
        ))
        .await
        .unwrap_or_else(|status| panic!("creating an instance of {process}: {status:?}"))
        .into_inner()
        .process_instance_key
}

/// One `ActivateJobs` call: up to `max` jobs of `job_type` for `worker` (locked for a minute),
/// long-polling for up to `poll`; every job its stream carried.
pub async fn activate(
    client: &mut Client,
    job_type: &str,
    worker: &str,
    max: i32,
    poll: Duration,
    deadline: Duration,
) -> Vec<pb::ActivatedJob> {
    let request = pb::ActivateJobsRequest {
        r#type: job_type.to_owned(),
        worker: worker.to_owned(),
        timeout: 60_000,
        max_jobs_to_activate: max,
        fetch_variable: Vec::new(),
        request_timeout: i64::try_from(poll.as_millis()).expect("a short poll"),
        tenant_ids: Vec::new(),
    };
    let mut stream = client
        .activate_jobs(with_deadline(request, deadline))
        .await
        .unwrap_or_else(|status| panic!("activating {job_type} jobs: {status:?}"))
        .into_inner();
    let mut jobs = Vec::new();
    while let Some(response) = stream
        .message()
        .await
        .unwrap_or_else(|status| panic!("the {job_type} activation stream: {status:?}"))
    {
        jobs.extend(response.jobs);
    }
    jobs
}

/// Completes job `job_key` without variables.
pub async fn complete(client: &mut Client, job_key: i64, deadline: Duration) -> Result<(), Status> {
    client
        .complete_job(with_deadline(
            pb::CompleteJobRequest {
                job_key,
                variables: String::new(),
            },
            deadline,
        ))
        .await
        .map(|_| ())
}
