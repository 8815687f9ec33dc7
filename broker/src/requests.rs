//! Client requests on a node: from this broker's gateway (the [`crate::link`]), from other
//! brokers' gateways (QUIC `Request` frames, answered with `Reply` frames), and raw appends from
//! the log benchmark's TCP API ([`crate::command_server`]). One set of checks serves them all:
//! the partition exists, the body is within its bounds, a client sends only the commands a
//! client may send, and the replica is here.
//!
//! Requests this node sends to another broker wait in [`Forwards`] for their reply, bounded
//! ([`FORWARDS_MAX`]) and aged out ([`FORWARD_AGE_MAX`], oldest first, without a scan: forward
//! ids grow with the time they are sent); a peer that gossip declares dead or gone answers all
//! of its requests [`LinkAnswer::Lost`] at once.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_net::FrameKind;
use tokio::sync::oneshot;

use crate::client_api::{
    POLL_WAIT_MS_MAX, Request, RequestDecoder, Response, ResponseDecoder, encode_command,
    encode_poll, encode_response,
};
use crate::link::{LinkAnswer, LinkBody, LinkReceiver, LinkRequest};
use crate::node::Node;
use crate::partition::AppendOutcome;
use crate::partitioning::{NodeId, PartitionId};

/// Requests sent to other brokers and not answered yet; more are refused (not sent).
pub const FORWARDS_MAX: usize = 65_536;
/// How long a request sent to another broker may go unanswered before it counts as lost: the
/// longest poll plus a margin.
pub const FORWARD_AGE_MAX: Duration = Duration::from_millis(POLL_WAIT_MS_MAX as u64 + 10_000);
/// How often unanswered requests are aged out.
const FORWARD_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Who sent a request: the checks differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A gateway (this broker's or another's): engine commands a client may send.
    Client,
    /// The log benchmark's raw-append API: raw appends only.
    RawAppends,
}

struct Forward {
    answer: oneshot::Sender<LinkAnswer>,
    peer: NodeId,
    sent: Instant,
}

/// Requests this node sent to other brokers, by forward id: ids grow with the time sent, so
/// the first entry is the oldest.
#[derive(Default)]
pub struct Forwards {
    waiting: RefCell<BTreeMap<u64, Forward>>,
    next_id: Cell<u64>,
}

impl std::fmt::Debug for Forwards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwards")
            .field("waiting", &self.len())
            .finish_non_exhaustive()
    }
}

impl Forwards {
    /// Requests waiting for their reply.
    #[must_use]
    pub fn len(&self) -> usize {
        self.waiting.borrow().len()
    }

    /// Whether none waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.waiting.borrow().is_empty()
    }

    /// Answers every request sent to `peer` as lost: it went away.
    pub fn peer_gone(&self, peer: NodeId, why: &str) {
        let lost: Vec<Forward> = {
            let mut waiting = self.waiting.borrow_mut();
            let ids: Vec<u64> = waiting
                .iter()
                .filter(|(_, forward)| forward.peer == peer)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| waiting.remove(&id))
                .collect()
        };
        for forward in lost {
            let _ = forward.answer.send(LinkAnswer::Lost(format!(
                "node {peer} {why} before it answered"
            )));
        }
    }

    fn sweep(&self, now: Instant) {
        let expired: Vec<Forward> = {
            let mut waiting = self.waiting.borrow_mut();
            let mut expired = Vec::new();
            while let Some(oldest) = waiting.first_entry() {
                if now.duration_since(oldest.get().sent) < FORWARD_AGE_MAX {
                    break;
                }
                expired.push(oldest.remove());
            }
            expired
        };
        for forward in expired {
            let _ = forward.answer.send(LinkAnswer::Lost(format!(
                "node {} did not answer within {FORWARD_AGE_MAX:?}",
                forward.peer
            )));
        }
    }
}

/// Drains the gateway's link until the gateway is gone, and ages out unanswered forwards.
pub async fn link_task(node: Rc<Node>, mut receiver: LinkReceiver) {
    glommio::spawn_local(sweep_task(Rc::clone(&node))).detach();
    while let Some(request) = receiver.recv().await {
        serve_link_request(&node, request);
    }
}

async fn sweep_task(node: Rc<Node>) {
    loop {
        glommio::timer::sleep(FORWARD_SWEEP_INTERVAL).await;
        node.forwards().sweep(Instant::now());
    }
}

fn serve_link_request(node: &Rc<Node>, request: LinkRequest) {
    let LinkRequest {
        target,
        partition_id,
        body,
        answer,
    } = request;
    let request = match body {
        LinkBody::Command(command) => Request::Command {
            request_id: 0,
            partition_id,
            command,
        },
        LinkBody::Poll { wait_ms, command } => Request::Poll {
            request_id: 0,
            partition_id,
            wait_ms,
            command,
        },
    };
    if target == node.node_id() {
        serve(node, request, Origin::Client, move |response| {
            let _ = answer.send(LinkAnswer::Answered(response));
        });
        return;
    }
    let Some(socket) = node.peer_socket(target) else {
        let _ = answer.send(LinkAnswer::NotSent(format!(
            "no address of node {target} is known yet"
        )));
        return;
    };
    let forwards = node.forwards();
    if forwards.len() >= FORWARDS_MAX {
        let _ = answer.send(LinkAnswer::NotSent(format!(
            "{FORWARDS_MAX} requests to other brokers are unanswered; retry shortly"
        )));
        return;
    }
    let id = forwards.next_id.get();
    forwards.next_id.set(id.wrapping_add(1));
    let mut frame = Vec::new();
    match &request {
        Request::Command { command, .. } => encode_command(id, partition_id, command, &mut frame),
        Request::Poll {
            wait_ms, command, ..
        } => encode_poll(id, partition_id, *wait_ms, command, &mut frame),
        Request::Append { .. } => unreachable!("the link carries commands and polls only"),
    }
    if let Err(error) = node.transport().send(socket, FrameKind::Request, &frame) {
        let _ = answer.send(LinkAnswer::NotSent(format!(
            "sending to node {target}: {error}"
        )));
        return;
    }
    forwards.waiting.borrow_mut().insert(
        id,
        Forward {
            answer,
            peer: target,
            sent: Instant::now(),
        },
    );
}

/// A `Request` frame from another broker's gateway: served here, answered with a `Reply`
/// frame to the same peer. A frame that does not hold exactly one command or poll is dropped
/// (counted as malformed by the caller when this returns false).
pub fn serve_peer_request(
    node: &Rc<Node>,
    from: std::net::SocketAddr,
    peer: NodeId,
    body: &[u8],
) -> bool {
    let Some(request) = decode_one(body) else {
        return false;
    };
    if matches!(request, Request::Append { .. }) {
        return false;
    }
    let reply_node = Rc::clone(node);
    serve(node, request, Origin::Client, move |response| {
        let mut frame = Vec::new();
        encode_response(&response, &mut frame);
        if reply_node
            .transport()
            .send(from, FrameKind::Reply, &frame)
            .is_err()
        {
            // The peer's gateway times the request out and re-sends it.
            eprintln!(
                "node {}: the reply to node {peer}'s request {} could not be queued",
                reply_node.node_id(),
                response.request_id()
            );
        }
    });
    true
}

/// A `Reply` frame: the answer to a request this node forwarded to `peer`. False when it does
/// not decode or answers nothing `peer` was asked.
pub fn take_peer_reply(node: &Node, peer: NodeId, body: &[u8]) -> bool {
    let mut decoder = ResponseDecoder::new();
    decoder.push(body);
    let Ok(Some(response)) = decoder.next_response() else {
        return false;
    };
    if !matches!(decoder.next_response(), Ok(None)) || decoder.end_of_stream().is_err() {
        return false;
    }
    let forwards = node.forwards();
    let mut waiting = forwards.waiting.borrow_mut();
    let id = response.request_id();
    // A reply names the forward id: only the peer it was sent to may answer it.
    if waiting.get(&id).is_none_or(|forward| forward.peer != peer) {
        return false;
    }
    let forward = waiting.remove(&id).expect("checked above");
    drop(waiting);
    let _ = forward.answer.send(LinkAnswer::Answered(response));
    true
}

fn decode_one(body: &[u8]) -> Option<Request> {
    let mut decoder = RequestDecoder::new();
    decoder.push(body);
    let request = decoder.next_request().ok()??;
    if !matches!(decoder.next_request(), Ok(None)) || decoder.end_of_stream().is_err() {
        return None;
    }
    Some(request)
}

/// Why `serve` refuses a request from `origin` outright (before it reaches a partition), if
/// it does: the wrong kind for its port, a partition that does not exist, a body over its
/// limit, a poll that would wait too long.
fn refusal(
    node: &Node,
    origin: Origin,
    partition_id: PartitionId,
    raw: bool,
    body_len: usize,
    wait_ms: Option<u32>,
) -> Option<String> {
    match origin {
        Origin::RawAppends if !raw => {
            return Some(
                "the raw-append API takes raw appends only; send engine commands to the gRPC \
                 gateway (port 26500)"
                    .to_owned(),
            );
        }
        Origin::Client if raw => {
            return Some(
                "raw appends are taken by the log benchmark's raw-append API only".to_owned(),
            );
        }
        Origin::Client | Origin::RawAppends => {}
    }
    let partitions_count = node.settings().layout.shape().partitions_count();
    if partition_id == 0 || partition_id > partitions_count {
        return Some(format!(
            "partition {partition_id} does not exist; the cluster has partitions 1 to \
             {partitions_count}"
        ));
    }
    let bytes_max = if raw {
        node.settings().limits.entry_bytes
    } else {
        node.settings().limits.command_bytes
    };
    if body_len > bytes_max {
        return Some(format!(
            "the {} of {body_len} bytes exceeds its limit of {bytes_max} bytes \
             (network.maxMessageSize)",
            if raw { "payload" } else { "command" },
        ));
    }
    if let Some(wait_ms) = wait_ms
        && wait_ms > POLL_WAIT_MS_MAX
    {
        return Some(format!(
            "a poll may wait at most {POLL_WAIT_MS_MAX} ms, not {wait_ms} ms; poll again instead"
        ));
    }
    None
}

/// Serves `request` from `origin` on this node and calls `respond` exactly once with the
/// answer (its `request_id` the request's).
pub fn serve(
    node: &Rc<Node>,
    request: Request,
    origin: Origin,
    respond: impl FnOnce(Response) + 'static,
) {
    let (request_id, partition_id, kind, wait_ms, body) = match request {
        Request::Append {
            request_id,
            partition_id,
            payload,
        } => (
            request_id,
            partition_id,
            crate::apply::ENTRY_RAW,
            None,
            payload,
        ),
        Request::Command {
            request_id,
            partition_id,
            command,
        } => (
            request_id,
            partition_id,
            crate::apply::PAYLOAD_COMMAND,
            None,
            command,
        ),
        Request::Poll {
            request_id,
            partition_id,
            wait_ms,
            command,
        } => (
            request_id,
            partition_id,
            crate::apply::PAYLOAD_POLL,
            Some(wait_ms),
            command,
        ),
    };
    let raw = kind == crate::apply::ENTRY_RAW;
    if let Some(message) = refusal(node, origin, partition_id, raw, body.len(), wait_ms) {
        respond(Response::Invalid {
            request_id,
            message,
        });
        return;
    }
    if !node.hosts(partition_id) {
        respond(Response::NotLeader {
            request_id,
            leader: node.leader_hint(partition_id),
        });
        return;
    }
    let mut payload = Vec::with_capacity(body.len() + 5);
    payload.push(kind);
    if let Some(wait_ms) = wait_ms {
        payload.extend_from_slice(&wait_ms.to_le_bytes());
    }
    payload.extend_from_slice(&body);
    drop(body);
    let answer_node = Rc::clone(node);
    let responder = Box::new(move |outcome| {
        respond(response_of(&answer_node, partition_id, request_id, outcome));
    });
    if node.append(partition_id, payload, responder).is_err() {
        unreachable!("hosts() said this broker holds partition {partition_id}");
    }
}

/// The answer to a request given what became of its append.
#[must_use]
pub fn response_of(
    node: &Node,
    partition_id: PartitionId,
    request_id: u64,
    outcome: AppendOutcome,
) -> Response {
    match outcome {
        AppendOutcome::Committed {
            index,
            response: None,
        } => Response::Appended { request_id, index },
        AppendOutcome::Committed {
            index,
            response: Some(response),
        } => Response::Processed {
            request_id,
            index,
            response,
        },
        AppendOutcome::Invalid { message } => Response::Invalid {
            request_id,
            message,
        },
        AppendOutcome::NotLeader { leader } => Response::NotLeader {
            request_id,
            leader: leader.and_then(|_| node.leader_hint(partition_id)),
        },
        AppendOutcome::Unavailable { message } => Response::Unavailable {
            request_id,
            message,
        },
        AppendOutcome::Overloaded { message } => Response::Overloaded {
            request_id,
            message,
        },
    }
}
