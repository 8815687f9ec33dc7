//! The engine on a real cluster: three brokers, three partitions, replication factor 3.
//!
//! A one-task process is deployed on partition 1 and distributed to the others; instances are
//! created on every partition, their jobs activated and completed through the command API. A
//! message published on its correlation key's partition completes an instance created on
//! another partition, answering its creator's "with result" request. Then the leader of
//! partition 1 is killed while instances wait there: the new leader, rebuilt from the replicated
//! log, hands out those jobs and completes them, and a job completed before the crash stays
//! completed.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use sluice_broker::client_api::AppendClient;
use sluice_broker::dev::DevOptions;
use sluice_engine::record::{
    DeploymentResource, DeploymentValue, JobBatchValue, JobValue, MessageValue,
    ProcessInstanceCreationValue, decode_records, encode_records,
};
use sluice_engine::{Intent, Key, Record, RecordType, RecordValue, RejectionType};

const PORT_OFFSET: u32 = 250;
const PARTITIONS: u32 = 3;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

fn bpmn(name: &str) -> String {
    let path = format!(
        "{}/../engine/testdata/bpmn/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {path}: {error}"))
}

/// Sends one command and returns the reply record.
fn send(client: &mut AppendClient, partition_id: u32, command: &Record) -> Record {
    let bytes = encode_records(std::slice::from_ref(command));
    let (_, response) = client
        .command(partition_id, &bytes, COMMAND_TIMEOUT)
        .unwrap_or_else(|error| {
            panic!("{:?} on partition {partition_id}: {error}", command.intent)
        });
    let mut records = decode_records(&response).expect("the reply decodes");
    assert_eq!(records.len(), 1, "one reply record");
    records.remove(0)
}

fn create(process: &str, variables: &str, with_result: bool) -> Record {
    Record::command(
        if with_result {
            Intent::CreateWithAwaitingResult
        } else {
            Intent::Create
        },
        RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
            bpmn_process_id: process.into(),
            version: -1,
            process_definition_key: -1,
            process_instance_key: -1,
            variables: variables.into(),
            fetch_variables: Vec::new(),
        }),
    )
}

fn activate(job_type: &str, max: i32) -> Record {
    Record::command(
        Intent::Activate,
        RecordValue::JobBatch(JobBatchValue {
            job_type: job_type.into(),
            worker: "engine-cluster-test".into(),
            timeout: 60_000,
            max_jobs_to_activate: max,
            ..JobBatchValue::default()
        }),
    )
}

fn complete(job_key: Key) -> Record {
    Record::command_for(
        job_key,
        Intent::Complete,
        RecordValue::Job(JobValue::default()),
    )
}

/// Creates an instance on `partition_id`, retrying while the deployment is still on its way.
fn create_on(client: &mut AppendClient, partition_id: u32, process: &str) -> Key {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = send(client, partition_id, &create(process, "{}", false));
        match reply.record_type {
            RecordType::Event => return reply.key,
            RecordType::CommandRejection
                if reply.rejection.as_ref().map(|r| r.rejection_type)
                    == Some(RejectionType::NotFound)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => panic!("creating on partition {partition_id}: {reply:?}"),
        }
    }
}

/// Activates `work` jobs on a partition until `count` are handed out.
fn activate_jobs(client: &mut AppendClient, partition_id: u32, count: usize) -> Vec<Key> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut jobs = Vec::new();
    while jobs.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} jobs activated on partition {partition_id}",
            jobs.len()
        );
        let reply = send(client, partition_id, &activate("work", 32));
        let RecordValue::JobBatch(batch) = &reply.value else {
            panic!("activation answered {reply:?}");
        };
        jobs.extend_from_slice(&batch.job_keys);
        if batch.job_keys.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    jobs
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
            Duration::from_secs(20),
            || cluster.settled_leader(partition_id),
        );
    }
    let mut client = AppendClient::new(cluster.command_apis());

    // Deploy on partition 1; it is distributed to partitions 2 and 3.
    let deploy = Record::command(
        Intent::Create,
        RecordValue::Deployment(DeploymentValue {
            resources: vec![
                DeploymentResource {
                    resource_name: "one_task.bpmn".into(),
                    resource: bpmn("one_task.bpmn").into(),
                },
                DeploymentResource {
                    resource_name: "messages.bpmn".into(),
                    resource: bpmn("messages.bpmn").into(),
                },
            ],
            processes_metadata: Vec::new(),
        }),
    );
    let deployed = send(&mut client, 1, &deploy);
    assert_eq!(deployed.intent, Intent::Created, "deployment: {deployed:?}");
    cluster.note("deployed one_task and messages on partition 1");

    // Instances on every partition; their jobs are activated and completed there.
    for partition_id in 1..=PARTITIONS {
        let instance = create_on(&mut client, partition_id, "one_task");
        assert_eq!(
            sluice_engine::record::key_partition(instance),
            partition_id,
            "an instance key carries its partition"
        );
        let jobs = activate_jobs(&mut client, partition_id, 1);
        let completed = send(&mut client, partition_id, &complete(jobs[0]));
        assert_eq!(completed.intent, Intent::Completed, "{completed:?}");
        let again = send(&mut client, partition_id, &complete(jobs[0]));
        assert_eq!(
            again.record_type,
            RecordType::CommandRejection,
            "completing twice is rejected: {again:?}"
        );
    }
    cluster.note("one instance completed on every partition");

    // A message correlates across partitions and answers a creator waiting for the result.
    let order = "order-7";
    let message_partition = sluice_engine::subscription_partition(order, PARTITIONS);
    let instance_partition = message_partition % PARTITIONS + 1;
    create_on(&mut client, instance_partition, "one_task"); // the deployment has arrived there
    let waiter = {
        let brokers = cluster.command_apis();
        std::thread::spawn(move || {
            let mut client = AppendClient::new(brokers);
            send(
                &mut client,
                instance_partition,
                &create(
                    "messages",
                    &format!(r#"{{"orderId":"{order}","region":"eu"}}"#),
                    true,
                ),
            )
        })
    };
    for (name, variables) in [("payment", r#"{"amount":12}"#), ("shipment-eu", "{}")] {
        let published = send(
            &mut client,
            message_partition,
            &Record::command(
                Intent::Publish,
                RecordValue::Message(MessageValue {
                    name: name.into(),
                    correlation_key: order.into(),
                    time_to_live: 60_000,
                    message_id: String::new(),
                    variables: variables.into(),
                    deadline: -1,
                }),
            ),
        );
        assert_eq!(published.intent, Intent::Published, "{published:?}");
    }
    let result = waiter.join().expect("the waiting creator");
    let RecordValue::ProcessInstanceCreation(created) = &result.value else {
        panic!("the with-result reply is {result:?}");
    };
    assert!(
        created.variables.contains(r#""paid_amount":12"#),
        "the result carries the instance's variables: {}",
        created.variables
    );
    cluster.note(&format!(
        "a message on partition {message_partition} completed an instance on partition {instance_partition}"
    ));

    // Instances wait on partition 1; one job is completed; then its leader is killed.
    let waiting: Vec<Key> = (0..5)
        .map(|_| create_on(&mut client, 1, "one_task"))
        .collect();
    let jobs = activate_jobs(&mut client, 1, waiting.len());
    let done = send(&mut client, 1, &complete(jobs[0]));
    assert_eq!(done.intent, Intent::Completed, "{done:?}");
    let (leader, _) = cluster.settled_leader(1).expect("partition 1 has a leader");
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
    // The new leader knows the activated jobs: completing them works, the completed one is gone.
    for job in &jobs[1..] {
        let reply = send(&mut client, 1, &complete(*job));
        assert_eq!(reply.intent, Intent::Completed, "after failover: {reply:?}");
    }
    let again = send(&mut client, 1, &complete(jobs[0]));
    assert_eq!(
        again.record_type,
        RecordType::CommandRejection,
        "a job completed before the failover stays completed: {again:?}"
    );
    // New work is processed by the new leader.
    create_on(&mut client, 1, "one_task");
    let jobs = activate_jobs(&mut client, 1, 1);
    let reply = send(&mut client, 1, &complete(jobs[0]));
    assert_eq!(reply.intent, Intent::Completed, "{reply:?}");
    cluster.note("the new leader of partition 1 served the waiting instances and new ones");
}
