//! An async client of the cluster's command API ([`crate::client_api`]) for the gateway.
//!
//! One pipelined TCP connection per broker address, each driven by one task that writes the
//! queued request frames and matches the answers to their callers by request id. [`CommandClient::command`]
//! sends one engine command to a partition: first to the leader the [`GatewayView`] names, then
//! wherever `NotLeader` points; it retries `Unavailable` answers and broken connections with a
//! short growing pause until the deadline. Like [`crate::client_api::AppendClient`], a retried
//! command may take effect twice (at-least-once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_engine::Record;
use sluice_engine::record::{decode_records, encode_records};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

use super::{SharedGatewayView, read_view};
use crate::client_api::{
    MAYBE_COMMITTED, POLL_WAIT_MS_MAX, Response, ResponseDecoder, encode_command, encode_poll,
};
use crate::partitioning::PartitionId;

/// Longest one connection attempt may take.
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(2);
/// First pause after a failed attempt; it doubles after each.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between attempts.
const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// `NotLeader` hints followed in a row without pausing.
const REDIRECTS_WITHOUT_BACKOFF: u32 = 3;
/// Requests queued for one connection's writer before callers wait.
const CONNECTION_QUEUE_MAX: usize = 1024;
/// Bytes read from a socket at once.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Queued request frames are gathered into one write up to about this many bytes.
const WRITE_COALESCE_BYTES: usize = 256 << 10;
/// Connections kept open; all are dropped when one more would exceed this.
const CONNECTIONS_MAX: usize = 64;
/// Longest [`CommandClient::command`] waits for one broker's answer before it asks again
/// (wherever the view then names the leader), unless the caller waits for a result.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A request for a connection's task: the frame to write and where its answer goes.
struct Outgoing {
    request_id: u64,
    frame: Vec<u8>,
    answer: oneshot::Sender<Response>,
}

/// The gateway's command-API client. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct CommandClient {
    view: SharedGatewayView,
    connections: Arc<Mutex<HashMap<String, mpsc::Sender<Outgoing>>>>,
    next_request_id: Arc<AtomicU64>,
    /// Rotates the fallback broker when no leader is known.
    next_broker: Arc<AtomicUsize>,
    /// The largest encoded command sent (from `network.maxMessageSize`).
    command_bytes_max: usize,
}

impl std::fmt::Debug for CommandClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandClient").finish_non_exhaustive()
    }
}

impl CommandClient {
    /// A client routing by `view`.
    #[must_use]
    pub fn new(view: SharedGatewayView, command_bytes_max: usize) -> Self {
        CommandClient {
            view,
            connections: Arc::default(),
            next_request_id: Arc::new(AtomicU64::new(1)),
            next_broker: Arc::default(),
            command_bytes_max,
        }
    }

    /// Where to send a command for `partition_id` first: its leader, else any broker.
    fn first_target(&self, partition_id: PartitionId) -> Option<String> {
        read_view(&self.view, |view| {
            let leader = view
                .partitions
                .iter()
                .find(|p| p.partition_id == partition_id)
                .and_then(|p| p.leader.as_ref())
                .map(|(_, address)| address.clone());
            leader.or_else(|| {
                if view.brokers.is_empty() {
                    return None;
                }
                let index = self.next_broker.fetch_add(1, Ordering::Relaxed) % view.brokers.len();
                Some(view.brokers[index].command_api.clone())
            })
        })
    }

    /// The queue of the connection to `address`, connecting if there is none (or it broke).
    async fn connection(
        &self,
        address: &str,
        deadline: Instant,
    ) -> Result<mpsc::Sender<Outgoing>, String> {
        {
            let connections = self
                .connections
                .lock()
                .map_err(|_| "the connection table is poisoned".to_owned())?;
            if let Some(sender) = connections.get(address)
                && !sender.is_closed()
            {
                return Ok(sender.clone());
            }
        }
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .min(CONNECT_TIMEOUT_MAX);
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(format!("connecting to {address}: {error}")),
            Err(_) => return Err(format!("connecting to {address} timed out")),
        };
        let _ = stream.set_nodelay(true);
        let (sender, receiver) = mpsc::channel(CONNECTION_QUEUE_MAX);
        tokio::spawn(drive_connection(stream, receiver));
        let mut connections = self
            .connections
            .lock()
            .map_err(|_| "the connection table is poisoned".to_owned())?;
        if connections.len() >= CONNECTIONS_MAX {
            connections.clear();
        }
        connections.insert(address.to_owned(), sender.clone());
        Ok(sender)
    }

    /// One attempt: sends the command (as a poll waiting up to `poll_wait_ms`, if given) to
    /// `address` and waits for its answer.
    async fn attempt(
        &self,
        address: &str,
        partition_id: PartitionId,
        command: &[u8],
        poll_wait_ms: Option<u32>,
        deadline: Instant,
    ) -> Result<Response, AttemptError> {
        let sender = self
            .connection(address, deadline)
            .await
            .map_err(AttemptError::NotSent)?;
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::new();
        match poll_wait_ms {
            Some(wait_ms) => encode_poll(request_id, partition_id, wait_ms, command, &mut frame),
            None => encode_command(request_id, partition_id, command, &mut frame),
        }
        let (answer, answered) = oneshot::channel();
        sender
            .send(Outgoing {
                request_id,
                frame,
                answer,
            })
            .await
            .map_err(|_| AttemptError::NotSent(format!("the connection to {address} closed")))?;
        answered.await.map_err(|_| {
            AttemptError::Lost(format!(
                "the connection to {address} broke before the answer"
            ))
        })
    }

    /// Sends `record` to the leader of `partition_id` and returns the engine's reply record (an
    /// event or a rejection). A broker silent for `answer_timeout` is asked again (pass the
    /// whole deadline for commands answered late on purpose, like a creation awaiting its
    /// result, which must not be sent twice). Gives up at `deadline` with `DEADLINE_EXCEEDED`,
    /// or `UNAVAILABLE` when no broker is known at all.
    pub async fn command(
        &self,
        partition_id: PartitionId,
        record: &Record,
        deadline: Instant,
        answer_timeout: Duration,
    ) -> Result<Record, Status> {
        self.request(partition_id, record, None, deadline, answer_timeout)
            .await
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
        let answer_timeout = Duration::from_millis(u64::from(wait_ms)) + ANSWER_TIMEOUT;
        self.request(
            partition_id,
            record,
            Some(wait_ms),
            deadline,
            answer_timeout,
        )
        .await
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one retry loop: every answer and failure is decided in one place"
    )]
    async fn request(
        &self,
        partition_id: PartitionId,
        record: &Record,
        poll_wait_ms: Option<u32>,
        deadline: Instant,
        answer_timeout: Duration,
    ) -> Result<Record, Status> {
        let command = encode_records(std::slice::from_ref(record));
        if command.len() > self.command_bytes_max {
            return Err(Status::resource_exhausted(format!(
                "the command is {} bytes encoded, above the limit of {} bytes \
                 (network.maxMessageSize); send smaller variables or resources",
                command.len(),
                self.command_bytes_max
            )));
        }
        let mut target: Option<String> = None;
        let mut backoff = BACKOFF_MIN;
        let mut redirects = 0u32;
        let mut last_problem = String::from("no attempt finished");
        loop {
            if Instant::now() >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "partition {partition_id} did not answer in time (last problem: \
                     {last_problem}); retry, or allow a longer deadline"
                )));
            }
            let Some(address) = target.take().or_else(|| self.first_target(partition_id)) else {
                "no broker of the cluster is known yet".clone_into(&mut last_problem);
                if pause(&mut backoff, deadline).await {
                    continue;
                }
                return Err(Status::unavailable(format!(
                    "no broker of the cluster is known to this gateway yet; the cluster may \
                     still be starting: retry shortly (partition {partition_id})"
                )));
            };
            let attempt = self.attempt(&address, partition_id, &command, poll_wait_ms, deadline);
            let answer_deadline = deadline.min(Instant::now() + answer_timeout);
            // A poll is asked again after a silence or a lost answer (at worst its jobs wait
            // for their timeout); any other command may have taken effect, so the caller hears
            // so instead of the command running twice.
            let retry_lost = poll_wait_ms.is_some();
            let Ok(outcome) = tokio::time::timeout_at(answer_deadline, attempt).await else {
                last_problem = format!("no answer from {address} within {answer_timeout:?}");
                if retry_lost || Instant::now() >= deadline {
                    continue;
                }
                return Err(maybe_done(partition_id, &last_problem));
            };
            let outcome = match outcome {
                Err(AttemptError::Lost(problem)) if !retry_lost => {
                    return Err(maybe_done(partition_id, &problem));
                }
                Ok(Response::Unavailable { message, .. })
                    if !retry_lost && message.contains(MAYBE_COMMITTED) =>
                {
                    return Err(maybe_done(partition_id, &format!("{address}: {message}")));
                }
                Err(AttemptError::Lost(problem) | AttemptError::NotSent(problem)) => Err(problem),
                Ok(response) => Ok(response),
            };
            match outcome {
                Ok(Response::Processed { response, .. }) => {
                    let mut records = decode_records(&response).map_err(|error| {
                        Status::internal(format!("the broker's reply did not decode: {error}"))
                    })?;
                    if records.len() != 1 {
                        return Err(Status::internal(format!(
                            "the broker replied with {} records instead of one",
                            records.len()
                        )));
                    }
                    return Ok(records.remove(0));
                }
                Ok(Response::NotLeader { leader, .. }) => {
                    last_problem = format!("{address} does not lead partition {partition_id}");
                    redirects += 1;
                    if let Some((_, leader_address)) = leader
                        && leader_address != address
                    {
                        target = Some(leader_address);
                    }
                    if target.is_none() || redirects > REDIRECTS_WITHOUT_BACKOFF {
                        pause(&mut backoff, deadline).await;
                    }
                }
                Ok(Response::Unavailable { message, .. }) => {
                    last_problem = format!("{address}: {message}");
                    pause(&mut backoff, deadline).await;
                }
                Ok(Response::Overloaded { message, .. }) => {
                    return Err(Status::resource_exhausted(format!(
                        "backpressure: {message} (nothing was processed)"
                    )));
                }
                Ok(Response::Invalid { message, .. }) => {
                    return Err(Status::invalid_argument(format!(
                        "the broker refused the command: {message}"
                    )));
                }
                Ok(Response::Appended { .. }) => {
                    return Err(Status::internal(
                        "the broker answered a command like an append; check that every broker \
                         runs the same Sluice version",
                    ));
                }
                Err(problem) => {
                    last_problem = problem;
                    pause(&mut backoff, deadline).await;
                }
            }
        }
    }
}

/// Why an attempt got no answer.
enum AttemptError {
    /// The command never left: it certainly did not take effect.
    NotSent(String),
    /// The command was sent and its answer lost: it may have taken effect.
    Lost(String),
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

/// Writes queued requests and hands answers to their callers until the socket breaks or every
/// sender is gone. Callers still waiting then see their answer channel closed.
async fn drive_connection(stream: TcpStream, mut queue: mpsc::Receiver<Outgoing>) {
    let (mut reader, mut writer) = stream.into_split();
    let mut waiting: HashMap<u64, oneshot::Sender<Response>> = HashMap::new();
    let mut decoder = ResponseDecoder::new();
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    loop {
        // Reads first: a peer that died has left an end of stream (or a reset) to read, and
        // noticing it before writing keeps a command from being written into a dead connection,
        // where it would count as sent and lost rather than as never sent.
        tokio::select! {
            biased;
            read = reader.read(&mut buffer) => {
                let bytes = match read {
                    Ok(0) | Err(_) => return,
                    Ok(bytes) => bytes,
                };
                decoder.push(&buffer[..bytes]);
                loop {
                    match decoder.next_response() {
                        Ok(Some(response)) => {
                            if let Some(answer) = waiting.remove(&response.request_id()) {
                                let _ = answer.send(response);
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
            }
            outgoing = queue.recv() => {
                let Some(outgoing) = outgoing else { return };
                // Everything queued by now goes out in one write.
                let mut frames = outgoing.frame;
                waiting.insert(outgoing.request_id, outgoing.answer);
                while frames.len() < WRITE_COALESCE_BYTES
                    && let Ok(more) = queue.try_recv()
                {
                    frames.extend_from_slice(&more.frame);
                    waiting.insert(more.request_id, more.answer);
                }
                if writer.write_all(&frames).await.is_err() {
                    return;
                }
            }
        }
    }
}
