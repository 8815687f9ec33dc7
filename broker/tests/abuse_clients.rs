//! Clients that hold what they can and read nothing: every client-facing queue of the broker is
//! bounded, a client over a bound hears `RESOURCE_EXHAUSTED` or finds its connection closed,
//! and the cluster keeps serving.
//!
//! Three brokers, three partitions, replication factor 3, the raw-append API on, and small
//! bounds so that a test can reach them: `gateway.longPolling.maxPolls` 500,
//! `gateway.jobStreams.maxStreams` 100, HTTP/2 keep-alive every 2 s with 2 s to answer.
//! Broker 1 waits 10 minutes for a new connection's first bytes; broker 2 too, and takes at most
//! 200 gateway connections. In turn:
//!
//! 1. **Long polls**: 3000 `ActivateJobs` long polls on one connection to broker 0's gateway,
//!    and 3000 over 30 connections to broker 1's: beyond 500 each is refused
//!    `RESOURCE_EXHAUSTED`, 500 stay open; the cluster serves while they are held. The clients
//!    then leave, and each gateway's long polls drain to none (checked at the end). A long poll
//!    on broker 2's gateway is answered with the job created while it waits.
//! 2. **Job streams**: 150 `StreamActivatedJobs` on one connection: 100 open, 50 refused; one
//!    job created then reaches exactly one of the open streams.
//! 3. **Idle connections**: 1000 silent TCP connections to each of brokers 0 and 1's gateways
//!    and 700 to each broker's management port. The cluster serves while they are held (the
//!    management API once its 64 connections timed out). Broker 0 closes its silent ones after
//!    its handshake timeout; broker 1 keeps them; every management one is closed.
//! 4. **Connection cap**: 1000 silent connections to broker 2's gateway: 800 are closed at
//!    once, 200 held; a gRPC client of broker 2 then finds its connection closed while the
//!    other gateways serve. Once they leave, broker 2 serves again.
//! 5. **A gRPC client that never reads**, through a proxy that forwards only its requests:
//!    large `ActivateJobs` answers (256 KiB jobs) and 500 creations it never reads. Its
//!    connection is closed (its keep-alive PING unanswered, or a write to it stalled) and the
//!    broker serves on.
//! 6. **Raw appends never read**: a client writes requests to the raw-append API and reads
//!    nothing; the broker stops reading it, then closes it. A malformed frame gets an `Invalid`
//!    answer and a closed connection; an idle connection is closed after the idle timeout.
//!
//! Every scenario ends with `assert_still_serving` (every partition serves 30 creations through
//! every gateway, `/health` 200 everywhere, no broker died) after its clients left, and most
//! run it while they are still connected too.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use common::gateway::{self, Client, with_deadline};
use common::serving;
use sluice_broker::client_api::{self, Response, ResponseDecoder};
use sluice_broker::dev::{self, DevOptions, GATEWAY_PORT};
use sluice_broker::gateway::proto::gateway_protocol as pb;
use tokio::runtime::Runtime;

const PORT_OFFSET: u32 = 390;
const PARTITIONS: u32 = 3;
/// Bound of every wait: several times what a loaded two-core machine takes.
const WAIT: Duration = Duration::from_mins(3);
/// Bound of one gRPC call made to check an answer.
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// `gateway.longPolling.maxPolls` of every broker.
const LONG_POLLS_MAX: usize = 500;
/// `gateway.jobStreams.maxStreams` of every broker.
const JOB_STREAMS_MAX: usize = 100;
/// `gateway.network.maxConnections` of broker 2.
const CAPPED_CONNECTIONS_MAX: usize = 200;
/// Long polls sent to one gateway.
const LONG_POLLS: usize = 3000;
/// Connections the spread long polls use.
const LONG_POLL_CONNECTIONS: usize = 30;
/// `requestTimeout` of the held long polls: longer than the scenario, so none ends by itself.
const HELD_POLL_TIMEOUT: Duration = Duration::from_mins(10);
/// Silent connections to brokers 0 and 1's gateways, and to each management port.
const IDLE_PER_GATEWAY: usize = 1000;
const IDLE_PER_MANAGEMENT: usize = 700;
/// Silent connections to broker 2's capped gateway.
const CAP_CONNECTIONS: usize = 1000;
/// Jobs of 256 KiB the deaf client activates, and creations it sends.
const BIG_JOBS: usize = 30;
const BIG_VARIABLE_BYTES: usize = 256 << 10;
const DEAF_CREATIONS: usize = 500;
/// File descriptors the test process needs (idle connections and a margin).
const FDS_NEEDED: u64 = 8_192;

#[test]
fn abuse_clients() {
    raise_fd_limit();
    let cluster = start_cluster();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let background = Background::start();
    // Opened first, checked last: by then it has been idle far beyond the idle timeout.
    let idle_raw = connect(cluster.brokers[0].command_api());
    let idle_raw_opened = Instant::now();
    {
        let mut client = serving::client(&runtime, PORT_OFFSET, 0);
        serving::deploy_one_task(&runtime, &mut client);
        for (process, job_type) in [
            ("abuse_wake", "abuse-wake"),
            ("abuse_stream", "abuse-stream"),
            ("abuse_big", "abuse-big"),
        ] {
            deploy_task_process(&runtime, &mut client, process, job_type);
        }
    }

    long_polls(&cluster, &runtime, &background);
    a_long_poll_gets_the_job_created_while_it_waits(&cluster, &runtime, &background);
    job_streams(&cluster, &runtime, &background);
    idle_connections(&cluster, &runtime);
    connection_cap(&cluster, &runtime, &background);
    deaf_grpc_client(&cluster, &runtime, &background);
    raw_appends_never_read(&cluster, &runtime);

    // The long polls and job streams of the first scenarios left long ago: their slots and the
    // polls they parked are all back.
    for index in cluster.cluster_brokers() {
        for metric in [
            "sluice_gateway_long_polls_open",
            "sluice_gateway_job_streams_open",
        ] {
            cluster.wait_until(&format!("broker {index}: {metric} back to 0"), WAIT, || {
                metric_is(&cluster, index, metric, 0.0)
            });
        }
    }
    cluster.wait_until(
        "the raw-append API to close the idle connection",
        WAIT.saturating_sub(idle_raw_opened.elapsed()),
        || closed_or(&idle_raw, "still open"),
    );
    cluster.note(&format!(
        "the idle raw-append connection was closed within {:.0} s",
        idle_raw_opened.elapsed().as_secs_f64()
    ));
    drop(background);
    serving::assert_still_serving(&cluster, &runtime, PORT_OFFSET);
    cluster.terminate_all();
}

/// The cluster with the bounds of the module docs, every partition led.
fn start_cluster() -> Cluster {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: PARTITIONS,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::create("abuse_clients", options);
    for (index, broker) in cluster.brokers.iter().enumerate() {
        let mut env = broker.env.borrow_mut();
        for (name, value) in [
            ("ZEEBE_BROKER_NETWORK_COMMANDAPI_ENABLED", "true".to_owned()),
            (
                "ZEEBE_BROKER_GATEWAY_LONGPOLLING_MAXPOLLS",
                LONG_POLLS_MAX.to_string(),
            ),
            (
                "ZEEBE_BROKER_GATEWAY_JOBSTREAMS_MAXSTREAMS",
                JOB_STREAMS_MAX.to_string(),
            ),
            (
                "ZEEBE_BROKER_GATEWAY_NETWORK_KEEPALIVEINTERVAL",
                "2s".to_owned(),
            ),
            (
                "ZEEBE_BROKER_GATEWAY_NETWORK_KEEPALIVETIMEOUT",
                "2s".to_owned(),
            ),
        ] {
            env.push((name.to_owned(), value));
        }
        if index >= 1 {
            env.push((
                "ZEEBE_BROKER_GATEWAY_NETWORK_HANDSHAKETIMEOUT".to_owned(),
                "10m".to_owned(),
            ));
        }
        if index == 2 {
            env.push((
                "ZEEBE_BROKER_GATEWAY_NETWORK_MAXCONNECTIONS".to_owned(),
                CAPPED_CONNECTIONS_MAX.to_string(),
            ));
        }
    }
    for index in cluster.cluster_brokers() {
        cluster.spawn(index);
    }
    for partition_id in 1..=PARTITIONS {
        cluster.wait_until(
            &format!("partition {partition_id} to elect a leader"),
            WAIT,
            || cluster.settled_leader(partition_id),
        );
    }
    cluster
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// 3000 long polls on one connection (broker 0) and over 30 (broker 1): 500 held each, the rest
/// refused `RESOURCE_EXHAUSTED`; the cluster serves while they are held.
fn long_polls(cluster: &Cluster, runtime: &Runtime, background: &Background) {
    let one_connection = Outcomes::default();
    let spread = Outcomes::default();
    let mut calls = Vec::new();
    let channel = background.run(connect_gateway(0));
    for _ in 0..LONG_POLLS {
        let client = Client::new(channel.clone());
        let outcomes = one_connection.clone();
        calls.push(background.spawn(async move {
            let outcome = long_poll(client, "abuse-nobody", HELD_POLL_TIMEOUT).await;
            outcomes.add(outcome);
        }));
    }
    for _ in 0..LONG_POLL_CONNECTIONS {
        let channel = background.run(connect_gateway(1));
        for _ in 0..LONG_POLLS / LONG_POLL_CONNECTIONS {
            let client = Client::new(channel.clone());
            let outcomes = spread.clone();
            calls.push(background.spawn(async move {
                let outcome = long_poll(client, "abuse-nobody", HELD_POLL_TIMEOUT).await;
                outcomes.add(outcome);
            }));
        }
    }
    for (index, outcomes, how) in [
        (0, &one_connection, "on one connection"),
        (1, &spread, "over 30 connections"),
    ] {
        let held = cluster.wait_until(
            &format!("each of {LONG_POLLS} long polls {how} to be refused or held"),
            WAIT,
            || {
                let seen = outcomes.snapshot();
                assert!(
                    seen.keys().all(|outcome| outcome.starts_with(EXHAUSTED)),
                    "a long poll over a bound is refused RESOURCE_EXHAUSTED, and no other \
                     ends: {seen:?}"
                );
                let held = metric_count(cluster, index, "sluice_gateway_long_polls_open")?;
                assert!(
                    held <= LONG_POLLS_MAX,
                    "broker {index}'s gateway holds {held} long polls, above its bound"
                );
                let answered: usize = seen.values().sum();
                if answered + held == LONG_POLLS && held > 0 {
                    Ok(held)
                } else {
                    Err(format!("{held} held, outcomes so far: {seen:?}"))
                }
            },
        );
        let seen = outcomes.snapshot();
        assert!(
            seen.get(&format!("{EXHAUSTED} (maxPolls)"))
                .copied()
                .unwrap_or(0)
                > 0,
            "the gateway's bound refused some: {seen:?}"
        );
        cluster.note(&format!(
            "broker {index}, {LONG_POLLS} long polls {how}: {held} held, {seen:?}"
        ));
    }
    serving::assert_still_serving(cluster, runtime, PORT_OFFSET);
    for (index, outcomes) in [(0, &one_connection), (1, &spread)] {
        let seen = outcomes.snapshot();
        assert!(
            seen.keys().all(|outcome| outcome.starts_with(EXHAUSTED)),
            "no long poll ended otherwise while the cluster served: {seen:?}"
        );
        let held =
            metric_count(cluster, index, "sluice_gateway_long_polls_open").expect("the metric");
        assert!(held > 0, "broker {index} still holds its long polls");
    }
    drop(calls);
    drop(channel);
    serving::assert_still_serving(cluster, runtime, PORT_OFFSET);
}

/// A long poll on broker 2's gateway is answered with the job created while it waits.
fn a_long_poll_gets_the_job_created_while_it_waits(
    cluster: &Cluster,
    runtime: &Runtime,
    background: &Background,
) {
    let channel = background.run(connect_gateway(2));
    let waiting = background.spawn_with_result(async move {
        let mut client = Client::new(channel);
        let request = activate_request("abuse-wake", Duration::from_mins(2));
        let mut stream = client
            .activate_jobs(with_deadline(request, Duration::from_mins(3)))
            .await
            .expect("the long poll is taken")
            .into_inner();
        let mut jobs = Vec::new();
        while let Some(batch) = stream.message().await.expect("the long poll's stream") {
            jobs.extend(batch.jobs);
        }
        jobs
    });
    cluster.wait_until("broker 2's gateway to hold the long poll", WAIT, || {
        metric_is(cluster, 2, "sluice_gateway_long_polls_open", 1.0)
    });
    let mut client = serving::client(runtime, PORT_OFFSET, 0);
    let key = runtime.block_on(gateway::create(
        &mut client,
        "abuse_wake",
        "{}",
        CALL_DEADLINE,
    ));
    let jobs = waiting.recv_timeout(WAIT).expect("the long poll answers");
    assert_eq!(jobs.len(), 1, "the long poll got the job: {jobs:?}");
    assert_eq!(jobs[0].process_instance_key, key);
    cluster.note("a long poll was answered with the job created while it waited");
}

/// 150 job streams on one connection to broker 2: 100 open, 50 refused; a job reaches exactly
/// one open stream.
fn job_streams(cluster: &Cluster, runtime: &Runtime, background: &Background) {
    let channel = background.run(connect_gateway(2));
    let outcomes = Outcomes::default();
    let mut streams = Vec::new();
    let attempts = JOB_STREAMS_MAX + 50;
    for _ in 0..attempts {
        let mut client = Client::new(channel.clone());
        let outcomes = outcomes.clone();
        streams.push(background.spawn(async move {
            let request = pb::StreamActivatedJobsRequest {
                r#type: "abuse-stream".to_owned(),
                worker: "abuse".to_owned(),
                // Locked longer than the scenario: the job reaches one stream, once.
                timeout: 600_000,
                fetch_variable: Vec::new(),
                tenant_ids: Vec::new(),
            };
            match client.stream_activated_jobs(request).await {
                Err(status) => outcomes.add(format!("{:?}", status.code())),
                Ok(response) => {
                    outcomes.add("open".to_owned());
                    let mut stream = response.into_inner();
                    while let Ok(Some(_job)) = stream.message().await {
                        outcomes.add("job".to_owned());
                    }
                }
            }
        }));
    }
    cluster.wait_until(
        &format!("{JOB_STREAMS_MAX} job streams open and 50 refused"),
        WAIT,
        || {
            let seen = outcomes.snapshot();
            let expected = BTreeMap::from([
                (EXHAUSTED.to_owned(), attempts - JOB_STREAMS_MAX),
                ("open".to_owned(), JOB_STREAMS_MAX),
            ]);
            if seen == expected {
                Ok(())
            } else {
                Err(format!("outcomes so far: {seen:?}"))
            }
        },
    );
    let mut client = serving::client(runtime, PORT_OFFSET, 0);
    runtime.block_on(gateway::create(
        &mut client,
        "abuse_stream",
        "{}",
        CALL_DEADLINE,
    ));
    cluster.wait_until("the job to reach one open stream", WAIT, || match outcomes
        .snapshot()
        .get("job")
        .copied()
    {
        Some(1) => Ok(()),
        other => Err(format!("jobs streamed: {other:?}")),
    });
    serving::assert_still_serving(cluster, runtime, PORT_OFFSET);
    assert_eq!(outcomes.snapshot().get("job").copied(), Some(1), "one job");
    drop(streams);
    drop(channel);
    serving::assert_still_serving(cluster, runtime, PORT_OFFSET);
}

/// Silent connections to gateways 0 and 1 and to every management port.
fn idle_connections(cluster: &Cluster, runtime: &Runtime) {
    let mut gateway_0 = Vec::new();
    let mut gateway_1 = Vec::new();
    for _ in 0..IDLE_PER_GATEWAY {
        gateway_0.push(connect(gateway_addr(0)));
        gateway_1.push(connect(gateway_addr(1)));
    }
    let mut management = Vec::new();
    for index in cluster.cluster_brokers() {
        for _ in 0..IDLE_PER_MANAGEMENT {
            management.push(connect(cluster.brokers[index].management()));
        }
    }
    cluster.note(&format!(
        "{} silent gateway and {} silent management connections open",
        2 * IDLE_PER_GATEWAY,
        management.len()
    ));
    // The management API holds 64 and closed the rest at once; it serves again once the 64
    // timed out.
    for index in cluster.cluster_brokers() {
        cluster.wait_until(
            &format!("broker {index}'s /health to answer while idle connections are held"),
            WAIT,
            || match cluster.get(index, "/health") {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    serving::assert_still_serving(cluster, runtime, PORT_OFFSET);
    cluster.wait_until(
        "broker 0 to close its silent gateway connections and every management port its own",
        WAIT,
        || {
            let open_0 = gateway_0.iter().filter(|c| !closed(c)).count();
            let open_management = management.iter().filter(|c| !closed(c)).count();
            if open_0 == 0 && open_management == 0 {
                Ok(())
            } else {
                Err(format!(
                    "still open: {open_0} to gateway 0, {open_management} to management"
                ))
            }
        },
    );
    let silent =
        metric_count(cluster, 0, "sluice_gateway_connections_silent_total").expect("the metric");
    assert!(
        silent >= IDLE_PER_GATEWAY,
        "broker 0 counted its silent connections: {silent}"
    );
    let closed_1 = gateway_1.iter().filter(|c| closed(c)).count();
    assert_eq!(closed_1, 0, "broker 1 waits 10 minutes for the first bytes");
    let open_1 = metric_count(cluster, 1, "sluice_gateway_connections_open").expect("the metric");
    assert!(
        open_1 >= IDLE_PER_GATEWAY,
        "broker 1 holds every silent connection: {open_1}"
    );
    drop((gateway_0, gateway_1, management));
    cluster.wait_until("broker 1 to notice its silent clients left", WAIT, || {
        metric_is(cluster, 1, "sluice_gateway_connections_open", 0.0)
    });
    serving::assert_still_serving(cluster, runtime, PORT_OFFSET);
}

/// 1000 silent connections to broker 2's gateway, which takes 200.
fn connection_cap(cluster: &Cluster, runtime: &Runtime, background: &Background) {
    cluster.wait_until("broker 2's gateway to have no client", WAIT, || {
        metric_is(cluster, 2, "sluice_gateway_connections_open", 0.0)
    });
    let held: Vec<TcpStream> = (0..CAP_CONNECTIONS)
        .map(|_| connect(gateway_addr(2)))
        .collect();
    let beyond = CAP_CONNECTIONS - CAPPED_CONNECTIONS_MAX;
    cluster.wait_until(
        &format!("broker 2 to close the {beyond} connections beyond its bound"),
        WAIT,
        || {
            let closed = held.iter().filter(|c| closed(c)).count();
            if closed == beyond {
                Ok(())
            } else {
                Err(format!("{closed} closed"))
            }
        },
    );
    metric_is(
        cluster,
        2,
        "sluice_gateway_connections_open",
        as_f64(CAPPED_CONNECTIONS_MAX),
    )
    .expect("broker 2 holds its bound");
    let refused =
        metric_count(cluster, 2, "sluice_gateway_connections_refused_total").expect("the metric");
    assert!(
        refused >= beyond,
        "broker 2 counted its refusals: {refused}"
    );
    // A client beyond the bound finds its connection closed.
    let topology = background.run(async {
        let endpoint = gateway::plain_endpoint(PORT_OFFSET, 2, CALL_DEADLINE);
        match endpoint.connect().await {
            Err(error) => Err(format!("connect: {error}")),
            Ok(channel) => Client::new(channel)
                .topology(pb::TopologyRequest {})
                .await
                .map(|_| ())
                .map_err(|status| format!("{:?}: {}", status.code(), status.message())),
        }
    });
    assert!(
        topology.is_err(),
        "a connection beyond broker 2's bound is closed"
    );
    cluster.note(&format!(
        "broker 2 holds 200 connections; beyond them: {topology:?}"
    ));
    // The other gateways serve meanwhile.
    for index in [0, 1] {
        let mut client = serving::client(runtime, PORT_OFFSET, index);
        serving::creations_on_every_partition(
            runtime,
            &mut client,
            PARTITIONS,
            serving::CREATIONS_PER_PARTITION,
        );
    }
    drop(held);
    cluster.wait_until("broker 2 to notice its silent clients left", WAIT, || {
        metric_is(cluster, 2, "sluice_gateway_connections_open", 0.0)
    });
    serving::assert_still_serving(cluster, runtime, PORT_OFFSET);
}

/// A gRPC client that never reads its answers, through a proxy that forwards only its requests.
fn deaf_grpc_client(cluster: &Cluster, runtime: &Runtime, background: &Background) {
    let mut client = serving::client(runtime, PORT_OFFSET, 0);
    let variables = format!(r#"{{"blob":"{}"}}"#, "x".repeat(BIG_VARIABLE_BYTES));
    for _ in 0..BIG_JOBS {
        runtime.block_on(gateway::create(
            &mut client,
            "abuse_big",
            &variables,
            CALL_DEADLINE,
        ));
    }
    drop(client);
    cluster.wait_until("broker 0's gateway to have no client", WAIT, || {
        metric_is(cluster, 0, "sluice_gateway_connections_open", 0.0)
    });
    let proxy = background.run(deaf_proxy(gateway_addr(0)));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.addr))
        .expect("a valid URL")
        .timeout(Duration::from_mins(10));
    let channel = background.run(async move { endpoint.connect().await.expect("the proxy") });
    let mut calls = Vec::new();
    for _ in 0..BIG_JOBS {
        let mut client = Client::new(channel.clone());
        calls.push(background.spawn(async move {
            let mut request = activate_request("abuse-big", Duration::from_secs(1));
            request.max_jobs_to_activate = 1;
            let _ = client.activate_jobs(request).await;
        }));
    }
    for _ in 0..DEAF_CREATIONS {
        let mut client = Client::new(channel.clone());
        calls.push(background.spawn(async move {
            let request = pb::CreateProcessInstanceRequest {
                bpmn_process_id: "one_task".to_owned(),
                version: -1,
                ..pb::CreateProcessInstanceRequest::default()
            };
            let _ = client.create_process_instance(request).await;
        }));
    }
    cluster.wait_until("the deaf client's requests to reach broker 0", WAIT, || {
        let forwarded = proxy.forwarded_bytes();
        if forwarded > 5_000 {
            Ok(())
        } else {
            Err(format!("{forwarded} bytes forwarded"))
        }
    });
    cluster.wait_until(
        "broker 0 to close the connection of the client that never reads",
        WAIT,
        || metric_is(cluster, 0, "sluice_gateway_connections_open", 0.0),
    );
    cluster.note(&format!(
        "the deaf client's connection was closed after {} request bytes ({} closed for a \
         stalled write so far)",
        proxy.forwarded_bytes(),
        cluster
            .metric(0, "sluice_gateway_connections_stalled_total")
            .unwrap_or(f64::NAN)
    ));
    drop(calls);
    drop((channel, proxy));
    serving::assert_still_serving(cluster, runtime, PORT_OFFSET);
}

/// Raw appends to broker 0 whose answers are never read; a malformed frame.
fn raw_appends_never_read(cluster: &Cluster, runtime: &Runtime) {
    let addr = cluster.brokers[0].command_api();
    // Appends to a partition that does not exist: each is answered `Invalid` at once, a
    // hundred-odd bytes for thirty sent, and nothing is written to any log.
    let mut batch = Vec::new();
    for request_id in 0..10_000u64 {
        client_api::encode_append(request_id, 999, &[0u8], &mut batch);
    }
    let mut stream = connect(addr);
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("a write timeout");
    let mut written = 0usize;
    let stalled = loop {
        match stream.write(&batch) {
            Ok(count) => written += count,
            Err(error) => break error,
        }
        assert!(
            written < 1 << 30,
            "the server went on reading 1 GiB of requests it could not answer"
        );
    };
    cluster.note(&format!(
        "the raw-append API stopped reading after {written} bytes ({stalled})"
    ));
    // While it is stalled, broker 0's shard serves.
    let mut client = serving::client(runtime, PORT_OFFSET, 0);
    serving::creations_on_every_partition(runtime, &mut client, PARTITIONS, 10);
    drop(client);
    cluster.wait_until(
        "the raw-append API to close the connection that never reads",
        WAIT,
        || closed_or(&stream, "still open"),
    );
    drop(stream);

    // A malformed frame: a body length of 0.
    let mut stream = connect(addr);
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(CALL_DEADLINE))
        .expect("a read timeout");
    stream.write_all(&[0u8; 8]).expect("sent");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let mut decoder = ResponseDecoder::new();
    decoder.push(&answer);
    match decoder.next_response() {
        Ok(Some(Response::Invalid { message, .. })) => {
            assert!(message.contains("malformed"), "{message}");
        }
        other => panic!("a malformed frame is answered Invalid: {other:?}"),
    }
    serving::assert_still_serving(cluster, runtime, PORT_OFFSET);
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The outcome of a refused call.
const EXHAUSTED: &str = "ResourceExhausted";

/// Outcomes of calls, counted by name.
#[derive(Debug, Default, Clone)]
struct Outcomes(Arc<Mutex<BTreeMap<String, usize>>>);

impl Outcomes {
    fn add(&self, outcome: String) {
        *self
            .0
            .lock()
            .expect("no panic holding it")
            .entry(outcome)
            .or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<String, usize> {
        self.0.lock().expect("no panic holding it").clone()
    }
}

/// A tokio runtime driven by its own thread: the abusive clients' connections answer the
/// gateway's keep-alive while the test thread blocks.
struct Background {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("abusive-clients".to_owned())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })
            .expect("a thread");
        Background {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) -> AbortOnDrop {
        AbortOnDrop(self.handle.spawn(future))
    }

    /// Runs `future` in the background; its output arrives on the receiver.
    fn spawn_with_result<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> std::sync::mpsc::Receiver<T> {
        let (sender, receiver) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver
    }

    /// Runs `future` in the background and waits (up to [`WAIT`]) for its output.
    fn run<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> T {
        self.spawn_with_result(future)
            .recv_timeout(WAIT)
            .expect("the background task finishes")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A background task, cancelled when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Raises this process's soft limit of open files to its hard limit (the brokers inherit it)
/// and checks it is enough.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid `rlimit` for the call to fill.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) };
    assert_eq!(got, 0, "getrlimit: {}", std::io::Error::last_os_error());
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid `rlimit`; raising the soft limit up to the hard one is allowed.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) };
    assert_eq!(set, 0, "setrlimit: {}", std::io::Error::last_os_error());
    assert!(
        limit.rlim_cur >= FDS_NEEDED,
        "the test needs {FDS_NEEDED} open files; the hard limit is {} (raise `ulimit -Hn`)",
        limit.rlim_cur
    );
}

fn gateway_addr(index: u32) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], dev::port(GATEWAY_PORT, PORT_OFFSET, index)))
}

/// A plain TCP connection to `addr` (the listen backlog may make it wait).
fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, CALL_DEADLINE)
        .unwrap_or_else(|error| panic!("connecting to {addr}: {error}"));
    stream.set_nonblocking(true).expect("non-blocking");
    stream
}

/// Whether the server closed `stream`: what it sent is read and dropped; the end of the stream
/// or a reset says closed, nothing more to read says open.
fn closed(mut stream: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// `TCP_ESTABLISHED` in the kernel's `tcp_states.h`.
const TCP_ESTABLISHED: u8 = 1;

/// Whether the server closed `stream` without reading from it: the kernel's view of the
/// connection (a client that reads nothing cannot see the end of its stream behind the unread
/// answers).
fn closed_or(stream: &TcpStream, open: &str) -> Result<(), String> {
    // SAFETY: `info` is a plain C struct the call fills up to `len` bytes; the descriptor is
    // the stream's, open for the duration of the call.
    let state = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>())
            .expect("a small struct");
        let result = libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        );
        assert_eq!(result, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        info.tcpi_state
    };
    if state == TCP_ESTABLISHED {
        Err(open.to_owned())
    } else {
        Ok(())
    }
}

fn as_f64(count: usize) -> f64 {
    f64::from(u32::try_from(count).expect("a small count"))
}

/// Broker `index`'s metric `name`, a count.
fn metric_count(cluster: &Cluster, index: usize, name: &str) -> Result<usize, String> {
    let value = cluster.metric(index, name)?;
    let rounded = value.round();
    if !(0.0..=f64::from(u32::MAX)).contains(&rounded) {
        return Err(format!("broker {index}: {name} is {value}, not a count"));
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked to be a whole number within u32"
    )]
    Ok(rounded as usize)
}

/// `Ok` when broker `index`'s metric `name` is `value`.
fn metric_is(cluster: &Cluster, index: usize, name: &str, value: f64) -> Result<(), String> {
    let seen = cluster.metric(index, name)?;
    if (seen - value).abs() < 0.5 {
        Ok(())
    } else {
        Err(format!("broker {index}: {name} is {seen}, not {value}"))
    }
}

async fn connect_gateway(index: u32) -> tonic::transport::Channel {
    let endpoint = gateway::plain_endpoint(PORT_OFFSET, index, Duration::from_mins(20));
    gateway::connect(&endpoint, CALL_DEADLINE).await
}

fn activate_request(job_type: &str, request_timeout: Duration) -> pb::ActivateJobsRequest {
    pb::ActivateJobsRequest {
        r#type: job_type.to_owned(),
        worker: "abuse".to_owned(),
        timeout: 60_000,
        max_jobs_to_activate: 10,
        fetch_variable: Vec::new(),
        request_timeout: i64::try_from(request_timeout.as_millis()).expect("a short timeout"),
        tenant_ids: Vec::new(),
    }
}

/// One long poll: the code it was refused with, or `empty` / `jobs` for how it ended.
async fn long_poll(mut client: Client, job_type: &str, request_timeout: Duration) -> String {
    let request = with_deadline(
        activate_request(job_type, request_timeout),
        request_timeout + CALL_DEADLINE,
    );
    match client.activate_jobs(request).await {
        Err(status) if status.message().contains("gateway.longPolling.maxPolls") => {
            format!("{:?} (maxPolls)", status.code())
        }
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
        Ok(response) => {
            let mut stream = response.into_inner();
            let mut jobs = 0;
            loop {
                match stream.message().await {
                    Ok(Some(batch)) => jobs += batch.jobs.len(),
                    Ok(None) if jobs == 0 => return "empty".to_owned(),
                    Ok(None) => return "jobs".to_owned(),
                    Err(status) => return format!("stream {:?}", status.code()),
                }
            }
        }
    }
}

/// Deploys a copy of `one_task.bpmn` as `process`, its task of type `job_type`.
fn deploy_task_process(runtime: &Runtime, client: &mut Client, process: &str, job_type: &str) {
    let bpmn = String::from_utf8(gateway::bpmn("one_task.bpmn")).expect("UTF-8");
    let bpmn = bpmn
        .replace("\"one_task\"", &format!("\"{process}\""))
        .replace("type=\"work\"", &format!("type=\"{job_type}\""));
    let request = pb::DeployResourceRequest {
        resources: vec![pb::Resource {
            name: format!("{process}.bpmn"),
            content: bpmn.into_bytes(),
        }],
        tenant_id: String::new(),
    };
    runtime
        .block_on(client.deploy_resource(with_deadline(request, CALL_DEADLINE)))
        .unwrap_or_else(|status| panic!("deploying {process}: {status:?}"));
}

/// A proxy for one connection that forwards what the client sends and nothing back: to the
/// server, a client that never reads.
struct DeafProxy {
    addr: SocketAddr,
    forwarded: Arc<std::sync::atomic::AtomicUsize>,
    _task: AbortOnDrop,
}

impl DeafProxy {
    fn forwarded_bytes(&self) -> usize {
        self.forwarded.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn deaf_proxy(upstream: SocketAddr) -> DeafProxy {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("bound");
    let forwarded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&forwarded);
    let task = tokio::spawn(async move {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
            return;
        };
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let read = match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if server.write_all(&buf[..read]).await.is_err() {
                break;
            }
            counter.fetch_add(read, std::sync::atomic::Ordering::Relaxed);
        }
        // Hold both ends, reading nothing from the server, until the test drops the proxy.
        std::future::pending::<()>().await;
        drop((client, server));
    });
    DeafProxy {
        addr,
        forwarded,
        _task: AbortOnDrop(task),
    }
}
