//! The simulated clients: a deployer, process-instance creators, job workers and message
//! publishers, all drawing from the workload stream.
//!
//! Every client operation is a task. A task is sent as a request to its partition's leader;
//! a request that gets no answer within [`REQUEST_TIMEOUT_MS`] (the leader crashed, stepped
//! down, or its reply was dropped) is sent again as a new request, until one is answered. So a
//! create whose first request took effect unacknowledged may create a second instance: only
//! answered requests must have taken effect, exactly once. Job activations are not retried: a
//! lost batch's jobs time out and are activated again.

use std::collections::{BTreeMap, HashMap};

use sluice_engine::record::{
    DeploymentResource, DeploymentValue, JobBatchValue, JobValue, MessageValue,
    ProcessInstanceCreationValue, key_partition,
};
use sluice_engine::{Intent, Key, Record, RecordType, RecordValue, subscription_partition};
use sluice_log::sim::rng::Rng;

use super::bpmn;

/// A request unanswered this long is sent again.
pub(crate) const REQUEST_TIMEOUT_MS: u64 = 400;
/// Wait before re-sending when no leader was found or the command was rejected.
const RETRY_BACKOFF_MS: u64 = 50;
/// Job activation: the activation timeout, and the most jobs in one batch.
pub(crate) const JOB_TIMEOUT_MS: i64 = 1_000;
const JOBS_PER_BATCH_MAX: i32 = 5;
/// A worker completes an activated job this long after activation, at most.
const WORK_MS_MAX: u64 = 300;
/// Message time to live.
const MESSAGE_TTL_MS: i64 = 10_000;
/// In the calm phase, a message instance still waiting gets its message again this often.
const REPUBLISH_INTERVAL_MS: u64 = 2_000;
/// Per step and per mille: create an instance, activate jobs on one partition.
const CREATE_PER_MILLE: u32 = 40;
const ACTIVATE_PER_MILLE: u32 = 15;
const CALM_ACTIVATE_PER_MILLE: u32 = 40;
/// Of created instances, per mille that wait for a message.
const MESSAGE_INSTANCE_PER_MILLE: u32 = 300;
/// Of job results, per mille that fail the job (when it has retries to spare).
const FAIL_PER_MILLE: u32 = 100;

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Deploy,
    Create {
        bpmn_process_id: &'static str,
        correlation_key: String,
    },
    Activate,
    Complete {
        job: Key,
    },
    Fail {
        job: Key,
        retries: i32,
    },
    Publish {
        correlation_key: String,
    },
}

impl Op {
    fn command(&self) -> Record {
        match self {
            Op::Deploy => {
                let resource = |name: &str, xml: &str| DeploymentResource {
                    resource_name: name.to_owned(),
                    resource: xml.to_owned().into(),
                };
                Record::command(
                    Intent::Create,
                    RecordValue::Deployment(DeploymentValue {
                        resources: vec![
                            resource("one_task.bpmn", bpmn::ONE_TASK),
                            resource("wait_message.bpmn", bpmn::WAIT_MESSAGE),
                        ],
                        processes_metadata: Vec::new(),
                    }),
                )
            }
            Op::Create {
                bpmn_process_id,
                correlation_key,
            } => Record::command(
                Intent::Create,
                RecordValue::ProcessInstanceCreation(ProcessInstanceCreationValue {
                    bpmn_process_id: (*bpmn_process_id).to_owned(),
                    version: -1,
                    process_definition_key: -1,
                    process_instance_key: -1,
                    variables: serde_json::json!({ "key": correlation_key })
                        .to_string()
                        .into(),
                    fetch_variables: Vec::new(),
                }),
            ),
            Op::Activate => Record::command(
                Intent::Activate,
                RecordValue::JobBatch(JobBatchValue {
                    job_type: bpmn::JOB_TYPE.to_owned(),
                    worker: "sim-worker".to_owned(),
                    timeout: JOB_TIMEOUT_MS,
                    max_jobs_to_activate: JOBS_PER_BATCH_MAX,
                    ..JobBatchValue::default()
                }),
            ),
            Op::Complete { job } => Record::command_for(
                *job,
                Intent::Complete,
                RecordValue::Job(JobValue {
                    variables: "{\"done\":true}".to_owned().into(),
                    ..JobValue::default()
                }),
            ),
            Op::Fail { job, retries } => Record::command_for(
                *job,
                Intent::Fail,
                RecordValue::Job(JobValue {
                    retries: *retries,
                    error_message: "the simulated worker failed".to_owned(),
                    retry_backoff: 0,
                    ..JobValue::default()
                }),
            ),
            Op::Publish { correlation_key } => Record::command(
                Intent::Publish,
                RecordValue::Message(MessageValue {
                    name: bpmn::MESSAGE_NAME.to_owned(),
                    correlation_key: correlation_key.clone(),
                    time_to_live: MESSAGE_TTL_MS,
                    variables: "{\"paid\":true}".to_owned().into(),
                    ..MessageValue::default()
                }),
            ),
        }
    }

    /// Whether the client sends it again until it is answered.
    fn retried(&self) -> bool {
        !matches!(self, Op::Activate)
    }
}

#[derive(Debug)]
struct Task {
    op: Op,
    partition: u32,
    answered: bool,
    next_attempt_ms: u64,
    /// The request in flight and when it was sent.
    waiting: Option<(u64, u64)>,
}

/// A request to hand to a partition's leader.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) id: u64,
    pub(crate) partition: u32,
    pub(crate) command: Record,
}

/// An answer a client got: the checks look for its record in the partition's committed log.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) partition: u32,
    pub(crate) op: Op,
    pub(crate) record: Record,
}

/// Counts of what the clients did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WorkloadStats {
    pub(crate) requests_sent: u64,
    pub(crate) requests_timed_out: u64,
    pub(crate) no_leader: u64,
    pub(crate) answers: u64,
    pub(crate) rejections: u64,
    pub(crate) creates_acknowledged: u64,
    pub(crate) jobs_activated: u64,
    pub(crate) completes_acknowledged: u64,
    pub(crate) fails_acknowledged: u64,
    pub(crate) publishes_acknowledged: u64,
}

#[derive(Debug)]
pub(crate) struct Workload {
    rng: Rng,
    partitions: u32,
    tasks: BTreeMap<u64, Task>,
    next_task: u64,
    /// Request id → (task id, operation), for every request sent.
    requests: HashMap<u64, (u64, Op)>,
    next_request: u64,
    deployed: bool,
    next_create_partition: u32,
    next_correlation: u64,
    /// Activated jobs a worker will finish: (when, job key, retries left).
    work: Vec<(u64, Key, i32)>,
    last_publish_ms: HashMap<String, u64>,
    pub(crate) answers: Vec<Answer>,
    pub(crate) stats: WorkloadStats,
}

impl Workload {
    pub(crate) fn new(rng: Rng, partitions: u32) -> Self {
        Self {
            rng,
            partitions,
            tasks: BTreeMap::new(),
            next_task: 1,
            requests: HashMap::new(),
            next_request: 1,
            deployed: false,
            next_create_partition: 1,
            next_correlation: 1,
            work: Vec::new(),
            last_publish_ms: HashMap::new(),
            answers: Vec::new(),
            stats: WorkloadStats::default(),
        }
    }

    fn add(&mut self, op: Op, partition: u32, at_ms: u64) {
        if let Op::Publish { correlation_key } = &op {
            self.last_publish_ms.insert(correlation_key.clone(), at_ms);
        }
        self.tasks.insert(
            self.next_task,
            Task {
                op,
                partition,
                answered: false,
                next_attempt_ms: at_ms,
                waiting: None,
            },
        );
        self.next_task += 1;
    }

    /// Draws this step's new operations. In the calm phase no instances are created; workers
    /// keep activating and finishing jobs.
    pub(crate) fn generate(&mut self, now_ms: u64, calm: bool) {
        if !self.deployed {
            if !self.tasks.values().any(|t| t.op == Op::Deploy) {
                self.add(Op::Deploy, 1, now_ms);
            }
            return;
        }
        if !calm && self.rng.chance(CREATE_PER_MILLE) {
            let partition = self.next_create_partition;
            self.next_create_partition = partition % self.partitions + 1;
            let correlation_key = format!("ck-{}", self.next_correlation);
            self.next_correlation += 1;
            if self.rng.chance(MESSAGE_INSTANCE_PER_MILLE) {
                let publish_at = now_ms + self.rng.below(600);
                let target = subscription_partition(&correlation_key, self.partitions);
                self.add(
                    Op::Publish {
                        correlation_key: correlation_key.clone(),
                    },
                    target,
                    publish_at,
                );
                self.add(
                    Op::Create {
                        bpmn_process_id: bpmn::WAIT_MESSAGE_ID,
                        correlation_key,
                    },
                    partition,
                    now_ms,
                );
            } else {
                self.add(
                    Op::Create {
                        bpmn_process_id: bpmn::ONE_TASK_ID,
                        correlation_key,
                    },
                    partition,
                    now_ms,
                );
            }
        }
        let activate = if calm {
            CALM_ACTIVATE_PER_MILLE
        } else {
            ACTIVATE_PER_MILLE
        };
        for partition in 1..=self.partitions {
            if self.rng.chance(activate) {
                self.add(Op::Activate, partition, now_ms);
            }
        }
        let mut due = Vec::new();
        self.work.retain(|&(at, job, retries)| {
            if at <= now_ms {
                due.push((job, retries));
                false
            } else {
                true
            }
        });
        for (job, retries) in due {
            let partition = key_partition(job);
            if retries >= 2 && self.rng.chance(FAIL_PER_MILLE) {
                self.add(
                    Op::Fail {
                        job,
                        retries: retries - 1,
                    },
                    partition,
                    now_ms,
                );
            } else {
                self.add(Op::Complete { job }, partition, now_ms);
            }
        }
    }

    /// Publishes the message of a waiting instance again (calm phase), unless that was done
    /// recently.
    pub(crate) fn republish(&mut self, correlation_key: &str, now_ms: u64) {
        if self
            .last_publish_ms
            .get(correlation_key)
            .is_some_and(|at| now_ms < at + REPUBLISH_INTERVAL_MS)
        {
            return;
        }
        let partition = subscription_partition(correlation_key, self.partitions);
        self.add(
            Op::Publish {
                correlation_key: correlation_key.to_owned(),
            },
            partition,
            now_ms,
        );
    }

    /// The requests to send now: new tasks, and tasks whose last request timed out.
    pub(crate) fn due(&mut self, now_ms: u64) -> Vec<Request> {
        let mut out = Vec::new();
        let mut finished = Vec::new();
        for (&task_id, task) in &mut self.tasks {
            if task.answered {
                continue;
            }
            if let Some((_, sent)) = task.waiting {
                if now_ms < sent + REQUEST_TIMEOUT_MS {
                    continue;
                }
                self.stats.requests_timed_out += 1;
                task.waiting = None;
                if !task.op.retried() {
                    finished.push(task_id);
                    continue;
                }
                task.next_attempt_ms = now_ms;
            }
            if task.next_attempt_ms > now_ms {
                continue;
            }
            let id = self.next_request;
            self.next_request += 1;
            self.requests.insert(id, (task_id, task.op.clone()));
            task.waiting = Some((id, now_ms));
            self.stats.requests_sent += 1;
            out.push(Request {
                id,
                partition: task.partition,
                command: task.op.command(),
            });
        }
        for task_id in finished {
            self.tasks.remove(&task_id);
        }
        out
    }

    /// No leader took the request: try again shortly.
    pub(crate) fn not_taken(&mut self, request: u64, now_ms: u64) {
        self.stats.no_leader += 1;
        let Some(&(task_id, _)) = self.requests.get(&request) else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        if task.waiting.is_some_and(|(id, _)| id == request) {
            task.waiting = None;
            task.next_attempt_ms = now_ms + RETRY_BACKOFF_MS;
            if !task.op.retried() {
                self.tasks.remove(&task_id);
            }
        }
    }

    /// A leader answered `request` with `record` (its entry committed). A late answer, to a
    /// request already sent again, counts as much as any: it is an acknowledgement.
    pub(crate) fn on_response(
        &mut self,
        partition: u32,
        request: u64,
        record: Record,
        now_ms: u64,
    ) {
        let Some((task_id, op)) = self.requests.get(&request).cloned() else {
            return;
        };
        self.stats.answers += 1;
        let rejected = record.record_type == RecordType::CommandRejection;
        if rejected {
            self.stats.rejections += 1;
        }
        if let Some(task) = self.tasks.get_mut(&task_id) {
            if rejected && matches!(op, Op::Deploy | Op::Create { .. }) {
                // Not deployed (on this partition) yet: try again.
                if task.waiting.is_some_and(|(id, _)| id == request) {
                    task.waiting = None;
                    task.next_attempt_ms = now_ms + RETRY_BACKOFF_MS;
                }
            } else {
                task.answered = true;
                task.waiting = None;
            }
        }
        if !rejected {
            match (&op, &record.value) {
                (Op::Deploy, _) => self.deployed = true,
                (Op::Create { .. }, _) => self.stats.creates_acknowledged += 1,
                (Op::Activate, RecordValue::JobBatch(batch)) => {
                    for (job, value) in batch.job_keys.iter().zip(&batch.jobs) {
                        self.stats.jobs_activated += 1;
                        let at = now_ms + 1 + self.rng.below(WORK_MS_MAX);
                        self.work.push((at, *job, value.retries));
                    }
                }
                (Op::Complete { .. }, _) => self.stats.completes_acknowledged += 1,
                (Op::Fail { .. }, _) => self.stats.fails_acknowledged += 1,
                (Op::Publish { .. }, _) => self.stats.publishes_acknowledged += 1,
                (Op::Activate, _) => {}
            }
        }
        if matches!(op, Op::Activate) {
            self.tasks.remove(&task_id);
        }
        self.answers.push(Answer {
            partition,
            op,
            record,
        });
    }

    /// True when every operation that is retried until answered was answered and no worker
    /// holds a job it has not finished.
    pub(crate) fn is_drained(&self) -> bool {
        self.work.is_empty() && self.tasks.values().all(|t| t.answered || !t.op.retried())
    }

    /// Operations still unanswered, for failure messages.
    pub(crate) fn describe_open(&self) -> String {
        let open: Vec<String> = self
            .tasks
            .values()
            .filter(|t| !t.answered && t.op.retried())
            .take(8)
            .map(|t| format!("{:?} on partition {}", t.op, t.partition))
            .collect();
        format!(
            "open operations: [{}]; jobs being worked: {}",
            open.join(", "),
            self.work.len()
        )
    }

    /// The answers to operations on correlation key `key`, for failure messages.
    pub(crate) fn answers_about(&self, key: &str) -> Vec<String> {
        self.answers
            .iter()
            .filter(|a| match &a.op {
                Op::Create {
                    correlation_key, ..
                }
                | Op::Publish { correlation_key } => correlation_key == key,
                _ => false,
            })
            .map(|a| {
                format!(
                    "answer p{}: {:?} -> {}",
                    a.partition,
                    a.op,
                    a.record.to_json_line()
                )
            })
            .collect()
    }

    /// Forgets answered tasks (bounded memory over long runs).
    pub(crate) fn compact(&mut self) {
        self.tasks.retain(|_, t| !t.answered);
    }
}
