//! Forged commands and forged identities, through every public surface of real brokers, change
//! nothing and stop nothing.
//!
//! Three brokers, three partitions, replication factor 3. Broker 1 alone serves the raw-append
//! API (`network.commandApi.enabled`; `sluice dev` turns it on in every configuration, the
//! environment turns it off on the others) and binds its other ports to every address
//! (`network.host: 0.0.0.0`).
//!
//! 1. **The raw-append port.** It listens on loopback only on broker 1 (while its gateway
//!    listens everywhere), and not at all on the others. Engine commands sent to it as commands
//!    or polls (a deployment forged as partition 1's distribution, a timer trigger, a message
//!    expiry, a distribution acknowledgement, a job time-out, even a client's job completion)
//!    are answered `Invalid`, naming the gateway; the same commands sent as raw appends behind a
//!    command tag are journaled as raw entries, which the engine never reads. Nothing changes:
//!    the forged process cannot be instantiated, the job is neither timed out nor completed, the
//!    buffered message still correlates.
//! 2. **A forged peer identity.** Rogue QUIC peers with certificates from the cluster's own CA
//!    (one naming node 1, one naming node 7, outside the cluster) send Raft messages (votes,
//!    appends and a leadership hand-over at a huge term) and gossip (another member left,
//!    another member now at the rogue's address) claiming to come from another node. Each
//!    message is dropped and counted in `sluice_messages_sender_mismatch_total`, exactly; no
//!    term moves, every broker keeps listing every broker alive at its own address. The rogues'
//!    command frames fare no better: one with a client's tag is dropped
//!    (`sluice_internal_commands_dropped_total`), a job time-out behind the partition tag is
//!    refused (`sluice_internal_commands_refused_total`), and the job stays with its worker.
//! 3. **Keys of another partition through a gateway.** `CompleteJob`, `SetVariables` and
//!    `CancelProcessInstance` naming partition 3's keys, through the gateways of brokers that do
//!    not lead it, act on partition 3 when the key exists and answer `NOT_FOUND` when it does
//!    not (`INVALID_ARGUMENT` for a key of no partition); afterwards no forwarded request is
//!    left waiting (`sluice_requests_forwarded_in_flight`).
//!
//! Each scenario ends with [`serving::assert_still_serving`]: every partition serves creations
//! through every gateway, `/health` is 200 everywhere, no broker died.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::gateway::{self, Client};
use common::rogue::Rogue;
use common::{Cluster, index_of, listening_addresses, node_of, serving};
use sluice_broker::apply::{PAYLOAD_COMMAND, PAYLOAD_INTERNAL};
use sluice_broker::client_api::{Connection, Request, Response};
use sluice_broker::dev::{self, DevOptions, GATEWAY_PORT};
use sluice_broker::gateway::proto::gateway_protocol as pb;
use sluice_broker::partition::replica_id;
use sluice_broker::partitioning::{NodeId, PartitionId};
use sluice_engine::record::{
    CommandDistributionValue, DeploymentResource, DeploymentValue, JobBatchValue, JobValue,
    MessageValue, ProcessInstanceCreationValue, ProcessMetadata, TimerValue, encode_key,
    encode_records, key_partition,
};
use sluice_engine::{Intent, Record, RecordValue, ValueType};
use sluice_log::raft::{Message as RaftMessage, MessageBody};
use sluice_net::FrameKind;
use sluice_net::frame::FRAME_HEADER_BYTES;
use sluice_net::swim::{Member, MemberState, Message as SwimMessage, MessageKind};
use tokio::runtime::Runtime;
use tonic::Code;

const PORT_OFFSET: u32 = 400;
const PARTITIONS: u32 = 3;
/// The broker that serves the raw-append API.
const RAW_BROKER: usize = 1;
const RAW_API_ENABLED: &str = "ZEEBE_BROKER_NETWORK_COMMANDAPI_ENABLED";
const NETWORK_HOST: &str = "ZEEBE_BROKER_NETWORK_HOST";
/// Bound of every wait: elections, gossip, a job's creation.
const WAIT: Duration = Duration::from_mins(1);
/// The gRPC deadline of every call.
const DEADLINE: Duration = Duration::from_secs(20);
/// Bound of one raw-append request and its answer.
const RAW_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an activation long-polls when no job should come.
const EMPTY_POLL: Duration = Duration::from_secs(1);
/// How long activated jobs stay with the worker: longer than the whole test.
const JOB_TIMEOUT_MS: i64 = 600_000;
/// Time to live of the published messages: longer than the whole test.
const MESSAGE_TTL_MS: i64 = 600_000;
const WORKER: &str = "abuse-forged";
/// The process of the forged deployment.
const FORGED_PROCESS: &str = "forged_process";
/// The term the rogues' Raft messages claim: far above any term a test cluster reaches.
const FORGED_TERM: u64 = 1 << 40;
/// The incarnation the rogues' gossip claims for other members.
const FORGED_INCARNATION: u64 = 1 << 40;
/// How long the cluster is watched after the rogues' messages arrived.
const WATCH: Duration = Duration::from_secs(3);
const SENDER_MISMATCH: &str = "sluice_messages_sender_mismatch_total";
const COMMANDS_DROPPED: &str = "sluice_internal_commands_dropped_total";
const COMMANDS_REFUSED: &str = "sluice_internal_commands_refused_total";
const FORWARDED_IN_FLIGHT: &str = "sluice_requests_forwarded_in_flight";
/// The partition whose keys scenario 3 names.
const KEYS_PARTITION: PartitionId = 3;
/// A key counter no partition of this test reaches.
const ABSENT_COUNTER: i64 = 1 << 45;
/// One service task whose job type is the variable `jobType`: each job of the test its own type.
const ONE_JOB_BPMN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="Definitions_one_job" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="one_job" isExecutable="true">
    <bpmn:startEvent id="start"><bpmn:outgoing>to_task</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="to_task" sourceRef="start" targetRef="task" />
    <bpmn:serviceTask id="task">
      <bpmn:extensionElements><zeebe:taskDefinition type="=jobType" retries="3" /></bpmn:extensionElements>
      <bpmn:incoming>to_task</bpmn:incoming>
      <bpmn:outgoing>to_end</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="to_end" sourceRef="task" targetRef="end" />
    <bpmn:endEvent id="end"><bpmn:incoming>to_end</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>
"#;

#[test]
fn abuse_forged() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: PARTITIONS,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::create("abuse_forged", options);
    for (index, broker) in cluster.brokers.iter().enumerate() {
        let mut env = broker.env.borrow_mut();
        env.push((
            RAW_API_ENABLED.to_owned(),
            (index == RAW_BROKER).to_string(),
        ));
        if index == RAW_BROKER {
            env.push((NETWORK_HOST.to_owned(), "0.0.0.0".to_owned()));
        }
    }
    cluster.spawn_all_and_elect(WAIT);
    let runtime = serving::runtime();
    let mut client = serving::client(&runtime, PORT_OFFSET, 0);
    let deployment = deploy(&runtime, &mut client);

    raw_append_port(&cluster, &runtime, &mut client, deployment.key);
    serving::assert_still_serving(&cluster, &runtime, PORT_OFFSET);
    cluster.note("scenario 1 (the raw-append port) done; the cluster still serves");

    forged_peers(&cluster, &runtime, &mut client);
    serving::assert_still_serving(&cluster, &runtime, PORT_OFFSET);
    cluster.note("scenario 2 (forged peer identities) done; the cluster still serves");

    keys_of_another_partition(&cluster, &runtime);
    serving::assert_still_serving(&cluster, &runtime, PORT_OFFSET);
    cluster.note("scenario 3 (keys of another partition) done; the cluster still serves");
    cluster.terminate_all();
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: the raw-append port
// ---------------------------------------------------------------------------------------------

/// Engine commands through the raw-append port are refused or journaled as raw entries, and
/// change nothing.
fn raw_append_port(cluster: &Cluster, runtime: &Runtime, client: &mut Client, deployment_key: i64) {
    check_listeners(cluster);
    let partition_id = cluster.wait_until(
        &format!("broker {RAW_BROKER} to lead a partition"),
        WAIT,
        || led_partition(cluster, RAW_BROKER),
    );
    let job = job_on(runtime, client, Some(partition_id), "raw");
    let (correlation_key, message_key) = message_on(runtime, client, partition_id);
    cluster.note(&format!(
        "broker {RAW_BROKER} leads partition {partition_id}; job {} and message {message_key} \
         wait there",
        job.key
    ));
    let forged = forged_commands(partition_id, deployment_key, job.key, message_key);

    let address = cluster.brokers[RAW_BROKER].command_api();
    let mut raw = RawClient::connect(address);
    for (what, command) in &forged {
        let answer = raw.request(|request_id| Request::Command {
            request_id,
            partition_id,
            command: encode(command),
        });
        assert_refused_at_the_door(&answer, what);
    }
    let activation = Record::command(
        Intent::Activate,
        RecordValue::JobBatch(JobBatchValue {
            job_type: job.r#type.clone(),
            worker: WORKER.to_owned(),
            timeout: JOB_TIMEOUT_MS,
            max_jobs_to_activate: 1,
            ..JobBatchValue::default()
        }),
    );
    let answer = raw.request(|request_id| Request::Poll {
        request_id,
        partition_id,
        wait_ms: 1_000,
        command: encode(&activation),
    });
    assert_refused_at_the_door(&answer, "a job activation poll");
    cluster.note(&format!(
        "{} commands and a poll through the raw-append port: each refused, naming the gateway",
        forged.len()
    ));

    // Behind a command tag, as raw appends: committed as raw entries the engine never reads.
    let mut appended = 0;
    for (what, command) in &forged {
        for tag in [PAYLOAD_INTERNAL, PAYLOAD_COMMAND] {
            let mut payload = vec![tag];
            payload.extend_from_slice(&encode(command));
            match raw.request(|request_id| Request::Append {
                request_id,
                partition_id,
                payload: payload.clone(),
            }) {
                Response::Appended { .. } => appended += 1,
                Response::NotLeader { .. } => cluster.note(&format!(
                    "{what} as a raw append: broker {RAW_BROKER} no longer leads partition \
                     {partition_id}"
                )),
                other => panic!("{what} as a raw append: {other:?}"),
            }
        }
    }
    assert!(
        appended > 0,
        "no raw append was committed on partition {partition_id}"
    );
    cluster.note(&format!(
        "{appended} raw appends holding tagged engine commands committed"
    ));

    // Nothing changed.
    forged_process_is_unknown(cluster, runtime);
    job_stays_with_its_worker(runtime, client, &job.r#type);
    complete(runtime, client, job.key).expect("the job was neither completed nor timed out");
    message_still_correlates(runtime, client, &correlation_key);
    cluster.note(
        "the forged process is unknown, the job stayed with its worker and completed, the \
         message correlated",
    );
}

/// The raw-append port listens on loopback only on [`RAW_BROKER`], and not at all elsewhere.
fn check_listeners(cluster: &Cluster) {
    let raw_port = cluster.brokers[RAW_BROKER].command_api().port();
    let listening = cluster.wait_until(
        &format!("broker {RAW_BROKER}'s raw-append port {raw_port} to listen"),
        WAIT,
        || {
            let addresses = listening_addresses(raw_port);
            if addresses.is_empty() {
                Err("not listening".to_owned())
            } else {
                Ok(addresses)
            }
        },
    );
    assert_eq!(
        listening,
        [IpAddr::V4(Ipv4Addr::LOCALHOST)],
        "the raw-append API binds loopback unless its host is set"
    );
    // The same broker's gateway listens everywhere: its network.host took effect.
    let gateway_port = dev::port(GATEWAY_PORT, PORT_OFFSET, node_of(RAW_BROKER));
    assert_eq!(
        listening_addresses(gateway_port),
        [IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
        "broker {RAW_BROKER}'s gateway should listen on network.host 0.0.0.0"
    );
    for index in cluster
        .cluster_brokers()
        .filter(|&index| index != RAW_BROKER)
    {
        let address = cluster.brokers[index].command_api();
        let listening = listening_addresses(address.port());
        assert!(
            listening.is_empty(),
            "broker {index} has the raw-append API off, yet {listening:?} listen on port {}",
            address.port()
        );
        match TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {}
            other => panic!("connecting to broker {index}'s disabled raw-append API: {other:?}"),
        }
    }
    cluster.note(&format!(
        "the raw-append port listens on 127.0.0.1:{raw_port} only, and on no other broker"
    ));
}

/// A partition broker `index` leads, with every replica agreeing.
fn led_partition(cluster: &Cluster, index: usize) -> Result<PartitionId, String> {
    let mut leaders = Vec::new();
    for partition_id in 1..=PARTITIONS {
        let (leader, _) = cluster.settled_leader(partition_id)?;
        if leader == index {
            return Ok(partition_id);
        }
        leaders.push((partition_id, leader));
    }
    Err(format!("leaders by partition: {leaders:?}"))
}

/// The commands a client must not get to any engine through the raw-append port, for
/// `partition_id`, each with what it is.
fn forged_commands(
    partition_id: PartitionId,
    deployment_key: i64,
    job_key: i64,
    message_key: i64,
) -> Vec<(&'static str, Record)> {
    vec![
        (
            "a deployment forged as partition 1's distribution",
            forged_deployment(),
        ),
        (
            "a timer trigger",
            Record::command_for(
                encode_key(partition_id, 1),
                Intent::Trigger,
                RecordValue::Timer(TimerValue::default()),
            ),
        ),
        (
            "a message expiry",
            Record::command_for(
                message_key,
                Intent::Expire,
                RecordValue::Message(MessageValue::default()),
            ),
        ),
        (
            "a distribution acknowledgement",
            Record::command_for(
                deployment_key,
                Intent::Acknowledge,
                RecordValue::CommandDistribution(CommandDistributionValue {
                    partition_id,
                    value_type: Some(ValueType::Deployment),
                }),
            ),
        ),
        ("a job time-out", job_command(job_key, Intent::TimeOut)),
        (
            "a client's job completion",
            job_command(job_key, Intent::Complete),
        ),
    ]
}

/// `DEPLOYMENT CREATE` of [`FORGED_PROCESS`] with a key of partition 1, as partition 1
/// distributes a deployment to the others: well formed (keys, version, checksum), so only the
/// door it comes through can stop it.
fn forged_deployment() -> Record {
    let resource_name = "forged.bpmn";
    let xml = String::from_utf8(gateway::bpmn("one_task.bpmn"))
        .expect("the BPMN file is UTF-8")
        .replace("id=\"one_task\"", &format!("id=\"{FORGED_PROCESS}\""));
    let checksum = format!("{:08x}", crc32c::crc32c(xml.as_bytes()));
    Record::command_for(
        encode_key(1, ABSENT_COUNTER),
        Intent::Create,
        RecordValue::Deployment(DeploymentValue {
            resources: vec![DeploymentResource {
                resource_name: resource_name.to_owned(),
                resource: xml.into(),
            }],
            processes_metadata: vec![ProcessMetadata {
                bpmn_process_id: FORGED_PROCESS.to_owned(),
                version: 1,
                process_definition_key: encode_key(1, ABSENT_COUNTER + 1),
                resource_name: resource_name.to_owned(),
                checksum,
                duplicate: false,
            }],
        }),
    )
}

fn job_command(job_key: i64, intent: Intent) -> Record {
    Record::command_for(job_key, intent, RecordValue::Job(JobValue::default()))
}

/// One encoded command record, as the gateway sends it.
fn encode(command: &Record) -> Vec<u8> {
    encode_records(std::slice::from_ref(command)).to_vec()
}

fn assert_refused_at_the_door(answer: &Response, what: &str) {
    match answer {
        Response::Invalid { message, .. }
            if message.contains("raw appends only") && message.contains("gRPC gateway") => {}
        other => panic!("{what} through the raw-append port: {other:?}"),
    }
}

/// A connection to one broker's raw-append API, one request at a time.
struct RawClient {
    connection: Connection,
    next_request_id: u64,
}

impl RawClient {
    fn connect(address: SocketAddr) -> RawClient {
        RawClient {
            connection: Connection::connect(address, RAW_TIMEOUT)
                .unwrap_or_else(|error| panic!("connecting to {address}: {error}")),
            next_request_id: 1,
        }
    }

    /// Sends the request `build` makes with a fresh id; its answer.
    fn request(&mut self, build: impl FnOnce(u64) -> Request) -> Response {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.connection
            .send(&build(request_id))
            .and_then(|()| self.connection.flush())
            .unwrap_or_else(|error| panic!("sending request {request_id}: {error}"));
        let response = self
            .connection
            .recv(RAW_TIMEOUT)
            .unwrap_or_else(|error| panic!("the answer to request {request_id}: {error}"));
        assert_eq!(response.request_id(), request_id, "{response:?}");
        response
    }
}

/// [`FORGED_PROCESS`] is deployed nowhere: creations through every gateway, on every
/// partition in turn, answer `NOT_FOUND`.
fn forged_process_is_unknown(cluster: &Cluster, runtime: &Runtime) {
    for index in cluster.cluster_brokers() {
        let mut client = serving::client(runtime, PORT_OFFSET, node_of(index));
        for attempt in 0..PARTITIONS {
            let created = runtime.block_on(client.create_process_instance(gateway::with_deadline(
                pb::CreateProcessInstanceRequest {
                    bpmn_process_id: FORGED_PROCESS.to_owned(),
                    version: -1,
                    ..pb::CreateProcessInstanceRequest::default()
                },
                DEADLINE,
            )));
            expect_code(
                created,
                Code::NotFound,
                &format!("creation {attempt} of the forged process through broker {index}"),
            );
        }
    }
}

/// The job of `job_type` is not activatable: it was neither timed out nor handed back.
fn job_stays_with_its_worker(runtime: &Runtime, client: &mut Client, job_type: &str) {
    let jobs = activate(runtime, client, job_type, EMPTY_POLL);
    assert!(
        jobs.is_empty(),
        "the {job_type} job became activatable again: {jobs:?}"
    );
}

/// The buffered `payment` message of `correlation_key` (amount 42) was not expired: an
/// instance of `messages` for it completes with the amount.
fn message_still_correlates(runtime: &Runtime, client: &mut Client, correlation_key: &str) {
    publish(runtime, client, "shipment-eu", correlation_key, "{}");
    let request = pb::CreateProcessInstanceWithResultRequest {
        request: Some(pb::CreateProcessInstanceRequest {
            bpmn_process_id: "messages".to_owned(),
            version: -1,
            variables: format!(r#"{{"orderId":"{correlation_key}","region":"eu"}}"#),
            ..pb::CreateProcessInstanceRequest::default()
        }),
        request_timeout: millis(DEADLINE),
        fetch_variables: Vec::new(),
    };
    let result = runtime
        .block_on(
            client.create_process_instance_with_result(gateway::with_deadline(request, DEADLINE)),
        )
        .unwrap_or_else(|status| panic!("the instance waiting for {correlation_key}: {status:?}"))
        .into_inner();
    let variables: serde_json::Value =
        serde_json::from_str(&result.variables).expect("the result's variables are JSON");
    assert_eq!(
        variables["paid_amount"], 42,
        "the payment message correlated: {variables}"
    );
}

/// A correlation key whose messages go to `partition_id`, and the key of the `payment`
/// message (amount 42) published for it.
fn message_on(runtime: &Runtime, client: &mut Client, partition_id: PartitionId) -> (String, i64) {
    let correlation_key = (0..1_000)
        .map(|i| format!("forged-order-{i}"))
        .find(|key| sluice_engine::subscription_partition(key, PARTITIONS) == partition_id)
        .expect("some key maps to every partition");
    let message_key = publish(
        runtime,
        client,
        "payment",
        &correlation_key,
        r#"{"amount":42}"#,
    );
    assert_eq!(key_partition(message_key), partition_id);
    (correlation_key, message_key)
}

fn publish(
    runtime: &Runtime,
    client: &mut Client,
    name: &str,
    correlation_key: &str,
    variables: &str,
) -> i64 {
    let request = pb::PublishMessageRequest {
        name: name.to_owned(),
        correlation_key: correlation_key.to_owned(),
        time_to_live: MESSAGE_TTL_MS,
        message_id: String::new(),
        variables: variables.to_owned(),
        tenant_id: String::new(),
    };
    runtime
        .block_on(client.publish_message(gateway::with_deadline(request, DEADLINE)))
        .unwrap_or_else(|status| panic!("publishing {name} for {correlation_key}: {status:?}"))
        .into_inner()
        .key
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: forged peer identities
// ---------------------------------------------------------------------------------------------

/// A rogue peer: the node its certificate (from the cluster's CA) names, the node its messages
/// claim to come from, the brokers it sends them to, and its port offset (inside this test's
/// range).
struct RoguePlan {
    certificate_node: NodeId,
    claims: NodeId,
    targets: Vec<usize>,
    port_offset: u32,
}

/// What the cluster's counters must show after the rogues, per broker.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct ForgedCounts {
    raft: f64,
    gossip: f64,
    commands_dropped: f64,
    commands_refused: f64,
}

/// Rogue peers holding certificates from the cluster's own CA send Raft messages, gossip and
/// command frames claiming another node: all dropped and counted, nothing changes.
fn forged_peers(cluster: &Cluster, runtime: &Runtime, client: &mut Client) {
    let job = job_on(runtime, client, None, "rogue");
    let terms_before = terms(cluster);
    let counters_before: Vec<ForgedCounts> = cluster
        .cluster_brokers()
        .map(|index| counters(cluster, index))
        .collect();
    let plans = [
        // A certificate for node 1 whose messages say node 2.
        RoguePlan {
            certificate_node: 1,
            claims: 2,
            targets: vec![0],
            port_offset: PORT_OFFSET + 5,
        },
        // A certificate for node 7 (outside the cluster) whose messages say node 1.
        RoguePlan {
            certificate_node: 7,
            claims: 1,
            targets: vec![0, 2],
            port_offset: PORT_OFFSET + 6,
        },
    ];
    let mut expected = counters_before.clone();
    let mut rogues = Vec::new();
    for plan in &plans {
        let address = SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            dev::port(dev::INTERNAL_API_PORT, plan.port_offset, 0),
        ));
        let frames = rogue_frames(cluster, plan, address, job.key, &mut expected);
        cluster.note(&format!(
            "rogue with node {}'s certificate at {address} claims node {} to brokers {:?} \
             ({} frames)",
            plan.certificate_node,
            plan.claims,
            plan.targets,
            frames.len()
        ));
        rogues.push(Rogue::start(
            cluster,
            plan.certificate_node,
            address,
            frames,
        ));
    }
    assert_counted(cluster, &rogues, &expected, &counters_before);

    let end = Instant::now() + WATCH;
    while Instant::now() < end {
        nothing_changed(cluster, &rogues);
        std::thread::sleep(Duration::from_millis(250));
    }
    let terms_after = terms(cluster);
    if terms_after != terms_before {
        cluster.note(&format!(
            "terms moved meanwhile (none to the forged term): {terms_before:?} -> {terms_after:?}"
        ));
    }
    job_stays_with_its_worker(runtime, client, &job.r#type);
    complete(runtime, client, job.key).expect("the rogues' time-out left the job alone");
    for rogue in rogues {
        rogue.stop();
    }
    cluster.note(&format!(
        "for {WATCH:?}: no term near the forged one, every broker alive at its own address; the \
         job stayed with its worker"
    ));
}

/// The frames of the rogue of `plan` at `address`: to each target, one Raft frame, the gossip
/// frames, and two command frames (one with a client's tag, one timing out job `job_key` behind
/// the partition tag). Adds what each target must count to `expected`.
fn rogue_frames(
    cluster: &Cluster,
    plan: &RoguePlan,
    address: SocketAddr,
    job_key: i64,
    expected: &mut [ForgedCounts],
) -> Vec<(SocketAddr, FrameKind, Vec<u8>)> {
    let mut frames = Vec::new();
    for &target in &plan.targets {
        let to = cluster.brokers[target].internal_api();
        let (raft, raft_messages) = forged_raft_frame(plan.claims, node_of(target));
        frames.push((to, FrameKind::RaftBatch, raft));
        expected[target].raft += f64::from(raft_messages);
        for gossip in forged_gossip(cluster, plan.claims, node_of(target), address) {
            frames.push((to, FrameKind::Swim, gossip));
            expected[target].gossip += 1.0;
        }
        frames.push((
            to,
            FrameKind::Command,
            command_frame(1, PAYLOAD_COMMAND, &creation_command()),
        ));
        expected[target].commands_dropped += 1.0;
        frames.push((
            to,
            FrameKind::Command,
            command_frame(
                key_partition(job_key),
                PAYLOAD_INTERNAL,
                &job_command(job_key, Intent::TimeOut),
            ),
        ));
        expected[target].commands_refused += 1.0;
    }
    frames
}

/// Waits until every broker counted what the rogues sent it, then checks it counted exactly
/// that: nothing else claims a sender its certificate does not name.
fn assert_counted(
    cluster: &Cluster,
    rogues: &[Rogue],
    expected: &[ForgedCounts],
    before: &[ForgedCounts],
) {
    cluster.wait_until(
        "every forged message to be dropped and counted",
        WAIT,
        || {
            let mut short = Vec::new();
            for index in cluster.cluster_brokers() {
                let now = counters(cluster, index);
                let wanted = expected[index];
                if now.raft < wanted.raft
                    || now.gossip < wanted.gossip
                    || now.commands_dropped < wanted.commands_dropped
                    || now.commands_refused < wanted.commands_refused
                {
                    short.push(format!("broker {index}: {now:?}, expected {wanted:?}"));
                }
            }
            if short.is_empty() {
                Ok(())
            } else {
                let sent: Vec<String> = rogues.iter().map(Rogue::describe).collect();
                Err(format!("{}; rogues: {}", short.join("; "), sent.join("; ")))
            }
        },
    );
    let counted: Vec<ForgedCounts> = cluster
        .cluster_brokers()
        .map(|index| counters(cluster, index))
        .collect();
    for index in cluster.cluster_brokers() {
        assert_eq!(
            counted[index], expected[index],
            "broker {index} counted exactly the forged messages (before: {:?})",
            before[index]
        );
    }
    cluster.note(&format!("counted as forged, per broker: {counted:?}"));
}

/// One Raft frame to `target` claiming to come from `claims`, for every partition: a vote
/// request granted even to a replica that heard from its leader (a transfer), an append and a
/// leadership hand-over, all at [`FORGED_TERM`]. The frame body and its message count.
fn forged_raft_frame(claims: NodeId, target: NodeId) -> (Vec<u8>, u32) {
    let mut messages = Vec::new();
    for partition_id in 1..=PARTITIONS {
        for body in [
            MessageBody::Vote {
                last_index: u64::from(u32::MAX),
                last_term: FORGED_TERM,
                transfer: true,
            },
            MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries: Vec::new(),
                commit_index: 0,
            },
            MessageBody::TimeoutNow,
        ] {
            messages.push((
                partition_id,
                RaftMessage {
                    from: replica_id(claims),
                    to: replica_id(target),
                    term: FORGED_TERM,
                    body,
                },
            ));
        }
    }
    let count = u32::try_from(messages.len()).expect("a few messages");
    let frame = sluice_net::encode_raft_batch(&messages).expect("within the wire's bounds");
    (frame[FRAME_HEADER_BYTES..].to_vec(), count)
}

/// Gossip frames to `target` claiming to come from `claims`: `claims` now at the rogue's
/// `address`, and the third broker left; a ping from `claims` at the rogue's address.
fn forged_gossip(
    cluster: &Cluster,
    claims: NodeId,
    target: NodeId,
    address: SocketAddr,
) -> Vec<Vec<u8>> {
    let third = (0..3)
        .find(|&node| node != claims && node != target)
        .expect("three brokers");
    let moved = Member {
        id: u64::from(claims),
        address: address.to_string(),
        state: MemberState::Alive,
        incarnation: FORGED_INCARNATION,
        metadata: Vec::new(),
    };
    let left = Member {
        id: u64::from(third),
        address: cluster.brokers[index_of(third)].internal_api().to_string(),
        state: MemberState::Left,
        incarnation: FORGED_INCARNATION,
        metadata: Vec::new(),
    };
    [
        SwimMessage {
            sender_id: u64::from(claims),
            kind: MessageKind::Gossip,
            updates: vec![moved.clone(), left],
        },
        SwimMessage {
            sender_id: u64::from(claims),
            kind: MessageKind::Ping {
                sequence: 1,
                target_id: u64::from(target),
            },
            updates: vec![moved],
        },
    ]
    .iter()
    .map(|message| {
        let frame = sluice_net::encode_swim_message(message).expect("within the wire's bounds");
        frame[FRAME_HEADER_BYTES..].to_vec()
    })
    .collect()
}

/// A command frame's body: the partition id, the payload tag, the encoded command.
fn command_frame(partition_id: PartitionId, tag: u8, command: &Record) -> Vec<u8> {
    let mut body = partition_id.to_le_bytes().to_vec();
    body.push(tag);
    body.extend_from_slice(&encode(command));
    body
}

/// A client's creation of `one_task`.
fn creation_command() -> Record {
    Record::command(
        Intent::Create,
        RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
            bpmn_process_id: "one_task".to_owned(),
            version: -1,
            ..ProcessInstanceCreationValue::default()
        }),
    )
}

/// Every replica's term is far below the forged one, every partition has a settled leader, and
/// every broker lists every broker alive at its own address and no rogue.
fn nothing_changed(cluster: &Cluster, rogues: &[Rogue]) {
    cluster.assert_no_exits();
    for ((index, partition_id), term) in terms(cluster) {
        assert!(
            term < FORGED_TERM,
            "broker {index}'s replica of partition {partition_id} took the forged term {term}"
        );
    }
    for index in cluster.cluster_brokers() {
        let view = cluster
            .cluster_view(index)
            .unwrap_or_else(|error| panic!("{error}"));
        for node in cluster.cluster_brokers() {
            let real = cluster.brokers[node].internal_api().to_string();
            let member = view
                .broker(node_of(node))
                .unwrap_or_else(|| panic!("broker {index} no longer lists node {node}: {view:?}"));
            assert_eq!(
                (member.address.as_str(), member.state.as_str()),
                (real.as_str(), "ALIVE"),
                "broker {index}'s view of node {node}"
            );
        }
        for rogue in rogues {
            let address = rogue.address.to_string();
            assert!(
                view.brokers.iter().all(|member| member.address != address),
                "broker {index} lists the rogue at {address}: {view:?}"
            );
        }
    }
}

/// Every live replica's term, by (broker, partition).
fn terms(cluster: &Cluster) -> BTreeMap<(usize, PartitionId), u64> {
    let mut terms = BTreeMap::new();
    for index in cluster.cluster_brokers() {
        let views = cluster
            .partitions_view(index)
            .unwrap_or_else(|error| panic!("{error}"));
        for (partition_id, view) in views {
            terms.insert((index, partition_id), view.term);
        }
    }
    terms
}

/// Broker `index`'s counters of forged messages and commands.
fn counters(cluster: &Cluster, index: usize) -> ForgedCounts {
    let text = cluster
        .get_ok(index, "/metrics")
        .unwrap_or_else(|error| panic!("{error}"));
    let value = |name: &str, label: &str| {
        labelled(&text, name, label)
            .unwrap_or_else(|| panic!("broker {index}: no {name}{{{label}}} in /metrics"))
    };
    ForgedCounts {
        raft: value(SENDER_MISMATCH, "kind=\"raft\""),
        gossip: value(SENDER_MISMATCH, "kind=\"gossip\""),
        commands_dropped: value(COMMANDS_DROPPED, ""),
        commands_refused: value(COMMANDS_REFUSED, ""),
    }
}

/// The sum of the samples of `name` whose labels contain `label`.
fn labelled(text: &str, name: &str, label: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some((labels, value)) = rest
            .strip_prefix('{')
            .and_then(|rest| rest.split_once("} "))
        else {
            continue;
        };
        if labels.contains(label) {
            *sum.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    sum
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: keys of another partition through a gateway
// ---------------------------------------------------------------------------------------------

/// Job, instance and element-instance keys of [`KEYS_PARTITION`] through gateways of brokers
/// that do not lead it: served there when they exist, `NOT_FOUND` when they do not.
fn keys_of_another_partition(cluster: &Cluster, runtime: &Runtime) {
    let (leader, _) = cluster.wait_until(
        &format!("partition {KEYS_PARTITION} to have a settled leader"),
        WAIT,
        || cluster.settled_leader(KEYS_PARTITION),
    );
    let others: Vec<usize> = cluster
        .cluster_brokers()
        .filter(|&index| index != leader)
        .collect();
    let [creator, other] = others[..] else {
        panic!("two brokers besides partition {KEYS_PARTITION}'s leader: {others:?}");
    };
    cluster.note(&format!(
        "broker {leader} leads partition {KEYS_PARTITION}; gateways of brokers {creator} and \
         {other} name its keys"
    ));
    let mut creators = serving::client(runtime, PORT_OFFSET, node_of(creator));
    let mut others_client = serving::client(runtime, PORT_OFFSET, node_of(other));

    existing_keys(runtime, &mut creators, &mut others_client);
    cluster.note(
        "partition 3's job completed, instance's variables set and another instance cancelled \
         through another broker's gateway; again: NOT_FOUND",
    );
    for index in cluster.cluster_brokers() {
        let mut client = serving::client(runtime, PORT_OFFSET, node_of(index));
        for partition_id in 1..=PARTITIONS {
            let absent = encode_key(partition_id, ABSENT_COUNTER);
            every_call_answers(runtime, &mut client, absent, Code::NotFound, index);
        }
        for nowhere in [encode_key(PARTITIONS + 1, 1), 0, -1] {
            every_call_answers(runtime, &mut client, nowhere, Code::InvalidArgument, index);
        }
    }
    cluster.note(
        "absent keys of every partition: NOT_FOUND through every gateway; keys of no \
         partition: INVALID_ARGUMENT",
    );

    cluster.wait_until("no forwarded request to be left waiting", WAIT, || {
        for index in cluster.cluster_brokers() {
            let waiting = cluster.metric(index, FORWARDED_IN_FLIGHT)?;
            if waiting != 0.0 {
                return Err(format!("broker {index}: {FORWARDED_IN_FLIGHT} {waiting}"));
            }
        }
        Ok(())
    });
    let unmatched: Vec<f64> = cluster
        .cluster_brokers()
        .map(|index| {
            cluster
                .metric(index, "sluice_requests_replies_unmatched_total")
                .unwrap_or_else(|error| panic!("{error}"))
        })
        .collect();
    cluster.note(&format!("replies unmatched per broker: {unmatched:?}"));
}

/// Through `others_client` (a gateway of a broker that does not lead [`KEYS_PARTITION`]), on an
/// instance `creators` made there: variables set, job completed, then `NOT_FOUND` for the job
/// and the finished instance; another instance cancelled, then `NOT_FOUND`.
fn existing_keys(runtime: &Runtime, creators: &mut Client, others_client: &mut Client) {
    let job = job_on(runtime, creators, Some(KEYS_PARTITION), "cross");
    let instance = job.process_instance_key;
    let document = set_variables(runtime, others_client, instance)
        .unwrap_or_else(|status| panic!("SetVariables on instance {instance}: {status:?}"));
    assert_eq!(
        key_partition(document),
        KEYS_PARTITION,
        "the variable document was made on the instance's partition"
    );
    complete(runtime, others_client, job.key)
        .unwrap_or_else(|status| panic!("completing job {}: {status:?}", job.key));
    expect_code(
        complete(runtime, others_client, job.key),
        Code::NotFound,
        "completing the job again",
    );
    expect_code(
        set_variables(runtime, others_client, instance),
        Code::NotFound,
        "SetVariables on the completed instance",
    );
    expect_code(
        cancel(runtime, others_client, instance),
        Code::NotFound,
        "cancelling the completed instance",
    );

    let live = (0..PARTITIONS * 4)
        .map(|_| serving::create_one(runtime, creators).expect("a creation"))
        .find(|&key| key_partition(key) == KEYS_PARTITION)
        .expect("round-robin reaches every partition");
    cancel(runtime, others_client, live)
        .unwrap_or_else(|status| panic!("cancelling instance {live}: {status:?}"));
    expect_code(
        cancel(runtime, others_client, live),
        Code::NotFound,
        "cancelling the instance again",
    );
}

/// `CompleteJob`, `CancelProcessInstance` and `SetVariables` naming `key`, through broker
/// `index`'s gateway, each answer `code`.
fn every_call_answers(runtime: &Runtime, client: &mut Client, key: i64, code: Code, index: usize) {
    let what = |call: &str| format!("{call} of key {key} through broker {index}");
    expect_code(complete(runtime, client, key), code, &what("CompleteJob"));
    expect_code(
        cancel(runtime, client, key),
        code,
        &what("CancelProcessInstance"),
    );
    expect_code(
        set_variables(runtime, client, key),
        code,
        &what("SetVariables"),
    );
}

// ---------------------------------------------------------------------------------------------
// Gateway calls
// ---------------------------------------------------------------------------------------------

/// Deploys `one_job` and `messages`.
fn deploy(runtime: &Runtime, client: &mut Client) -> pb::DeployResourceResponse {
    let request = pb::DeployResourceRequest {
        resources: vec![
            pb::Resource {
                name: "one_job.bpmn".to_owned(),
                content: ONE_JOB_BPMN.as_bytes().to_vec(),
            },
            pb::Resource {
                name: "messages.bpmn".to_owned(),
                content: gateway::bpmn("messages.bpmn"),
            },
        ],
        tenant_id: String::new(),
    };
    runtime
        .block_on(client.deploy_resource(gateway::with_deadline(request, DEADLINE)))
        .unwrap_or_else(|status| panic!("deploying one_job and messages: {status:?}"))
        .into_inner()
}

/// Creates `one_job` instances (each job of its own type, `{tag}-{n}`) until one lands on
/// `partition_id` (any partition when `None`), and activates its job.
fn job_on(
    runtime: &Runtime,
    client: &mut Client,
    partition_id: Option<PartitionId>,
    tag: &str,
) -> pb::ActivatedJob {
    for attempt in 0..PARTITIONS * 4 {
        let job_type = format!("{tag}-{attempt}");
        let variables = format!(r#"{{"jobType":"{job_type}"}}"#);
        let instance = runtime.block_on(gateway::create(client, "one_job", &variables, DEADLINE));
        if partition_id.is_some_and(|wanted| key_partition(instance) != wanted) {
            continue;
        }
        let started = Instant::now();
        loop {
            let mut jobs = activate(runtime, client, &job_type, Duration::from_secs(2));
            if let Some(job) = jobs.pop() {
                assert!(jobs.is_empty(), "one {job_type} job only: {jobs:?}");
                assert_eq!(job.process_instance_key, instance);
                assert_eq!(key_partition(job.key), key_partition(instance));
                return job;
            }
            assert!(
                started.elapsed() < WAIT,
                "no {job_type} job within {WAIT:?} of instance {instance}'s creation"
            );
        }
    }
    panic!("no creation landed on partition {partition_id:?}");
}

/// One activation of up to 10 jobs of `job_type` for [`WORKER`], long-polling `poll`.
fn activate(
    runtime: &Runtime,
    client: &mut Client,
    job_type: &str,
    poll: Duration,
) -> Vec<pb::ActivatedJob> {
    let request = pb::ActivateJobsRequest {
        r#type: job_type.to_owned(),
        worker: WORKER.to_owned(),
        timeout: JOB_TIMEOUT_MS,
        max_jobs_to_activate: 10,
        fetch_variable: Vec::new(),
        request_timeout: millis(poll),
        tenant_ids: Vec::new(),
    };
    runtime.block_on(async {
        let mut stream = client
            .activate_jobs(gateway::with_deadline(request, DEADLINE))
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
    })
}

fn complete(runtime: &Runtime, client: &mut Client, job_key: i64) -> Result<(), tonic::Status> {
    let request = pb::CompleteJobRequest {
        job_key,
        variables: r#"{"done":true}"#.to_owned(),
    };
    runtime
        .block_on(client.complete_job(gateway::with_deadline(request, DEADLINE)))
        .map(|_| ())
}

fn cancel(runtime: &Runtime, client: &mut Client, instance: i64) -> Result<(), tonic::Status> {
    let request = pb::CancelProcessInstanceRequest {
        process_instance_key: instance,
        ..pb::CancelProcessInstanceRequest::default()
    };
    runtime
        .block_on(client.cancel_process_instance(gateway::with_deadline(request, DEADLINE)))
        .map(|_| ())
}

/// Sets a variable on element instance `key`; the variable document's key.
fn set_variables(runtime: &Runtime, client: &mut Client, key: i64) -> Result<i64, tonic::Status> {
    let request = pb::SetVariablesRequest {
        element_instance_key: key,
        variables: r#"{"note":"through another gateway"}"#.to_owned(),
        local: false,
        operation_reference: None,
    };
    runtime
        .block_on(client.set_variables(gateway::with_deadline(request, DEADLINE)))
        .map(|response| response.into_inner().key)
}

fn expect_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, what: &str) {
    match result {
        Err(status) if status.code() == code => {}
        other => panic!("{what}: expected {code:?}, got {other:?}"),
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).expect("a short duration")
}
