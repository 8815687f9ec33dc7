//! The link between the gateway and the cluster: how a client's command reaches a partition's
//! leader and its answer comes back, with no TCP hop.
//!
//! The gateway runs on its own thread (tokio); the node runs on shard 0 (glommio). A
//! [`LinkRequest`] names the node that should lead the partition; the node's link task
//! ([`crate::node::Node`]) hands it to the local replica (through the shard channel when it
//! lives on another shard) when that node is itself, and otherwise sends it over the brokers'
//! mutual-TLS QUIC transport as a [`sluice_net::FrameKind::Request`] frame, whose
//! [`sluice_net::FrameKind::Reply`] comes back on the same connection. Both frames carry the
//! command API's message format ([`crate::client_api`]): a `Command` or `Poll` request and its
//! response, matched by the sending node's forward id.
//!
//! ```text
//! gateway thread                      shard 0 (node)                      leader's broker
//! Link::request ── mpsc ──▶ link task ─┬─ target is this node ─▶ Node::append ─▶ replica
//!      ▲                               └─ QUIC Request ──────────────────────▶ Node::append
//!      └──────── oneshot ◀──────────── reply (local responder, or QUIC Reply ◀─ responder)
//! ```
//!
//! What the caller learns ([`LinkAnswer`]) tells a command that never left
//! ([`LinkAnswer::NotSent`]: send it anywhere) from one whose answer was lost
//! ([`LinkAnswer::Lost`]: it may have run; re-send it only with its request id, which the
//! engine answers from the first reply, see `sluice_engine::Record::request_id`).

use tokio::sync::{mpsc, oneshot};

use crate::client_api::Response;
use crate::partitioning::{NodeId, PartitionId};

/// Requests queued from the gateway to the node before the gateway waits.
pub const LINK_QUEUE_MAX: usize = 4096;

/// What a client asks of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkBody {
    /// An engine command (one encoded command record).
    Command(Vec<u8>),
    /// A job activation the leader may park up to `wait_ms` (see
    /// [`crate::client_api::Request::Poll`]).
    Poll {
        /// How long the leader may keep it.
        wait_ms: u32,
        /// One encoded job-batch activation command.
        command: Vec<u8>,
    },
}

/// One request from the gateway to the node.
#[derive(Debug)]
pub struct LinkRequest {
    /// The node believed to lead the partition.
    pub target: NodeId,
    /// The partition.
    pub partition_id: PartitionId,
    /// The command.
    pub body: LinkBody,
    /// Where the answer goes.
    pub answer: oneshot::Sender<LinkAnswer>,
}

/// What became of a [`LinkRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAnswer {
    /// The partition's answer (which may be `NotLeader`, `Unavailable`, ...).
    Answered(Response),
    /// The request never left this node: it certainly did not run.
    NotSent(String),
    /// The request left and its answer will not come (the peer went away): it may have run.
    Lost(String),
}

/// The gateway's end of the link. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Link {
    sender: mpsc::Sender<LinkRequest>,
}

/// The node's end of the link.
pub type LinkReceiver = mpsc::Receiver<LinkRequest>;

/// A new link: the gateway keeps the [`Link`], the node drains the receiver.
#[must_use]
pub fn link() -> (Link, LinkReceiver) {
    let (sender, receiver) = mpsc::channel(LINK_QUEUE_MAX);
    (Link { sender }, receiver)
}

impl Link {
    /// Sends `body` for `partition_id` to `target` and waits for what became of it.
    pub async fn request(
        &self,
        target: NodeId,
        partition_id: PartitionId,
        body: LinkBody,
    ) -> LinkAnswer {
        let (answer, answered) = oneshot::channel();
        let request = LinkRequest {
            target,
            partition_id,
            body,
            answer,
        };
        if self.sender.send(request).await.is_err() {
            return LinkAnswer::NotSent("the broker is shutting down".to_owned());
        }
        answered.await.unwrap_or_else(|_| {
            LinkAnswer::Lost("the broker dropped the request (shutting down?)".to_owned())
        })
    }
}
