//! `sluice-log`: the record-batch format, the direct-I/O segmented journal, and the Raft
//! replication core of a partition, with the deterministic simulator that tests it.
//!
//! A partition's log is a sequence of [batches](batch), each one journal entry (and, later, one
//! Raft entry), stored in preallocated [segment] files written with `O_DIRECT`.
//!
//! # Driving a journal
//!
//! ```no_run
//! # async fn example() -> sluice_log::Result<()> {
//! use std::rc::Rc;
//! use sluice_log::{BatchMeta, DmaStorage, FlushPolicy, Journal, JournalConfig, spawn_flusher};
//!
//! let storage = DmaStorage::open("/var/lib/sluice/partition-1").await?;
//! let (journal, report) = Journal::open(storage, JournalConfig::default()).await?;
//! if let Some(cut) = &report.dropped_tail {
//!     eprintln!("recovery cut a torn tail: {cut:?}");
//! }
//! let journal = Rc::new(journal);
//! spawn_flusher(journal.clone(), FlushPolicy::Immediate);
//! let meta = BatchMeta { term: 1, timestamp_ms: 0, record_count: 1 };
//! let index = journal.append(meta, b"payload")?;   // returns at once
//! journal.wait_durable(index).await?;               // one fdatasync shared by many appends
//! let batch = journal.read(index).await?;           // checksums verified
//! # Ok(()) }
//! ```
//!
//! Without a flusher, call [`Journal::flush`] directly (the simulator does). Raft uses
//! [`Journal::truncate_after`], [`Journal::compact_before`] and [`Journal::reset`].
//!
//! The disk is a [`Storage`]: [`DmaStorage`] in production (glommio, `io_uring`, `O_DIRECT`) and
//! [`MemStorage`] in tests, an in-memory disk that, at a simulated crash, drops, applies or tears
//! each write not yet synced, as a device with a volatile cache may.
//!
//! # Raft
//!
//! [`raft::Raft`] is a sans-IO state machine: inputs (`handle_tick`, `handle_message`,
//! `propose`, `handle_flushed`) and one numbered [`raft::Ready`] of outputs (entries for the
//! journal, hard state to persist, messages, the commit index); its module docs show the driver
//! loop. Each Raft entry is one journal batch, at the same index, carrying its term. Flushes
//! reach Raft as [`FlushReport`]s stamped with the journal's truncation epoch, so one that a
//! truncation overtook cannot vouch for the entries appended after the cut.
//! [`sim::cluster`] drives several replicas under a seeded faulty network and crashing disks and
//! checks Raft's safety rules after every step.

pub mod batch;
mod error;
pub mod flusher;
mod journal;
mod lock;
pub mod raft;
pub mod segment;
pub mod sim;
pub mod storage;
mod tail;

pub use batch::{Batch, BatchHeader, BatchMeta, BatchRef};
pub use error::{Error, Result};
pub use flusher::{FlushPolicy, run_flusher, spawn_flusher};
pub use journal::{
    DroppedTail, FlushReport, Journal, JournalConfig, JournalStats, Reader, RecoveryReport,
};
pub use storage::{
    BLOCK_BYTES, DmaStorage, IoDelay, MemBuffer, MemStorage, SECTOR_BYTES, Storage, StorageFile,
    WRITE_CHUNK_BYTES, WriteBuffer,
};
