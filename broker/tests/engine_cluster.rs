//! The engine on a real cluster: three brokers, three partitions, replication factor 3, driven
//! through the gRPC gateway of a broker that does not lead partition 1.
//!
//! A one-task process and a message process are deployed on partition 1 and distributed to the
//! others; instances are created until every partition has one, their jobs are activated and
//! completed on their instances' partitions, and completing one twice is `NOT_FOUND`. A message
//! published on its correlation key's partition completes an instance created on another
//! partition, answering its creator's "with result" request. Then the leader of partition 1 is
//! killed while instances wait there with activated jobs, one of them completed: the new leader,
//! rebuilt from the replicated log, completes the others, the one completed before the crash
//! stays completed (`NOT_FOUND`), and new instances there are served.
//!
//! This test used to send engine commands to chosen partitions through the raw command API,
//! which now takes raw appends only. Through the gateway, which picks partitions itself:
//! instances are put on a partition by creating until one lands there (a key carries its
//! partition), and the round-robin is lined up so the "with result" creation lands where the
//! message is not published; an activation asks every partition, so jobs are told apart by
//! their instances, and every job handed out must belong to an instance the test is waiting
//! for; a rejected completion is the status `NOT_FOUND`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::Cluster;
use common::gateway::{self, Client};
use sluice_broker::dev::DevOptions;
use sluice_broker::gateway::proto::gateway_protocol as pb;
use sluice_broker::partitioning::PartitionId;
use sluice_engine::record::key_partition;
use tokio::time::Instant;
use tonic::Code;

const PORT_OFFSET: u32 = 250;
const PARTITIONS: u32 = 3;
/// The bound of every wait: elections, distribution, activations.
const WAIT: Duration = Duration::from_secs(20);
/// The gRPC deadline of every call; the gateway retries on a new leader within it.
const DEADLINE: Duration = Duration::from_secs(20);
/// Client-side bound of the channel: above every deadline, so the gateway's answer is seen.
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(40);
/// How long one activation long-polls.
const POLL: Duration = Duration::from_secs(1);
/// Instances waiting on partition 1 when its leader is killed.
const WAITING: usize = 5;
const WORKER: &str = "engine-cluster-test";

async fn connect(index: usize) -> Client {
    let index = u32::try_from(index).expect("a broker index");
    let endpoint = gateway::plain_endpoint(PORT_OFFSET, index, CHANNEL_TIMEOUT);
    Client::new(gateway::connect(&endpoint, WAIT).await)
}

fn next_partition(partition_id: PartitionId) -> PartitionId {
    partition_id % PARTITIONS + 1
}

fn on_partition(keys: &[i64], partition_id: PartitionId) -> usize {
    keys.iter()
        .filter(|&&key| key_partition(key) == partition_id)
        .count()
}

/// Creates `one_task` instances until `enough` holds for the keys created so far; those keys,
/// in order. Right after a deployment the gateway may put an instance on partition 1 rather
/// than on one the deployment has not reached yet, so this is bounded in time, not in count.
async fn create_until(
    client: &mut Client,
    what: &str,
    enough: impl Fn(&[i64]) -> bool,
) -> Vec<i64> {
    let deadline = Instant::now() + WAIT;
    let mut keys = Vec::new();
    while !enough(&keys) {
        assert!(
            Instant::now() < deadline,
            "no {what} within {WAIT:?}: {} instances, on partitions {:?}",
            keys.len(),
            (1..=PARTITIONS)
                .map(|p| on_partition(&keys, p))
                .collect::<Vec<_>>()
        );
        keys.push(gateway::create(client, "one_task", "{}", DEADLINE).await);
    }
    keys
}

/// Activates `work` jobs until the job of every instance of `instances` is handed out; those
/// jobs. No other instance waits, so every job handed out is one of them, made on its
/// instance's partition.
async fn activate_jobs_of(client: &mut Client, instances: &[i64]) -> Vec<pb::ActivatedJob> {
    let wanted: BTreeSet<i64> = instances.iter().copied().collect();
    let deadline = Instant::now() + WAIT;
    let mut jobs: Vec<pb::ActivatedJob> = Vec::new();
    while jobs.len() < wanted.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} jobs activated within {WAIT:?}: instances {wanted:?}, jobs of {:?}",
            jobs.len(),
            wanted.len(),
            jobs.iter()
                .map(|job| job.process_instance_key)
                .collect::<Vec<_>>()
        );
        for job in gateway::activate(client, "work", WORKER, 32, POLL, DEADLINE).await {
            assert!(
                wanted.contains(&job.process_instance_key)
                    && jobs
                        .iter()
                        .all(|other| other.process_instance_key != job.process_instance_key),
                "job {} of instance {} was handed out; waiting for one job each of {wanted:?}",
                job.key,
                job.process_instance_key
            );
            assert_eq!(
                key_partition(job.key),
                key_partition(job.process_instance_key),
                "a job is made on its instance's partition: {job:?}"
            );
            jobs.push(job);
        }
    }
    jobs
}

async fn complete(client: &mut Client, job: &pb::ActivatedJob, when: &str) {
    gateway::complete(client, job.key, DEADLINE)
        .await
        .unwrap_or_else(|status| {
            panic!(
                "completing job {} (partition {}) {when}: {status:?}",
                job.key,
                key_partition(job.key)
            )
        });
}

async fn complete_again(client: &mut Client, job: &pb::ActivatedJob, when: &str) {
    let again = gateway::complete(client, job.key, DEADLINE)
        .await
        .expect_err("completing a job twice fails");
    assert_eq!(
        again.code(),
        Code::NotFound,
        "completing job {} (partition {}) twice, {when}: {again:?}",
        job.key,
        key_partition(job.key)
    );
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, told step by step")]
fn engine_cluster() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: PARTITIONS,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::start("engine_cluster", options);
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
        let (first_leader, _) = cluster
            .settled_leader(1)
            .unwrap_or_else(|error| panic!("{error}"));
        let mut gateway_index = (first_leader + 1) % 3;
        let mut client = connect(gateway_index).await;
        gateway::settled_topology(&mut client, 3, WAIT).await;
        cluster.note(&format!(
            "broker {first_leader} leads partition 1; the client uses broker {gateway_index}'s \
             gateway"
        ));

        // Deploy on partition 1; it is distributed to partitions 2 and 3.
        let deployed =
            gateway::deploy(&mut client, &["one_task.bpmn", "messages.bpmn"], DEADLINE).await;
        assert_eq!(key_partition(deployed.key), 1, "deployed on partition 1");
        assert_eq!(deployed.deployments.len(), 2, "{deployed:?}");
        cluster.note("deployed one_task and messages on partition 1");

        // Instances on every partition; their jobs are activated and completed there.
        let instances = create_until(&mut client, "instance on every partition", |keys| {
            (1..=PARTITIONS).all(|p| on_partition(keys, p) > 0)
        })
        .await;
        let jobs = activate_jobs_of(&mut client, &instances).await;
        for job in &jobs {
            complete(&mut client, job, "on its partition").await;
            complete_again(&mut client, job, "on its partition").await;
        }
        cluster.note(&format!(
            "{} instances on partitions {:?} completed",
            instances.len(),
            (1..=PARTITIONS)
                .map(|p| on_partition(&instances, p))
                .collect::<Vec<_>>()
        ));

        // A message correlates across partitions and answers a creator waiting for the result.
        let order = "order-7";
        let message_partition = sluice_engine::subscription_partition(order, PARTITIONS);
        let instance_partition = next_partition(message_partition);
        // The round-robin is this gateway's alone (activations turn it too): line it up so the
        // next creation, the one with result, lands on `instance_partition`.
        let lined_up = create_until(
            &mut client,
            &format!("creation before partition {instance_partition}'s turn"),
            |keys| {
                keys.last()
                    .is_some_and(|&key| next_partition(key_partition(key)) == instance_partition)
            },
        )
        .await;
        let waiter = {
            let mut client = client.clone();
            tokio::spawn(async move {
                let request = pb::CreateProcessInstanceWithResultRequest {
                    request: Some(pb::CreateProcessInstanceRequest {
                        bpmn_process_id: "messages".to_owned(),
                        version: -1,
                        variables: format!(r#"{{"orderId":"{order}","region":"eu"}}"#),
                        ..pb::CreateProcessInstanceRequest::default()
                    }),
                    request_timeout: i64::try_from(DEADLINE.as_millis()).expect("small"),
                    fetch_variables: Vec::new(),
                };
                client
                    .create_process_instance_with_result(gateway::with_deadline(request, DEADLINE))
                    .await
            })
        };
        for (name, variables) in [("payment", r#"{"amount":12}"#), ("shipment-eu", "{}")] {
            let published = client
                .publish_message(gateway::with_deadline(
                    pb::PublishMessageRequest {
                        name: name.to_owned(),
                        correlation_key: order.to_owned(),
                        time_to_live: 60_000,
                        message_id: String::new(),
                        variables: variables.to_owned(),
                        tenant_id: String::new(),
                    },
                    DEADLINE,
                ))
                .await
                .unwrap_or_else(|status| panic!("publishing {name}: {status:?}"))
                .into_inner();
            assert_eq!(
                key_partition(published.key),
                message_partition,
                "{name} is published on its correlation key's partition"
            );
        }
        let result = waiter
            .await
            .expect("the waiting creator")
            .unwrap_or_else(|status| panic!("the creation with result: {status:?}"))
            .into_inner();
        assert_eq!(
            key_partition(result.process_instance_key),
            instance_partition,
            "the creation with result took partition {instance_partition}'s turn"
        );
        let variables: serde_json::Value =
            serde_json::from_str(&result.variables).expect("the result's variables are JSON");
        assert_eq!(
            variables["paid_amount"], 12,
            "the result carries the instance's variables: {variables}"
        );
        cluster.note(&format!(
            "a message on partition {message_partition} completed an instance on partition \
             {instance_partition}"
        ));
        for job in &activate_jobs_of(&mut client, &lined_up).await {
            complete(&mut client, job, "of an instance lining up the round-robin").await;
        }

        // Instances wait on partition 1 with activated jobs; one job is completed; then its
        // leader is killed.
        let created = create_until(
            &mut client,
            &format!("{WAITING} instances on partition 1"),
            |keys| on_partition(keys, 1) >= WAITING,
        )
        .await;
        let (jobs, elsewhere): (Vec<_>, Vec<_>) = activate_jobs_of(&mut client, &created)
            .await
            .into_iter()
            .partition(|job| key_partition(job.key) == 1);
        for job in &elsewhere {
            complete(&mut client, job, "on another partition than 1").await;
        }
        assert_eq!(jobs.len(), WAITING);
        complete(&mut client, &jobs[0], "before the failover").await;
        let (leader, _) = cluster
            .settled_leader(1)
            .unwrap_or_else(|error| panic!("{error}"));
        if leader == gateway_index {
            gateway_index = (leader + 1) % 3;
            client = connect(gateway_index).await;
            cluster.note(&format!(
                "broker {leader} now leads partition 1: the client moves to broker \
                 {gateway_index}'s gateway"
            ));
        }
        cluster.kill(leader);
        cluster.note(&format!(
            "killed broker {leader}, the leader of partition 1"
        ));
        cluster.wait_until(
            "partition 1 to elect a new leader",
            Duration::from_secs(30),
            || {
                cluster.settled_leader(1).and_then(|(new, view)| {
                    if new == leader {
                        Err("the killed broker still counts as leader".to_owned())
                    } else {
                        Ok((new, view))
                    }
                })
            },
        );
        // The new leader knows the activated jobs: completing them works, the completed one is
        // gone.
        for job in &jobs[1..] {
            complete(&mut client, job, "after the failover").await;
        }
        complete_again(
            &mut client,
            &jobs[0],
            "completed before the failover, again after it",
        )
        .await;
        // New work is processed by the new leader.
        let created = create_until(&mut client, "instance on partition 1", |keys| {
            on_partition(keys, 1) > 0
        })
        .await;
        for job in &activate_jobs_of(&mut client, &created).await {
            complete(
                &mut client,
                job,
                "of an instance created after the failover",
            )
            .await;
        }
        cluster.note("the new leader of partition 1 served the waiting instances and new ones");
    });
    cluster.assert_no_exits();
}
