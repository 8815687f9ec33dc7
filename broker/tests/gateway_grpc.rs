//! The gRPC gateway on a real cluster: three brokers, three partitions, replication factor 3,
//! driven with the generated tonic client as a Zeebe client would.
//!
//! Health says SERVING; Topology lists every broker and one leader per partition; a BPMN file
//! is deployed; instances are created round-robin over the partitions; their jobs are
//! activated by long polling and completed, and completing one twice is `NOT_FOUND`; a "with
//! result" creation answers with the variables a worker completed the job with; a duplicate
//! message id is `ALREADY_EXISTS`; a job stream gets jobs pushed from polls parked at the
//! leaders, and a job activated for a stream that closed is handed back; bad variables, unknown processes, foreign keys and
//! unimplemented RPCs get their status codes. A second broker's gateway serves the same
//! cluster, forwarding to the leaders.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::Cluster;
use common::gateway::{self, Client};
use sluice_broker::dev::{self, DevOptions, GATEWAY_PORT};
use sluice_broker::gateway::proto::gateway_protocol as pb;
use sluice_broker::gateway::proto::health as hpb;
use sluice_engine::record::key_partition;
use tokio::time::Instant;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

const PORT_OFFSET: u32 = 270;
const PARTITIONS: u32 = 3;
const WAIT: Duration = Duration::from_secs(20);

/// A process that runs straight from its start to its end.
const PASS_BPMN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="Definitions_pass" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="pass" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>to_end</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="to_end" sourceRef="start" targetRef="end" />
    <bpmn:endEvent id="end"><bpmn:incoming>to_end</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>
"#;

async fn connect(index: u32) -> Channel {
    let endpoint = gateway::plain_endpoint(PORT_OFFSET, index, Duration::from_secs(15));
    gateway::connect(&endpoint, WAIT).await
}

fn create_request(process: &str, variables: &str) -> pb::CreateProcessInstanceRequest {
    pb::CreateProcessInstanceRequest {
        bpmn_process_id: process.to_owned(),
        version: -1,
        variables: variables.to_owned(),
        ..pb::CreateProcessInstanceRequest::default()
    }
}

fn activate_request(max: i32) -> pb::ActivateJobsRequest {
    pb::ActivateJobsRequest {
        r#type: "work".to_owned(),
        worker: "gateway-test".to_owned(),
        timeout: 60_000,
        max_jobs_to_activate: max,
        fetch_variable: Vec::new(),
        request_timeout: 2_000,
        tenant_ids: Vec::new(),
    }
}

/// Activates `work` jobs until `count` are handed out.
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
            .activate_jobs(activate_request(32))
            .await
            .expect("ActivateJobs answers")
            .into_inner();
        while let Some(response) = stream.message().await.expect("the stream is healthy") {
            jobs.extend(response.jobs);
        }
    }
    jobs
}

/// Job activation polls parked at the partition leaders of the cluster (`/metrics`).
fn parked_polls(cluster: &Cluster) -> u64 {
    cluster
        .cluster_brokers()
        .filter_map(|index| cluster.get_ok(index, "/metrics").ok())
        .flat_map(|body| {
            body.lines()
                .filter(|line| line.starts_with("sluice_job_polls_parked{"))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, told step by step")]
fn gateway_grpc() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: PARTITIONS,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::start("gateway_grpc", options);
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
        let channel = connect(0).await;
        let mut client = Client::new(channel.clone());

        let mut health = hpb::health_client::HealthClient::new(channel.clone());
        let status = health
            .check(hpb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health answers")
            .into_inner();
        assert_eq!(
            status.status,
            i32::from(hpb::health_check_response::ServingStatus::Serving)
        );

        let topology = gateway::settled_topology(&mut client, 3, WAIT).await;
        assert_eq!(topology.cluster_size, 3);
        assert_eq!(topology.partitions_count, 3);
        assert_eq!(topology.replication_factor, 3);
        assert!(
            topology.gateway_version.starts_with("sluice "),
            "{topology:?}"
        );
        let ports: BTreeSet<i32> = topology.brokers.iter().map(|b| b.port).collect();
        let expected: BTreeSet<i32> = (0..3)
            .map(|i| i32::from(dev::port(GATEWAY_PORT, PORT_OFFSET, i)))
            .collect();
        assert_eq!(ports, expected, "brokers advertise their gateway ports");
        cluster.note("health SERVING; topology has 3 brokers and a leader per partition");

        let deployed = client
            .deploy_resource(pb::DeployResourceRequest {
                resources: vec![pb::Resource {
                    name: "one_task.bpmn".to_owned(),
                    content: gateway::bpmn("one_task.bpmn"),
                }],
                tenant_id: String::new(),
            })
            .await
            .expect("deploys")
            .into_inner();
        assert_eq!(
            key_partition(deployed.key),
            1,
            "deployments go to partition 1"
        );
        let Some(pb::deployment::Metadata::Process(process)) = &deployed.deployments[0].metadata
        else {
            panic!("a process was deployed: {deployed:?}");
        };
        assert_eq!(process.bpmn_process_id, "one_task");
        assert_eq!(process.version, 1);

        // Instances round-robin over the partitions (retrying while the deployment travels).
        let deadline = Instant::now() + WAIT;
        let mut partitions = BTreeSet::new();
        let mut instances = 0usize;
        while partitions.len() < 3 {
            assert!(
                Instant::now() < deadline,
                "instances only on {partitions:?}"
            );
            match client
                .create_process_instance(create_request("one_task", r#"{"order":42}"#))
                .await
            {
                Ok(created) => {
                    let created = created.into_inner();
                    assert_eq!(
                        created.process_definition_key,
                        process.process_definition_key
                    );
                    partitions.insert(key_partition(created.process_instance_key));
                    instances += 1;
                }
                Err(status) if status.code() == Code::NotFound => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!("creating an instance: {status:?}"),
            }
        }
        cluster.note(&format!(
            "{instances} instances on partitions {partitions:?}"
        ));

        // Requests compressed with gzip, as the Camunda 8 SDK sends every call, and answers
        // compressed for a client that accepts gzip.
        let mut gzip_client = client
            .clone()
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
        gzip_client
            .deploy_resource(pb::DeployResourceRequest {
                resources: vec![pb::Resource {
                    name: "pass.bpmn".to_owned(),
                    content: PASS_BPMN.as_bytes().to_vec(),
                }],
                tenant_id: String::new(),
            })
            .await
            .expect("a gzip-compressed deployment is served");
        let padding = "z".repeat(200_000);
        let gzip_variables = format!(r#"{{"padding":"{padding}"}}"#);
        let gzipped = gzip_client
            .create_process_instance_with_result(pb::CreateProcessInstanceWithResultRequest {
                request: Some(create_request("pass", &gzip_variables)),
                request_timeout: 20_000,
                fetch_variables: vec!["padding".to_owned()],
            })
            .await
            .expect("a gzip-compressed creation is served")
            .into_inner();
        assert_eq!(gzipped.variables, gzip_variables);
        let gzip_topology = gzip_client
            .topology(pb::TopologyRequest {})
            .await
            .expect("a gzip-compressed Topology is served")
            .into_inner();
        assert_eq!(gzip_topology.partitions_count, 3);

        let jobs = activate(&mut client, instances).await;
        assert_eq!(jobs.len(), instances);
        for job in &jobs {
            assert_eq!(job.r#type, "work");
            assert_eq!(job.worker, "gateway-test");
            assert_eq!(job.retries, 3);
            assert_eq!(job.variables, r#"{"order":42}"#);
            assert_eq!(job.custom_headers, "{}");
            assert!(job.deadline > 0);
            client
                .complete_job(pb::CompleteJobRequest {
                    job_key: job.key,
                    variables: r#"{"done":true}"#.to_owned(),
                })
                .await
                .expect("completes");
        }
        let again = client
            .complete_job(pb::CompleteJobRequest {
                job_key: jobs[0].key,
                variables: String::new(),
            })
            .await
            .expect_err("completing twice fails");
        assert_eq!(again.code(), Code::NotFound, "{again:?}");
        cluster.note("jobs activated and completed; a second completion is NOT_FOUND");

        // Long polling with nothing to activate ends with an empty stream.
        let started = Instant::now();
        let mut empty = client
            .activate_jobs(pb::ActivateJobsRequest {
                request_timeout: 300,
                ..activate_request(1)
            })
            .await
            .expect("ActivateJobs answers")
            .into_inner();
        assert!(empty.message().await.expect("healthy").is_none());
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "it long-polled"
        );

        // With result: a worker completes the job while the creator waits.
        let worker = {
            let mut worker_client = Client::new(channel.clone());
            tokio::spawn(async move {
                let jobs = activate(&mut worker_client, 1).await;
                worker_client
                    .complete_job(pb::CompleteJobRequest {
                        job_key: jobs[0].key,
                        variables: r#"{"b":2}"#.to_owned(),
                    })
                    .await
                    .expect("the worker completes");
            })
        };
        let result = client
            .create_process_instance_with_result(pb::CreateProcessInstanceWithResultRequest {
                request: Some(create_request("one_task", r#"{"a":1}"#)),
                request_timeout: 15_000,
                fetch_variables: Vec::new(),
            })
            .await
            .expect("with result")
            .into_inner();
        worker.await.expect("the worker finished");
        let variables: serde_json::Value =
            serde_json::from_str(&result.variables).expect("variables are JSON");
        assert_eq!(variables, serde_json::json!({"a": 1, "b": 2}));
        cluster.note("create with result answered with the worker's variables");

        let message = pb::PublishMessageRequest {
            name: "payment".to_owned(),
            correlation_key: "order-7".to_owned(),
            time_to_live: 60_000,
            message_id: "m-1".to_owned(),
            variables: r#"{"amount":1}"#.to_owned(),
            tenant_id: String::new(),
        };
        let published = client
            .publish_message(message.clone())
            .await
            .expect("publishes")
            .into_inner();
        assert_eq!(
            key_partition(published.key),
            sluice_engine::subscription_partition("order-7", PARTITIONS)
        );
        let duplicate = client
            .publish_message(message)
            .await
            .expect_err("a duplicate message id");
        assert_eq!(duplicate.code(), Code::AlreadyExists, "{duplicate:?}");

        let malformed = client
            .create_process_instance(create_request("one_task", "{\"a\":"))
            .await
            .expect_err("malformed variables");
        assert_eq!(malformed.code(), Code::InvalidArgument, "{malformed:?}");
        let unknown = client
            .create_process_instance(create_request("nope", ""))
            .await
            .expect_err("an unknown process");
        assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
        assert!(unknown.message().contains("nope"), "{unknown:?}");
        let foreign = client
            .complete_job(pb::CompleteJobRequest {
                job_key: 42,
                variables: String::new(),
            })
            .await
            .expect_err("a key of no partition");
        assert_eq!(foreign.code(), Code::InvalidArgument, "{foreign:?}");
        let unimplemented = client
            .broadcast_signal(pb::BroadcastSignalRequest {
                signal_name: "s".to_owned(),
                ..pb::BroadcastSignalRequest::default()
            })
            .await
            .expect_err("not implemented");
        assert_eq!(unimplemented.code(), Code::Unimplemented);
        assert!(unimplemented.message().contains("BroadcastSignal"));
        // Oversized requests: above the gRPC message limit (refused before decoding) and
        // within it but above the largest command; the broker stays up either way.
        for bytes in [5 << 20, (4 << 20) + (16 << 10)] {
            let oversized = client
                .deploy_resource(pb::DeployResourceRequest {
                    resources: vec![pb::Resource {
                        name: "big.bpmn".to_owned(),
                        content: vec![b' '; bytes],
                    }],
                    tenant_id: String::new(),
                })
                .await
                .expect_err("an oversized deployment");
            assert_eq!(oversized.code(), Code::ResourceExhausted, "{oversized:?}");
        }
        cluster.note(
            "status codes: ALREADY_EXISTS, INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED, \
             RESOURCE_EXHAUSTED for oversized requests",
        );

        // Job push: a stream opened before any job exists gets jobs as their instances are
        // created, from polls parked at every partition leader (no polling loop).
        let mut streamer = Client::new(channel.clone());
        let mut stream = streamer
            .stream_activated_jobs(pb::StreamActivatedJobsRequest {
                r#type: "work".to_owned(),
                worker: "streamer".to_owned(),
                timeout: 60_000,
                fetch_variable: vec!["order".to_owned()],
                tenant_ids: Vec::new(),
            })
            .await
            .expect("StreamActivatedJobs answers")
            .into_inner();
        let deadline = Instant::now() + WAIT;
        loop {
            let parked = parked_polls(&cluster);
            if parked >= 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the stream parked polls at {parked} of 3 partitions"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut created = BTreeSet::new();
        for order in 0..6 {
            let instance = client
                .create_process_instance(create_request(
                    "one_task",
                    &format!(r#"{{"order":{order},"other":true}}"#),
                ))
                .await
                .expect("creates")
                .into_inner();
            created.insert(instance.process_instance_key);
        }
        let mut pushed = BTreeSet::new();
        while pushed.len() < created.len() {
            let job = tokio::time::timeout(WAIT, stream.message())
                .await
                .expect("a job is pushed in time")
                .expect("the stream is healthy")
                .expect("the stream stays open");
            assert_eq!(job.worker, "streamer");
            assert!(job.variables.starts_with(r#"{"order":"#), "{job:?}");
            assert!(!job.variables.contains("other"), "only fetched variables");
            pushed.insert(job.process_instance_key);
            client
                .complete_job(pb::CompleteJobRequest {
                    job_key: job.key,
                    variables: String::new(),
                })
                .await
                .expect("completes a pushed job");
        }
        assert_eq!(pushed, created, "every created instance's job was pushed");
        cluster.note("a job stream received the jobs of 6 instances created after it opened");

        // A job a parked poll activates after its stream closed is handed back at once, not
        // locked for the stream's 60 s job timeout.
        drop(stream);
        drop(streamer);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let late = client
            .create_process_instance(create_request("one_task", ""))
            .await
            .expect("creates")
            .into_inner();
        let jobs = activate(&mut client, 1).await;
        assert_eq!(jobs[0].process_instance_key, late.process_instance_key);
        client
            .complete_job(pb::CompleteJobRequest {
                job_key: jobs[0].key,
                variables: String::new(),
            })
            .await
            .expect("completes the handed-back job");
        cluster.note("a job pushed to a closed stream was handed back and activated again");

        // Another broker's gateway serves the same cluster.
        let mut other = Client::new(connect(2).await);
        let created = other
            .create_process_instance(create_request("one_task", ""))
            .await
            .expect("creates through broker 2")
            .into_inner();
        let jobs = activate(&mut other, 1).await;
        assert_eq!(jobs[0].process_instance_key, created.process_instance_key);
        other
            .cancel_process_instance(pb::CancelProcessInstanceRequest {
                process_instance_key: created.process_instance_key,
                operation_reference: None,
            })
            .await
            .expect("cancels");
        cluster.note("broker 2's gateway created, activated and cancelled");
    });
    cluster.assert_no_exits();
}
