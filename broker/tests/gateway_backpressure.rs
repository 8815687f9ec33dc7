//! Backpressure through the gRPC gateway, on one-broker clusters whose partition admits one
//! command at a time (`backpressure.aimd.initialLimit`, `minLimit` and `maxLimit` set to 1 from
//! the environment, as Zeebe's keys).
//!
//! A flood of concurrent `CreateProcessInstance` calls: some are refused `RESOURCE_EXHAUSTED`
//! with a message naming the limit, every other one succeeds, none fails otherwise or hangs, and
//! the broker counts the refusals. Creations one at a time are all admitted. Job completions are
//! exempt: jobs activated before a second flood are all completed while it saturates the
//! partition. With `backpressure.enabled: false`
//! (a second cluster, same limits) the same flood is never refused.

mod common;

use std::time::Duration;

use common::Cluster;
use common::gateway::{self, Client};
use sluice_broker::dev::DevOptions;
use sluice_broker::gateway::proto::gateway_protocol as pb;
use tokio::time::Instant;
use tonic::Code;

const PORT_OFFSET: u32 = 310;
const DISABLED_PORT_OFFSET: u32 = 315;
/// Concurrent creations per flood.
const FLOOD: usize = 200;
/// Jobs completed while the second flood runs.
const COMPLETIONS: usize = 20;
const WAIT: Duration = Duration::from_secs(20);
/// Bound of one flood: every call has answered by then.
const FLOOD_TIMEOUT: Duration = Duration::from_secs(30);

/// A one-broker, one-partition cluster whose limit is one command in flight, with `extra`
/// overrides; returns once its partition has a leader.
fn start(name: &str, port_offset: u32, extra: &[(&str, &str)]) -> Cluster {
    let cluster = Cluster::create(
        name,
        DevOptions {
            dir: None,
            brokers: 1,
            partitions: 1,
            replication_factor: 1,
            port_offset,
        },
    );
    let limits = [
        ("ZEEBE_BROKER_BACKPRESSURE_ALGORITHM", "aimd"),
        ("ZEEBE_BROKER_BACKPRESSURE_AIMD_INITIALLIMIT", "1"),
        ("ZEEBE_BROKER_BACKPRESSURE_AIMD_MINLIMIT", "1"),
        ("ZEEBE_BROKER_BACKPRESSURE_AIMD_MAXLIMIT", "1"),
        // Long: a slow reply must not count as a drop (the limit cannot move anyway).
        ("ZEEBE_BROKER_BACKPRESSURE_AIMD_REQUESTTIMEOUT", "1m"),
    ];
    cluster.brokers[0].env.borrow_mut().extend(
        limits
            .iter()
            .chain(extra)
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    );
    cluster.spawn(0);
    cluster.wait_until("partition 1 to elect a leader", WAIT, || {
        cluster.settled_leader(1)
    });
    cluster
}

async fn connect(port_offset: u32) -> Client {
    let endpoint = gateway::plain_endpoint(port_offset, 0, Duration::from_secs(15));
    Client::new(gateway::connect(&endpoint, WAIT).await)
}

async fn deploy(client: &mut Client) {
    client
        .deploy_resource(pb::DeployResourceRequest {
            resources: vec![pb::Resource {
                name: "one_task.bpmn".to_owned(),
                content: gateway::bpmn("one_task.bpmn"),
            }],
            tenant_id: String::new(),
        })
        .await
        .expect("deploys");
}

fn create_request() -> pb::CreateProcessInstanceRequest {
    pb::CreateProcessInstanceRequest {
        bpmn_process_id: "one_task".to_owned(),
        version: -1,
        ..pb::CreateProcessInstanceRequest::default()
    }
}

/// What a flood got: instances created, and the `RESOURCE_EXHAUSTED` answers. Any other
/// answer fails the test, and so does a flood still unanswered after [`FLOOD_TIMEOUT`].
struct Flooded {
    created: usize,
    exhausted: Vec<tonic::Status>,
}

/// Starts [`FLOOD`] concurrent creations.
fn start_flood(client: &Client) -> Vec<tokio::task::JoinHandle<Result<(), tonic::Status>>> {
    (0..FLOOD)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .create_process_instance(create_request())
                    .await
                    .map(drop)
            })
        })
        .collect()
}

async fn finish_flood(calls: Vec<tokio::task::JoinHandle<Result<(), tonic::Status>>>) -> Flooded {
    let answers = tokio::time::timeout(FLOOD_TIMEOUT, async {
        let mut answers = Vec::with_capacity(calls.len());
        for call in calls {
            answers.push(call.await.expect("the call's task did not panic"));
        }
        answers
    })
    .await
    .unwrap_or_else(|_| panic!("{FLOOD} creations not all answered within {FLOOD_TIMEOUT:?}"));
    let mut flooded = Flooded {
        created: 0,
        exhausted: Vec::new(),
    };
    for answer in answers {
        match answer {
            Ok(()) => flooded.created += 1,
            Err(status) if status.code() == Code::ResourceExhausted => {
                flooded.exhausted.push(status);
            }
            Err(status) => {
                panic!("a creation failed otherwise than RESOURCE_EXHAUSTED: {status:?}")
            }
        }
    }
    flooded
}

/// Activates `work` jobs until `count` are handed out (nothing else is running meanwhile).
async fn activate(client: &mut Client, count: usize) -> Vec<pb::ActivatedJob> {
    let deadline = Instant::now() + WAIT;
    let mut jobs = Vec::new();
    while jobs.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} jobs activated",
            jobs.len()
        );
        let mut stream = client
            .activate_jobs(pb::ActivateJobsRequest {
                r#type: "work".to_owned(),
                worker: "backpressure-test".to_owned(),
                timeout: 60_000,
                max_jobs_to_activate: i32::try_from(count - jobs.len()).expect("few"),
                fetch_variable: Vec::new(),
                request_timeout: 2_000,
                tenant_ids: Vec::new(),
            })
            .await
            .expect("ActivateJobs answers")
            .into_inner();
        while let Some(response) = stream.message().await.expect("the stream is healthy") {
            jobs.extend(response.jobs);
        }
    }
    jobs
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn gateway_backpressure() {
    let cluster = start("gateway_backpressure", PORT_OFFSET, &[]);
    let refused_seen = runtime().block_on(async {
        let mut client = connect(PORT_OFFSET).await;
        deploy(&mut client).await;

        let first = finish_flood(start_flood(&client)).await;
        cluster.note(&format!(
            "first flood: {} created, {} RESOURCE_EXHAUSTED",
            first.created,
            first.exhausted.len()
        ));
        assert!(
            !first.exhausted.is_empty(),
            "a limit of 1 refuses some of {FLOOD} concurrent creations"
        );
        assert!(first.created > 0, "the limit admits some");
        for status in &first.exhausted {
            assert!(
                status.message().contains("limit of 1"),
                "the refusal names the limit: {status:?}"
            );
        }
        // One at a time, creations are all admitted.
        for _ in first.created..COMPLETIONS {
            client
                .create_process_instance(create_request())
                .await
                .expect("a lone creation is admitted");
        }
        let jobs = activate(&mut client, COMPLETIONS.max(first.created)).await;

        // Completions are exempt: all of them get in while creations saturate the partition.
        let flood = start_flood(&client);
        let completions: Vec<_> = jobs
            .iter()
            .map(|job| {
                let mut client = client.clone();
                let job_key = job.key;
                tokio::spawn(async move {
                    client
                        .complete_job(pb::CompleteJobRequest {
                            job_key,
                            variables: String::new(),
                        })
                        .await
                })
            })
            .collect();
        for completion in completions {
            let answer = tokio::time::timeout(FLOOD_TIMEOUT, completion)
                .await
                .expect("a completion answered in time")
                .expect("the completion's task did not panic");
            answer.expect("a job completion is admitted even at the limit");
        }
        let second = finish_flood(flood).await;
        cluster.note(&format!(
            "second flood: {} created, {} RESOURCE_EXHAUSTED, {} jobs completed meanwhile",
            second.created,
            second.exhausted.len(),
            jobs.len()
        ));
        assert!(
            !second.exhausted.is_empty(),
            "the partition was saturated while the jobs were completed"
        );
        first.exhausted.len() + second.exhausted.len()
    });
    let refused = cluster
        .metric(0, "sluice_commands_refused_total")
        .expect("the broker exports its refusals");
    assert!(
        refused >= f64::from(u32::try_from(refused_seen).expect("few")),
        "the broker counted {refused} refusals, the client saw {refused_seen}"
    );
    cluster.assert_no_exits();
    drop(cluster);

    // Disabled: the same limits, the same flood, nothing refused.
    let cluster = start(
        "gateway_backpressure_disabled",
        DISABLED_PORT_OFFSET,
        &[("ZEEBE_BROKER_BACKPRESSURE_ENABLED", "false")],
    );
    runtime().block_on(async {
        let mut client = connect(DISABLED_PORT_OFFSET).await;
        deploy(&mut client).await;
        let flooded = finish_flood(start_flood(&client)).await;
        assert!(
            flooded.exhausted.is_empty(),
            "backpressure is disabled, yet: {:?}",
            flooded.exhausted.first()
        );
        assert_eq!(flooded.created, FLOOD);
        cluster.note(&format!("disabled: all {FLOOD} creations succeeded"));
    });
    let refused = cluster
        .metric(0, "sluice_commands_refused_total")
        .expect("the broker exports its refusals");
    assert!(refused.abs() < f64::EPSILON, "{refused} refusals");
    cluster.assert_no_exits();
}
