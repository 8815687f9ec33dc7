//! Helpers of the gateway tests (`tests/gateway_*.rs`): the test BPMN files, connecting to a
//! gateway while it starts, and waiting for a settled Topology.

use std::time::Duration;

use sluice_broker::dev::{self, GATEWAY_PORT};
use sluice_broker::gateway::proto::gateway_protocol as pb;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

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
