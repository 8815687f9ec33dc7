//! The chaos test's clients: on a thread of its own (the test's thread injects the faults), a
//! tokio runtime runs, for each gateway, one gRPC client shared by [`CREATORS_PER_GATEWAY`]
//! creators and one job worker, and records every call and its answer in [`Records`].
//!
//! - A creator creates `one_task` instances one after another, each with the variable
//!   `creation` set to a number unique in the run, until [`Workload::stop_creating`].
//! - A worker long-polls `ActivateJobs` for `work` jobs (with the `creation` variable) and
//!   completes each job in a task of its own. A completion that may or may not have taken effect
//!   (no answer, `UNAVAILABLE`, `DEADLINE_EXCEEDED`) is sent again, as a worker that wants its
//!   job done would, until it is answered `OK`, or `NOT_FOUND` (the job is gone: completed),
//!   or [`Workload::stop`] (or five minutes have passed, beyond the test's drain).
//!
//! Every call has a gRPC deadline, and the client gives up on it [`CLIENT_MARGIN`] after that,
//! so a call to a frozen broker ends.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_broker::gateway::proto::gateway_protocol as pb;
use tokio::task::JoinSet;
use tonic::Code;

use crate::common::gateway::{self, Client};

/// The process of `engine/testdata/bpmn/one_task.bpmn` and its task's job type.
pub const PROCESS: &str = "one_task";
/// The job type of `one_task`'s service task.
pub const JOB_TYPE: &str = "work";
/// The variable that names a creation in its instance.
pub const CREATION_VARIABLE: &str = "creation";

/// gRPC deadline of a creation: room for an election and a hop to another partition.
pub const CREATE_DEADLINE: Duration = Duration::from_secs(15);
/// gRPC deadline of a completion.
const COMPLETE_DEADLINE: Duration = Duration::from_secs(10);
/// `requestTimeout` of an activation: how long it long-polls when no job is there.
const LONG_POLL: Duration = Duration::from_secs(2);
/// gRPC deadline of an activation.
const ACTIVATE_DEADLINE: Duration = Duration::from_secs(10);
/// How long an activated job belongs to its worker: jobs of lost activations come back after
/// this.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(8);
/// How long after a call's deadline the client stops waiting for its answer.
pub const CLIENT_MARGIN: Duration = Duration::from_secs(3);
/// How long a gateway may take to accept the first connection.
const CONNECT_WAIT: Duration = Duration::from_secs(30);
/// Client-side bound of the channels: above every deadline, so each call's own bound applies.
const CHANNEL_TIMEOUT: Duration = Duration::from_mins(1);

/// Creators per gateway, each with one creation in flight at a time.
const CREATORS_PER_GATEWAY: usize = 2;
/// Pause of a creator between two creations.
const CREATE_PAUSE: Duration = Duration::from_millis(40);
/// Pause of a creator after a failed creation (a dead gateway refuses connections at once).
const CREATE_FAILURE_PAUSE: Duration = Duration::from_millis(250);
/// Jobs one activation asks for.
const JOBS_PER_ACTIVATION: i32 = 32;
/// Completion tasks one worker keeps in flight at most; it activates no more jobs above this.
const COMPLETIONS_IN_FLIGHT_MAX: usize = 128;
/// Pause of a worker after a failed activation.
const ACTIVATE_FAILURE_PAUSE: Duration = Duration::from_millis(200);
/// Pause before a completion whose outcome is unknown is sent again.
const COMPLETE_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How long a worker goes on sending a completion whose outcome is unknown: beyond the drain's
/// bound, so it never gives up on a job the test waits for.
const COMPLETE_GIVE_UP_AFTER: Duration = Duration::from_mins(5);

const PHASE_CREATING: u8 = 0;
const PHASE_DRAINING: u8 = 1;
const PHASE_STOPPED: u8 = 2;

/// Why a call did not succeed.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The gRPC code, or `None` when the client gave up waiting ([`CLIENT_MARGIN`]).
    pub code: Option<Code>,
    /// The message.
    pub message: String,
}

impl Refusal {
    fn of(status: &tonic::Status) -> Refusal {
        Refusal {
            code: Some(status.code()),
            message: status.message().to_owned(),
        }
    }

    fn hung(deadline: Duration) -> Refusal {
        Refusal {
            code: None,
            message: format!("no answer {CLIENT_MARGIN:?} after the {deadline:?} deadline"),
        }
    }

    /// The code's name, for counting.
    #[must_use]
    pub fn code_name(&self) -> String {
        self.code
            .map_or_else(|| "no answer".to_owned(), |code| format!("{code:?}"))
    }
}

/// One creation and its answer.
#[derive(Debug, Clone)]
pub struct Creation {
    /// The value of its `creation` variable.
    pub id: u64,
    /// The gateway (broker position) it was sent to.
    pub gateway: usize,
    /// When it was sent.
    pub sent: Instant,
    /// When its answer came (or the client gave up).
    pub answered: Instant,
    /// The instance key, or why not.
    pub outcome: Result<i64, Refusal>,
}

/// One job handed out by an activation.
#[derive(Debug, Clone)]
pub struct Activation {
    /// The gateway it came through.
    pub gateway: usize,
    /// When the activation that handed it out was sent.
    pub requested: Instant,
    /// The job.
    pub job_key: i64,
    /// Its instance.
    pub instance_key: i64,
    /// Its instance's `creation` variable, if it had a number there.
    pub creation: Option<u64>,
}

/// One completion attempt and its answer.
#[derive(Debug, Clone)]
pub struct CompletionAttempt {
    /// The gateway it was sent to.
    pub gateway: usize,
    /// The job.
    pub job_key: i64,
    /// Its instance.
    pub instance_key: i64,
    /// When it was sent.
    pub sent: Instant,
    /// When its answer came (or the client gave up).
    pub answered: Instant,
    /// `Ok`, or why not.
    pub outcome: Result<(), Refusal>,
}

/// Everything the clients did.
#[derive(Debug, Default)]
pub struct Records {
    /// Every creation sent.
    pub creations: Vec<Creation>,
    /// Every job handed out.
    pub activations: Vec<Activation>,
    /// Every completion attempt.
    pub completions: Vec<CompletionAttempt>,
    /// Activation calls that failed (their jobs, if any, come back after [`JOB_TIMEOUT`]).
    pub failed_activations: u64,
}

struct Shared {
    phase: AtomicU8,
    next_creation: AtomicU64,
    records: Mutex<Records>,
}

impl Shared {
    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }

    fn records(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running clients; stopping them is bounded.
pub struct Workload {
    shared: Arc<Shared>,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Workload {
    /// Starts the clients of the gateways of brokers `0..gateways` of a `sluice dev` layout at
    /// `port_offset`.
    #[must_use]
    pub fn start(port_offset: u32, gateways: usize) -> Workload {
        let shared = Arc::new(Shared {
            phase: AtomicU8::new(PHASE_CREATING),
            next_creation: AtomicU64::new(1),
            records: Mutex::new(Records::default()),
        });
        let (done_sender, done) = mpsc::channel();
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("chaos-workload".to_owned())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a tokio runtime");
                    runtime.block_on(run(shared, port_offset, gateways));
                    let _ = done_sender.send(());
                })
                .expect("starting the workload thread")
        };
        Workload {
            shared,
            done,
            thread: Some(thread),
        }
    }

    /// Runs `read` on the records so far.
    pub fn read<T>(&self, read: impl FnOnce(&Records) -> T) -> T {
        read(&self.shared.records())
    }

    /// Fails the test if the client thread ended before [`Workload::stop`] (it panicked).
    pub fn assert_running(&mut self) {
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            let thread = self.thread.take().expect("checked above");
            match thread.join() {
                Ok(()) => panic!("the workload thread ended before it was stopped"),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }

    /// Creators finish their creation in flight and stop; workers go on.
    pub fn stop_creating(&self) {
        self.shared.phase.store(PHASE_DRAINING, Ordering::Relaxed);
    }

    /// Stops everything (calls in flight finish or hit their bounds) and returns the records.
    #[must_use]
    pub fn stop(mut self) -> Records {
        self.shared.phase.store(PHASE_STOPPED, Ordering::Relaxed);
        let bound = CREATE_DEADLINE.max(ACTIVATE_DEADLINE) + CLIENT_MARGIN * 2;
        self.done
            .recv_timeout(bound)
            .unwrap_or_else(|error| panic!("the workload did not stop within {bound:?}: {error}"));
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
        std::mem::take(&mut *self.shared.records())
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // Not joined: after a failure its calls end within their bounds on their own.
        self.shared.phase.store(PHASE_STOPPED, Ordering::Relaxed);
    }
}

async fn run(shared: Arc<Shared>, port_offset: u32, gateways: usize) {
    let mut tasks = JoinSet::new();
    for gateway in 0..gateways {
        let index = u32::try_from(gateway).expect("few brokers");
        let endpoint = gateway::plain_endpoint(port_offset, index, CHANNEL_TIMEOUT);
        let client = Client::new(gateway::connect(&endpoint, CONNECT_WAIT).await);
        for _ in 0..CREATORS_PER_GATEWAY {
            tasks.spawn(creator(Arc::clone(&shared), client.clone(), gateway));
        }
        tasks.spawn(worker(Arc::clone(&shared), client, gateway));
    }
    while let Some(result) = tasks.join_next().await {
        if let Err(error) = result {
            if error.is_panic() {
                std::panic::resume_unwind(error.into_panic());
            }
            panic!("a workload task failed: {error}");
        }
    }
}

/// `message` with a gRPC deadline (`grpc-timeout`).
fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

async fn creator(shared: Arc<Shared>, mut client: Client, gateway: usize) {
    while shared.phase() == PHASE_CREATING {
        let id = shared.next_creation.fetch_add(1, Ordering::Relaxed);
        let request = pb::CreateProcessInstanceRequest {
            bpmn_process_id: PROCESS.to_owned(),
            version: -1,
            variables: format!(r#"{{"{CREATION_VARIABLE}":{id}}}"#),
            ..pb::CreateProcessInstanceRequest::default()
        };
        let sent = Instant::now();
        let answer = tokio::time::timeout(
            CREATE_DEADLINE + CLIENT_MARGIN,
            client.create_process_instance(with_deadline(request, CREATE_DEADLINE)),
        )
        .await;
        let outcome = match answer {
            Ok(Ok(created)) => Ok(created.into_inner().process_instance_key),
            Ok(Err(status)) => Err(Refusal::of(&status)),
            Err(_) => Err(Refusal::hung(CREATE_DEADLINE)),
        };
        let pause = if outcome.is_ok() {
            CREATE_PAUSE
        } else {
            CREATE_FAILURE_PAUSE
        };
        shared.records().creations.push(Creation {
            id,
            gateway,
            sent,
            answered: Instant::now(),
            outcome,
        });
        tokio::time::sleep(pause).await;
    }
}

fn activate_request(gateway: usize) -> pb::ActivateJobsRequest {
    pb::ActivateJobsRequest {
        r#type: JOB_TYPE.to_owned(),
        worker: format!("chaos-worker-{gateway}"),
        timeout: i64::try_from(JOB_TIMEOUT.as_millis()).expect("seconds"),
        max_jobs_to_activate: JOBS_PER_ACTIVATION,
        fetch_variable: vec![CREATION_VARIABLE.to_owned()],
        request_timeout: i64::try_from(LONG_POLL.as_millis()).expect("seconds"),
        tenant_ids: Vec::new(),
    }
}

/// The `creation` number in a job's variables (a JSON object).
fn creation_of(variables: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(variables)
        .ok()?
        .get(CREATION_VARIABLE)?
        .as_u64()
}

async fn worker(shared: Arc<Shared>, mut client: Client, gateway: usize) {
    let mut completions = JoinSet::new();
    while shared.phase() != PHASE_STOPPED {
        while completions.try_join_next().is_some() {}
        if completions.len() >= COMPLETIONS_IN_FLIGHT_MAX {
            completions.join_next().await;
            continue;
        }
        let requested = Instant::now();
        let bound = tokio::time::Instant::now() + ACTIVATE_DEADLINE + CLIENT_MARGIN;
        let answer = tokio::time::timeout_at(
            bound,
            client.activate_jobs(with_deadline(activate_request(gateway), ACTIVATE_DEADLINE)),
        )
        .await;
        let Ok(Ok(response)) = answer else {
            shared.records().failed_activations += 1;
            tokio::time::sleep(ACTIVATE_FAILURE_PAUSE).await;
            continue;
        };
        let mut stream = response.into_inner();
        // Each batch is recorded and its jobs completed as it arrives: a stream that breaks
        // later must not hide jobs it already handed out.
        let failed = loop {
            match tokio::time::timeout_at(bound, stream.message()).await {
                Ok(Ok(Some(batch))) => {
                    let mut records = shared.records();
                    for job in batch.jobs {
                        records.activations.push(Activation {
                            gateway,
                            requested,
                            job_key: job.key,
                            instance_key: job.process_instance_key,
                            creation: creation_of(&job.variables),
                        });
                        completions.spawn(complete(
                            Arc::clone(&shared),
                            client.clone(),
                            gateway,
                            job.key,
                            job.process_instance_key,
                        ));
                    }
                }
                Ok(Ok(None)) => break false,
                Ok(Err(_)) | Err(_) => break true,
            }
        };
        if failed {
            shared.records().failed_activations += 1;
            tokio::time::sleep(ACTIVATE_FAILURE_PAUSE).await;
        }
    }
    while completions.join_next().await.is_some() {}
}

/// Whether a completion's answer settles the job: done, or gone (completed), or refused for a
/// reason sending it again cannot change. tonic reports a broken connection as `UNAVAILABLE` or
/// `UNKNOWN` and its own expiry of the deadline as `CANCELLED`: the completion may have run.
fn settled(outcome: &Result<(), Refusal>) -> bool {
    match outcome {
        Ok(()) => true,
        Err(refusal) => !matches!(
            refusal.code,
            None | Some(
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
            )
        ),
    }
}

async fn complete(
    shared: Arc<Shared>,
    mut client: Client,
    gateway: usize,
    job_key: i64,
    instance_key: i64,
) {
    let first_sent = Instant::now();
    loop {
        let request = pb::CompleteJobRequest {
            job_key,
            variables: String::new(),
        };
        let sent = Instant::now();
        let answer = tokio::time::timeout(
            COMPLETE_DEADLINE + CLIENT_MARGIN,
            client.complete_job(with_deadline(request, COMPLETE_DEADLINE)),
        )
        .await;
        let outcome = match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(Refusal::of(&status)),
            Err(_) => Err(Refusal::hung(COMPLETE_DEADLINE)),
        };
        let done = settled(&outcome);
        shared.records().completions.push(CompletionAttempt {
            gateway,
            job_key,
            instance_key,
            sent,
            answered: Instant::now(),
            outcome,
        });
        if done || shared.phase() == PHASE_STOPPED || first_sent.elapsed() >= COMPLETE_GIVE_UP_AFTER
        {
            return;
        }
        tokio::time::sleep(COMPLETE_RETRY_PAUSE).await;
    }
}
