//! The check every abuse test ends with: after what it did, every partition still serves
//! creations through every gateway, every broker's `/health` says healthy, and no broker process
//! died.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_broker::gateway::proto::gateway_protocol as pb;
use tokio::runtime::Runtime;

use super::Cluster;
use super::gateway::{self, Client};

/// Creations each partition must serve.
pub const CREATIONS_PER_PARTITION: usize = 30;
/// Bound of one creation (its gRPC deadline).
const CREATE_DEADLINE: Duration = Duration::from_secs(20);
/// How long a gateway may take to accept a connection.
const CONNECT_WAIT: Duration = Duration::from_secs(30);
/// The process the check creates instances of.
const PROCESS: &str = "one_task";

/// The partition a Zeebe key belongs to (its top 13 bits).
#[must_use]
pub fn partition_of_key(key: i64) -> u32 {
    u32::try_from(key >> 51).expect("a non-negative key")
}

/// The single-threaded tokio runtime the abuse tests drive their gRPC clients with.
#[must_use]
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Connects to broker `index`'s plaintext gateway (cluster at `port_offset`).
pub fn client(runtime: &Runtime, port_offset: u32, index: u32) -> Client {
    let endpoint = gateway::plain_endpoint(port_offset, index, CREATE_DEADLINE * 2);
    Client::new(runtime.block_on(gateway::connect(&endpoint, CONNECT_WAIT)))
}

/// Deploys `one_task.bpmn` (idempotent: the same resource deploys as the same version).
pub fn deploy_one_task(runtime: &Runtime, client: &mut Client) {
    let mut request = tonic::Request::new(pb::DeployResourceRequest {
        resources: vec![pb::Resource {
            name: "one_task.bpmn".to_owned(),
            content: gateway::bpmn("one_task.bpmn"),
        }],
        tenant_id: String::new(),
    });
    request.set_timeout(CREATE_DEADLINE);
    runtime
        .block_on(client.deploy_resource(request))
        .unwrap_or_else(|status| panic!("deploying one_task.bpmn: {status:?}"));
}

/// One creation of `one_task` through `client`: the instance key, or the gRPC error.
pub fn create_one(runtime: &Runtime, client: &mut Client) -> Result<i64, tonic::Status> {
    let mut request = tonic::Request::new(pb::CreateProcessInstanceRequest {
        bpmn_process_id: PROCESS.to_owned(),
        version: -1,
        ..pb::CreateProcessInstanceRequest::default()
    });
    request.set_timeout(CREATE_DEADLINE);
    runtime
        .block_on(client.create_process_instance(request))
        .map(|response| response.into_inner().process_instance_key)
}

/// Creates instances through `client` until every partition of `1..=partitions` served
/// `per_partition` of them; every creation must succeed. The gateway spreads creations
/// round-robin, so the loop is bounded by four times the creations needed.
pub fn creations_on_every_partition(
    runtime: &Runtime,
    client: &mut Client,
    partitions: u32,
    per_partition: usize,
) -> BTreeMap<u32, usize> {
    let mut served: BTreeMap<u32, usize> = (1..=partitions).map(|id| (id, 0)).collect();
    let bound = per_partition * served.len() * 4;
    for attempt in 0..bound {
        if served.values().all(|&count| count >= per_partition) {
            return served;
        }
        let key = create_one(runtime, client)
            .unwrap_or_else(|status| panic!("creation {attempt} failed: {status:?}"));
        let partition = partition_of_key(key);
        let count = served
            .get_mut(&partition)
            .unwrap_or_else(|| panic!("instance {key} on unknown partition {partition}"));
        *count += 1;
    }
    assert!(
        served.values().all(|&count| count >= per_partition),
        "after {bound} creations not every partition served {per_partition}: {served:?}"
    );
    served
}

/// The closing check of an abuse test: through every live broker's gateway, every partition
/// serves [`CREATIONS_PER_PARTITION`] creations of `one_task` (deployed here if it was not),
/// every live broker's `/health` answers 200, and no broker exited.
pub fn assert_still_serving(cluster: &Cluster, runtime: &Runtime, port_offset: u32) {
    let partitions = cluster.options.partitions;
    for index in cluster.cluster_brokers() {
        if !cluster.is_live(index) {
            continue;
        }
        let mut client = client(
            runtime,
            port_offset,
            u32::try_from(index).expect("few brokers"),
        );
        deploy_one_task(runtime, &mut client);
        let served =
            creations_on_every_partition(runtime, &mut client, partitions, CREATIONS_PER_PARTITION);
        cluster.note(&format!(
            "broker {index}'s gateway: creations per partition {served:?}"
        ));
    }
    for index in cluster.cluster_brokers() {
        if !cluster.is_live(index) {
            continue;
        }
        match cluster.get(index, "/health") {
            Ok((200, _)) => {}
            other => panic!("broker {index}: /health answered {other:?} at the end"),
        }
    }
    cluster.assert_no_exits();
}
