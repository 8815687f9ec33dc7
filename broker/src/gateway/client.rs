//! The gateway's client of the partitions' leaders, over the [`crate::link`]: to a leader on
//! this broker through the shard channel, to another broker over the cluster's mutual-TLS QUIC
//! transport.
//!
//! [`CommandClient::command`] sends one engine command to a partition: first to the leader the
//! [`GatewayView`](super::GatewayView) names, then wherever `NotLeader` points; it retries a
//! command that certainly did not run (not sent, refused before processing, no leader yet) with
//! a short growing pause until the deadline. Every command carries a request id
//! ([`sluice_engine::Record::request_id`]), unique to this gateway: a command whose answer was
//! lost (its leader died or froze, the answer timed out) is sent again with the same id to the
//! partition's leader of the moment, and the engine answers a request it already ran from its
//! first reply, so the command takes effect once. Only a creation that awaits its result is
//! never sent twice (its answer is the instance's end, which the engine does not keep).
//!
//! [`CommandClient::create`] is a creation without result: when its partition has no leader it
//! goes to the next partition that has one, as long as it was sent nowhere yet.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use sluice_engine::Record;
use sluice_engine::record::{decode_records, encode_records};
use tokio::time::Instant;
use tonic::Status;

use super::{SharedGatewayView, read_view};
use crate::client_api::{MAYBE_COMMITTED, POLL_WAIT_MS_MAX, Response};
use crate::link::{Link, LinkAnswer, LinkBody};
use crate::partitioning::{NodeId, PartitionId};

/// First pause after a failed attempt; it doubles after each.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between attempts.
const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// `NotLeader` hints followed in a row without pausing.
const REDIRECTS_WITHOUT_BACKOFF: u32 = 3;
/// Longest [`CommandClient::command`] waits for one answer before it sends the command again
/// (with the same request id, wherever the view then names the leader).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Bits of a request id below the gateway's node id.
const REQUEST_ID_COUNTER_BITS: u32 = 48;

/// Request ids unique to one gateway: its node id in the top bits, then a counter that starts
/// at a random point, so a restarted gateway does not reuse its previous life's ids.
#[derive(Debug)]
struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    fn new(node_id: NodeId) -> Self {
        RequestIds {
            prefix: u64::from(node_id) << REQUEST_ID_COUNTER_BITS,
            counter: AtomicU64::new(random_u64()),
        }
    }

    fn next(&self) -> u64 {
        loop {
            let counter =
                self.counter.fetch_add(1, Ordering::Relaxed) & ((1 << REQUEST_ID_COUNTER_BITS) - 1);
            let id = self.prefix | counter;
            if id != 0 {
                return id;
            }
        }
    }
}

/// 64 bits from the operating system's random source, or from the clock if that fails.
fn random_u64() -> u64 {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .is_ok()
    {
        return u64::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    #[expect(
        clippy::cast_possible_truncation,
        reason = "any 64 bits of the clock do"
    )]
    let nanos = nanos as u64;
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// The gateway's client of the partitions. Cheap to clone; clones share the link.
#[derive(Clone)]
pub struct CommandClient {
    view: SharedGatewayView,
    link: Link,
    /// Rotates the fallback broker when no leader is known.
    next_broker: Arc<AtomicUsize>,
    /// The largest encoded command sent (from `network.maxMessageSize`).
    command_bytes_max: usize,
    request_ids: Arc<RequestIds>,
}

impl std::fmt::Debug for CommandClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandClient").finish_non_exhaustive()
    }
}

/// How a command may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// It carries a request id: sent again after a lost answer, answered once.
    WithRequestId,
    /// A poll: asked again after a lost answer (at worst its jobs wait for their timeout).
    Poll,
    /// A creation awaiting its result: never sent again once it may have run.
    Never,
}

/// Why one partition did not answer.
enum Failure {
    /// The caller hears this.
    Status(Status),
    /// The partition has no leader and the command was sent nowhere: another partition may
    /// take it (creations only).
    Leaderless(String),
}

impl CommandClient {
    /// A client routing by `view` over `link`; `node_id` is this broker's (its request ids
    /// carry it).
    #[must_use]
    pub fn new(
        view: SharedGatewayView,
        link: Link,
        command_bytes_max: usize,
        node_id: NodeId,
    ) -> Self {
        CommandClient {
            view,
            link,
            next_broker: Arc::default(),
            command_bytes_max,
            request_ids: Arc::new(RequestIds::new(node_id)),
        }
    }

    /// The node the view names as leader of `partition_id`.
    fn leader_of(&self, partition_id: PartitionId) -> Option<NodeId> {
        read_view(&self.view, |view| {
            view.partitions
                .iter()
                .find(|p| p.partition_id == partition_id)
                .and_then(|p| p.leader.as_ref())
                .map(|(node_id, _)| *node_id)
        })
    }

    /// Any live broker, rotating: it redirects to the leader it knows of.
    fn any_broker(&self) -> Option<NodeId> {
        read_view(&self.view, |view| {
            if view.brokers.is_empty() {
                return None;
            }
            let index = self.next_broker.fetch_add(1, Ordering::Relaxed) % view.brokers.len();
            Some(view.brokers[index].node_id)
        })
    }

    /// Encodes `record` with a fresh request id when it may be re-sent, and checks its size.
    fn encode(&self, record: &Record, resend: Resend) -> Result<Vec<u8>, Status> {
        let mut record = record.clone();
        if resend == Resend::WithRequestId {
            record.request_id = self.request_ids.next();
        }
        let command = encode_records(std::slice::from_ref(&record)).to_vec();
        if command.len() > self.command_bytes_max {
            return Err(Status::resource_exhausted(format!(
                "the command is {} bytes encoded, above the limit of {} bytes \
                 (network.maxMessageSize); send smaller variables or resources",
                command.len(),
                self.command_bytes_max
            )));
        }
        Ok(command)
    }

    /// Sends `record` to the leader of `partition_id` and returns the engine's reply record (an
    /// event or a rejection). Gives up at `deadline` with `DEADLINE_EXCEEDED`, or
    /// `UNAVAILABLE` when no broker is known at all.
    pub async fn command(
        &self,
        partition_id: PartitionId,
        record: &Record,
        deadline: Instant,
    ) -> Result<Record, Status> {
        let command = self.encode(record, Resend::WithRequestId)?;
        self.request(
            partition_id,
            &LinkBody::Command(command),
            Resend::WithRequestId,
            deadline,
            ANSWER_TIMEOUT,
            false,
        )
        .await
        .map_err(into_status)
    }

    /// A creation on `first` or, when that partition has no leader, on the next ones in turn
    /// (a command sent nowhere yet may go anywhere). Returns the partition that answered and
    /// its reply. A creation awaiting its result is answered when the instance completes, so
    /// it is never sent again once it may have run (nor re-sent for being slow).
    pub async fn create(
        &self,
        first: PartitionId,
        partitions_count: u32,
        record: &Record,
        deadline: Instant,
    ) -> Result<(PartitionId, Record), Status> {
        let awaiting_result = record.intent == sluice_engine::Intent::CreateWithAwaitingResult;
        let (resend, answer_timeout) = if awaiting_result {
            // Answered when the instance completes: never re-sent for being slow.
            (
                Resend::Never,
                deadline.saturating_duration_since(Instant::now()),
            )
        } else {
            (Resend::WithRequestId, ANSWER_TIMEOUT)
        };
        let command = LinkBody::Command(self.encode(record, resend)?);
        let count = partitions_count.max(1);
        let mut partition_id = first;
        let mut backoff = BACKOFF_MIN;
        let mut hops = 0u32;
        loop {
            match self
                .request(
                    partition_id,
                    &command,
                    resend,
                    deadline,
                    answer_timeout,
                    true,
                )
                .await
            {
                Ok(reply) => return Ok((partition_id, reply)),
                Err(Failure::Status(status)) => return Err(status),
                Err(Failure::Leaderless(problem)) => {
                    hops += 1;
                    partition_id = partition_id % count + 1;
                    if hops.is_multiple_of(count) && !pause(&mut backoff, deadline).await {
                        return Err(Status::deadline_exceeded(format!(
                            "no partition had a leader in time (last problem: {problem}); \
                             retry, or allow a longer deadline"
                        )));
                    }
                }
            }
        }
    }

    /// Sends the job activation `record` to the leader of `partition_id`: answered at once,
    /// possibly with no job. Asked again after a lost answer without a request id: the jobs a
    /// lost answer held time out, and a new activation hands out others.
    pub async fn activate(
        &self,
        partition_id: PartitionId,
        record: &Record,
        deadline: Instant,
    ) -> Result<Record, Status> {
        let command = self.encode(record, Resend::Poll)?;
        self.request(
            partition_id,
            &LinkBody::Command(command),
            Resend::Poll,
            deadline,
            ANSWER_TIMEOUT,
            false,
        )
        .await
        .map_err(into_status)
    }

    /// Sends the job activation `record` to the leader of `partition_id` as a poll: when it
    /// finds no job, the leader keeps it up to `wait` and answers as soon as jobs of its type
    /// become available (see [`crate::client_api::Request::Poll`]). An empty batch means the
    /// wait ran out. Retries like [`Self::command`] until `deadline`.
    pub async fn poll(
        &self,
        partition_id: PartitionId,
        record: &Record,
        wait: Duration,
        deadline: Instant,
    ) -> Result<Record, Status> {
        let wait_ms = u32::try_from(wait.as_millis())
            .unwrap_or(u32::MAX)
            .min(POLL_WAIT_MS_MAX);
        let command = self.encode(record, Resend::Poll)?;
        let answer_timeout = Duration::from_millis(u64::from(wait_ms)) + ANSWER_TIMEOUT;
        self.request(
            partition_id,
            &LinkBody::Poll { wait_ms, command },
            Resend::Poll,
            deadline,
            answer_timeout,
            false,
        )
        .await
        .map_err(into_status)
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one retry loop: every answer and failure is decided in one place"
    )]
    async fn request(
        &self,
        partition_id: PartitionId,
        body: &LinkBody,
        resend: Resend,
        deadline: Instant,
        answer_timeout: Duration,
        may_hop: bool,
    ) -> Result<Record, Failure> {
        let mut target: Option<NodeId> = None;
        let mut backoff = BACKOFF_MIN;
        let mut redirects = 0u32;
        let mut last_problem = String::from("no attempt finished");
        // Whether the command may have run somewhere: then it stays on this partition.
        let mut maybe_sent = false;
        loop {
            if Instant::now() >= deadline {
                return Err(Failure::Status(Status::deadline_exceeded(format!(
                    "partition {partition_id} did not answer in time (last problem: \
                     {last_problem}); retry, or allow a longer deadline"
                ))));
            }
            let leader = self.leader_of(partition_id);
            if may_hop && !maybe_sent && target.is_none() && leader.is_none() {
                return Err(Failure::Leaderless(format!(
                    "partition {partition_id} has no leader"
                )));
            }
            let Some(node) = target.take().or(leader).or_else(|| self.any_broker()) else {
                "no broker of the cluster is known yet".clone_into(&mut last_problem);
                if pause(&mut backoff, deadline).await {
                    continue;
                }
                return Err(Failure::Status(Status::unavailable(format!(
                    "no broker of the cluster is known to this gateway yet; the cluster may \
                     still be starting: retry shortly (partition {partition_id})"
                ))));
            };
            let answer_deadline = deadline.min(Instant::now() + answer_timeout);
            let attempt = self.link.request(node, partition_id, body.clone());
            let answer = match tokio::time::timeout_at(answer_deadline, attempt).await {
                Ok(answer) => answer,
                Err(_) => LinkAnswer::Lost(format!(
                    "node {node} did not answer within {answer_timeout:?}"
                )),
            };
            match answer {
                LinkAnswer::Answered(Response::Processed { response, .. }) => {
                    let mut records = decode_records(&response).map_err(|error| {
                        Failure::Status(Status::internal(format!(
                            "the broker's reply did not decode: {error}"
                        )))
                    })?;
                    if records.len() != 1 {
                        return Err(Failure::Status(Status::internal(format!(
                            "the broker replied with {} records instead of one",
                            records.len()
                        ))));
                    }
                    return Ok(records.remove(0));
                }
                LinkAnswer::Answered(Response::NotLeader { leader, .. }) => {
                    last_problem = format!("node {node} does not lead partition {partition_id}");
                    redirects += 1;
                    match leader {
                        Some((leader, _)) if leader != node => target = Some(leader),
                        _ if may_hop && !maybe_sent => {
                            return Err(Failure::Leaderless(last_problem));
                        }
                        _ => {}
                    }
                    if target.is_none() || redirects > REDIRECTS_WITHOUT_BACKOFF {
                        pause(&mut backoff, deadline).await;
                    }
                }
                LinkAnswer::Answered(Response::Unavailable { message, .. })
                    if message.contains(MAYBE_COMMITTED) =>
                {
                    maybe_sent = true;
                    last_problem = format!("node {node}: {message}");
                    if resend == Resend::Never {
                        return Err(Failure::Status(maybe_done(partition_id, &last_problem)));
                    }
                    pause(&mut backoff, deadline).await;
                }
                LinkAnswer::Answered(Response::Unavailable { message, .. }) => {
                    last_problem = format!("node {node}: {message}");
                    if may_hop && !maybe_sent {
                        return Err(Failure::Leaderless(last_problem));
                    }
                    pause(&mut backoff, deadline).await;
                }
                LinkAnswer::Answered(Response::Overloaded { message, .. }) => {
                    return Err(Failure::Status(Status::resource_exhausted(format!(
                        "backpressure: {message} (nothing was processed)"
                    ))));
                }
                LinkAnswer::Answered(Response::Invalid { message, .. }) => {
                    return Err(Failure::Status(Status::invalid_argument(format!(
                        "the broker refused the command: {message}"
                    ))));
                }
                LinkAnswer::Answered(Response::Appended { .. }) => {
                    return Err(Failure::Status(Status::internal(
                        "the broker answered a command like an append; check that every broker \
                         runs the same Sluice version",
                    )));
                }
                LinkAnswer::NotSent(problem) => {
                    last_problem = problem;
                    if may_hop && !maybe_sent {
                        return Err(Failure::Leaderless(last_problem));
                    }
                    pause(&mut backoff, deadline).await;
                }
                LinkAnswer::Lost(problem) => {
                    maybe_sent = true;
                    last_problem = problem;
                    if resend == Resend::Never {
                        return Err(Failure::Status(maybe_done(partition_id, &last_problem)));
                    }
                    pause(&mut backoff, deadline).await;
                }
            }
        }
    }
}

fn into_status(failure: Failure) -> Status {
    match failure {
        Failure::Status(status) => status,
        Failure::Leaderless(problem) => Status::unavailable(problem),
    }
}

/// The answer to a command that may or may not have taken effect.
fn maybe_done(partition_id: PartitionId, problem: &str) -> Status {
    Status::unavailable(format!(
        "partition {partition_id}: {problem}; the command may or may not have taken effect, \
         so it was not sent again: check before retrying"
    ))
}

/// Sleeps for the backoff (not past `deadline`) and doubles it; false if the deadline passed.
async fn pause(backoff: &mut Duration, deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    tokio::time::sleep_until((now + *backoff).min(deadline)).await;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    true
}
