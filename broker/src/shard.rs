//! Shards beyond the first: partition replicas on their own cores.
//!
//! With `threads.cpuThreadCount` = N, a broker runs N glommio executors (shards). Shard 0 runs
//! the [`crate::node::Node`]: the QUIC transport, gossip, the command and management APIs, and
//! some replicas. The local replicas are dealt round-robin over the shards, each pinned to its
//! shard for the life of the process: its journal, Raft core and tasks never leave it.
//!
//! Shard 0 and shard s talk through two bounded glommio shared channels (lock-free, one
//! producer and one consumer each):
//! - [`ShardInput`] to the shard: Raft messages for its replicas (re-encoded as one wire batch per
//!   received frame), appends with a ticket, leadership transfers, stop;
//! - [`ShardOutput`] from the shard: Raft batches to send to a node (already encoded: the shard
//!   batches its replicas' messages per peer node like shard 0 does), append outcomes by ticket,
//!   and replica statuses (on every role change and every [`STATUS_INTERVAL`]).
//!
//! A full channel makes the sender wait: back-pressure, never loss.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use glommio::channels::shared_channel::{SharedReceiver, SharedSender};
use sluice_log::raft::Message;
use sluice_net::frame::FRAME_HEADER_BYTES;
use sluice_net::{Frame, FrameKind, decode_raft_batch, encode_raft_batch};

use crate::notify::Notify;
use crate::partition::{
    AppendOutcome, Partition, PartitionConfig, PartitionStatus, RaftOutbox, StatusListener,
};
use crate::partitioning::{NodeId, PartitionId};

/// Items in each channel between two shards before the sender waits.
pub const CHANNEL_ITEMS_MAX: usize = 8192;
/// How often a shard reports the status of its replicas (for metrics and the APIs).
pub const STATUS_INTERVAL: Duration = Duration::from_millis(200);

/// From shard 0 to another shard.
#[derive(Debug)]
pub enum ShardInput {
    /// The body of a Raft batch frame holding messages for this shard's replicas only.
    Raft(Vec<u8>),
    /// An append; its outcome comes back with the same ticket.
    Append {
        /// Matches the outcome to the waiting client.
        ticket: u64,
        /// The partition.
        partition_id: PartitionId,
        /// What to append.
        payload: Vec<u8>,
    },
    /// Ask the replica, if it leads, to hand leadership to `to`.
    Transfer {
        /// The partition.
        partition_id: PartitionId,
        /// The node to take over.
        to: NodeId,
    },
    /// Fault injection (`management.faults.enabled`) into a replica's storage.
    StorageFault {
        /// The partition.
        partition_id: PartitionId,
        /// The fault.
        fault: crate::partition::StorageFault,
    },
    /// Stop the replicas and the shard.
    Stop,
}

/// From another shard to shard 0.
#[derive(Debug)]
pub enum ShardOutput {
    /// The body of a Raft batch frame for node `to`.
    Raft {
        /// The destination node.
        to: NodeId,
        /// The frame body.
        body: Vec<u8>,
    },
    /// An engine command for the leader of `partition_id`, wherever it is.
    Command {
        /// The partition.
        partition_id: PartitionId,
        /// The append payload.
        payload: Vec<u8>,
    },
    /// The outcome of the append with this ticket.
    Appended {
        /// The append's ticket.
        ticket: u64,
        /// What became of it.
        outcome: AppendOutcome,
    },
    /// A replica's state.
    Status {
        /// The state.
        status: Box<PartitionStatus>,
        /// Whether its role, term or leader just changed.
        changed: bool,
    },
}

/// The shard's end of the channels, handed to its executor thread.
#[derive(Debug)]
pub struct ShardLinks {
    /// Inputs from shard 0.
    pub input: SharedReceiver<ShardInput>,
    /// Outputs to shard 0.
    pub output: SharedSender<ShardOutput>,
}

/// Outputs waiting for the channel, and the task that pumps them.
#[derive(Default)]
struct OutputQueue {
    items: RefCell<VecDeque<ShardOutput>>,
    notify: Notify,
}

impl OutputQueue {
    fn push(&self, item: ShardOutput) {
        self.items.borrow_mut().push_back(item);
        self.notify.notify();
    }
}

/// Batches the replicas' messages per node, like shard 0's outbox.
struct ShardOutbox {
    queued: RefCell<BTreeMap<NodeId, Vec<(PartitionId, Message)>>>,
    commands: RefCell<Vec<(PartitionId, Vec<u8>)>>,
    notify: Notify,
}

impl RaftOutbox for ShardOutbox {
    fn send(&self, to: NodeId, partition_id: PartitionId, message: Message) {
        self.queued
            .borrow_mut()
            .entry(to)
            .or_default()
            .push((partition_id, message));
        self.notify.notify();
    }

    fn send_command(&self, partition_id: PartitionId, payload: Vec<u8>) {
        self.commands.borrow_mut().push((partition_id, payload));
        self.notify.notify();
    }
}

/// Runs a shard with the replicas of `configs` until it is told to stop.
pub async fn run(configs: Vec<PartitionConfig>, links: ShardLinks) -> anyhow::Result<()> {
    let input = links.input.connect().await;
    let output = links.output.connect().await;
    let queue = Rc::new(OutputQueue::default());
    let outbox = Rc::new(ShardOutbox {
        queued: RefCell::default(),
        commands: RefCell::default(),
        notify: Notify::default(),
    });
    let pump = {
        let queue = Rc::clone(&queue);
        glommio::spawn_local(async move {
            loop {
                let item = queue.items.borrow_mut().pop_front();
                match item {
                    Some(item) => {
                        if output.send(item).await.is_err() {
                            return;
                        }
                    }
                    None => queue.notify.notified().await,
                }
            }
        })
        .detach()
    };
    glommio::spawn_local(send_batches(Rc::clone(&outbox), Rc::clone(&queue))).detach();
    let mut partitions: BTreeMap<PartitionId, Rc<Partition>> = BTreeMap::new();
    for config in configs {
        let listener: StatusListener = {
            let queue = Rc::clone(&queue);
            Rc::new(move |status: &PartitionStatus| {
                queue.push(ShardOutput::Status {
                    status: Box::new(status.clone()),
                    changed: true,
                });
            })
        };
        let outbox: Rc<dyn RaftOutbox> = outbox.clone();
        let partition_id = config.partition_id;
        partitions.insert(
            partition_id,
            Partition::open(config, outbox, listener).await?,
        );
    }
    glommio::spawn_local(report_statuses(
        partitions.values().cloned().collect(),
        Rc::clone(&queue),
    ))
    .detach();
    while let Some(item) = input.recv().await {
        if !handle_input(&partitions, &queue, item)? {
            break;
        }
    }
    for partition in partitions.values() {
        partition.close();
    }
    // Let the replicas answer what is pending and flush, then let the pump drain.
    glommio::timer::sleep(Duration::from_millis(200)).await;
    drop(pump);
    Ok(())
}

/// Hands one input from shard 0 to this shard's replicas; false on [`ShardInput::Stop`].
fn handle_input(
    partitions: &BTreeMap<PartitionId, Rc<Partition>>,
    queue: &Rc<OutputQueue>,
    item: ShardInput,
) -> anyhow::Result<bool> {
    match item {
        ShardInput::Raft(body) => {
            let frame = Frame {
                kind: FrameKind::RaftBatch,
                body,
            };
            // Shard 0 encoded this batch from a validated one; an error is a bug there.
            let messages = decode_raft_batch(&frame).map_err(|error| {
                anyhow::anyhow!("a batch from shard 0 failed to decode: {error}")
            })?;
            for (partition_id, message) in messages {
                if let Some(partition) = partitions.get(&partition_id) {
                    partition.deliver(message);
                }
            }
        }
        ShardInput::Append {
            ticket,
            partition_id,
            payload,
        } => {
            let queue = Rc::clone(queue);
            let responder = Box::new(move |outcome| {
                queue.push(ShardOutput::Appended { ticket, outcome });
            });
            match partitions.get(&partition_id) {
                Some(partition) => partition.append(payload, responder),
                None => responder(AppendOutcome::Unavailable {
                    message: format!("partition {partition_id} is not on this shard"),
                }),
            }
        }
        ShardInput::Transfer { partition_id, to } => {
            if let Some(partition) = partitions.get(&partition_id) {
                partition.transfer_leadership(to);
            }
        }
        ShardInput::StorageFault {
            partition_id,
            fault,
        } => {
            if let Some(partition) = partitions.get(&partition_id) {
                partition.inject_storage_fault(fault);
            }
        }
        ShardInput::Stop => return Ok(false),
    }
    Ok(true)
}

/// Encodes the replicas' queued messages into one batch per node (split when large).
async fn send_batches(outbox: Rc<ShardOutbox>, queue: Rc<OutputQueue>) {
    loop {
        outbox.notify.notified().await;
        let commands = std::mem::take(&mut *outbox.commands.borrow_mut());
        for (partition_id, payload) in commands {
            queue.push(ShardOutput::Command {
                partition_id,
                payload,
            });
        }
        let queued = std::mem::take(&mut *outbox.queued.borrow_mut());
        for (to, messages) in queued {
            for chunk in crate::node::split_batches(&messages) {
                match encode_raft_batch(chunk) {
                    Ok(frame) => queue.push(ShardOutput::Raft {
                        to,
                        body: frame[FRAME_HEADER_BYTES..].to_vec(),
                    }),
                    Err(error) => eprintln!("shard: encoding a raft batch: {error}"),
                }
            }
        }
    }
}

/// Reports every replica's status every [`STATUS_INTERVAL`].
async fn report_statuses(partitions: Vec<Rc<Partition>>, queue: Rc<OutputQueue>) {
    loop {
        glommio::timer::sleep(STATUS_INTERVAL).await;
        for partition in &partitions {
            queue.push(ShardOutput::Status {
                status: Box::new(partition.status()),
                changed: false,
            });
        }
    }
}
