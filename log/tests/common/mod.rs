//! Shared pieces of the recovery scenarios: a model of what was appended, deterministic payloads,
//! a seeded generator, a log checker, and a storage wrapper that injects sync failures so a
//! flush can leave written-but-unsynced data for `MemStorage::crash` to tear.
//!
//! Each scenario file uses a subset of these helpers.
#![allow(
    dead_code,
    reason = "each scenario file uses a different subset of the helpers"
)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use sluice_log::storage::MemFileHandle;
use sluice_log::{
    BatchMeta, Error, Journal, JournalConfig, MemBuffer, MemStorage, Result, Storage, StorageFile,
};

/// The small-segment configuration of the scenarios: 64 KiB segments roll over often.
pub fn small() -> JournalConfig {
    JournalConfig {
        segment_bytes: 64 << 10,
        batch_bytes_max: 8 << 10,
        flush_bytes_max: 16 << 10,
        index_interval_bytes: 1024,
        ..JournalConfig::default()
    }
}

pub fn meta(term: u64) -> BatchMeta {
    BatchMeta {
        term,
        timestamp_ms: 1_700_000_000_000 + term,
        record_count: 1,
    }
}

/// A tiny deterministic generator (splitmix64): one seed reproduces a run.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo < hi, "empty range {lo}..{hi}");
        lo + self.next_u64() % (hi - lo)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

/// The payload of batch `index` written in `term`: its length (1..=3000 bytes) and bytes derive
/// from both, so a batch of an older term at the same index is told apart.
pub fn payload(index: u64, term: u64) -> Vec<u8> {
    let mut rng = Rng(index.wrapping_mul(0x1000_0000_01B3) ^ term.rotate_left(32));
    let len = usize::try_from(rng.range(1, 3001)).expect("small");
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// What the test appended: index to term. Payloads follow from `payload(index, term)`.
#[derive(Debug, Default, Clone)]
pub struct Model {
    pub terms: BTreeMap<u64, u64>,
}

impl Model {
    /// Appends one batch to the journal and the model; returns its index.
    pub fn append<S: Storage>(&mut self, j: &Journal<S>, term: u64) -> u64 {
        let index = j.next_index();
        let got = j.append(meta(term), &payload(index, term)).expect("append");
        assert_eq!(got, index, "append returns the next index");
        self.terms.insert(index, term);
        index
    }

    pub fn append_n<S: Storage>(&mut self, j: &Journal<S>, term: u64, n: u64) {
        for _ in 0..n {
            self.append(j, term);
        }
    }

    /// Forgets everything after `index` (a truncation).
    pub fn truncate_after(&mut self, index: u64) {
        self.terms.retain(|i, _| *i <= index);
    }
}

/// Reads the whole journal with one reader and checks it against the model: indexes contiguous
/// from `first_index()` to `next_index()`, every batch one the model holds with the right term,
/// payload and metadata. Also reads each index on its own. Returns the number of batches.
pub async fn check_log<S: Storage>(j: &Journal<S>, model: &Model) -> u64 {
    let (first, next) = (j.first_index(), j.next_index());
    assert!(first <= next, "first {first} > next {next}");
    let mut reader = j.reader(first);
    for index in first..next {
        let batch = reader
            .next(j)
            .await
            .unwrap_or_else(|e| panic!("reading index {index}: {e}"))
            .unwrap_or_else(|| panic!("the reader ended before index {index} (next {next})"));
        let term = *model
            .terms
            .get(&index)
            .unwrap_or_else(|| panic!("index {index} was never appended but is in the journal"));
        assert_eq!(batch.index, index, "reader order");
        assert_eq!(batch.term, term, "term of index {index}");
        assert_eq!(batch.record_count, 1, "record count of index {index}");
        assert_eq!(
            batch.timestamp_ms,
            meta(term).timestamp_ms,
            "timestamp of {index}"
        );
        assert!(
            batch.payload == payload(index, term),
            "payload of index {index} (term {term}) differs"
        );
    }
    assert!(
        reader.next(j).await.expect("read at the end").is_none(),
        "the reader yields nothing past next_index {next}"
    );
    // Random access agrees with the reader (sparse-index seeks).
    for index in (first..next).step_by(7) {
        let batch = j.read(index).await.expect("read");
        assert_eq!(batch.index, index);
    }
    assert!(
        matches!(j.read(next).await, Err(Error::IndexOutOfRange { .. })),
        "reading next_index is out of range"
    );
    next - first
}

/// Checks that every index up to `durable` survived: the journal holds it (from the model).
pub fn assert_holds_durable<S: Storage>(j: &Journal<S>, durable: u64, context: &str) {
    assert!(
        j.next_index() > durable,
        "{context}: durable index {durable} lost (next_index {})",
        j.next_index()
    );
}

/// Fault switches shared by a [`FaultyStorage`] and its files.
#[derive(Debug, Default)]
pub struct Faults {
    /// File syncs that still succeed; `None` is unlimited. At zero, syncs fail with `EIO`
    /// (writes still land, unsynced: a crash then keeps a random, possibly torn, prefix).
    pub file_syncs_left: Option<u64>,
    /// The same for directory syncs.
    pub dir_syncs_left: Option<u64>,
}

fn take_budget(budget: &mut Option<u64>) -> bool {
    match budget {
        None => true,
        Some(0) => false,
        Some(n) => {
            *n -= 1;
            true
        }
    }
}

fn eio(op: &'static str, path: PathBuf) -> Error {
    Error::io(op, path, std::io::Error::from_raw_os_error(libc::EIO))
}

/// A [`MemStorage`] whose syncs can be made to fail.
#[derive(Debug, Clone)]
pub struct FaultyStorage {
    pub disk: MemStorage,
    pub faults: Rc<RefCell<Faults>>,
}

impl FaultyStorage {
    pub fn new(disk: MemStorage) -> Self {
        FaultyStorage {
            disk,
            faults: Rc::default(),
        }
    }

    /// Lets `n` more file syncs succeed, then fails them.
    pub fn fail_file_syncs_after(&self, n: u64) {
        self.faults.borrow_mut().file_syncs_left = Some(n);
    }

    pub fn fail_dir_syncs_after(&self, n: u64) {
        self.faults.borrow_mut().dir_syncs_left = Some(n);
    }

    pub fn heal(&self) {
        *self.faults.borrow_mut() = Faults::default();
    }
}

#[derive(Debug)]
pub struct FaultyFile {
    inner: MemFileHandle,
    faults: Rc<RefCell<Faults>>,
    path: PathBuf,
}

impl Storage for FaultyStorage {
    type File = FaultyFile;

    fn alloc_buffer(&self, len: usize) -> MemBuffer {
        self.disk.alloc_buffer(len)
    }

    async fn list(&self) -> Result<Vec<String>> {
        self.disk.list().await
    }

    async fn create(&self, name: &str, bytes: u64) -> Result<FaultyFile> {
        Ok(FaultyFile {
            inner: self.disk.create(name, bytes).await?,
            faults: self.faults.clone(),
            path: self.disk.path(name),
        })
    }

    async fn open(&self, name: &str) -> Result<FaultyFile> {
        Ok(FaultyFile {
            inner: self.disk.open(name).await?,
            faults: self.faults.clone(),
            path: self.disk.path(name),
        })
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.disk.rename(from, to).await
    }

    async fn remove(&self, name: &str) -> Result<()> {
        self.disk.remove(name).await
    }

    async fn sync_dir(&self) -> Result<()> {
        if take_budget(&mut self.faults.borrow_mut().dir_syncs_left) {
            self.disk.sync_dir().await
        } else {
            Err(eio("syncing", self.disk.path(".")))
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.disk.path(name)
    }
}

impl StorageFile for FaultyFile {
    type Buffer = MemBuffer;

    async fn write_buffers(&self, offset: u64, buffers: Vec<MemBuffer>) -> Result<()> {
        self.inner.write_buffers(offset, buffers).await
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    async fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.inner.write_at(offset, data).await
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.inner.read_at(offset, len).await
    }

    async fn sync(&self) -> Result<()> {
        if take_budget(&mut self.faults.borrow_mut().file_syncs_left) {
            self.inner.sync().await
        } else {
            Err(eio("syncing", self.path.clone()))
        }
    }

    async fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        self.inner.zero_range(offset, len).await
    }
}

/// The segment files on a disk, in index order.
pub async fn segment_files(disk: &MemStorage) -> Vec<String> {
    let mut names: Vec<String> = disk
        .list()
        .await
        .expect("list")
        .into_iter()
        .filter(|n| {
            std::path::Path::new(n)
                .extension()
                .is_some_and(|e| e == "seg")
        })
        .collect();
    names.sort();
    names
}

/// Where a batch sits on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub index: u64,
    pub offset: u64,
    pub bytes: u64,
}

/// The batches of one segment file as its current content holds them, found by walking valid
/// headers from the data start to the first zero or invalid header.
pub fn batches_in(disk: &MemStorage, segment: &str) -> Vec<Placed> {
    let content = disk.contents(segment).expect("segment exists");
    let mut offset = sluice_log::segment::DATA_START;
    let mut placed = Vec::new();
    loop {
        let at = usize::try_from(offset).expect("small");
        let Ok(header) = sluice_log::batch::decode_header(&content[at.min(content.len())..]) else {
            break;
        };
        placed.push(Placed {
            index: header.index,
            offset,
            bytes: header.batch_bytes(),
        });
        offset += header.batch_bytes();
    }
    placed
}

/// The names of every file on a disk, synchronously.
pub trait ListNames {
    fn list_names(&self) -> Vec<String>;
}

impl ListNames for MemStorage {
    fn list_names(&self) -> Vec<String> {
        futures_lite::future::block_on(self.list()).expect("list")
    }
}

/// True for a `.tmp` leftover of an interrupted segment creation.
pub fn is_temp(name: &str) -> bool {
    std::path::Path::new(name)
        .extension()
        .is_some_and(|e| e == "tmp")
}

/// The invariant recovery restores: past the last batch of the last segment, only zeros.
pub async fn assert_zeros_after_end(disk: &MemStorage, context: &str) {
    let last = segment_files(disk).await.pop().expect("a segment");
    let end = batches_in(disk, &last)
        .last()
        .map_or(4096, |b| b.offset + b.bytes);
    let bytes = disk.contents(&last).expect("segment");
    assert!(
        bytes[usize::try_from(end).expect("small")..]
            .iter()
            .all(|b| *b == 0),
        "{context}: non-zero bytes after the end of the log"
    );
}
