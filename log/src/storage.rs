//! The disk as the journal sees it: a directory of files with positional I/O.
//!
//! Two backends implement it: [`DmaStorage`] (production: glommio `DmaFile`, `O_DIRECT`, `io_uring`)
//! and [`MemStorage`] (tests and the simulator: an in-memory disk that can crash, losing every
//! write not covered by a `sync` and tearing the last one).
//!
//! Writes must be [`BLOCK_BYTES`]-aligned in offset and length, as `O_DIRECT` demands; both
//! backends reject anything else, so a misaligned write is caught in tests too.

mod dma;
mod mem;

pub use dma::{DmaFileHandle, DmaStorage, PooledBuffer};
pub use mem::{IoDelay, MemBuffer, MemFileHandle, MemStorage};

use std::path::PathBuf;

use crate::error::Result;

/// The unit of direct I/O: offsets and lengths of writes are multiples of it.
pub const BLOCK_BYTES: u64 = 4096;
/// The unit a torn write is made of: a crash may persist a prefix of a write's sectors.
pub const SECTOR_BYTES: u64 = 512;
const _: () = assert!(BLOCK_BYTES.is_multiple_of(SECTOR_BYTES));
/// Writes are issued in chunks of at most this size; [`DmaStorage`] pools buffers of it.
pub const WRITE_CHUNK_BYTES: usize = 1 << 20;
const _: () = assert!((WRITE_CHUNK_BYTES as u64).is_multiple_of(BLOCK_BYTES));

/// Memory a file writes from. Cloning shares it (no copy); it is writable only while unshared,
/// so data handed to a write cannot change under it.
pub trait WriteBuffer: Clone + AsRef<[u8]> + std::fmt::Debug {
    /// The bytes, if no clone of this buffer exists.
    fn get_mut(&mut self) -> Option<&mut [u8]>;
    /// An unshared copy.
    #[must_use]
    fn deep_copy(&self) -> Self;
}

/// A directory of files. Futures need not be `Send`: a journal lives on one shard for life.
#[allow(async_fn_in_trait)]
pub trait Storage {
    type File: StorageFile;

    /// A buffer of `len` bytes (a multiple of [`BLOCK_BYTES`]) to fill and hand to
    /// [`StorageFile::write_buffers`], so data is copied once into memory the device can take.
    /// Its content is unspecified: the caller fills every byte.
    fn alloc_buffer(&self, len: usize) -> <Self::File as StorageFile>::Buffer;

    /// The names of the files in the directory.
    async fn list(&self) -> Result<Vec<String>>;
    /// Creates `name` (replacing any file of that name) with `bytes` preallocated, reading as
    /// zeros. The new name is durable only after [`Storage::sync_dir`].
    async fn create(&self, name: &str, bytes: u64) -> Result<Self::File>;
    /// Opens an existing file for reading and writing.
    async fn open(&self, name: &str) -> Result<Self::File>;
    /// Renames a file, replacing the target. Durable after [`Storage::sync_dir`].
    async fn rename(&self, from: &str, to: &str) -> Result<()>;
    /// Removes a file. Durable after [`Storage::sync_dir`].
    async fn remove(&self, name: &str) -> Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    async fn sync_dir(&self) -> Result<()>;
    /// The path of `name`, for error messages.
    fn path(&self, name: &str) -> PathBuf;
}

/// One open file.
#[allow(async_fn_in_trait)]
pub trait StorageFile {
    /// Memory the file writes from; see [`Storage::alloc_buffer`].
    type Buffer: WriteBuffer;

    /// The file's size in bytes.
    fn size(&self) -> u64;
    /// Writes `data` at `offset`; both must be multiples of [`BLOCK_BYTES`].
    async fn write_at(&self, offset: u64, data: &[u8]) -> Result<()>;
    /// Writes `buffers` back to back from `offset`, possibly all at once: until a `sync`, any
    /// subset of them may reach the disk, each possibly torn.
    async fn write_buffers(&self, offset: u64, buffers: Vec<Self::Buffer>) -> Result<()>;
    /// Reads up to `len` bytes at `offset`; fewer only at the end of the file.
    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Makes every completed write durable (`fdatasync`).
    async fn sync(&self) -> Result<()>;
    /// Makes `[offset, offset + len)` read as zeros; block-aligned. Durable after `sync`.
    async fn zero_range(&self, offset: u64, len: u64) -> Result<()>;
}

pub(crate) fn check_aligned(offset: u64, len: u64) -> std::io::Result<()> {
    if offset.is_multiple_of(BLOCK_BYTES) && len.is_multiple_of(BLOCK_BYTES) {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(libc::EINVAL))
    }
}
