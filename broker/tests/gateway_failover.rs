//! The gRPC gateway through a leader crash: three brokers, three partitions, replication
//! factor 3, a Zeebe client on the gateway of a broker that survives.
//!
//! Instances of a one-service-task process are created on every partition, more of them on a
//! partition `P` whose leader is another broker, and a "with result" creation waits on `P`.
//! The leader of `P` is killed with SIGKILL. At once, through the surviving gateway, with
//! generous deadlines: instances are created concurrently (some land on `P`), and the jobs of
//! the instances created before the kill are activated and completed; every one must succeed,
//! the gateway retrying on the new leader. A cancel on `P` with a short deadline, sent during the
//! election, must succeed or answer `DEADLINE_EXCEEDED`/`UNAVAILABLE` within its deadline plus a
//! margin; the "with result" creation must answer (anything) within its deadline; Topology must
//! come to name a new leader of `P`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::gateway::{self, Client};
use common::{Cluster, index_of};
use sluice_broker::dev::DevOptions;
use sluice_broker::gateway::proto::gateway_protocol as pb;
use sluice_broker::partitioning::PartitionId;
use sluice_engine::record::key_partition;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

const PORT_OFFSET: u32 = 290;
const PARTITIONS: u32 = 3;
const PARTITIONS_USIZE: usize = 3;
const WAIT: Duration = Duration::from_secs(20);
/// The gRPC deadline of every request that must succeed across the failover.
const GENEROUS: Duration = Duration::from_secs(20);
/// The gRPC deadline of the request sent during the election.
const SHORT: Duration = Duration::from_millis(500);
/// The gRPC deadline (and `requestTimeout`) of the "with result" creation.
const WITH_RESULT: Duration = Duration::from_secs(10);
/// How late after its deadline an answer may come (scheduling on a loaded 2-core machine).
const MARGIN: Duration = Duration::from_secs(2);
/// Client-side bound of the channel: above every deadline, so the server's answer is measured.
const CHANNEL_TIMEOUT: Duration = Duration::from_mins(1);
/// `work` instances to have on the affected partition before the kill.
const INSTANCES_ON_AFFECTED: usize = 3;
/// Creations sent concurrently right after the kill.
const CREATES_AFTER_KILL: usize = 6;

/// A second process whose job no `work` worker takes: its instances only wait to be cancelled.
const HOLD_BPMN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="Definitions_hold" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="hold" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>to_task</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="to_task" sourceRef="start" targetRef="task" />
    <bpmn:serviceTask id="task">
      <bpmn:extensionElements><zeebe:taskDefinition type="hold" retries="3" /></bpmn:extensionElements>
      <bpmn:incoming>to_task</bpmn:incoming>
      <bpmn:outgoing>to_end</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="to_end" sourceRef="task" targetRef="end" />
    <bpmn:endEvent id="end"><bpmn:incoming>to_end</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>
"#;

async fn connect(index: u32) -> Channel {
    let endpoint = gateway::plain_endpoint(PORT_OFFSET, index, CHANNEL_TIMEOUT);
    gateway::connect(&endpoint, WAIT).await
}

/// `message` with a gRPC deadline (`grpc-timeout`).
fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

/// The node id of each partition's leader per Topology, when it names exactly one.
fn leaders(topology: &pb::TopologyResponse) -> BTreeMap<PartitionId, i32> {
    let mut found: BTreeMap<PartitionId, Vec<i32>> = BTreeMap::new();
    for broker in &topology.brokers {
        for partition in &broker.partitions {
            if partition.role == i32::from(pb::partition::PartitionBrokerRole::Leader) {
                let id = PartitionId::try_from(partition.partition_id).expect("positive id");
                found.entry(id).or_default().push(broker.node_id);
            }
        }
    }
    found
        .into_iter()
        .filter_map(|(id, nodes)| match nodes.as_slice() {
            [node] => Some((id, *node)),
            _ => None,
        })
        .collect()
}

fn create_request(process: &str) -> pb::CreateProcessInstanceRequest {
    pb::CreateProcessInstanceRequest {
        bpmn_process_id: process.to_owned(),
        version: -1,
        variables: r#"{"order":42}"#.to_owned(),
        ..pb::CreateProcessInstanceRequest::default()
    }
}

/// Creates one instance of `process` (retrying `NOT_FOUND` while the deployment travels);
/// its key.
async fn create(client: &mut Client, process: &str) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        match client
            .create_process_instance(with_deadline(create_request(process), GENEROUS))
            .await
        {
            Ok(created) => return created.into_inner().process_instance_key,
            Err(status) if status.code() == Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("creating an instance of {process}: {status:?}"),
        }
    }
}

/// Creates instances of `process` until one lands on `partition_id`; every key created.
async fn create_until_on(
    client: &mut Client,
    process: &str,
    partition_id: PartitionId,
) -> Vec<i64> {
    let mut keys = Vec::new();
    loop {
        let key = create(client, process).await;
        keys.push(key);
        if key_partition(key) == partition_id {
            return keys;
        }
        assert!(
            keys.len() <= 3 * PARTITIONS_USIZE,
            "no instance landed on partition {partition_id}: {keys:?}"
        );
    }
}

fn next_partition(partition_id: PartitionId) -> PartitionId {
    partition_id % PARTITIONS + 1
}

fn activate_request() -> pb::ActivateJobsRequest {
    pb::ActivateJobsRequest {
        r#type: "work".to_owned(),
        worker: "failover-test".to_owned(),
        timeout: 60_000,
        max_jobs_to_activate: 32,
        fetch_variable: Vec::new(),
        request_timeout: 1_000,
        tenant_ids: Vec::new(),
    }
}

/// Activates and completes `work` jobs until the job of every instance in `wanted` is
/// completed; each request has the generous deadline. The instance keys of every job
/// completed.
async fn complete_jobs_of(client: &mut Client, wanted: &BTreeSet<i64>) -> BTreeSet<i64> {
    let deadline = Instant::now() + GENEROUS;
    let mut completed = BTreeSet::new();
    while !wanted.is_subset(&completed) {
        assert!(
            Instant::now() < deadline,
            "jobs of instances {:?} not completed within {GENEROUS:?}",
            wanted.difference(&completed).collect::<Vec<_>>()
        );
        let mut stream = bounded(
            "ActivateJobs",
            GENEROUS,
            client.activate_jobs(with_deadline(activate_request(), GENEROUS)),
        )
        .await
        .expect("ActivateJobs answers through the failover")
        .into_inner();
        let mut jobs = Vec::new();
        while let Some(response) = stream
            .message()
            .await
            .expect("the activation stream is healthy")
        {
            jobs.extend(response.jobs);
        }
        for job in jobs {
            bounded(
                "CompleteJob",
                GENEROUS,
                client.complete_job(with_deadline(
                    pb::CompleteJobRequest {
                        job_key: job.key,
                        variables: r#"{"done":true}"#.to_owned(),
                    },
                    GENEROUS,
                )),
            )
            .await
            .unwrap_or_else(|status| {
                panic!(
                    "completing job {} of instance {} (partition {}): {status:?}",
                    job.key,
                    job.process_instance_key,
                    key_partition(job.key)
                )
            });
            completed.insert(job.process_instance_key);
        }
    }
    completed
}

/// Awaits `call`, failing the test if it does not answer within `deadline` plus [`MARGIN`]:
/// the gateway must answer by the deadline it was given, whatever the cluster does.
async fn bounded<T>(
    what: &str,
    deadline: Duration,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let started = Instant::now();
    tokio::time::timeout(deadline + MARGIN, call)
        .await
        .unwrap_or_else(|elapsed| {
            panic!(
                "{what} with a {deadline:?} deadline hung: no answer after {:?} ({elapsed})",
                started.elapsed()
            )
        })
}

/// Whether `status` says the deadline passed or the cluster is unavailable. tonic enforces
/// `grpc-timeout` in the client too, and reports its own expiry as `CANCELLED` "Timeout
/// expired": that is a deadline too.
fn is_deadline_or_unavailable(status: &tonic::Status) -> bool {
    match status.code() {
        Code::DeadlineExceeded | Code::Unavailable => true,
        Code::Cancelled => status.message() == "Timeout expired",
        _ => false,
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, told step by step")]
fn gateway_failover() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: PARTITIONS,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::start("gateway_failover", options);
    for partition_id in 1..=PARTITIONS {
        cluster.wait_until(
            &format!("partition {partition_id} to elect a leader"),
            WAIT,
            || cluster.settled_leader(partition_id),
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        // Pick the partition and the gateway: a partition led by another broker than the
        // gateway's, found through Topology.
        let mut client = Client::new(connect(0).await);
        let topology = gateway::settled_topology(&mut client, 3, WAIT).await;
        let initial_leaders = leaders(&topology);
        let (gateway, affected, doomed) = (0..3)
            .find_map(|gateway| {
                initial_leaders
                    .iter()
                    .find(|&(_, &leader)| leader != gateway)
                    .map(|(&partition_id, &leader)| (gateway, partition_id, leader))
            })
            .expect("some partition is led by another broker than some gateway's");
        let gateway = u32::try_from(gateway).expect("a node id");
        let doomed = index_of(u32::try_from(doomed).expect("a node id"));
        if gateway != 0 {
            client = Client::new(connect(gateway).await);
        }
        cluster.note(&format!(
            "topology leaders {initial_leaders:?}: the client uses broker {gateway}'s gateway; \
             partition {affected}'s leader, broker {doomed}, will be killed"
        ));

        let deployed = client
            .deploy_resource(with_deadline(
                pb::DeployResourceRequest {
                    resources: vec![
                        pb::Resource {
                            name: "one_task.bpmn".to_owned(),
                            content: gateway::bpmn("one_task.bpmn"),
                        },
                        pb::Resource {
                            name: "hold.bpmn".to_owned(),
                            content: HOLD_BPMN.as_bytes().to_vec(),
                        },
                    ],
                    tenant_id: String::new(),
                },
                GENEROUS,
            ))
            .await
            .expect("deploys")
            .into_inner();
        assert_eq!(deployed.deployments.len(), 2, "{deployed:?}");

        // Instances on every partition, INSTANCES_ON_AFFECTED of them on the affected one.
        let mut before_kill = BTreeSet::new();
        while before_kill
            .iter()
            .filter(|&&key| key_partition(key) == affected)
            .count()
            < INSTANCES_ON_AFFECTED
        {
            before_kill.extend(create_until_on(&mut client, "one_task", affected).await);
        }
        let spread: BTreeSet<PartitionId> = before_kill.iter().map(|&k| key_partition(k)).collect();
        assert_eq!(
            spread.len(),
            3,
            "instances on every partition: {before_kill:?}"
        );
        // The instance to cancel during the election; its `hold` job is never activated.
        let hold = *create_until_on(&mut client, "hold", affected)
            .await
            .last()
            .expect("one was created");
        // The round-robin is this gateway's alone: line it up so the next creation (with
        // result) lands on the affected partition, and check that it did by the one after.
        let mut last = key_partition(hold);
        while next_partition(last) != affected {
            let key = create(&mut client, "one_task").await;
            before_kill.insert(key);
            last = key_partition(key);
        }
        let with_result = {
            let mut with_result_client = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let request = pb::CreateProcessInstanceWithResultRequest {
                    request: Some(create_request("one_task")),
                    request_timeout: i64::try_from(WITH_RESULT.as_millis()).expect("small"),
                    fetch_variables: Vec::new(),
                };
                let result = bounded(
                    "CreateProcessInstanceWithResult",
                    WITH_RESULT,
                    with_result_client
                        .create_process_instance_with_result(with_deadline(request, WITH_RESULT)),
                )
                .await;
                (result.map(tonic::Response::into_inner), started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after_with_result = create(&mut client, "one_task").await;
        before_kill.insert(after_with_result);
        assert_eq!(
            key_partition(after_with_result),
            next_partition(affected),
            "the creation with result took partition {affected}'s turn of the round-robin"
        );
        cluster.note(&format!(
            "{} instances before the kill on partitions {spread:?}, {} on partition {affected}; \
             hold instance {hold}; a creation with result waits on partition {affected}",
            before_kill.len(),
            before_kill
                .iter()
                .filter(|&&key| key_partition(key) == affected)
                .count()
        ));

        let (leader, view) = cluster
            .settled_leader(affected)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            leader, doomed,
            "Topology and the management API name the same leader of partition {affected}"
        );
        cluster.kill(doomed);
        let killed_at = Instant::now();

        // During the election: a short deadline answers in time, with success or a retryable
        // status.
        let short = {
            let mut short_client = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = bounded(
                    "CancelProcessInstance",
                    SHORT,
                    short_client.cancel_process_instance(with_deadline(
                        pb::CancelProcessInstanceRequest {
                            process_instance_key: hold,
                            operation_reference: None,
                        },
                        SHORT,
                    )),
                )
                .await;
                (result.map(|_| ()), started.elapsed())
            })
        };
        let creates: Vec<_> = (0..CREATES_AFTER_KILL)
            .map(|_| {
                let mut create_client = client.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let result = bounded(
                        "CreateProcessInstance",
                        GENEROUS,
                        create_client.create_process_instance(with_deadline(
                            create_request("one_task"),
                            GENEROUS,
                        )),
                    )
                    .await;
                    (
                        result.map(|created| created.into_inner().process_instance_key),
                        started.elapsed(),
                    )
                })
            })
            .collect();
        let completed = complete_jobs_of(&mut client, &before_kill).await;
        cluster.note(&format!(
            "jobs of the {} instances created before the kill completed {:.2} s after it \
             ({} jobs in all)",
            before_kill.len(),
            killed_at.elapsed().as_secs_f64(),
            completed.len()
        ));

        let (short_result, short_took) = short.await.expect("the cancel task finished");
        cluster.note(&format!(
            "cancel with a {SHORT:?} deadline during the election answered after {short_took:?}: \
             {short_result:?}"
        ));
        if let Err(status) = &short_result {
            assert!(
                is_deadline_or_unavailable(status),
                "a request during the election failed with {status:?}; expected success, \
                 DEADLINE_EXCEEDED or UNAVAILABLE"
            );
        }
        let mut created_after = Vec::new();
        for task in creates {
            let (result, took) = task.await.expect("a create task finished");
            let key = result.unwrap_or_else(|status| {
                panic!(
                    "CreateProcessInstance with a {GENEROUS:?} deadline failed after {took:?} \
                     through the failover: {status:?}"
                )
            });
            created_after.push((key, took));
        }
        let on_affected = created_after
            .iter()
            .filter(|(key, _)| key_partition(*key) == affected)
            .count();
        cluster.note(&format!(
            "{CREATES_AFTER_KILL} creations after the kill succeeded, {on_affected} on partition \
             {affected}; slowest {:?}",
            created_after.iter().map(|(_, took)| *took).max()
        ));
        assert!(
            on_affected > 0,
            "no creation after the kill landed on partition {affected}: {created_after:?}"
        );

        let (with_result, took) = with_result.await.expect("the with-result task finished");
        cluster.note(&format!(
            "creation with result (partition {affected}, sent before the kill) answered after \
             {took:?}: {:?}",
            with_result
                .as_ref()
                .map(|response| response.process_instance_key)
        ));
        // The gateway re-sends a command whose connection broke (at-least-once), so a creation
        // in flight at the kill may have made two instances; their jobs show it.
        let requested: BTreeSet<i64> = before_kill
            .iter()
            .copied()
            .chain(created_after.iter().map(|(key, _)| *key))
            .chain(
                with_result
                    .iter()
                    .map(|response| response.process_instance_key),
            )
            .collect();
        cluster.note(&format!(
            "instances with a completed job that no answer named (re-sent creations): {:?}",
            completed.difference(&requested).collect::<Vec<_>>()
        ));

        // Topology names a new leader of the affected partition.
        let deadline = Instant::now() + WAIT;
        let new_leader = loop {
            let topology = client
                .topology(pb::TopologyRequest {})
                .await
                .expect("Topology answers")
                .into_inner();
            if let Some(&node) = leaders(&topology).get(&affected)
                && index_of(u32::try_from(node).expect("a node id")) != doomed
            {
                break node;
            }
            assert!(
                Instant::now() < deadline,
                "Topology shows no new leader of partition {affected}: {topology:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (settled, new_view) = cluster
            .settled_leader(affected)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            index_of(u32::try_from(new_leader).expect("a node id")),
            settled,
            "Topology names the leader the replicas follow"
        );
        assert!(new_view.term > view.term, "{new_view:?} after {view:?}");
        cluster.note(&format!(
            "Topology names broker {new_leader} leader of partition {affected} in term {}",
            new_view.term
        ));

        // The hold instance is cancelled now, unless the short cancel already did it.
        let cancelled = bounded(
            "CancelProcessInstance",
            GENEROUS,
            client.cancel_process_instance(with_deadline(
                pb::CancelProcessInstanceRequest {
                    process_instance_key: hold,
                    operation_reference: None,
                },
                GENEROUS,
            )),
        )
        .await;
        match (&short_result, &cancelled) {
            (_, Ok(_)) => {}
            (Ok(()), Err(status)) if status.code() == Code::NotFound => {}
            // A timed-out cancel may still have taken effect.
            (Err(_), Err(status)) if status.code() == Code::NotFound => {}
            (_, Err(status)) => panic!("cancelling instance {hold} after the failover: {status:?}"),
        }
    });
    cluster.assert_no_exits();
}
