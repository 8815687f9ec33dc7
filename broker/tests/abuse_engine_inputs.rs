//! Inputs at and beyond the engine's caps, sent through the public gRPC API, do what the caps
//! say and nothing worse.
//!
//! Three brokers, three partitions, replication factor 3, Zeebe's default 4 MiB request limit:
//! - valid BPMN resources of 1.5 MiB, 3 MiB and 3.9 MiB (a chain of service tasks and a long
//!   documentation element, each request within 4 MiB) deploy through one gateway, and instances
//!   of each start on every partition through another broker's gateway as soon as the deployment
//!   reached it; a 4.5 MiB one is refused `RESOURCE_EXHAUSTED` and the gateway keeps serving;
//! - instances created with 2 MiB, 3 MiB and 3.9 MiB of variables hand their job, with every byte
//!   of them, to a worker activating one job; a document of 4 MiB and a byte is refused
//!   `RESOURCE_EXHAUSTED`; a creator awaiting the result of an instance that ends with 7.8 MiB
//!   of variables is told `RESOURCE_EXHAUSTED` that it completed (fetching 3.9 MiB of them, it
//!   gets them);
//! - completing a job whose key carries partition 1 but a counter far beyond its key generator
//!   (the largest counter, and the one below it) is answered `NOT_FOUND`, and partition 1 goes on
//!   making keys in its own range, also after its leader is restarted, replays its log and leads
//!   again;
//! - a message with a time to live of 8 days (the cap is 7) is refused `INVALID_ARGUMENT` naming
//!   the limit, one of 7 days is accepted; variables nested 65 levels deep are refused
//!   `INVALID_ARGUMENT` (64 are accepted);
//! - then every partition serves creations through every gateway, `/health` is 200 everywhere and
//!   no broker died.
//!
//! `engine_caps_from_the_environment` runs one broker with `ZEEBE_BROKER_ENGINE_*` overrides and
//! checks that its engine applies them, after a broker given a zero cap refused to start.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::gateway::{self, Client, with_deadline};
use common::serving::{self, CREATIONS_PER_PARTITION, partition_of_key};
use common::{Cluster, replicas_of};
use prost::Message as _;
use sluice_broker::dev::DevOptions;
use sluice_broker::gateway::proto::gateway_protocol as pb;
use tokio::runtime::Runtime;
use tonic::Code;

const PORT_OFFSET: u32 = 380;
const ENV_PORT_OFFSET: u32 = 386;
const PARTITIONS: u32 = 3;
/// Bound of every wait: elections, deployment distribution, a restarted broker catching up.
const WAIT: Duration = Duration::from_mins(1);
/// gRPC deadline of one call; a large request is committed with two copies on three replicas.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long an activation long-polls for the job just created.
const POLL: Duration = Duration::from_secs(10);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const MIB: usize = 1 << 20;
/// Zeebe's default `network.maxMessageSize`: the largest request a gateway takes.
const REQUEST_BYTES_MAX: usize = 4 * MIB;
/// Partition 1's id with the largest counter, which no partition hands out (the next key would
/// be partition 2's).
const FAR_JOB_KEY: i64 = (1 << 51) | ((1 << 51) - 1);
/// A key partition 1 could hand out, but not for years.
const AHEAD_JOB_KEY: i64 = FAR_JOB_KEY - 1;
/// The default `engine.messages.ttlMax`.
const TTL_MAX_MS: i64 = 7 * 24 * 60 * 60 * 1_000;
/// The default `engine.variables.nestingMax`.
const NESTING_MAX: usize = 64;
/// A process of one service task, created with large variables.
const VARIABLES_PROCESS: &str = "variables";
/// A process of one service task, created awaiting its result.
const RESULT_PROCESS: &str = "result";
/// A process from its start to its end event.
const PASS_THROUGH_PROCESS: &str = "pass_through";
/// What a large resource's documentation says, repeated.
const DOCUMENTATION_LINE: &str = "A long description of the process, as some modelers write them. ";
/// Service tasks in each large resource; documentation makes up the rest of its size.
const LARGE_RESOURCE_TASKS: usize = 1_000;

#[test]
fn abuse_engine_inputs() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: PARTITIONS,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::create("abuse_engine_inputs", options);
    for index in cluster.cluster_brokers() {
        cluster.spawn(index);
    }
    wait_for_leaders(&cluster);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut deployer = gateway_client(&runtime, PORT_OFFSET, 0);
    let mut other = gateway_client(&runtime, PORT_OFFSET, 1);

    large_deployments(&cluster, &runtime, &mut deployer, &mut other);
    large_variables(&cluster, &runtime, &mut other);
    oversized_result(&cluster, &runtime, &mut other);
    far_ahead_job_key(&cluster, &runtime);
    long_ttl_and_deep_variables(&cluster, &runtime, &mut deployer);

    serving::assert_still_serving(&cluster, &runtime, PORT_OFFSET);
    cluster.note(&format!(
        "every partition served {CREATIONS_PER_PARTITION} creations through every gateway"
    ));
    cluster.terminate_all();
}

/// Deploys resources of 1.5, 3 and 3.9 MiB through `deployer` and starts instances of each on
/// every partition through `other`; a 4.5 MiB resource is refused.
fn large_deployments(
    cluster: &Cluster,
    runtime: &Runtime,
    deployer: &mut Client,
    other: &mut Client,
) {
    for (number, bytes) in [(1, 3 * MIB / 2), (2, 3 * MIB), (3, 39 * MIB / 10)] {
        let process_id = format!("large_{number}");
        let resource = bpmn_of_size(&process_id, LARGE_RESOURCE_TASKS, bytes);
        assert_eq!(resource.len(), bytes);
        if let Err(error) = sluice_engine::bpmn::parse(&resource) {
            panic!("the generated {process_id} is not valid BPMN: {error}");
        }
        let request = deploy_request(&process_id, resource);
        assert!(
            request.encoded_len() <= REQUEST_BYTES_MAX,
            "the deployment of {bytes} bytes must fit a request: {} bytes",
            request.encoded_len()
        );
        let started = Instant::now();
        let answer = runtime
            .block_on(deployer.deploy_resource(with_deadline(request, DEADLINE)))
            .unwrap_or_else(|status| panic!("deploying {process_id} ({bytes} bytes): {status:?}"))
            .into_inner();
        let [deployment] = answer.deployments.as_slice() else {
            panic!("one process deployed: {answer:?}");
        };
        let Some(pb::deployment::Metadata::Process(process)) = &deployment.metadata else {
            panic!("a process deployed: {answer:?}");
        };
        assert_eq!(process.bpmn_process_id, process_id);
        assert_eq!(process.version, 1);
        cluster.note(&format!(
            "deployed {process_id} ({bytes} bytes) in {:.2} s",
            started.elapsed().as_secs_f64()
        ));
        let served = instances_on_every_partition(
            cluster,
            runtime,
            other,
            &process_id,
            process.process_definition_key,
        );
        cluster.note(&format!(
            "instances of {process_id} through another gateway: {served:?}, {:.2} s after the \
             deployment began",
            started.elapsed().as_secs_f64()
        ));
    }
    let bytes = 9 * MIB / 2;
    let request = deploy_request("oversized", bpmn_of_size("oversized", 1, bytes));
    let refused = runtime
        .block_on(deployer.deploy_resource(with_deadline(request, DEADLINE)))
        .expect_err("a 4.5 MiB deployment is above the request limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    cluster.note(&format!(
        "a {bytes}-byte deployment was refused: {}",
        refused.message()
    ));
    serving::deploy_one_task(runtime, deployer);
    let key = serving::create_one(runtime, deployer)
        .unwrap_or_else(|status| panic!("a creation after the refusal: {status:?}"));
    cluster.note(&format!(
        "the gateway that refused it still serves: instance {key}"
    ));
}

/// Creates instances of `process_id` through `client` until every partition made one. A
/// partition the deployment has not reached yet answers `NOT_FOUND` (distribution is
/// asynchronous, as in Zeebe): that creation is not counted and the next one goes to the next
/// partition.
fn instances_on_every_partition(
    cluster: &Cluster,
    runtime: &Runtime,
    client: &mut Client,
    process_id: &str,
    process_definition_key: i64,
) -> Vec<usize> {
    let deadline = Instant::now() + WAIT;
    let mut served = vec![0; usize::try_from(PARTITIONS).expect("few partitions")];
    let mut not_found = 0;
    while served.contains(&0) {
        assert!(
            Instant::now() < deadline,
            "{process_id} did not start on every partition within {WAIT:?}: {served:?}, \
             {not_found} NOT_FOUND"
        );
        let request = pb::CreateProcessInstanceRequest {
            bpmn_process_id: process_id.to_owned(),
            version: -1,
            ..pb::CreateProcessInstanceRequest::default()
        };
        match runtime.block_on(client.create_process_instance(with_deadline(request, DEADLINE))) {
            Ok(created) => {
                let created = created.into_inner();
                assert_eq!(created.process_definition_key, process_definition_key);
                let partition = partition_of_key(created.process_instance_key);
                let slot = usize::try_from(partition)
                    .ok()
                    .and_then(|partition| served.get_mut(partition.wrapping_sub(1)))
                    .unwrap_or_else(|| panic!("an instance on unknown partition {partition}"));
                *slot += 1;
            }
            Err(status) if status.code() == Code::NotFound => {
                not_found += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(status) => panic!("creating an instance of {process_id}: {status:?}"),
        }
    }
    if not_found > 0 {
        cluster.note(&format!(
            "{not_found} creations of {process_id} found no process yet (distribution)"
        ));
    }
    served
}

/// Creates instances with 2, 3 and 3.9 MiB of variables and activates each one's job; a
/// document above the request limit is refused.
fn large_variables(cluster: &Cluster, runtime: &Runtime, client: &mut Client) {
    let request = deploy_request(VARIABLES_PROCESS, bpmn(VARIABLES_PROCESS, 1, 0));
    runtime
        .block_on(client.deploy_resource(with_deadline(request, DEADLINE)))
        .unwrap_or_else(|status| panic!("deploying {VARIABLES_PROCESS}: {status:?}"));
    for bytes in [2 * MIB, 3 * MIB, 39 * MIB / 10] {
        let (variables, blob_bytes) = variables_of_size(bytes);
        let request = pb::CreateProcessInstanceRequest {
            bpmn_process_id: VARIABLES_PROCESS.to_owned(),
            version: -1,
            variables,
            ..pb::CreateProcessInstanceRequest::default()
        };
        assert!(
            request.encoded_len() <= REQUEST_BYTES_MAX,
            "{bytes} bytes of variables must fit a request: {} bytes",
            request.encoded_len()
        );
        let started = Instant::now();
        let instance = runtime
            .block_on(create_distributed(client, request))
            .unwrap_or_else(|status| {
                panic!("creating with {bytes} bytes of variables: {status:?}")
            });
        let jobs = runtime.block_on(gateway::activate(
            client,
            VARIABLES_PROCESS,
            "abuse",
            1,
            POLL,
            DEADLINE,
        ));
        let [job] = jobs.as_slice() else {
            panic!(
                "one job activated for the instance with {bytes} bytes of variables, got {}",
                jobs.len()
            );
        };
        assert_eq!(job.process_instance_key, instance);
        let value: serde_json::Value =
            serde_json::from_str(&job.variables).expect("the job's variables are JSON");
        let blob = value["blob"].as_str().expect("the job carries the blob");
        assert_eq!(blob.len(), blob_bytes, "every byte of the variables");
        assert!(blob.bytes().all(|byte| byte == b'v'));
        runtime
            .block_on(gateway::complete(client, job.key, DEADLINE))
            .unwrap_or_else(|status| panic!("completing the job: {status:?}"));
        cluster.note(&format!(
            "{bytes} bytes of variables: instance {instance} created, its job activated with \
             {} bytes of variables and completed in {:.2} s",
            job.variables.len(),
            started.elapsed().as_secs_f64()
        ));
    }
    let (variables, _) = variables_of_size(REQUEST_BYTES_MAX + 1);
    let request = pb::CreateProcessInstanceRequest {
        bpmn_process_id: VARIABLES_PROCESS.to_owned(),
        version: -1,
        variables,
        ..pb::CreateProcessInstanceRequest::default()
    };
    let refused = runtime
        .block_on(client.create_process_instance(with_deadline(request, DEADLINE)))
        .expect_err("variables above the request limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    cluster.note(&format!(
        "{} bytes of variables were refused: {}",
        REQUEST_BYTES_MAX + 1,
        refused.message()
    ));
}

/// A creator waiting for the result of an instance whose variables grew past what one answer may
/// carry (3.9 MiB at creation, 3.9 MiB more from its worker) is told so, `RESOURCE_EXHAUSTED`;
/// fetching only the 3.9 MiB it fits, it gets them.
fn oversized_result(cluster: &Cluster, runtime: &Runtime, client: &mut Client) {
    let request = deploy_request(RESULT_PROCESS, bpmn(RESULT_PROCESS, 1, 0));
    runtime
        .block_on(client.deploy_resource(with_deadline(request, DEADLINE)))
        .unwrap_or_else(|status| panic!("deploying {RESULT_PROCESS}: {status:?}"));
    for fetch in [Vec::new(), vec!["blob".to_owned()]] {
        let (variables, blob_bytes) = variables_of_size(39 * MIB / 10);
        let request = pb::CreateProcessInstanceWithResultRequest {
            request: Some(pb::CreateProcessInstanceRequest {
                bpmn_process_id: RESULT_PROCESS.to_owned(),
                version: -1,
                variables,
                ..pb::CreateProcessInstanceRequest::default()
            }),
            request_timeout: WAIT.as_millis().try_into().expect("a short wait"),
            fetch_variables: fetch.clone(),
        };
        assert!(request.encoded_len() <= REQUEST_BYTES_MAX);
        let waiter = {
            let mut client = client.clone();
            runtime.spawn(async move {
                client
                    .create_process_instance_with_result(with_deadline(request, WAIT))
                    .await
            })
        };
        let jobs = runtime.block_on(gateway::activate(
            client,
            RESULT_PROCESS,
            "abuse",
            1,
            POLL,
            DEADLINE,
        ));
        let [job] = jobs.as_slice() else {
            panic!("one {RESULT_PROCESS} job activated, got {}", jobs.len());
        };
        let (more, _) = variables_of_size(39 * MIB / 10);
        let request = pb::CompleteJobRequest {
            job_key: job.key,
            variables: more.replacen("blob", "more", 1),
        };
        runtime
            .block_on(client.complete_job(with_deadline(request, DEADLINE)))
            .unwrap_or_else(|status| panic!("completing with 3.9 MiB more: {status:?}"));
        let answer = runtime
            .block_on(waiter)
            .expect("the waiting creator's task");
        if fetch.is_empty() {
            let refused = answer.expect_err("7.8 MiB of variables do not fit an answer");
            assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
            for needle in ["which completed", "fetchVariables"] {
                assert!(
                    refused.message().contains(needle),
                    "{needle:?} missing in: {}",
                    refused.message()
                );
            }
            cluster.note(&format!(
                "a result of 7.8 MiB of variables was refused: {}",
                refused.message()
            ));
        } else {
            let result = answer
                .unwrap_or_else(|status| panic!("the result fetching {fetch:?}: {status:?}"))
                .into_inner();
            let value: serde_json::Value =
                serde_json::from_str(&result.variables).expect("the result's variables are JSON");
            let blob = value["blob"].as_str().expect("the result carries the blob");
            assert_eq!(blob.len(), blob_bytes);
            assert!(value.get("more").is_none(), "only what was fetched");
            cluster.note(&format!(
                "fetching {fetch:?}, the result came back with {} bytes of variables",
                result.variables.len()
            ));
        }
    }
}

/// One creation; `NOT_FOUND` only while the deployment travels to the partition picked.
async fn create_distributed(
    client: &mut Client,
    request: pb::CreateProcessInstanceRequest,
) -> Result<i64, tonic::Status> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client
            .create_process_instance(with_deadline(request.clone(), DEADLINE))
            .await
        {
            Ok(created) => return Ok(created.into_inner().process_instance_key),
            Err(status)
                if status.code() == Code::NotFound && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => return Err(status),
        }
    }
}

/// A job key of partition 1 far beyond its key generator is not found, and does not move the
/// generator, also when the log is replayed.
fn far_ahead_job_key(cluster: &Cluster, runtime: &Runtime) {
    // The preferred leader leads partition 1, so it leads it again after a rebalance.
    rebalance_until_preferred_leads(cluster);
    let (leader, _) = cluster
        .settled_leader(1)
        .unwrap_or_else(|error| panic!("{error}"));
    let bystander = (leader + 1) % cluster.brokers.len();
    let mut client = gateway_client(runtime, PORT_OFFSET, broker_number(bystander));
    complete_far_job_key(cluster, runtime, &mut client);
    let before = create_on_partition_1(runtime, &mut client, 0);
    cluster.note(&format!(
        "broker {leader} leads partition 1, which made instance {before} afterwards"
    ));

    cluster.terminate(&[leader]);
    cluster.spawn(leader);
    wait_for_leaders(cluster);
    for partition_id in 1..=PARTITIONS {
        cluster.wait_replicas_synced(partition_id, WAIT);
    }
    rebalance_until_preferred_leads(cluster);
    let (again, _) = cluster
        .settled_leader(1)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        again, leader,
        "the restarted broker leads partition 1 again"
    );
    cluster.note(&format!(
        "broker {leader} restarted, replayed its log and leads partition 1 again"
    ));
    let mut restarted = gateway_client(runtime, PORT_OFFSET, broker_number(leader));
    complete_far_job_key(cluster, runtime, &mut restarted);
    let after = create_on_partition_1(runtime, &mut restarted, before);
    cluster.note(&format!(
        "after the restart partition 1 made instance {after}"
    ));
}

fn complete_far_job_key(cluster: &Cluster, runtime: &Runtime, client: &mut Client) {
    for (key, needle) in [
        (FAR_JOB_KEY, "not a key any partition hands out"),
        (AHEAD_JOB_KEY, "partition 1 has not handed out key"),
    ] {
        let refused = runtime
            .block_on(gateway::complete(client, key, DEADLINE))
            .expect_err("no job has that key");
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
        assert!(
            refused.message().contains(needle),
            "{needle:?} missing in: {}",
            refused.message()
        );
        cluster.note(&format!(
            "completing job {key}: NOT_FOUND ({})",
            refused.message()
        ));
    }
}

/// Creates `one_task` instances through `client` until one lands on partition 1; its key,
/// which must be in partition 1's range, after `previous` and far below [`AHEAD_JOB_KEY`].
fn create_on_partition_1(runtime: &Runtime, client: &mut Client, previous: i64) -> i64 {
    serving::deploy_one_task(runtime, client);
    // Round-robin: one of every `PARTITIONS` creations goes to partition 1.
    for _ in 0..PARTITIONS * 2 {
        let key = serving::create_one(runtime, client)
            .unwrap_or_else(|status| panic!("creating an instance: {status:?}"));
        if partition_of_key(key) != 1 {
            continue;
        }
        assert!(
            key > previous && key < AHEAD_JOB_KEY - (1 << 40),
            "partition 1's key generator stays where it was: {key} after {previous}"
        );
        return key;
    }
    panic!(
        "no creation landed on partition 1 in {} attempts",
        PARTITIONS * 2
    );
}

/// Rebalances until the preferred leader of partition 1 leads it.
fn rebalance_until_preferred_leads(cluster: &Cluster) {
    let preferred = common::index_of(replicas_of(&cluster.layout(), 1)[0]);
    let (leader, _) =
        cluster.wait_until("partition 1 to settle", WAIT, || cluster.settled_leader(1));
    if leader == preferred {
        return;
    }
    let (status, body) = cluster
        .post(preferred, "/actuator/rebalance", HTTP_TIMEOUT)
        .expect("rebalance");
    assert_eq!(status, 200, "rebalance: {body}");
    cluster.wait_until(
        &format!("broker {preferred} to lead partition 1 after a rebalance"),
        WAIT,
        || match cluster.settled_leader(1)? {
            (leader, _) if leader == preferred => Ok(()),
            (leader, _) => Err(format!("broker {leader} leads")),
        },
    );
}

/// A time to live over the cap and variables nested over the cap are refused naming the limit.
fn long_ttl_and_deep_variables(cluster: &Cluster, runtime: &Runtime, client: &mut Client) {
    let publish = |client: &mut Client, time_to_live: i64, variables: String| {
        let request = pb::PublishMessageRequest {
            name: "abuse".to_owned(),
            correlation_key: format!("ttl-{time_to_live}"),
            time_to_live,
            variables,
            ..pb::PublishMessageRequest::default()
        };
        runtime.block_on(client.publish_message(with_deadline(request, DEADLINE)))
    };
    let eight_days = 8 * 24 * 60 * 60 * 1_000;
    let refused =
        publish(client, eight_days, String::new()).expect_err("a time to live over the cap");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    for needle in [&TTL_MAX_MS.to_string(), "7d", "engine.messages.ttlMax"] {
        assert!(
            refused.message().contains(needle),
            "{needle:?} missing in: {}",
            refused.message()
        );
    }
    cluster.note(&format!(
        "a message living 8 days was refused: {}",
        refused.message()
    ));
    publish(client, TTL_MAX_MS, String::new())
        .unwrap_or_else(|status| panic!("a message living 7 days: {status:?}"));

    let request = deploy_request(PASS_THROUGH_PROCESS, bpmn(PASS_THROUGH_PROCESS, 0, 0));
    runtime
        .block_on(client.deploy_resource(with_deadline(request, DEADLINE)))
        .unwrap_or_else(|status| panic!("deploying {PASS_THROUGH_PROCESS}: {status:?}"));
    let create = |client: &mut Client, variables: String| {
        runtime.block_on(create_distributed(
            client,
            pb::CreateProcessInstanceRequest {
                bpmn_process_id: PASS_THROUGH_PROCESS.to_owned(),
                version: -1,
                variables,
                ..pb::CreateProcessInstanceRequest::default()
            },
        ))
    };
    create(client, nested_document(NESTING_MAX))
        .unwrap_or_else(|status| panic!("variables nested {NESTING_MAX} levels: {status:?}"));
    let refused = create(client, nested_document(NESTING_MAX + 1))
        .expect_err("variables nested deeper than the cap");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("at most 64 levels deep"),
        "{}",
        refused.message()
    );
    let refused_message = publish(client, 1_000, nested_document(NESTING_MAX + 1))
        .expect_err("message variables nested deeper than the cap");
    assert_eq!(
        refused_message.code(),
        Code::InvalidArgument,
        "{refused_message:?}"
    );
    cluster.note(&format!(
        "variables nested {} levels deep were refused: {}",
        NESTING_MAX + 1,
        refused.message()
    ));
}

/// One broker whose engine caps come from `ZEEBE_BROKER_ENGINE_*`: a zero cap stops it at
/// start-up naming the key; lowered caps are what its engine enforces.
#[test]
fn engine_caps_from_the_environment() {
    let options = DevOptions {
        dir: None,
        brokers: 1,
        partitions: 1,
        replication_factor: 1,
        port_offset: ENV_PORT_OFFSET,
    };
    let cluster = Cluster::create("engine_caps_from_the_environment", options);
    let set = |name: &str, value: &str| {
        let mut env = cluster.brokers[0].env.borrow_mut();
        env.retain(|(key, _)| key != name);
        env.push((name.to_owned(), value.to_owned()));
    };
    set("ZEEBE_BROKER_ENGINE_VARIABLES_NESTINGMAX", "0");
    cluster.spawn(0);
    let status = cluster
        .wait_exit(0, WAIT)
        .expect("a broker with a zero cap exits");
    assert!(
        !status.success(),
        "a refused configuration exits non-zero: {status}"
    );
    let log = std::fs::read_to_string(&cluster.brokers[0].log).expect("the broker's log");
    assert!(
        log.contains("engine.variables.nestingMax") && log.contains("1..=100"),
        "the refusal names the key and its range: {log}"
    );
    cluster.note("a zero nestingMax stopped the broker at start-up, naming the key");

    set("ZEEBE_BROKER_ENGINE_MESSAGES_TTLMAX", "1h");
    set("ZEEBE_BROKER_ENGINE_VARIABLES_DOCUMENTSIZEMAX", "1MB");
    set("ZEEBE_BROKER_ENGINE_VARIABLES_NESTINGMAX", "8");
    cluster.spawn(0);
    wait_for_leaders(&cluster);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut client = gateway_client(&runtime, ENV_PORT_OFFSET, 0);

    let publish = |client: &mut Client, time_to_live: i64| {
        let request = pb::PublishMessageRequest {
            name: "configured".to_owned(),
            correlation_key: "ttl".to_owned(),
            time_to_live,
            ..pb::PublishMessageRequest::default()
        };
        runtime.block_on(client.publish_message(with_deadline(request, DEADLINE)))
    };
    let hour = 60 * 60 * 1_000;
    let refused = publish(&mut client, 2 * hour).expect_err("two hours is over ttlMax");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("3600000 ms (1h)"),
        "{}",
        refused.message()
    );
    publish(&mut client, hour / 2).unwrap_or_else(|status| panic!("half an hour: {status:?}"));

    let request = deploy_request(PASS_THROUGH_PROCESS, bpmn(PASS_THROUGH_PROCESS, 0, 0));
    runtime
        .block_on(client.deploy_resource(with_deadline(request, DEADLINE)))
        .unwrap_or_else(|status| panic!("deploying {PASS_THROUGH_PROCESS}: {status:?}"));
    let create = |client: &mut Client, variables: String| {
        let request = pb::CreateProcessInstanceRequest {
            bpmn_process_id: PASS_THROUGH_PROCESS.to_owned(),
            version: -1,
            variables,
            ..pb::CreateProcessInstanceRequest::default()
        };
        runtime.block_on(client.create_process_instance(with_deadline(request, DEADLINE)))
    };
    create(&mut client, variables_of_size(MIB).0)
        .unwrap_or_else(|status| panic!("1 MiB of variables: {status:?}"));
    let refused = create(&mut client, variables_of_size(MIB + 1).0)
        .expect_err("a document over documentSizeMax");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("at most 1048576 bytes")
            && refused
                .message()
                .contains("engine.variables.documentSizeMax"),
        "{}",
        refused.message()
    );
    create(&mut client, nested_document(8))
        .unwrap_or_else(|status| panic!("variables nested 8 levels: {status:?}"));
    let refused = create(&mut client, nested_document(9)).expect_err("nested over nestingMax");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("at most 8 levels deep"),
        "{}",
        refused.message()
    );
    cluster.note("ttlMax 1h, documentSizeMax 1MB and nestingMax 8 from the environment hold");

    serving::assert_still_serving(&cluster, &runtime, ENV_PORT_OFFSET);
    cluster.terminate_all();
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

fn wait_for_leaders(cluster: &Cluster) {
    for partition_id in 1..=cluster.options.partitions {
        cluster.wait_until(
            &format!("partition {partition_id} to elect a leader"),
            WAIT,
            || cluster.settled_leader(partition_id),
        );
    }
}

/// A client of broker `number`'s gateway that takes answers as large as the gateway may send.
fn gateway_client(runtime: &Runtime, port_offset: u32, number: u32) -> Client {
    serving::client(runtime, port_offset, number).max_decoding_message_size(2 * REQUEST_BYTES_MAX)
}

fn broker_number(index: usize) -> u32 {
    u32::try_from(index).expect("few brokers")
}

fn deploy_request(process_id: &str, content: Vec<u8>) -> pb::DeployResourceRequest {
    pb::DeployResourceRequest {
        resources: vec![pb::Resource {
            name: format!("{process_id}.bpmn"),
            content,
        }],
        tenant_id: String::new(),
    }
}

/// A valid BPMN resource: process `process_id` from a start event through a chain of `tasks`
/// service tasks of job type `process_id` to an end event, described by `documentation_bytes`
/// bytes of documentation.
fn bpmn(process_id: &str, tasks: usize, documentation_bytes: usize) -> Vec<u8> {
    let mut flow = String::new();
    let mut previous = "start".to_owned();
    for index in 0..tasks {
        let task = format!("task_{index}");
        let _ = write!(
            flow,
            "\n    <bpmn:sequenceFlow id=\"flow_{index}\" sourceRef=\"{previous}\" \
             targetRef=\"{task}\" />\n    <bpmn:serviceTask id=\"{task}\">\
             <bpmn:extensionElements><zeebe:taskDefinition type=\"{process_id}\" />\
             </bpmn:extensionElements></bpmn:serviceTask>"
        );
        previous = task;
    }
    let _ = write!(
        flow,
        "\n    <bpmn:sequenceFlow id=\"flow_end\" sourceRef=\"{previous}\" targetRef=\"end\" />"
    );
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<bpmn:definitions \
         xmlns:bpmn=\"http://www.omg.org/spec/BPMN/20100524/MODEL\" \
         xmlns:zeebe=\"http://camunda.org/schema/zeebe/1.0\" id=\"definitions\" \
         targetNamespace=\"http://bpmn.io/schema/bpmn\">\n  <bpmn:process id=\"{process_id}\" \
         isExecutable=\"true\">\n    <bpmn:documentation>"
    );
    let mut left = documentation_bytes;
    while left > 0 {
        let take = left.min(DOCUMENTATION_LINE.len());
        xml.push_str(&DOCUMENTATION_LINE[..take]);
        left -= take;
    }
    let _ = write!(
        xml,
        "</bpmn:documentation>\n    <bpmn:startEvent id=\"start\" />{flow}\n    \
         <bpmn:endEvent id=\"end\" />\n  </bpmn:process>\n</bpmn:definitions>\n"
    );
    xml.into_bytes()
}

/// [`bpmn`] padded with documentation to exactly `bytes` bytes.
fn bpmn_of_size(process_id: &str, tasks: usize, bytes: usize) -> Vec<u8> {
    let bare = bpmn(process_id, tasks, 0).len();
    let documentation = bytes
        .checked_sub(bare)
        .unwrap_or_else(|| panic!("{tasks} tasks take {bare} bytes, more than {bytes}"));
    bpmn(process_id, tasks, documentation)
}

/// A variables document of exactly `bytes` bytes, `{"blob":"vvv..."}`, and the blob's length.
fn variables_of_size(bytes: usize) -> (String, usize) {
    const FRAME: &str = r#"{"blob":""}"#;
    let blob = bytes - FRAME.len();
    (format!(r#"{{"blob":"{}"}}"#, "v".repeat(blob)), blob)
}

/// A variables document nested `depth` levels deep: `{"x":[[...]]}` (the object is a level).
fn nested_document(depth: usize) -> String {
    let arrays = depth - 1;
    format!(r#"{{"x":{}{}}}"#, "[".repeat(arrays), "]".repeat(arrays))
}
