//! The segmented append-only journal.
//!
//! A [`Journal`] lives on one shard, behind an `Rc`. Its methods take `&self`; its state sits in a
//! `RefCell` that is never borrowed across an `.await`, and its disk mutations (flush, truncate,
//! compact, reset) are serialized by a local async lock.
//!
//! **Appending** encodes the batch into the in-memory tail of the last segment and returns its
//! index at once. The tail is a list of 1 MiB write buffers from the storage (DMA memory in
//! production), so a batch is copied once; a full buffer is handed to the disk by sharing it.
//!
//! **Durability** is separate: [`Journal::flush`] writes everything appended before it and syncs
//! it, and wakes every [`Journal::wait_durable`] it covers. Concurrent `flush` callers queue on the
//! lock; when one finishes, the next finds its appends already covered or flushes everything
//! pending, so many appends share one `fdatasync` (group commit). A flush runs as a pipeline of
//! plans, each one write of at most `flush_bytes_max` into one segment: while a sync runs, the
//! next plan is written, and once a write chunk or more is waiting (streaming), plans keep being
//! written ahead of the syncs, up to four unsynced; one `fdatasync` completes every plan written
//! when it started, waking its waiters. Plans never write the same block at once, and a plan
//! that starts a segment waits until everything before it is synced. Durability is counted in
//! bytes: a plan cut at
//! `flush_bytes_max` ends on a buffer boundary even inside a batch, and a batch is durable when
//! every byte of it is. [`crate::flusher`] runs flushes in the background by a
//! [`crate::FlushPolicy`].
//!
//! **The partial tail block.** `O_DIRECT` writes whole 4 KiB blocks. A flush starts at the block
//! holding the first byte not yet written, so it rewrites that block with its written prefix
//! unchanged plus the new bytes. A torn rewrite cannot damage the prefix: every sector of it holds
//! the same bytes before and after.
//!
//! **Recovery** scans the last segment from its start. Zeros where a header should be are the
//! clean end. An invalid batch is a torn tail, cut off and reported, unless it is provably
//! flushed: every batch header records the journal's durable index when it was appended, so a
//! valid batch after the damage that records the damaged index as durable proves the damage is in
//! flushed data, and opening fails with [`Error::CorruptFlushedData`]. The proof is exact: it can
//! never fire after a plain crash, because every batch of the flushes in flight was appended before
//! the oldest of them completed, so none can claim their batches durable. Without
//! proof (damage within the flushes in flight, where a crash can tear writes and persist any
//! subset of them), the tail is cut. Past the end, the reach of the flushes in flight is checked for
//! remnants of a torn flush (data after a zeroed gap), which are zeroed and reported.
//! Older segments are scanned lazily on first read, where any damage is in flushed data.
//!
//! **Invariant: beyond a segment's written end there are only zeros.** Segments are preallocated
//! (reading as zeros), a torn tail found at recovery is zeroed, and `truncate_after` zeroes what it
//! cuts, so stale batches never reappear behind a torn write.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::batch::{self, Batch, BatchMeta, HEADER_BYTES};
use crate::error::{Error, Result};
use crate::lock::LocalLock;
use crate::segment::{DATA_START, SegmentHeader, parse_segment_name, segment_name, temp_name};
use crate::storage::{BLOCK_BYTES, Storage, StorageFile, WRITE_CHUNK_BYTES};
use crate::tail::Tail;

/// Limits and sizes of a journal. Every buffer and write is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Size of each preallocated segment file.
    pub segment_bytes: u64,
    /// Largest batch (header plus payload) accepted by `append`.
    pub batch_bytes_max: u64,
    /// Most bytes of unflushed appends held in memory; `append` fails with
    /// [`Error::PendingFull`] beyond it.
    pub pending_bytes_max: u64,
    /// Most bytes one flush writes to one segment in one write; a flush that has more loops.
    pub flush_bytes_max: u64,
    /// Distance between entries of the sparse in-memory index.
    pub index_interval_bytes: u64,
    /// The index of the first batch of a new, empty journal.
    pub first_index: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_bytes: 128 << 20,
            batch_bytes_max: 4 << 20,
            pending_bytes_max: 64 << 20,
            flush_bytes_max: 16 << 20,
            index_interval_bytes: 32 << 10,
            first_index: 1,
        }
    }
}

impl JournalConfig {
    /// Checks the relations between the limits.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the broken rule.
    pub fn validate(&self) -> Result<()> {
        let rule = |ok: bool, msg: &str| {
            if ok {
                Ok(())
            } else {
                Err(Error::InvalidConfig(msg.to_owned()))
            }
        };
        rule(
            self.segment_bytes.is_multiple_of(BLOCK_BYTES),
            "segment_bytes must be a multiple of 4096",
        )?;
        rule(
            self.flush_bytes_max.is_multiple_of(BLOCK_BYTES) && self.flush_bytes_max > 0,
            "flush_bytes_max must be a positive multiple of 4096",
        )?;
        rule(
            self.batch_bytes_max > HEADER_BYTES as u64,
            "batch_bytes_max must exceed the 64-byte batch header",
        )?;
        rule(
            self.batch_bytes_max <= u64::from(batch::PAYLOAD_BYTES_MAX),
            "batch_bytes_max must not exceed the format maximum of 64 MiB",
        )?;
        rule(
            DATA_START + self.batch_bytes_max <= self.segment_bytes,
            "segment_bytes must hold the 4 KiB segment header plus one batch of batch_bytes_max",
        )?;
        rule(
            self.pending_bytes_max >= self.batch_bytes_max,
            "pending_bytes_max must be at least batch_bytes_max",
        )?;
        rule(
            self.index_interval_bytes > 0,
            "index_interval_bytes must be positive",
        )?;
        rule(
            self.first_index > 0,
            "first_index must be at least 1 (0 means 'no index')",
        )?;
        Ok(())
    }

    /// How far past the durable end the writes of a crash's unfinished flushes can reach: the
    /// plans of the flush pipeline that may be unsynced at once (`PLANS_IN_FLIGHT_MAX`), each at
    /// most `flush_bytes_max` (or one batch) plus the rewritten partial block.
    fn tear_window_bytes(&self) -> u64 {
        PLANS_IN_FLIGHT_MAX as u64
            * (self.flush_bytes_max.max(self.batch_bytes_max) + 2 * BLOCK_BYTES)
    }
}

/// What recovery found and did when the journal was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in the journal after recovery.
    pub segments: usize,
    /// First and next (exclusive) index after recovery.
    pub first_index: u64,
    pub next_index: u64,
    /// A torn or damaged tail that was cut off: where, why and how many bytes.
    pub dropped_tail: Option<DroppedTail>,
    /// Files removed: leftovers of an interrupted segment creation or of an older generation.
    pub removed_files: Vec<String>,
}

/// A cut-off tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTail {
    pub segment: String,
    pub offset: u64,
    /// The index the damaged batch would have had.
    pub index: u64,
    pub bytes: u64,
    pub reason: String,
}

/// How far the journal is durable, and in which truncation epoch: what a flush reports to Raft
/// ([`crate::raft::Raft::handle_flushed`]).
///
/// A report is a fact about the journal at the moment it was read. A truncation (or reset)
/// after that point may cut what it covers and let other batches be appended at the same
/// indexes; the epoch lets Raft tell such a stale report apart and keep only what no later cut
/// touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct FlushReport {
    /// How many times the journal had been cut ([`Journal::truncate_after`],
    /// [`Journal::reset`]) when the report was read.
    pub epoch: u64,
    /// The last durable index in that epoch.
    pub durable_index: u64,
}

/// Counters for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    pub appends: u64,
    /// Flush plans completed (one or more writes each).
    pub flushes: u64,
    /// `fdatasync` calls that completed a plan.
    pub syncs: u64,
    /// Plans made durable by a sync that also covered an earlier plan (the pipeline at work).
    pub shared_syncs: u64,
    pub bytes_written: u64,
}

#[derive(Debug)]
struct Segment<F: StorageFile> {
    first_index: u64,
    name: String,
    /// `None` until a flush creates the file.
    file: Option<Rc<F>>,
    /// One past the last batch in this segment.
    next_index: u64,
    /// Offset just past the last batch appended.
    data_end: u64,
    /// Offset up to which data is written and synced.
    durable_end: u64,
    /// Offset up to which data is written (by completed writes), synced or not; at least
    /// `durable_end`. The next flush writes from here.
    issued_end: u64,
    /// Offset below which the disk may hold non-zero data.
    written_end: u64,
    /// Bytes `[tail.start(), data_end)`: everything not yet durable plus its block-aligned
    /// lead-in. Reads at or past `tail.start()` come from here, below it from disk.
    tail: Tail<F::Buffer>,
    /// `(index, offset)` every `index_interval_bytes`; `None` until the segment is scanned.
    sparse: Option<Vec<(u64, u64)>>,
}

#[derive(Debug, Clone, Copy)]
struct PendingBatch {
    index: u64,
    segment_first: u64,
    start: u64,
    end: u64,
}

#[derive(Debug)]
struct State<F: StorageFile> {
    config: JournalConfig,
    segments: Vec<Segment<F>>,
    generation: u64,
    next_index: u64,
    durable_index: u64,
    pending: VecDeque<PendingBatch>,
    pending_bytes: u64,
    waiters: BTreeMap<u64, Vec<Waker>>,
    append_waker: Option<Waker>,
    failures: u64,
    last_failure: String,
    /// One entry per `truncate_after` or `reset` call, so its length is the truncation epoch;
    /// `cuts[e]` is the cut made by epoch `e + 1`.
    cuts: Vec<u64>,
    /// Bumped by every change that moves batches (truncate, compact, reset); readers re-seek.
    layout_version: u64,
    closed: bool,
    stats: JournalStats,
}

/// A segmented append-only journal of batches over a [`Storage`].
#[derive(Debug)]
pub struct Journal<S: Storage> {
    storage: S,
    state: RefCell<State<S::File>>,
    io: LocalLock,
}

struct SegmentWrite<F: StorageFile> {
    segment_first: u64,
    file: Option<Rc<F>>,
    offset: u64,
    /// Block-aligned length written from `offset`.
    len: u64,
    /// The data, in chunks of [`WRITE_CHUNK_BYTES`]; taken when the write is issued.
    buffers: Vec<F::Buffer>,
    /// End of the bytes this write makes durable: the end of its last batch, or a chunk
    /// boundary inside a batch where `flush_bytes_max` cut it. Batches ending at or before it
    /// are durable once the write is synced.
    data_end: u64,
}

/// One step of a flush: a single write into one segment, synced later. A plan never spans two
/// segments, and a segment is created only once every plan before it is synced, so an older
/// segment is complete on disk before a newer one holds any batch.
struct FlushPlan<F: StorageFile> {
    write: SegmentWrite<F>,
}

/// Plans written but not yet synced, at most, counting the one being written. Bounds what a
/// crash can tear: see [`JournalConfig::tear_window_bytes`].
const PLANS_IN_FLIGHT_MAX: usize = 4;

/// A write or sync of the flush pipeline.
type IoFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

/// What finished first in the flush pipeline.
enum IoEvent {
    Written(Result<()>),
    Synced(Result<()>),
}

/// The flush pipeline. Plans are written one after another without waiting for syncs, so the
/// disk keeps streaming, and one `fdatasync` at a time covers every plan whose writes had
/// completed when it started. Writes never overlap: a plan is written only after the previous
/// plan's writes completed (it may rewrite that plan's partial last block). At most
/// [`PLANS_IN_FLIGHT_MAX`] plans are unsynced, which bounds what a crash can tear
/// ([`JournalConfig::tear_window_bytes`]). A plan that starts a segment waits until everything
/// before it is synced, so an older segment is complete on disk before a newer one holds any
/// batch.
struct Pipeline<'a, F: StorageFile> {
    /// The plan being written.
    writing: Option<(FlushPlan<F>, IoFuture<'a>)>,
    /// Plans written and not yet synced, oldest first; the first ones may be under `syncing`.
    written: VecDeque<FlushPlan<F>>,
    /// The sync in flight and how many plans of `written` it covers.
    syncing: Option<(usize, IoFuture<'a>)>,
    /// A plan that starts a segment, waiting for everything before it to be synced.
    new_segment: Option<FlushPlan<F>>,
}

impl<F: StorageFile> Default for Pipeline<'_, F> {
    fn default() -> Self {
        Pipeline {
            writing: None,
            written: VecDeque::new(),
            syncing: None,
            new_segment: None,
        }
    }
}

impl<'a, F: StorageFile + 'a> Pipeline<'a, F> {
    /// True when the next plan may be made and written now, given `unwritten` bytes waiting.
    /// One plan is written while the previous one syncs; more only in streaming mode, when at
    /// least a write chunk waits: small appends then gather into the next plan instead of each
    /// paying a write and a sync.
    fn may_plan(&self, unwritten: u64) -> bool {
        self.new_segment.is_none()
            && self.writing.is_none()
            && self.written.len() + 1 < PLANS_IN_FLIGHT_MAX
            && (self.written.len() < 2 || unwritten >= WRITE_CHUNK_BYTES as u64)
    }

    /// Starts a sync of the written plans, unless one is running.
    fn start_sync(&mut self) {
        if self.syncing.is_some() {
            return;
        }
        let Some(front) = self.written.front() else {
            return;
        };
        let file = front
            .write
            .file
            .clone()
            .expect("a written plan has its file");
        let covered = self
            .written
            .iter()
            .take_while(|p| p.write.file.as_ref().is_some_and(|f| Rc::ptr_eq(f, &file)))
            .count();
        let sync: IoFuture<'a> = Box::pin(async move { file.sync().await });
        self.syncing = Some((covered, sync));
    }

    /// Waits until the sync or the write in flight finishes (the sync first if both did).
    async fn next_event(&mut self) -> IoEvent {
        poll_fn(|cx| {
            if let Some((_, sync)) = &mut self.syncing
                && let Poll::Ready(result) = sync.as_mut().poll(cx)
            {
                return Poll::Ready(IoEvent::Synced(result));
            }
            if let Some((_, write)) = &mut self.writing
                && let Poll::Ready(result) = write.as_mut().poll(cx)
            {
                return Poll::Ready(IoEvent::Written(result));
            }
            Poll::Pending
        })
        .await
    }
}

/// How a flush plan ended.
enum PlanEnd {
    /// Written and synced. `shared` when the same `fdatasync` also completed an earlier plan
    /// (for the stats).
    Synced { shared: bool },
    /// Failed. `issued` when its write was issued: its blocks may be on disk all the same.
    Failed { error: Error, issued: bool },
}

fn align_down(v: u64) -> u64 {
    v - v % BLOCK_BYTES
}
fn align_up(v: u64) -> u64 {
    v.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}
#[expect(
    clippy::cast_possible_truncation,
    reason = "in-memory lengths are bounded by config limits"
)]
fn us(v: u64) -> usize {
    v as usize
}

impl<S: Storage> Journal<S> {
    /// Opens the journal in `storage`, recovering from whatever a crash left, or creates an
    /// empty one.
    ///
    /// # Errors
    /// Invalid configuration, a file that is not a segment, corruption in flushed data, or I/O.
    pub async fn open(storage: S, config: JournalConfig) -> Result<(Self, RecoveryReport)> {
        config.validate()?;
        let mut report = RecoveryReport::default();
        let (mut found, generation) = discover_segments(&storage, &mut report).await?;
        found.sort_by_key(|(h, _, _)| h.first_index);

        let mut segments = Vec::with_capacity(found.len().max(1));
        if found.is_empty() {
            let file = create_segment(
                &storage,
                config.first_index,
                generation,
                config.segment_bytes,
            )
            .await?;
            segments.push(Segment::empty(config.first_index, Some(Rc::new(file))));
        } else {
            let count = found.len();
            let next_firsts: Vec<u64> = found
                .iter()
                .skip(1)
                .map(|(h, _, _)| h.first_index)
                .collect();
            for (i, (header, name, file)) in found.into_iter().enumerate() {
                if i + 1 < count {
                    segments.push(Segment {
                        first_index: header.first_index,
                        name,
                        file: Some(Rc::new(file)),
                        next_index: next_firsts[i],
                        data_end: config.segment_bytes,
                        durable_end: config.segment_bytes,
                        issued_end: config.segment_bytes,
                        written_end: config.segment_bytes,
                        tail: Tail::new(config.segment_bytes),
                        sparse: None,
                    });
                } else {
                    let segment =
                        recover_last(&storage, &config, header, name, file, &mut report).await?;
                    segments.push(segment);
                }
            }
        }
        let last = segments.last().expect("at least one segment");
        let next_index = last.next_index;
        report.segments = segments.len();
        report.first_index = segments[0].first_index;
        report.next_index = next_index;
        let journal_state = State {
            config,
            segments,
            generation,
            next_index,
            durable_index: next_index - 1,
            pending: VecDeque::new(),
            pending_bytes: 0,
            waiters: BTreeMap::new(),
            append_waker: None,
            failures: 0,
            last_failure: String::new(),
            cuts: Vec::new(),
            layout_version: 0,
            closed: false,
            stats: JournalStats::default(),
        };
        Ok((
            Journal {
                storage,
                state: RefCell::new(journal_state),
                io: LocalLock::default(),
            },
            report,
        ))
    }

    /// The storage this journal lives on.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The first index still held (it moves up with `compact_before` and `reset`).
    pub fn first_index(&self) -> u64 {
        self.state.borrow().segments[0].first_index
    }

    /// The index the next append gets.
    pub fn next_index(&self) -> u64 {
        self.state.borrow().next_index
    }

    /// The last index that is durable; `first_index() - 1` when none is.
    pub fn durable_index(&self) -> u64 {
        self.state.borrow().durable_index
    }

    /// How many times the journal has been cut: every [`Journal::truncate_after`] (even one
    /// with nothing to cut) and every [`Journal::reset`] since it was opened.
    pub fn truncation_epoch(&self) -> u64 {
        self.state.borrow().cuts.len() as u64
    }

    /// The durable index and the truncation epoch it holds in, read together. Read it right
    /// after a flush and hand it to [`crate::raft::Raft::handle_flushed`], however late:
    /// Raft drops what a cut made since then took away.
    pub fn flush_report(&self) -> FlushReport {
        let state = self.state.borrow();
        FlushReport {
            epoch: state.cuts.len() as u64,
            durable_index: state.durable_index,
        }
    }

    /// Bytes appended but not yet flushed.
    pub fn pending_bytes(&self) -> u64 {
        self.state.borrow().pending_bytes
    }

    /// The number of segments.
    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// Counters since open.
    pub fn stats(&self) -> JournalStats {
        self.state.borrow().stats
    }

    /// The configuration.
    pub fn config(&self) -> JournalConfig {
        self.state.borrow().config.clone()
    }

    /// Appends a batch and returns its index. The batch is readable at once and durable after
    /// a flush covers it.
    ///
    /// # Errors
    /// [`Error::BatchTooLarge`] or [`Error::PendingFull`]; the journal is unchanged then.
    pub fn append(&self, meta: BatchMeta, payload: &[u8]) -> Result<u64> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let bytes = batch::encoded_bytes(payload.len()) as u64;
        if bytes > state.config.batch_bytes_max {
            return Err(Error::BatchTooLarge {
                bytes,
                max: state.config.batch_bytes_max,
            });
        }
        if state.pending_bytes + bytes > state.config.pending_bytes_max {
            return Err(Error::PendingFull {
                pending_bytes: state.pending_bytes,
                max: state.config.pending_bytes_max,
            });
        }
        let index = state.next_index;
        let needs_roll = {
            let last = state
                .segments
                .last()
                .expect("a journal always has a segment");
            last.data_end + bytes > state.config.segment_bytes
        };
        if needs_roll {
            state.segments.push(Segment::empty(index, None));
        }
        let durable_index = state.durable_index;
        let interval = state.config.index_interval_bytes;
        let segment = state
            .segments
            .last_mut()
            .expect("a journal always has a segment");
        let start = segment.data_end;
        let header = batch::encode_header(index, durable_index, meta, payload)?;
        let alloc = |len| self.storage.alloc_buffer(len);
        segment.tail.push(&header, &alloc);
        segment.tail.push(payload, &alloc);
        segment.data_end += bytes;
        segment.next_index = index + 1;
        debug_assert_eq!(segment.tail.end(), segment.data_end);
        let sparse = segment
            .sparse
            .as_mut()
            .expect("the last segment is always scanned");
        if sparse
            .last()
            .is_none_or(|(_, offset)| start - offset >= interval)
        {
            sparse.push((index, start));
        }
        state.pending.push_back(PendingBatch {
            index,
            segment_first: segment.first_index,
            start,
            end: start + bytes,
        });
        state.pending_bytes += bytes;
        state.next_index = index + 1;
        state.stats.appends += 1;
        if let Some(w) = state.append_waker.take() {
            w.wake();
        }
        Ok(index)
    }

    /// Makes every batch appended before the call durable and returns the durable index.
    ///
    /// # Errors
    /// The I/O error of the flush; unflushed batches stay buffered and a later flush retries.
    pub async fn flush(&self) -> Result<u64> {
        let target = self.next_index() - 1;
        self.flush_to(target).await
    }

    /// Makes batches up to `target` durable, flushing no further than needed (one batch a flush
    /// when `target` is the next unflushed index: the `EveryBatch` policy).
    ///
    /// # Errors
    /// As [`Journal::flush`].
    pub async fn flush_to(&self, target: u64) -> Result<u64> {
        {
            let state = self.state.borrow();
            if state.durable_index >= target || state.pending.is_empty() {
                return Ok(state.durable_index);
            }
        }
        let _guard = self.io.lock().await;
        let mut pipe = Pipeline::default();
        loop {
            let unwritten = self
                .state
                .borrow()
                .unwritten_bytes(target, WRITE_CHUNK_BYTES as u64);
            if pipe.may_plan(unwritten) {
                let next = {
                    let mut state = self.state.borrow_mut();
                    state.plan_flush(target, &|len| self.storage.alloc_buffer(len))
                };
                match next {
                    Some(plan) if plan.write.file.is_some() => {
                        pipe.writing = Some(start_write(plan));
                    }
                    Some(plan) => pipe.new_segment = Some(plan),
                    None => {}
                }
            }
            pipe.start_sync();
            if pipe.writing.is_none() && pipe.syncing.is_none() {
                // Nothing in flight, so nothing is written and unsynced either.
                debug_assert!(pipe.written.is_empty());
                let Some(plan) = pipe.new_segment.take() else {
                    return Ok(self.durable_index());
                };
                let plan = self.create_segment_for(plan).await?;
                pipe.writing = Some(start_write(plan));
                continue;
            }
            match pipe.next_event().await {
                IoEvent::Synced(result) => {
                    let (covered, _) = pipe.syncing.take().expect("was syncing");
                    if let Err(e) = result {
                        // Let the write in flight finish: its blocks may reach the disk, and a
                        // later truncation must know to zero them.
                        if let Some((plan, write)) = pipe.writing.take() {
                            let _ = write.await;
                            self.state.borrow_mut().note_written(&plan);
                        }
                        let failed = pipe.written.pop_front().expect("a sync covers a plan");
                        return Err(self.fail_plan(&failed, e, true));
                    }
                    self.complete_synced(&mut pipe.written, covered)?;
                    // Let the appenders just woken append again before the next plan is cut,
                    // so their batches ride on it instead of waiting for one more write.
                    futures_lite::future::yield_now().await;
                }
                IoEvent::Written(result) => {
                    let (plan, _) = pipe.writing.take().expect("was writing");
                    if result.is_err()
                        && let Some((covered, sync)) = pipe.syncing.take()
                    {
                        // Finish the sync of the plans before: they may be durable now.
                        if let Err(e) = sync.await {
                            self.state.borrow_mut().note_written(&plan);
                            let failed = pipe.written.pop_front().expect("a sync covers a plan");
                            return Err(self.fail_plan(&failed, e, true));
                        }
                        self.complete_synced(&mut pipe.written, covered)?;
                    }
                    self.after_write(&plan, result)?;
                    pipe.written.push_back(plan);
                }
            }
        }
    }

    /// Creates the segment a plan starts, once every plan before it is synced.
    async fn create_segment_for(&self, mut plan: FlushPlan<S::File>) -> Result<FlushPlan<S::File>> {
        let (generation, segment_bytes) = {
            let state = self.state.borrow();
            (state.generation, state.config.segment_bytes)
        };
        let first = plan.write.segment_first;
        match create_segment(&self.storage, first, generation, segment_bytes).await {
            Ok(file) => {
                let file = Rc::new(file);
                self.state
                    .borrow_mut()
                    .set_segment_file(first, file.clone());
                plan.write.file = Some(file);
                Ok(plan)
            }
            Err(error) => Err(self.fail_plan(&plan, error, false)),
        }
    }

    /// Completes the first `covered` written plans, synced by one `fdatasync`.
    fn complete_synced(
        &self,
        written: &mut VecDeque<FlushPlan<S::File>>,
        covered: usize,
    ) -> Result<()> {
        let mut state = self.state.borrow_mut();
        for (i, plan) in written.drain(..covered).enumerate() {
            state.complete_flush(&plan, PlanEnd::Synced { shared: i > 0 })?;
        }
        Ok(())
    }

    /// Fails the flush at `plan`; returns the error to report.
    fn fail_plan(&self, plan: &FlushPlan<S::File>, error: Error, issued: bool) -> Error {
        self.state
            .borrow_mut()
            .complete_flush(plan, PlanEnd::Failed { error, issued })
            .expect_err("a failed plan fails the flush")
    }

    /// Records a plan's completed writes (or fails the flush if they failed).
    fn after_write(&self, plan: &FlushPlan<S::File>, written: Result<()>) -> Result<()> {
        let mut state = self.state.borrow_mut();
        match written {
            Ok(()) => {
                state.note_issued(plan);
                Ok(())
            }
            Err(error) => state.complete_flush(
                plan,
                PlanEnd::Failed {
                    error,
                    issued: true,
                },
            ),
        }
    }

    /// Waits until `index` is durable. Does not start a flush: a flusher task or another caller
    /// of `flush` must.
    ///
    /// # Errors
    /// [`Error::FlushFailed`] if a flush fails while waiting; [`Error::IndexOutOfRange`] if the
    /// index is truncated away (or was never appended).
    pub async fn wait_durable(&self, index: u64) -> Result<()> {
        let (failures, epoch) = {
            let state = self.state.borrow();
            (state.failures, state.cuts.len())
        };
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.cuts[epoch..].iter().any(|cut| index > *cut) || index >= state.next_index {
                let (first, next) = (state.segments[0].first_index, state.next_index);
                return Poll::Ready(Err(Error::IndexOutOfRange { index, first, next }));
            }
            if state.durable_index >= index {
                return Poll::Ready(Ok(()));
            }
            if state.failures != failures {
                return Poll::Ready(Err(Error::FlushFailed {
                    reason: state.last_failure.clone(),
                }));
            }
            state
                .waiters
                .entry(index)
                .or_default()
                .push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Resolves when there are unflushed appends or the journal is closed. For flusher tasks.
    pub async fn wait_pending(&self) {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if !state.pending.is_empty() || state.closed {
                Poll::Ready(())
            } else {
                state.append_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }

    /// Asks flusher tasks to stop after their current flush.
    pub fn close(&self) {
        let mut state = self.state.borrow_mut();
        state.closed = true;
        if let Some(w) = state.append_waker.take() {
            w.wake();
        }
    }

    /// True once [`Journal::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.state.borrow().closed
    }

    /// Reads the batch at `index`, verifying its checksums.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`], corruption, or I/O.
    pub async fn read(&self, index: u64) -> Result<Batch> {
        let mut reader = self.reader(index);
        if let Some(batch) = reader.next(self).await? {
            Ok(batch)
        } else {
            let state = self.state.borrow();
            Err(Error::IndexOutOfRange {
                index,
                first: state.segments[0].first_index,
                next: state.next_index,
            })
        }
    }

    /// A reader that yields batches in order starting at `index`.
    #[must_use]
    pub fn reader(&self, index: u64) -> Reader {
        Reader {
            next_index: index,
            cursor: None,
            chunk: Vec::new(),
            chunk_segment: 0,
            chunk_offset: 0,
            chunk_layout: u64::MAX,
        }
    }

    /// Drops every batch after `index` (an uncommitted suffix), durably: a crash after this
    /// returns never brings the dropped batches back. Waiters on dropped indexes get
    /// [`Error::IndexOutOfRange`]. Starts a new [truncation epoch](Journal::truncation_epoch),
    /// even when there is nothing to cut, so that a driver's epochs count its calls.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] if `index` is below `first_index() - 1`; I/O errors.
    pub async fn truncate_after(&self, index: u64) -> Result<()> {
        let _guard = self.io.lock().await;
        let (first, next) = {
            let state = self.state.borrow();
            (state.segments[0].first_index, state.next_index)
        };
        if index + 1 >= next {
            self.state.borrow_mut().cuts.push(index);
            return Ok(());
        }
        if index + 1 < first {
            return Err(Error::IndexOutOfRange { index, first, next });
        }
        let cut_index = index + 1;
        // Remove whole segments after the one that keeps index `cut_index - 1`, newest first, so
        // a crash part-way leaves a prefix of the old log.
        let doomed: Vec<(String, bool)> = {
            let state = self.state.borrow();
            // The segment that starts exactly at the cut goes whole, unless it is the first.
            let position = state.segment_position(cut_index);
            let keep = if state.segments[position].first_index == cut_index && position > 0 {
                position - 1
            } else {
                position
            };
            state.segments[keep + 1..]
                .iter()
                .rev()
                .map(|s| (s.name.clone(), s.file.is_some()))
                .collect()
        };
        for (name, on_disk) in &doomed {
            if *on_disk {
                self.storage.remove(name).await?;
            }
        }
        if !doomed.is_empty() {
            self.storage.sync_dir().await?;
        }
        let cut_offset = {
            let mut state = self.state.borrow_mut();
            let keep = state.segments.len() - doomed.len();
            state.segments.truncate(keep);
            let last = state.segments.last().expect("kept one");
            if last.next_index <= cut_index {
                None
            } else {
                Some(last.first_index)
            }
        };
        if let Some(segment_first) = cut_offset {
            let offset = self.offset_of(segment_first, cut_index).await?;
            self.cut_segment_at(offset, cut_index).await?;
        } else {
            self.prepare_new_last().await?;
        }
        // The new epoch and the lowered durable index appear together: a flush report never
        // pairs the new epoch with a durable index past the cut.
        let mut state = self.state.borrow_mut();
        state.next_index = cut_index;
        state.durable_index = state.durable_index.min(index);
        state.pending.retain(|p| p.index < cut_index);
        state.pending_bytes = state.pending.iter().map(|p| p.end - p.start).sum();
        state.cuts.push(index);
        state.layout_version += 1;
        state.wake_all();
        Ok(())
    }

    /// Deletes whole segments whose batches all lie below `index` (covered by a snapshot). The
    /// segment holding `index` and everything after it stay.
    ///
    /// # Errors
    /// I/O errors; segments already deleted stay deleted.
    pub async fn compact_before(&self, index: u64) -> Result<()> {
        let _guard = self.io.lock().await;
        let doomed: Vec<(String, bool, u64)> = {
            let state = self.state.borrow();
            let count = state
                .segments
                .windows(2)
                .take_while(|w| w[1].first_index <= index)
                .count();
            state.segments[..count]
                .iter()
                .map(|s| (s.name.clone(), s.file.is_some(), s.first_index))
                .collect()
        };
        for (name, on_disk, first) in &doomed {
            if *on_disk {
                self.storage.remove(name).await?;
            }
            let mut state = self.state.borrow_mut();
            state.segments.retain(|s| s.first_index != *first);
            state.pending.retain(|p| p.segment_first != *first);
            state.pending_bytes = state.pending.iter().map(|p| p.end - p.start).sum();
            state.layout_version += 1;
        }
        if !doomed.is_empty() {
            self.storage.sync_dir().await?;
        }
        Ok(())
    }

    /// Drops everything and starts over so that the next append gets `next_index` (after a
    /// snapshot up to `next_index - 1` was installed). Durable when it returns. Starts a new
    /// [truncation epoch](Journal::truncation_epoch).
    ///
    /// # Errors
    /// I/O errors. A crash part-way leaves either the old journal or the new one: the new
    /// segment carries a higher generation, and recovery discards older generations.
    pub async fn reset(&self, next_index: u64) -> Result<()> {
        assert!(next_index > 0, "index 0 means 'no index'");
        let _guard = self.io.lock().await;
        let (generation, segment_bytes, old): (u64, u64, Vec<(String, bool)>) = {
            let state = self.state.borrow();
            (
                state.generation + 1,
                state.config.segment_bytes,
                state
                    .segments
                    .iter()
                    .map(|s| (s.name.clone(), s.file.is_some()))
                    .collect(),
            )
        };
        let new_name = segment_name(next_index);
        let file = create_segment(&self.storage, next_index, generation, segment_bytes).await?;
        for (name, on_disk) in old {
            if on_disk && name != new_name {
                self.storage.remove(&name).await?;
            }
        }
        self.storage.sync_dir().await?;
        let mut state = self.state.borrow_mut();
        state.generation = generation;
        state.segments = vec![Segment::empty(next_index, Some(Rc::new(file)))];
        state.next_index = next_index;
        state.durable_index = next_index - 1;
        state.pending.clear();
        state.pending_bytes = 0;
        state.cuts.push(0);
        state.layout_version += 1;
        state.wake_all();
        Ok(())
    }

    /// The offset of batch `index` inside segment `segment_first` (which must hold it, or have
    /// it as its next index).
    async fn offset_of(&self, segment_first: u64, index: u64) -> Result<u64> {
        {
            let state = self.state.borrow();
            if let Some(p) = state.pending.iter().find(|p| p.index == index) {
                return Ok(p.start);
            }
            let s = &state.segments[state.segment_position(segment_first)];
            if s.next_index == index {
                return Ok(s.data_end);
            }
        }
        let mut reader = self.reader(index);
        reader.seek(self).await?;
        Ok(reader
            .cursor
            .as_ref()
            .map(|c| c.offset)
            .expect("seek sets the cursor"))
    }

    /// Makes the last segment, which a cut at a segment boundary left as it was, ready to take
    /// appends. Appends write through the last segment's in-memory tail, but an older segment
    /// loaded at open has neither a tail nor (unless a read indexed it) a sparse index and its
    /// real data end: it claims to be full. Left so, an append after a lazy scan had set its
    /// `data_end` found `tail` out of step with it and wrote the batch at the wrong offset.
    async fn prepare_new_last(&self) -> Result<()> {
        let segment_first = self
            .state
            .borrow()
            .segments
            .last()
            .expect("a segment")
            .first_index;
        self.index_segment(segment_first).await?;
        let (file, data_end) = {
            let state = self.state.borrow();
            let s = state.segments.last().expect("a segment");
            if s.tail.start() <= s.data_end {
                return Ok(());
            }
            (
                s.file.clone().expect("older segments are on disk"),
                s.data_end,
            )
        };
        let tail_start = align_down(data_end);
        let tail = file.read_at(tail_start, us(data_end - tail_start)).await?;
        let mut state = self.state.borrow_mut();
        let s = state.segments.last_mut().expect("a segment");
        s.tail = Tail::load(tail_start, &tail, &|len| self.storage.alloc_buffer(len));
        s.durable_end = data_end;
        s.issued_end = data_end;
        Ok(())
    }

    /// Cuts the last segment at `offset` (where batch `cut_index` starts) and zeroes the rest on
    /// disk.
    async fn cut_segment_at(&self, offset: u64, cut_index: u64) -> Result<()> {
        let (file, reload) = {
            let state = self.state.borrow();
            let s = state.segments.last().expect("a segment");
            (s.file.clone(), offset < s.tail.start())
        };
        let new_tail_start = align_down(offset);
        let reloaded = if reload {
            let file = file.as_ref().expect("data below the tail is on disk");
            Some(
                file.read_at(new_tail_start, us(offset - new_tail_start))
                    .await?,
            )
        } else {
            None
        };
        let (block, written_end) = {
            let mut state = self.state.borrow_mut();
            let s = state.segments.last_mut().expect("a segment");
            if let Some(bytes) = reloaded {
                s.tail = Tail::load(new_tail_start, &bytes, &|len| {
                    self.storage.alloc_buffer(len)
                });
            } else {
                s.tail.truncate(offset);
            }
            s.data_end = offset;
            s.next_index = cut_index;
            s.durable_end = s.durable_end.min(offset);
            s.issued_end = s.issued_end.min(offset);
            if let Some(sparse) = s.sparse.as_mut() {
                sparse.retain(|(i, _)| *i < cut_index);
            }
            let mut block = s.tail.read(new_tail_start, us(BLOCK_BYTES));
            block.resize(us(BLOCK_BYTES), 0);
            let written_end = s.written_end;
            s.written_end = offset;
            (block, written_end)
        };
        if let Some(file) = file
            && written_end > offset
        {
            zero_after(&*file, new_tail_start, &block, align_up(written_end)).await?;
            self.state.borrow_mut().stats.syncs += 2;
        }
        Ok(())
    }

    /// Reads bytes `[offset, offset + len)` of a segment, from disk and then memory; fewer only
    /// where the segment's data ends.
    async fn read_bytes(&self, segment_first: u64, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut bytes = self.read_bytes_once(segment_first, offset, len).await?;
        while bytes.len() < len {
            let more = self
                .read_bytes_once(
                    segment_first,
                    offset + bytes.len() as u64,
                    len - bytes.len(),
                )
                .await?;
            if more.is_empty() {
                break;
            }
            bytes.extend_from_slice(&more);
        }
        Ok(bytes)
    }

    /// One step of [`Journal::read_bytes`]: the disk part or the memory part of the range.
    async fn read_bytes_once(
        &self,
        segment_first: u64,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let file = {
            let state = self.state.borrow();
            let s = state
                .segments
                .iter()
                .find(|s| s.first_index == segment_first)
                .ok_or(Error::IndexOutOfRange {
                    index: segment_first,
                    first: state.segments[0].first_index,
                    next: state.next_index,
                })?;
            if offset >= s.tail.start() {
                return Ok(s.tail.read(offset, len));
            }
            let len = len.min(us(s.tail.start() - offset));
            (s.file.clone().expect("data below the tail is on disk"), len)
        };
        let (file, len) = file;
        file.read_at(offset, len).await
    }

    /// Scans a segment that recovery did not (any but the last) and builds its sparse index.
    async fn index_segment(&self, segment_first: u64) -> Result<()> {
        let (file, name, next_index, segment_bytes, interval) = {
            let state = self.state.borrow();
            let s = &state.segments[state.segment_position(segment_first)];
            if s.sparse.is_some() {
                return Ok(());
            }
            (
                s.file.clone().expect("older segments are on disk"),
                s.name.clone(),
                s.next_index,
                state.config.segment_bytes,
                state.config.index_interval_bytes,
            )
        };
        let path = self.storage.path(&name);
        let mut scanner = Scanner::new(&*file, segment_bytes);
        let (sparse, expected, stop) = scanner.scan(segment_first, next_index, interval).await?;
        match stop {
            ScanStop::Reached => {}
            ScanStop::End => {
                return Err(Error::SegmentGap {
                    reason: format!(
                        "{} ends at index {expected} but the next segment starts at {next_index}",
                        path.display(),
                    ),
                });
            }
            ScanStop::Invalid(reason) => {
                return Err(Error::CorruptFlushedData {
                    path,
                    offset: scanner.offset,
                    index: expected,
                    reason,
                });
            }
        }
        let end = scanner.offset;
        let mut state = self.state.borrow_mut();
        let position = state.segment_position(segment_first);
        let s = &mut state.segments[position];
        s.sparse = Some(sparse);
        s.data_end = end;
        Ok(())
    }
}

impl<F: StorageFile> Segment<F> {
    fn empty(first_index: u64, file: Option<Rc<F>>) -> Self {
        Segment {
            first_index,
            name: segment_name(first_index),
            file,
            next_index: first_index,
            data_end: DATA_START,
            durable_end: DATA_START,
            issued_end: DATA_START,
            written_end: DATA_START,
            tail: Tail::new(DATA_START),
            sparse: Some(Vec::new()),
        }
    }
}

impl<F: StorageFile> State<F> {
    /// The position of the segment holding `index` (the last one whose first index is at most
    /// `index`).
    fn segment_position(&self, index: u64) -> usize {
        self.segments
            .partition_point(|s| s.first_index <= index)
            .saturating_sub(1)
    }

    /// Bytes of pending batches up to `target` not written yet, counted up to `enough`.
    fn unwritten_bytes(&self, target: u64, enough: u64) -> u64 {
        let mut bytes = 0;
        for p in self.pending.iter().take_while(|p| p.index <= target) {
            let s = &self.segments[self.segment_position(p.segment_first)];
            if p.end > s.issued_end {
                bytes += p.end - p.start.max(s.issued_end);
                if bytes >= enough {
                    break;
                }
            }
        }
        bytes
    }

    /// Marks a plan's data as written (not yet synced): the next plan starts after it.
    fn note_issued(&mut self, plan: &FlushPlan<F>) {
        self.note_written(plan);
        let w = &plan.write;
        let position = self.segment_position(w.segment_first);
        let s = &mut self.segments[position];
        s.issued_end = s.issued_end.max(w.data_end);
    }

    /// Records that a plan's blocks may be on disk, so a later truncation zeroes them.
    fn note_written(&mut self, plan: &FlushPlan<F>) {
        let w = &plan.write;
        let position = self.segment_position(w.segment_first);
        let s = &mut self.segments[position];
        s.written_end = s.written_end.max(w.offset + w.len);
    }

    /// Records the file a flush just created for a segment.
    fn set_segment_file(&mut self, first_index: u64, file: Rc<F>) {
        let position = self.segment_position(first_index);
        self.segments[position].file = Some(file);
    }

    fn wake_all(&mut self) {
        for (_, wakers) in std::mem::take(&mut self.waiters) {
            for w in wakers {
                w.wake();
            }
        }
    }

    /// Builds the next write towards making pending batches up to `target` durable: from the
    /// first unwritten batch, within `flush_bytes_max` and one segment, copying the tail once
    /// into buffers from `alloc`. `None` when everything up to `target` is written.
    fn plan_flush(
        &mut self,
        target: u64,
        alloc: &dyn Fn(usize) -> F::Buffer,
    ) -> Option<FlushPlan<F>> {
        let mut plan: Option<FlushPlan<F>> = None;
        let limit = self.config.flush_bytes_max;
        for p in self.pending.iter().take_while(|p| p.index <= target) {
            let s = &self.segments[self.segment_position(p.segment_first)];
            if p.end <= s.issued_end {
                continue;
            }
            if let Some(FlushPlan { write: w }) = &mut plan {
                if w.segment_first != p.segment_first {
                    break;
                }
                if p.end - w.offset > limit {
                    // Cut at the last chunk boundary within the limit, even inside a batch, so
                    // the next write starts on a chunk and shares whole chunks with the tail
                    // instead of copying its first one.
                    let boundary = s.tail.chunk_boundary_at_or_below(w.offset + limit);
                    w.data_end = w.data_end.max(boundary);
                    break;
                }
                w.data_end = p.end;
            } else {
                debug_assert_eq!(s.first_index, p.segment_first);
                plan = Some(FlushPlan {
                    write: SegmentWrite {
                        segment_first: s.first_index,
                        file: s.file.clone(),
                        offset: align_down(s.issued_end),
                        len: 0,
                        buffers: Vec::new(),
                        data_end: p.end,
                    },
                });
            }
        }
        let mut plan = plan?;
        let w = &mut plan.write;
        let s = &self.segments[self.segment_position(w.segment_first)];
        w.len = align_up(w.data_end - w.offset);
        w.buffers = s.tail.write_buffers(w.offset, w.offset + w.len, alloc);
        Some(plan)
    }

    /// Records how a plan ended: a synced plan makes its batches durable; a failed one marks
    /// its blocks as possibly written and fails the flush.
    fn complete_flush(&mut self, plan: &FlushPlan<F>, end: PlanEnd) -> Result<()> {
        self.stats.flushes += 1;
        let w = &plan.write;
        let position = self.segment_position(w.segment_first);
        debug_assert_eq!(self.segments[position].first_index, w.segment_first);
        let error = match end {
            PlanEnd::Failed { error, issued } => {
                // A write whose sync failed (or that failed part-way) may still have reached the
                // disk: count its blocks as written, so a later `truncate_after` zeroes them too.
                // Otherwise stale batches of a failed flush would linger past a shorter new end,
                // where recovery reads them as damage after the end (refusing to open) or
                // revives a truncated batch.
                if issued {
                    let s = &mut self.segments[position];
                    s.written_end = s.written_end.max(w.offset + w.len);
                }
                Some(error)
            }
            PlanEnd::Synced { shared } => {
                if shared {
                    self.stats.shared_syncs += 1;
                } else {
                    self.stats.syncs += 1;
                }
                self.stats.bytes_written += w.len;
                let (segment_count, segment_bytes) =
                    (self.segments.len(), self.config.segment_bytes);
                let s = &mut self.segments[position];
                s.durable_end = s.durable_end.max(w.data_end);
                s.issued_end = s.issued_end.max(w.data_end);
                s.written_end = s.written_end.max(w.offset + w.len);
                s.tail.release_before(align_down(s.durable_end));
                if position + 1 < segment_count && s.durable_end == s.data_end {
                    // A finished segment keeps nothing in memory: reads go to disk (verifying
                    // what is there), and a truncation back into it reloads its last block.
                    s.tail = Tail::new(segment_bytes);
                }
                while let Some(p) = self.pending.front() {
                    if p.segment_first < w.segment_first
                        || (p.segment_first == w.segment_first && p.end <= w.data_end)
                    {
                        self.durable_index = p.index;
                        self.pending_bytes -= p.end - p.start;
                        self.pending.pop_front();
                    } else {
                        break;
                    }
                }
                None
            }
        };
        let durable = self.durable_index;
        let ready: Vec<u64> = self.waiters.range(..=durable).map(|(i, _)| *i).collect();
        for i in ready {
            for w in self.waiters.remove(&i).unwrap_or_default() {
                w.wake();
            }
        }
        match error {
            None => Ok(()),
            Some(e) => {
                // What was written but not synced is not trusted: the next flush rewrites it.
                for s in &mut self.segments {
                    s.issued_end = s.durable_end;
                }
                self.failures += 1;
                self.last_failure = e.to_string();
                self.wake_all();
                Err(e)
            }
        }
    }
}

/// Lists the segments of a journal directory, validating each header, and removes leftovers:
/// temporary files of an interrupted creation and segments of an older generation.
async fn discover_segments<S: Storage>(
    storage: &S,
    report: &mut RecoveryReport,
) -> Result<(Vec<(SegmentHeader, String, S::File)>, u64)> {
    let mut found: Vec<(SegmentHeader, String, S::File)> = Vec::new();
    for name in storage.list().await? {
        if name.ends_with(".seg.tmp") {
            storage.remove(&name).await?;
            report.removed_files.push(name);
            continue;
        }
        let Some(first_index) = parse_segment_name(&name) else {
            #[expect(
                clippy::case_sensitive_file_extension_comparisons,
                reason = "segment names are ours, always lowercase"
            )]
            let ours = name.ends_with(".seg");
            if ours {
                return Err(Error::NotASegment {
                    path: storage.path(&name),
                    reason: "the name is not 20 digits and .seg".into(),
                });
            }
            continue;
        };
        let file = storage.open(&name).await?;
        let block = file.read_at(0, us(DATA_START)).await?;
        let header = SegmentHeader::decode(&block).map_err(|e| Error::NotASegment {
            path: storage.path(&name),
            reason: e.to_string(),
        })?;
        if header.first_index != first_index {
            return Err(Error::NotASegment {
                path: storage.path(&name),
                reason: format!(
                    "its header says first index {}, its name {first_index}",
                    header.first_index
                ),
            });
        }
        if header.segment_bytes != file.size() {
            return Err(Error::NotASegment {
                path: storage.path(&name),
                reason: format!(
                    "its header says {} bytes, the file has {}",
                    header.segment_bytes,
                    file.size()
                ),
            });
        }
        found.push((header, name, file));
    }
    let generation = found
        .iter()
        .map(|(h, _, _)| h.generation)
        .max()
        .unwrap_or(0);
    let mut stale = Vec::new();
    found.retain(|(h, name, _)| {
        if h.generation < generation {
            stale.push(name.clone());
            false
        } else {
            true
        }
    });
    for name in stale {
        storage.remove(&name).await?;
        report.removed_files.push(name);
    }
    if !report.removed_files.is_empty() {
        storage.sync_dir().await?;
    }
    Ok((found, generation))
}

/// Starts writing a plan into its (existing) segment file.
fn start_write<'a, F: StorageFile + 'a>(mut plan: FlushPlan<F>) -> (FlushPlan<F>, IoFuture<'a>) {
    let w = &mut plan.write;
    let file = w.file.clone().expect("the segment file exists");
    let (offset, buffers) = (w.offset, std::mem::take(&mut w.buffers));
    let write: IoFuture<'a> = Box::pin(async move { file.write_buffers(offset, buffers).await });
    (plan, write)
}

/// Makes everything from `block_start` to `zero_to` read as zeros except `block`, the new
/// content of the block at `block_start` (the kept bytes of a cut, zero-padded). The far range is
/// zeroed and synced first: a crash in between leaves the old bytes up to the block's end and
/// zeros after them, never old batches stranded behind a zeroed gap.
async fn zero_after<F: StorageFile>(
    file: &F,
    block_start: u64,
    block: &[u8],
    zero_to: u64,
) -> Result<()> {
    debug_assert_eq!(block.len() as u64, BLOCK_BYTES);
    let zero_from = block_start + BLOCK_BYTES;
    if zero_to > zero_from {
        file.zero_range(zero_from, zero_to - zero_from).await?;
        file.sync().await?;
    }
    file.write_at(block_start, block).await?;
    file.sync().await
}

/// Creates a segment durably: temp file, header, sync, rename, directory sync.
async fn create_segment<S: Storage>(
    storage: &S,
    first_index: u64,
    generation: u64,
    segment_bytes: u64,
) -> Result<S::File> {
    let temp = temp_name(first_index);
    let file = storage.create(&temp, segment_bytes).await?;
    let header = SegmentHeader {
        first_index,
        generation,
        segment_bytes,
    };
    let result = async {
        file.write_at(0, &header.encode()).await?;
        file.sync().await?;
        storage.rename(&temp, &segment_name(first_index)).await?;
        storage.sync_dir().await
    }
    .await;
    if let Err(e) = result {
        let _ = storage.remove(&temp).await;
        return Err(e);
    }
    Ok(file)
}

/// Why a scan stopped.
enum ScanStop {
    /// It reached the index it was asked to stop before.
    Reached,
    /// Zeros where a header should be: the clean end of the data.
    End,
    /// A batch that does not verify, at the scanner's offset.
    Invalid(String),
}

enum ScanStep {
    Batch { bytes: u64 },
    End,
    Invalid(String),
}

/// Reads a segment sequentially in large chunks and decodes batches from them.
struct Scanner<'a, F> {
    file: &'a F,
    segment_bytes: u64,
    offset: u64,
    buf: Vec<u8>,
    buf_offset: u64,
}

const SCAN_CHUNK_BYTES: u64 = 1 << 20;

impl<'a, F: StorageFile> Scanner<'a, F> {
    fn new(file: &'a F, segment_bytes: u64) -> Self {
        Scanner {
            file,
            segment_bytes,
            offset: DATA_START,
            buf: Vec::new(),
            buf_offset: DATA_START,
        }
    }

    /// Makes `[offset, offset + len)` available in `buf` (less at the end of the segment) and
    /// returns it.
    async fn bytes(&mut self, offset: u64, len: u64) -> Result<&[u8]> {
        let end = (offset + len).min(self.segment_bytes);
        let have_end = self.buf_offset + self.buf.len() as u64;
        if offset < self.buf_offset || end > have_end {
            let start = align_down(offset);
            let read_len = (end - start)
                .max(SCAN_CHUNK_BYTES)
                .min(self.segment_bytes - start);
            self.buf = self.file.read_at(start, us(read_len)).await?;
            self.buf_offset = start;
        }
        let from = us(offset - self.buf_offset).min(self.buf.len());
        let to = us(end - self.buf_offset).min(self.buf.len());
        Ok(&self.buf[from..to])
    }

    /// Walks batches from the data start until index `stop_before`, the clean end, or an invalid
    /// batch; returns the sparse index (an entry every `interval` bytes), the next index, and why
    /// it stopped. The scanner's offset is then where the walk stopped.
    async fn scan(
        &mut self,
        first_index: u64,
        stop_before: u64,
        interval: u64,
    ) -> Result<(Vec<(u64, u64)>, u64, ScanStop)> {
        let mut sparse: Vec<(u64, u64)> = Vec::new();
        let mut expected = first_index;
        loop {
            if expected >= stop_before {
                return Ok((sparse, expected, ScanStop::Reached));
            }
            let offset = self.offset;
            match self.next_batch(expected).await? {
                ScanStep::Batch { bytes } => {
                    if sparse.last().is_none_or(|(_, o)| offset - o >= interval) {
                        sparse.push((expected, offset));
                    }
                    self.offset += bytes;
                    expected += 1;
                }
                ScanStep::End => return Ok((sparse, expected, ScanStop::End)),
                ScanStep::Invalid(reason) => {
                    return Ok((sparse, expected, ScanStop::Invalid(reason)));
                }
            }
        }
    }

    async fn next_batch(&mut self, expected: u64) -> Result<ScanStep> {
        let offset = self.offset;
        if offset + HEADER_BYTES as u64 > self.segment_bytes {
            return Ok(ScanStep::End);
        }
        let head = self.bytes(offset, HEADER_BYTES as u64).await?;
        if batch::is_zero_header(head) {
            return Ok(ScanStep::End);
        }
        let header = match batch::decode_header(head) {
            Ok(h) => h,
            Err(e) => return Ok(ScanStep::Invalid(e.to_string())),
        };
        if header.index != expected {
            return Ok(ScanStep::Invalid(
                Error::UnexpectedIndex {
                    expected,
                    found: header.index,
                }
                .to_string(),
            ));
        }
        let bytes = header.batch_bytes();
        if offset + bytes > self.segment_bytes {
            return Ok(ScanStep::Invalid(format!(
                "batch of {bytes} bytes runs past the end of the segment"
            )));
        }
        let whole = self.bytes(offset, bytes).await?;
        match batch::decode(whole) {
            Ok(_) => Ok(ScanStep::Batch { bytes }),
            Err(e) => Ok(ScanStep::Invalid(e.to_string())),
        }
    }
}

/// Scans the last segment, cuts a torn tail (zeroing it on disk) or fails on damaged flushed
/// data, and builds the segment's in-memory state.
async fn recover_last<S: Storage>(
    storage: &S,
    config: &JournalConfig,
    header: SegmentHeader,
    name: String,
    file: S::File,
    report: &mut RecoveryReport,
) -> Result<Segment<S::File>> {
    let path = storage.path(&name);
    let mut scanner = Scanner::new(&file, header.segment_bytes);
    let (sparse, expected, stop) = scanner
        .scan(header.first_index, u64::MAX, config.index_interval_bytes)
        .await?;
    let failure = match stop {
        ScanStop::Invalid(reason) => Some(reason),
        ScanStop::End | ScanStop::Reached => None,
    };
    let data_end = scanner.offset;
    // The flushes in flight at a crash wrote at most one tear window from below `data_end`, and
    // their writes may have landed in any order: look that far past the end for remnants, and one
    // window more for batches of later flushes that prove damage was in flushed data.
    let window = config.tear_window_bytes();
    let reach = if failure.is_some() {
        2 * window
    } else {
        window
    };
    let reach = reach.min(header.segment_bytes - data_end);
    let after = scanner.bytes(data_end, reach).await?.to_vec();
    if let Some(reason) = &failure {
        let proof = (1..after.len().saturating_sub(HEADER_BYTES)).find_map(|at| {
            if after[at..at + 4] != batch::BATCH_MAGIC.to_le_bytes() {
                return None;
            }
            let b = batch::decode(&after[at..]).ok()?;
            (b.header.index > expected && b.header.durable_index >= expected)
                .then_some(b.header.index)
        });
        if let Some(proving) = proof {
            return Err(Error::CorruptFlushedData {
                path,
                offset: data_end,
                index: expected,
                reason: format!(
                    "{reason}; batch {proving}, written after it, records index {expected} as flushed"
                ),
            });
        }
    }
    let garbage = after
        .iter()
        .take(us(window.min(reach)))
        .rposition(|b| *b != 0)
        .map_or(0, |p| p as u64 + 1);
    if failure.is_some() || garbage > 0 {
        report.dropped_tail = Some(DroppedTail {
            segment: name.clone(),
            offset: data_end,
            index: expected,
            bytes: garbage,
            reason: failure
                .unwrap_or_else(|| "bytes of an unfinished flush beyond the last batch".to_owned()),
        });
        // Zero what was cut so the next scan ends cleanly where this one did.
        let block_start = align_down(data_end);
        let mut block = file.read_at(block_start, us(BLOCK_BYTES)).await?;
        block.truncate(us(data_end - block_start));
        block.resize(us(BLOCK_BYTES), 0);
        let zero_to = align_up(data_end + garbage).min(header.segment_bytes);
        zero_after(&file, block_start, &block, zero_to).await?;
    }
    let tail_start = align_down(data_end);
    let tail = file.read_at(tail_start, us(data_end - tail_start)).await?;
    let tail = Tail::load(tail_start, &tail, &|len| storage.alloc_buffer(len));
    Ok(Segment {
        first_index: header.first_index,
        name,
        file: Some(Rc::new(file)),
        next_index: expected,
        data_end,
        durable_end: data_end,
        issued_end: data_end,
        written_end: data_end,
        tail,
        sparse: Some(sparse),
    })
}

/// Reads batches in order; see [`Journal::reader`]. A reader survives appends and flushes; after
/// a truncate, compact or reset it seeks again.
#[derive(Debug)]
pub struct Reader {
    next_index: u64,
    cursor: Option<Cursor>,
    /// Bytes read ahead: `chunk` holds `[chunk_offset, ..)` of segment `chunk_segment` as of
    /// layout `chunk_layout`. Bytes at an offset never change within one layout version.
    chunk: Vec<u8>,
    chunk_segment: u64,
    chunk_offset: u64,
    chunk_layout: u64,
}

#[derive(Debug, Clone)]
struct Cursor {
    segment_first: u64,
    offset: u64,
    index: u64,
    layout_version: u64,
}

const READ_AHEAD_BYTES: usize = 64 << 10;

impl Reader {
    /// The index the next call to `next` returns.
    #[must_use]
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Positions the cursor at `next_index` (through the sparse index and a short scan).
    async fn seek<S: Storage>(&mut self, journal: &Journal<S>) -> Result<bool> {
        loop {
            let (segment_first, needs_index, layout_version) = {
                let state = journal.state.borrow();
                if self.next_index >= state.next_index
                    || self.next_index < state.segments[0].first_index
                {
                    if self.next_index < state.segments[0].first_index {
                        return Err(Error::IndexOutOfRange {
                            index: self.next_index,
                            first: state.segments[0].first_index,
                            next: state.next_index,
                        });
                    }
                    return Ok(false);
                }
                if let Some(c) = &self.cursor
                    && c.layout_version == state.layout_version
                    && c.index == self.next_index
                {
                    return Ok(true);
                }
                let s = &state.segments[state.segment_position(self.next_index)];
                (s.first_index, s.sparse.is_none(), state.layout_version)
            };
            if needs_index {
                journal.index_segment(segment_first).await?;
                continue;
            }
            let (index, offset) = {
                let state = journal.state.borrow();
                let s = &state.segments[state.segment_position(self.next_index)];
                let sparse = s.sparse.as_ref().expect("indexed");
                let at = sparse.partition_point(|(i, _)| *i <= self.next_index);
                if at == 0 {
                    (s.first_index, DATA_START)
                } else {
                    sparse[at - 1]
                }
            };
            self.cursor = Some(Cursor {
                segment_first,
                offset,
                index,
                layout_version,
            });
            while self
                .cursor
                .as_ref()
                .is_some_and(|c| c.index < self.next_index)
            {
                let cursor = self.cursor.clone().expect("checked");
                let head = journal
                    .read_bytes(cursor.segment_first, cursor.offset, HEADER_BYTES)
                    .await?;
                let header =
                    batch::decode_header(&head).map_err(|e| corrupt(journal, &cursor, &e))?;
                if header.index != cursor.index {
                    return Err(corrupt(
                        journal,
                        &cursor,
                        &Error::UnexpectedIndex {
                            expected: cursor.index,
                            found: header.index,
                        },
                    ));
                }
                let c = self.cursor.as_mut().expect("checked");
                c.offset += header.batch_bytes();
                c.index += 1;
            }
            return Ok(true);
        }
    }

    /// Makes `len` bytes at the cursor available in `chunk` (fewer only where the segment's data
    /// ends), reading ahead so that consecutive batches come from one read, and returns their
    /// range in `chunk`.
    async fn fill<S: Storage>(
        &mut self,
        journal: &Journal<S>,
        cursor: &Cursor,
        len: usize,
    ) -> Result<std::ops::Range<usize>> {
        let chunk_end = self.chunk_offset + self.chunk.len() as u64;
        let cached = self.chunk_segment == cursor.segment_first
            && self.chunk_layout == cursor.layout_version
            && cursor.offset >= self.chunk_offset
            && cursor.offset + len as u64 <= chunk_end;
        if !cached {
            self.chunk = journal
                .read_bytes(
                    cursor.segment_first,
                    cursor.offset,
                    len.max(READ_AHEAD_BYTES),
                )
                .await?;
            self.chunk_segment = cursor.segment_first;
            self.chunk_offset = cursor.offset;
            self.chunk_layout = cursor.layout_version;
        }
        let from = us(cursor.offset - self.chunk_offset);
        Ok(from..(from + len).min(self.chunk.len()))
    }

    /// The next batch, or `None` at the end of the journal.
    ///
    /// # Errors
    /// Checksum or format errors (as [`Error::CorruptFlushedData`]), a compacted index, or I/O.
    pub async fn next<S: Storage>(&mut self, journal: &Journal<S>) -> Result<Option<Batch>> {
        if !self.seek(journal).await? {
            return Ok(None);
        }
        let cursor = self.cursor.clone().expect("seek sets the cursor");
        let range = self.fill(journal, &cursor, HEADER_BYTES).await?;
        let header =
            batch::decode_header(&self.chunk[range]).map_err(|e| corrupt(journal, &cursor, &e))?;
        let range = self
            .fill(journal, &cursor, us(header.batch_bytes()))
            .await?;
        let bytes = &self.chunk[range];
        let decoded = batch::decode(bytes).map_err(|e| corrupt(journal, &cursor, &e))?;
        if decoded.header.index != cursor.index {
            return Err(corrupt(
                journal,
                &cursor,
                &Error::UnexpectedIndex {
                    expected: cursor.index,
                    found: decoded.header.index,
                },
            ));
        }
        let batch = Batch::from(decoded);
        let next_segment = {
            let state = journal.state.borrow();
            let s = &state.segments[state.segment_position(cursor.index)];
            (s.next_index == cursor.index + 1)
                .then(|| {
                    state
                        .segments
                        .get(state.segment_position(cursor.index) + 1)
                        .map(|n| n.first_index)
                })
                .flatten()
        };
        self.next_index += 1;
        self.cursor = Some(match next_segment {
            Some(first) => Cursor {
                segment_first: first,
                offset: DATA_START,
                index: cursor.index + 1,
                layout_version: cursor.layout_version,
            },
            None => Cursor {
                offset: cursor.offset + header.batch_bytes(),
                index: cursor.index + 1,
                ..cursor
            },
        });
        Ok(Some(batch))
    }
}

fn corrupt<S: Storage>(journal: &Journal<S>, cursor: &Cursor, e: &Error) -> Error {
    Error::CorruptFlushedData {
        path: journal.storage.path(&segment_name(cursor.segment_first)),
        offset: cursor.offset,
        index: cursor.index,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStorage;
    use futures_lite::future::block_on;

    fn meta(term: u64) -> BatchMeta {
        BatchMeta {
            term,
            timestamp_ms: 1,
            record_count: 1,
        }
    }

    fn small() -> JournalConfig {
        JournalConfig {
            segment_bytes: 64 << 10,
            batch_bytes_max: 8 << 10,
            flush_bytes_max: 16 << 10,
            index_interval_bytes: 1024,
            ..JournalConfig::default()
        }
    }

    fn payload(i: u64) -> Vec<u8> {
        let len = 100 + usize::try_from(i * 37 % 3000).expect("small");
        (0..len)
            .map(|j| u8::try_from((usize::try_from(i).expect("small") + j) % 251).expect("byte"))
            .collect()
    }

    #[test]
    fn append_flush_read_reopen_across_segments() {
        block_on(async {
            let disk = MemStorage::new();
            let (j, report) = Journal::open(disk.clone(), small()).await.expect("open");
            assert_eq!(report.next_index, 1);
            for i in 1..=200 {
                assert_eq!(j.append(meta(1), &payload(i)).expect("append"), i);
                if i % 7 == 0 {
                    j.flush().await.expect("flush");
                }
            }
            assert_eq!(j.read(5).await.expect("read pending").payload, payload(5));
            j.flush().await.expect("flush");
            assert_eq!(j.durable_index(), 200);
            assert!(j.segment_count() > 3, "small segments roll over");
            for i in 1..=200 {
                assert_eq!(
                    j.read(i).await.expect("read").payload,
                    payload(i),
                    "index {i}"
                );
            }
            drop(j);
            disk.crash(7);
            let (j, report) = Journal::open(disk.clone(), small()).await.expect("reopen");
            assert_eq!(report.dropped_tail, None);
            assert_eq!(j.next_index(), 201);
            let mut reader = j.reader(1);
            for i in 1..=200 {
                let b = reader.next(&j).await.expect("next").expect("some");
                assert_eq!((b.index, b.payload), (i, payload(i)));
            }
            assert!(reader.next(&j).await.expect("end").is_none());
            assert!(matches!(
                j.read(201).await,
                Err(Error::IndexOutOfRange { .. })
            ));
        });
    }

    #[test]
    fn flush_reports_carry_the_truncation_epoch() {
        block_on(async {
            let disk = MemStorage::new();
            let (j, _) = Journal::open(disk.clone(), small()).await.expect("open");
            for i in 1..=10 {
                j.append(meta(1), &payload(i)).expect("append");
            }
            j.flush().await.expect("flush");
            let before_cut = j.flush_report();
            assert_eq!(
                before_cut,
                FlushReport {
                    epoch: 0,
                    durable_index: 10
                }
            );
            j.truncate_after(4).await.expect("truncate");
            for i in 5..=7 {
                j.append(meta(2), &payload(i + 100)).expect("append");
            }
            // `before_cut` still says 10: only its epoch shows that this cut overtook it.
            assert_eq!(
                j.flush_report(),
                FlushReport {
                    epoch: 1,
                    durable_index: 4
                }
            );
            j.flush().await.expect("flush");
            assert_eq!(j.flush_report().durable_index, 7);
            // A cut of nothing is an epoch too: the driver's calls and Raft's cuts stay in step.
            j.truncate_after(7).await.expect("truncate nothing");
            assert_eq!(j.truncation_epoch(), 2);
            j.reset(20).await.expect("reset");
            assert_eq!(
                j.flush_report(),
                FlushReport {
                    epoch: 3,
                    durable_index: 19
                }
            );
        });
    }

    #[test]
    fn truncate_then_append_and_reopen() {
        block_on(async {
            let disk = MemStorage::new();
            let (j, _) = Journal::open(disk.clone(), small()).await.expect("open");
            for i in 1..=120 {
                j.append(meta(1), &payload(i)).expect("append");
            }
            j.flush().await.expect("flush");
            j.truncate_after(50).await.expect("truncate");
            assert_eq!(j.next_index(), 51);
            assert_eq!(j.durable_index(), 50);
            for i in 51..=60 {
                assert_eq!(j.append(meta(2), &payload(i + 1000)).expect("append"), i);
            }
            j.flush().await.expect("flush");
            drop(j);
            disk.crash(3);
            let (j, report) = Journal::open(disk.clone(), small()).await.expect("reopen");
            assert_eq!(report.dropped_tail, None, "{report:?}");
            assert_eq!(j.next_index(), 61);
            for i in 1..=60 {
                let b = j.read(i).await.expect("read");
                let (term, p) = if i <= 50 {
                    (1, payload(i))
                } else {
                    (2, payload(i + 1000))
                };
                assert_eq!((b.term, b.payload), (term, p), "index {i}");
            }
        });
    }
}
