//! The one error type of `sluice-log`.

use std::path::PathBuf;

/// A crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the log. Operating errors (bad input, I/O failure, corruption)
/// are values of this type; programmer errors panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fewer bytes were given than the structure needs.
    #[error("truncated {what}: need {needed} bytes, have {available}")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    /// The bytes do not start with the expected magic number: this is not a Sluice structure.
    #[error("bad magic in {what}: expected {expected:#010x}, found {found:#010x}")]
    BadMagic {
        what: &'static str,
        expected: u32,
        found: u32,
    },
    /// The structure was written by a format version this build does not read.
    #[error("unsupported {what} format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        what: &'static str,
        found: u16,
        supported: u16,
    },
    /// A crc32c check failed: the bytes were changed after they were written.
    #[error("checksum mismatch in {what}: expected {expected:#010x}, computed {actual:#010x}")]
    ChecksumMismatch {
        what: &'static str,
        expected: u32,
        actual: u32,
    },
    /// A field holds a value the format forbids (non-zero reserved bytes, a length over the
    /// limit, ...).
    #[error("invalid {what}: {reason}")]
    InvalidField { what: &'static str, reason: String },
    /// A batch was found where the journal expected another index.
    #[error("index discontinuity: expected batch {expected}, found {found}")]
    UnexpectedIndex { expected: u64, found: u64 },
    /// A batch larger than `batch_bytes_max` (or than a segment can hold) was appended.
    #[error(
        "batch of {bytes} bytes exceeds the limit of {max} bytes; split it or raise batch_bytes_max"
    )]
    BatchTooLarge { bytes: u64, max: u64 },
    /// The in-memory buffer of unflushed appends is full; flush before appending more.
    #[error("{pending_bytes} bytes are waiting for a flush (limit {max}); flush before appending")]
    PendingFull { pending_bytes: u64, max: u64 },
    /// A read asked for an index the journal does not hold.
    #[error("index {index} is not in the journal (it holds {first}..{next}, next exclusive)")]
    IndexOutOfRange { index: u64, first: u64, next: u64 },
    /// A file in the journal directory is not a valid segment.
    #[error(
        "{path}: not a Sluice journal segment ({reason}); move it out of the journal directory"
    )]
    NotASegment { path: PathBuf, reason: String },
    /// Data that had been flushed is damaged. The journal refuses to open rather than silently
    /// dropping acknowledged entries.
    #[error(
        "{path}: corrupt batch at offset {offset} (expected index {index}) inside flushed data: {reason}; \
         restore this replica from a peer or a backup"
    )]
    CorruptFlushedData {
        path: PathBuf,
        offset: u64,
        index: u64,
        reason: String,
    },
    /// The segments on disk do not form one contiguous log.
    #[error("journal segments are not contiguous: {reason}")]
    SegmentGap { reason: String },
    /// The disk is full. Nothing was lost: unflushed appends stay buffered and a later flush
    /// retries.
    #[error("disk full while {op} {path}: free space on the journal's disk, then retry")]
    DiskFull { op: &'static str, path: PathBuf },
    /// Any other I/O error, with the operation and the file it concerned.
    #[error("I/O error while {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An earlier flush failed; waiters on durability learn it through this error.
    #[error("flush failed: {reason}")]
    FlushFailed { reason: String },
    /// The configuration breaks one of its rules.
    #[error("invalid journal configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    /// Wraps an I/O error, turning `ENOSPC` into [`Error::DiskFull`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == std::io::ErrorKind::StorageFull
        {
            Error::DiskFull { op, path }
        } else {
            Error::Io { op, path, source }
        }
    }
}
