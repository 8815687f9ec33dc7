//! The gateway workload's driver: tokio tasks speaking the Zeebe gRPC protocol, feeding one
//! shared [`Tracker`].
//!
//! [`run`] connects (two HTTP/2 connections: one for creations, one for the workers), deploys
//! [`BPMN`], then runs until the measured window ends:
//!
//! - creators: `--in-flight` tasks each sending `CreateProcessInstance` back to back
//!   (`--rate 0`), or one scheduler starting creation `i` at `run start + i / rate`, each in its
//!   own task, whose latency counts from that scheduled time (no coordinated omission);
//! - `--workers` workers, each holding at most [`JOBS_IN_HAND_MAX`] jobs: a
//!   `StreamActivatedJobs` stream (reopened when it breaks) plus one slow fallback poll for
//!   jobs nobody pushed, or `ActivateJobs` long polls; every job is completed with `CompleteJob`;
//! - a progress line on stderr once a second.
//!
//! After the window no instance is started; the run waits up to [`DRAIN_MAX`] for the
//! window's instances to complete, then stops every task.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use sluice_broker::gateway::proto::gateway_protocol as pb;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::args::{Activation, GatewayArgs};
use super::tracker::{INSTANCES_TRACKED_MAX, Measurements, Rpc, Tracker};

type Client = pb::gateway_client::GatewayClient<Channel>;
type Shared = Arc<Mutex<Tracker>>;

/// The deployed process's id.
pub const BPMN_PROCESS_ID: &str = "sluice-bench";
/// Its service task's job type.
pub const JOB_TYPE: &str = "bench-task";
/// The resource name it is deployed under.
pub const BPMN_RESOURCE_NAME: &str = "sluice-bench.bpmn";
/// start → service task (`bench-task`) → end, as Camunda Modeler writes it.
pub const BPMN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" xmlns:dc="http://www.omg.org/spec/DD/20100524/DC" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" xmlns:di="http://www.omg.org/spec/DD/20100524/DI" xmlns:modeler="http://camunda.org/schema/modeler/1.0" id="Definitions_sluice_bench" targetNamespace="http://bpmn.io/schema/bpmn" exporter="Camunda Modeler" exporterVersion="5.31.0" modeler:executionPlatform="Camunda Cloud" modeler:executionPlatformVersion="8.6.0">
  <bpmn:process id="sluice-bench" name="sluice-bench" isExecutable="true">
    <bpmn:startEvent id="start">
      <bpmn:outgoing>to_task</bpmn:outgoing>
    </bpmn:startEvent>
    <bpmn:sequenceFlow id="to_task" sourceRef="start" targetRef="task" />
    <bpmn:serviceTask id="task" name="Bench task">
      <bpmn:extensionElements>
        <zeebe:taskDefinition type="bench-task" retries="3" />
      </bpmn:extensionElements>
      <bpmn:incoming>to_task</bpmn:incoming>
      <bpmn:outgoing>to_end</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:endEvent id="end">
      <bpmn:incoming>to_end</bpmn:incoming>
    </bpmn:endEvent>
    <bpmn:sequenceFlow id="to_end" sourceRef="task" targetRef="end" />
  </bpmn:process>
  <bpmndi:BPMNDiagram id="BPMNDiagram_1">
    <bpmndi:BPMNPlane id="BPMNPlane_1" bpmnElement="sluice-bench">
      <bpmndi:BPMNShape id="start_di" bpmnElement="start">
        <dc:Bounds x="180" y="142" width="36" height="36" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="task_di" bpmnElement="task">
        <dc:Bounds x="276" y="120" width="100" height="80" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="end_di" bpmnElement="end">
        <dc:Bounds x="436" y="142" width="36" height="36" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNEdge id="to_task_di" bpmnElement="to_task">
        <di:waypoint x="216" y="160" />
        <di:waypoint x="276" y="160" />
      </bpmndi:BPMNEdge>
      <bpmndi:BPMNEdge id="to_end_di" bpmnElement="to_end">
        <di:waypoint x="376" y="160" />
        <di:waypoint x="436" y="160" />
      </bpmndi:BPMNEdge>
    </bpmndi:BPMNPlane>
  </bpmndi:BPMNDiagram>
</bpmn:definitions>
"#;

/// How long connecting to the gateway may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The deadline of each unary RPC (sent as `grpc-timeout`).
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra client-side wait beyond a deadline, so the gateway's own answer arrives first.
const RPC_MARGIN: Duration = Duration::from_secs(1);
/// How long the deployment is retried while the gateway answers UNAVAILABLE (no leaders yet).
const DEPLOY_DEADLINE: Duration = Duration::from_secs(30);
/// Pause before reopening a broken job stream, re-polling after a failed poll, or retrying
/// the deployment.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Pause of a `--rate 0` creator after a refused creation (backpressure).
const CREATE_BACKOFF: Duration = Duration::from_millis(5);
/// Pause of a creator while [`INSTANCES_TRACKED_MAX`] instances are tracked.
const TRACKED_FULL_BACKOFF: Duration = Duration::from_millis(10);
/// Longest a closed-loop creator waits for a completion before it looks again.
const ROOM_WAIT_MAX: Duration = Duration::from_millis(50);
/// Jobs a worker holds (activated or pushed, not yet completed) at most; also each poll's
/// `maxJobsToActivate`.
pub const JOBS_IN_HAND_MAX: usize = 32;
/// How long an activated job stays locked to its worker, in ms.
const JOB_TIMEOUT_MS: i64 = 30_000;
/// The long poll of `--activate poll`, in ms.
const POLL_REQUEST_TIMEOUT_MS: i64 = 10_000;
/// How often a streaming run polls (without waiting) for jobs nobody pushed: jobs created
/// before the streams opened, or left over by an earlier run.
const FALLBACK_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Creations of `--rate N` awaiting their answer at most; the schedule waits above it (and
/// latency still counts from the scheduled time).
const OPEN_LOOP_IN_FLIGHT_MAX: usize = 10_000;
/// How long the run waits after the window for the window's instances to complete.
pub const DRAIN_MAX: Duration = Duration::from_secs(10);
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// How long the run waits for the job streams to open before it starts creating instances
/// (jobs created before a stream opens are found by the fallback poll only).
const STREAMS_OPEN_WAIT: Duration = Duration::from_secs(5);
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

fn lock(tracker: &Shared) -> MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The gRPC code name of `status`; tonic's own client-side deadline surfaces as CANCELLED
/// "Timeout expired" and is counted as `DEADLINE_EXCEEDED`.
fn code_of(status: &Status) -> &'static str {
    if status.code() == Code::Cancelled && status.message() == "Timeout expired" {
        return "DEADLINE_EXCEEDED";
    }
    crate::ctl::code_name(status.code())
}

fn request<T>(body: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(body);
    request.set_timeout(timeout);
    request
}

/// Awaits `call`, giving up [`RPC_MARGIN`] after `timeout`.
async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(timeout + RPC_MARGIN, call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded("no answer in time")),
    }
}

/// Connects to the gateway, or says why not.
async fn connect(args: &GatewayArgs) -> Result<Client> {
    let endpoint = Endpoint::from_shared(args.gateway_url())
        .with_context(|| format!("--gateway {:?} is not a URL", args.gateway))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let not_reached = || {
        format!(
            "cannot reach the gateway at {}: is `sluice dev` running? (name another with \
             --gateway HOST:PORT)",
            args.gateway
        )
    };
    let channel = tokio::time::timeout(CONNECT_TIMEOUT + RPC_MARGIN, endpoint.connect())
        .await
        .map_err(|_| anyhow!("no connection within {} s", CONNECT_TIMEOUT.as_secs()))
        .with_context(not_reached)?
        .with_context(not_reached)?;
    Ok(Client::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

/// Deploys [`BPMN`], retrying while the cluster is not ready; returns its process key.
async fn deploy(client: &mut Client) -> Result<i64> {
    let deadline = Instant::now() + DEPLOY_DEADLINE;
    loop {
        let body = pb::DeployResourceRequest {
            resources: vec![pb::Resource {
                name: BPMN_RESOURCE_NAME.to_owned(),
                content: BPMN.as_bytes().to_vec(),
            }],
            tenant_id: String::new(),
        };
        let status = match within(
            RPC_TIMEOUT,
            client.deploy_resource(request(body, RPC_TIMEOUT)),
        )
        .await
        {
            Ok(response) => {
                let key = response
                    .deployments
                    .iter()
                    .find_map(|deployment| match &deployment.metadata {
                        Some(pb::deployment::Metadata::Process(process)) => {
                            Some(process.process_definition_key)
                        }
                        _ => None,
                    })
                    .ok_or_else(|| {
                        anyhow!("the gateway deployed the bench process but named no process")
                    })?;
                return Ok(key);
            }
            Err(status) => status,
        };
        let retriable = matches!(
            status.code(),
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded
        );
        if !retriable || Instant::now() >= deadline {
            bail!(
                "deploying the bench process: {}: {}",
                code_of(&status),
                status.message()
            );
        }
        tokio::time::sleep(RETRY_BACKOFF).await;
    }
}

/// Sends one creation whose latency counts from `started_at`; false if it failed.
async fn create_one(client: &mut Client, tracker: &Shared, started_at: Instant) -> bool {
    let body = pb::CreateProcessInstanceRequest {
        bpmn_process_id: BPMN_PROCESS_ID.to_owned(),
        version: -1,
        ..Default::default()
    };
    let sent_at = Instant::now();
    let answer = within(
        RPC_TIMEOUT,
        client.create_process_instance(request(body, RPC_TIMEOUT)),
    )
    .await;
    let now = Instant::now();
    let mut tracker = lock(tracker);
    match answer {
        Ok(response) => {
            tracker.handle_rpc(Rpc::CreateProcessInstance, now - sent_at);
            tracker.handle_created(response.process_instance_key, started_at, now);
            true
        }
        Err(status) => {
            tracker.handle_error(Rpc::CreateProcessInstance, code_of(&status));
            false
        }
    }
}

/// Waits while the tracker is full (the workers are far behind).
async fn wait_for_room(tracker: &Shared) {
    while lock(tracker).tracked() >= INSTANCES_TRACKED_MAX {
        tokio::time::sleep(TRACKED_FULL_BACKOFF).await;
    }
}

/// Woken whenever an instance completes: closed-loop creators wait on it for room.
static ROOM: Notify = Notify::const_new();

/// `--rate 0`: creates instances until `until`, keeping at most `in_flight` instances started
/// and not completed (creations awaiting their answer included; `creating` counts those of
/// every creator).
async fn closed_loop_creator(
    mut client: Client,
    tracker: Shared,
    until: Instant,
    in_flight: u64,
    creating: Arc<AtomicU64>,
) {
    while Instant::now() < until {
        loop {
            let notified = ROOM.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&tracker).in_progress() + creating.load(Ordering::Relaxed) < in_flight {
                break;
            }
            let _ = tokio::time::timeout(ROOM_WAIT_MAX, notified).await;
            if Instant::now() >= until {
                return;
            }
        }
        wait_for_room(&tracker).await;
        creating.fetch_add(1, Ordering::Relaxed);
        let created = create_one(&mut client, &tracker, Instant::now()).await;
        creating.fetch_sub(1, Ordering::Relaxed);
        if !created {
            tokio::time::sleep(CREATE_BACKOFF).await;
        }
    }
}

/// `--rate N`: creation `i` scheduled at `start + i / rate`, until `until`.
async fn open_loop_creator(client: Client, tracker: Shared, rate: u32, start: Instant) {
    assert!(rate > 0);
    let until = lock(&tracker).measure_until();
    let permits = Arc::new(Semaphore::new(OPEN_LOOP_IN_FLIGHT_MAX));
    let mut creations = JoinSet::new();
    for i in 0u64.. {
        let scheduled = start + Duration::from_nanos(i * 1_000_000_000 / u64::from(rate));
        if scheduled >= until {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        wait_for_room(&tracker).await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break; // never closed
        };
        while creations.try_join_next().is_some() {}
        let (mut client, tracker) = (client.clone(), Arc::clone(&tracker));
        creations.spawn(async move {
            create_one(&mut client, &tracker, scheduled).await;
            drop(permit);
        });
    }
    while creations.join_next().await.is_some() {}
}

/// Completes `job`; its instance is then complete.
async fn complete(mut client: Client, tracker: Shared, job: pb::ActivatedJob) {
    let body = pb::CompleteJobRequest {
        job_key: job.key,
        variables: String::new(),
    };
    let sent_at = Instant::now();
    let answer = within(RPC_TIMEOUT, client.complete_job(request(body, RPC_TIMEOUT))).await;
    let now = Instant::now();
    let mut tracker = lock(&tracker);
    match answer {
        Ok(_) => {
            tracker.handle_rpc(Rpc::CompleteJob, now - sent_at);
            tracker.handle_completed(job.process_instance_key, now);
            drop(tracker);
            ROOM.notify_waiters();
        }
        Err(status) => tracker.handle_error(Rpc::CompleteJob, code_of(&status)),
    }
}

fn worker_name(index: u32) -> String {
    format!("sluice-bench-{index}")
}

/// Sleeps `pause` unless `stop` comes first; false on stop.
async fn pause_unless_stopped(stop: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => false,
        () = tokio::time::sleep(pause) => true,
    }
}

/// One `StreamActivatedJobs` worker: completes each pushed job in its own task, at most
/// [`JOBS_IN_HAND_MAX`] at a time (beyond that it stops reading, and HTTP/2 flow control
/// holds the gateway back).
async fn stream_worker(
    index: u32,
    client: Client,
    tracker: Shared,
    streams_open: Arc<AtomicU32>,
    mut stop: watch::Receiver<bool>,
) {
    let mut stream_client = client.clone();
    let mut counted = false;
    let permits = Arc::new(Semaphore::new(JOBS_IN_HAND_MAX));
    let mut completions = JoinSet::new();
    'reopen: while !*stop.borrow() {
        let body = pb::StreamActivatedJobsRequest {
            r#type: JOB_TYPE.to_owned(),
            worker: worker_name(index),
            timeout: JOB_TIMEOUT_MS,
            fetch_variable: Vec::new(),
            tenant_ids: Vec::new(),
        };
        let answer = tokio::select! {
            _ = stop.changed() => break,
            answer = stream_client.stream_activated_jobs(body) => answer,
        };
        let mut stream = match answer {
            Ok(response) => {
                if !counted {
                    streams_open.fetch_add(1, Ordering::Relaxed);
                    counted = true;
                }
                response.into_inner()
            }
            Err(status) => {
                lock(&tracker).handle_error(Rpc::StreamActivatedJobs, code_of(&status));
                if !pause_unless_stopped(&mut stop, RETRY_BACKOFF).await {
                    break;
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.changed() => break 'reopen,
                next = stream.message() => next,
            };
            let code = match next {
                Ok(Some(job)) => {
                    lock(&tracker).handle_job_received(job.process_instance_key, Instant::now());
                    let permit = tokio::select! {
                        _ = stop.changed() => break 'reopen,
                        permit = Arc::clone(&permits).acquire_owned() => permit,
                    };
                    let Ok(permit) = permit else { break 'reopen };
                    while completions.try_join_next().is_some() {}
                    let (client, tracker) = (client.clone(), Arc::clone(&tracker));
                    completions.spawn(async move {
                        complete(client, tracker, job).await;
                        drop(permit);
                    });
                    continue;
                }
                // The gateway closed the stream: counted, and reopened.
                Ok(None) => "STREAM_CLOSED",
                Err(status) => code_of(&status),
            };
            lock(&tracker).handle_error(Rpc::StreamActivatedJobs, code);
            if !pause_unless_stopped(&mut stop, RETRY_BACKOFF).await {
                break 'reopen;
            }
            continue 'reopen;
        }
    }
}

/// One `ActivateJobs` call, read to its end; the jobs in the order received.
async fn activate(
    client: &mut Client,
    tracker: &Shared,
    worker: String,
    request_timeout_ms: i64,
) -> Result<Vec<pb::ActivatedJob>, Status> {
    let body = pb::ActivateJobsRequest {
        r#type: JOB_TYPE.to_owned(),
        worker,
        timeout: JOB_TIMEOUT_MS,
        max_jobs_to_activate: i32::try_from(JOBS_IN_HAND_MAX).unwrap_or(i32::MAX),
        fetch_variable: Vec::new(),
        request_timeout: request_timeout_ms,
        tenant_ids: Vec::new(),
    };
    let long_poll = Duration::from_millis(u64::try_from(request_timeout_ms).unwrap_or(0));
    let timeout = long_poll + RPC_TIMEOUT;
    let read_all = async {
        let mut stream = client
            .activate_jobs(request(body, timeout))
            .await?
            .into_inner();
        let mut jobs = Vec::new();
        while let Some(response) = stream.message().await? {
            let now = Instant::now();
            let mut tracker = lock(tracker);
            for job in &response.jobs {
                tracker.handle_job_received(job.process_instance_key, now);
            }
            drop(tracker);
            jobs.extend(response.jobs);
        }
        Ok(jobs)
    };
    match tokio::time::timeout(timeout + RPC_MARGIN, read_all).await {
        Ok(answer) => answer,
        Err(_) => Err(Status::deadline_exceeded("no answer in time")),
    }
}

/// Completes `jobs`, all at once, and waits for the answers; false on stop.
async fn complete_all(
    client: &Client,
    tracker: &Shared,
    jobs: Vec<pb::ActivatedJob>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut completions = JoinSet::new();
    for job in jobs {
        completions.spawn(complete(client.clone(), Arc::clone(tracker), job));
    }
    loop {
        tokio::select! {
            _ = stop.changed() => return false,
            next = completions.join_next() => if next.is_none() { return true },
        }
    }
}

/// One `ActivateJobs` long-polling worker: activate up to [`JOBS_IN_HAND_MAX`], complete them
/// all, again.
async fn poll_worker(
    index: u32,
    mut client: Client,
    tracker: Shared,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let sent_at = Instant::now();
        let answer = tokio::select! {
            _ = stop.changed() => break,
            answer = activate(&mut client, &tracker, worker_name(index), POLL_REQUEST_TIMEOUT_MS) => answer,
        };
        match answer {
            Ok(jobs) => {
                lock(&tracker).handle_rpc(Rpc::ActivateJobs, sent_at.elapsed());
                if !complete_all(&client, &tracker, jobs, &mut stop).await {
                    break;
                }
            }
            Err(status) => {
                lock(&tracker).handle_error(Rpc::ActivateJobs, code_of(&status));
                if !pause_unless_stopped(&mut stop, RETRY_BACKOFF).await {
                    break;
                }
            }
        }
    }
}

/// With `--activate stream`: every [`FALLBACK_POLL_INTERVAL`], activates (without waiting) and
/// completes the jobs nobody pushed. Their latency is not recorded as `ActivateJobs`.
async fn fallback_poller(mut client: Client, tracker: Shared, mut stop: watch::Receiver<bool>) {
    loop {
        if !pause_unless_stopped(&mut stop, FALLBACK_POLL_INTERVAL).await {
            break;
        }
        let answer = tokio::select! {
            _ = stop.changed() => break,
            answer = activate(&mut client, &tracker, "sluice-bench-fallback".to_owned(), -1) => answer,
        };
        match answer {
            Ok(jobs) => {
                lock(&tracker).handle_fallback_jobs(jobs.len() as u64);
                if !complete_all(&client, &tracker, jobs, &mut stop).await {
                    break;
                }
            }
            Err(status) => lock(&tracker).handle_error(Rpc::ActivateJobs, code_of(&status)),
        }
    }
}

/// One progress line: elapsed seconds, phase, created/s, completed/s, p99 of the last second,
/// errors so far.
#[must_use]
pub fn progress_line(
    elapsed: Duration,
    phase: &str,
    created_per_s: f64,
    completed_per_s: f64,
    p99_us: u64,
    errors: u64,
) -> String {
    let p99 = if p99_us == 0 {
        "-".to_owned()
    } else {
        format!("{:.1} ms", super::report::ms(p99_us))
    };
    format!(
        "{:>5.0} s {phase:<7} created {created_per_s:>7.0}/s  completed {completed_per_s:>7.0}/s  \
         p99 {p99:>9}  errors {errors}",
        elapsed.as_secs_f64()
    )
}

async fn progress(tracker: Shared, start: Instant, mut stop: watch::Receiver<bool>) {
    let tty = std::io::stderr().is_terminal();
    let (measure_from, measure_until) = {
        let tracker = lock(&tracker);
        (tracker.measure_from(), tracker.measure_until())
    };
    let mut ticker =
        tokio::time::interval_at((start + PROGRESS_INTERVAL).into(), PROGRESS_INTERVAL);
    let mut last = (start, 0u64, 0u64);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let progress = {
            let mut tracker = lock(&tracker);
            tracker.prune(now);
            tracker.take_progress()
        };
        let seconds = now
            .duration_since(last.0)
            .as_secs_f64()
            .max(f64::MIN_POSITIVE);
        #[expect(
            clippy::cast_precision_loss,
            reason = "per-second counts far below 2^52"
        )]
        let (created, completed) = (
            (progress.created - last.1) as f64 / seconds,
            (progress.completed - last.2) as f64 / seconds,
        );
        let interval_start = last.0;
        last = (now, progress.created, progress.completed);
        let phase = if interval_start < measure_from {
            "warmup"
        } else if interval_start < measure_until {
            "measure"
        } else {
            "drain"
        };
        let line = progress_line(
            now.duration_since(start),
            phase,
            created,
            completed,
            progress.interval_p99_us,
            progress.errors,
        );
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
    if tty {
        eprintln!();
    }
}

/// Runs the workload (see the module docs).
///
/// # Errors
///
/// When the gateway cannot be reached or refuses the deployment, or a task panics. Failed
/// RPCs during the run are counted, never errors.
pub async fn run(args: &GatewayArgs) -> Result<Measurements> {
    let creator_client = connect(args).await?;
    let process_key = deploy(&mut creator_client.clone()).await?;
    log::debug!("deployed {BPMN_PROCESS_ID} as process {process_key}");
    let worker_client = connect(args).await?;

    // The clock starts once the workers are ready (until then, only jobs left over by earlier
    // runs can arrive).
    let placeholder = Instant::now();
    let tracker: Shared = Arc::new(Mutex::new(Tracker::new(
        placeholder,
        placeholder,
        Duration::ZERO,
    )));
    let (stop_sender, stop) = watch::channel(false);
    let streams_open = Arc::new(AtomicU32::new(0));
    let mut background = JoinSet::new();
    for index in 0..args.workers {
        let (client, tracker, stop) = (worker_client.clone(), Arc::clone(&tracker), stop.clone());
        match args.activation {
            Activation::Stream => background.spawn(stream_worker(
                index,
                client,
                tracker,
                Arc::clone(&streams_open),
                stop,
            )),
            Activation::Poll => background.spawn(poll_worker(index, client, tracker, stop)),
        };
    }
    if args.activation == Activation::Stream {
        let deadline = Instant::now() + STREAMS_OPEN_WAIT;
        while streams_open.load(Ordering::Relaxed) < args.workers && Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        background.spawn(fallback_poller(
            worker_client.clone(),
            Arc::clone(&tracker),
            stop.clone(),
        ));
    }
    let start = Instant::now();
    let until = {
        let mut tracker = lock(&tracker);
        tracker.restart(start, start + args.warmup(), args.duration());
        tracker.measure_until()
    };
    background.spawn(progress(Arc::clone(&tracker), start, stop.clone()));

    if args.rate == 0 {
        let mut creators = JoinSet::new();
        let creating = Arc::new(AtomicU64::new(0));
        for _ in 0..args.in_flight {
            creators.spawn(closed_loop_creator(
                creator_client.clone(),
                Arc::clone(&tracker),
                until,
                u64::from(args.in_flight),
                Arc::clone(&creating),
            ));
        }
        while let Some(joined) = creators.join_next().await {
            joined.context("a creator task failed")?;
        }
    } else {
        open_loop_creator(creator_client, Arc::clone(&tracker), args.rate, start).await;
    }

    let drain_until = Instant::now() + DRAIN_MAX;
    while lock(&tracker).pending_measured() > 0 && Instant::now() < drain_until {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let _ = stop_sender.send(true);
    while let Some(joined) = background.join_next().await {
        joined.context("a worker task failed")?;
    }
    let measurements = lock(&tracker).finish(Instant::now());
    Ok(measurements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_is_a_one_task_bpmn() {
        assert!(BPMN.contains(r#"<bpmn:process id="sluice-bench""#));
        assert!(BPMN.contains(r#"<zeebe:taskDefinition type="bench-task""#));
        assert_eq!(BPMN.matches("<bpmn:serviceTask ").count(), 1);
    }

    #[test]
    fn progress_lines_say_rate_latency_and_errors() {
        let line = progress_line(Duration::from_secs(3), "measure", 1234.4, 1200.0, 12_345, 7);
        assert!(line.contains("3 s measure"), "{line}");
        assert!(line.contains("created    1234/s"), "{line}");
        assert!(line.contains("completed    1200/s"), "{line}");
        assert!(line.contains("p99   12.3 ms"), "{line}");
        assert!(line.ends_with("errors 7"), "{line}");
        assert!(progress_line(Duration::ZERO, "warmup", 0.0, 0.0, 0, 0).contains("p99         -"));
    }

    #[test]
    fn connection_failure_is_a_clear_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        drop(listener);
        let args = GatewayArgs {
            gateway: addr.to_string(),
            ..GatewayArgs::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let error = runtime.block_on(run(&args)).expect_err("nobody listens");
        let message = format!("{error:#}");
        assert!(
            message.contains(&format!("cannot reach the gateway at {addr}")),
            "{message}"
        );
        assert!(message.contains("sluice dev"), "{message}");
    }
}
