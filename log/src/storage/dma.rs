//! The production backend: glommio `DmaFile`s (`O_DIRECT` through `io_uring`) in one directory.
//!
//! Must be used from inside a glommio executor.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use super::{Storage, StorageFile, WRITE_CHUNK_BYTES, WriteBuffer, check_aligned};
use crate::error::{Error, Result};

/// Pooled buffers kept for reuse: enough for the default `pending_bytes_max` of unflushed data.
/// Reuse matters: a fresh buffer beyond the executor's registered `io_memory` comes from the
/// heap, and faulting its pages in costs more than the copy into it.
const POOL_BUFFERS_MAX: usize = 64;
/// Chunk writes of one `write_buffers` call in flight at once.
const WRITES_IN_FLIGHT_MAX: usize = 8;

/// A journal directory on a real disk.
#[derive(Debug, Clone)]
pub struct DmaStorage {
    dir: Rc<PathBuf>,
    pool: Rc<BufferPool>,
    write_through: bool,
}

/// An open `O_DIRECT` file.
#[derive(Debug)]
pub struct DmaFileHandle {
    file: DmaFile,
    path: PathBuf,
    size: u64,
    /// Opened `O_DSYNC`: each completed write is durable on its own.
    write_through: bool,
    /// Set by operations whose effect a write-through write does not make durable (creation,
    /// preallocation, hole punching); cleared by `sync`.
    metadata_dirty: std::cell::Cell<bool>,
}

#[derive(Debug, Default)]
struct BufferPool {
    free: RefCell<Vec<DmaBuffer>>,
}

/// DMA memory for a write, shared by reference count: [`WRITE_CHUNK_BYTES`]-sized buffers return
/// to their pool when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct PooledBuffer {
    buffer: Option<Rc<DmaBuffer>>,
    pool: Option<Rc<BufferPool>>,
}

impl PooledBuffer {
    fn rc(&self) -> &Rc<DmaBuffer> {
        self.buffer.as_ref().expect("present until dropped")
    }
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        self.rc().as_bytes()
    }
}

impl WriteBuffer for PooledBuffer {
    fn get_mut(&mut self) -> Option<&mut [u8]> {
        Rc::get_mut(self.buffer.as_mut().expect("present until dropped"))
            .map(DmaBuffer::as_bytes_mut)
    }

    fn deep_copy(&self) -> Self {
        let bytes = self.as_ref();
        let mut copy = glommio::allocate_dma_buffer(bytes.len());
        copy.as_bytes_mut().copy_from_slice(bytes);
        PooledBuffer {
            buffer: Some(Rc::new(copy)),
            pool: self.pool.clone(),
        }
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let (Some(buffer), Some(pool)) = (self.buffer.take(), self.pool.as_ref())
            && let Ok(buffer) = Rc::try_unwrap(buffer)
        {
            let mut free = pool.free.borrow_mut();
            if free.len() < POOL_BUFFERS_MAX {
                free.push(buffer);
            }
        }
    }
}

const PROBE_NAME: &str = ".sluice-iopoll-probe";

impl DmaStorage {
    /// Opens (creating if needed) the directory `dir`.
    ///
    /// glommio decides per device and per thread, on the first `DmaFile` it opens, whether the
    /// device supports polled I/O, by reading offset 0 of that file. On an empty file that read
    /// succeeds without reaching the device, glommio wrongly enables polling, and every later
    /// read fails with `EOPNOTSUPP` on devices without poll queues (virtio disks among them). So
    /// the first file opened here is a probe that holds one real block.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating directory", &dir, e))?;
        let probe = dir.join(PROBE_NAME);
        std::fs::write(&probe, vec![0u8; 4096]).map_err(|e| Error::io("writing", &probe, e))?;
        let file = DmaFile::open(&probe)
            .await
            .map_err(|e| Error::io("opening", &probe, e.into()))?;
        let _ = file.close().await;
        std::fs::remove_file(&probe).map_err(|e| Error::io("removing", &probe, e))?;
        Ok(DmaStorage {
            dir: Rc::new(dir),
            pool: Rc::default(),
            write_through: false,
        })
    }

    /// Like [`DmaStorage::open`], but files are opened `O_DSYNC`: every completed write is
    /// durable by itself, so a flush needs one I/O per write instead of a write and then an
    /// `fdatasync`. `sync` then only syncs after operations that change metadata a data write
    /// does not persist (creating, preallocating, punching holes).
    pub async fn open_write_through(dir: impl AsRef<Path>) -> Result<Self> {
        let mut storage = Self::open(dir).await?;
        storage.write_through = true;
        Ok(storage)
    }

    fn open_flags(&self) -> i32 {
        if self.write_through { libc::O_DSYNC } else { 0 }
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Storage for DmaStorage {
    type File = DmaFileHandle;

    fn alloc_buffer(&self, len: usize) -> PooledBuffer {
        if len == WRITE_CHUNK_BYTES {
            let reused = self.pool.free.borrow_mut().pop();
            let buffer = reused.unwrap_or_else(|| glommio::allocate_dma_buffer(len));
            PooledBuffer {
                buffer: Some(Rc::new(buffer)),
                pool: Some(self.pool.clone()),
            }
        } else {
            PooledBuffer {
                buffer: Some(Rc::new(glommio::allocate_dma_buffer(len))),
                pool: None,
            }
        }
    }

    async fn list(&self) -> Result<Vec<String>> {
        let entries =
            std::fs::read_dir(&*self.dir).map_err(|e| Error::io("listing", &*self.dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &*self.dir, e))?;
            if let Some(name) = entry.file_name().to_str()
                && name != PROBE_NAME
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn create(&self, name: &str, bytes: u64) -> Result<DmaFileHandle> {
        let path = self.path(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .custom_flags(self.open_flags())
            .dma_open(&path)
            .await
            .map_err(|e| Error::io("creating", &path, e.into()))?;
        if let Err(e) = file.pre_allocate(bytes, false).await {
            let _ = file.close().await;
            let _ = std::fs::remove_file(&path);
            return Err(Error::io("preallocating", &path, e.into()));
        }
        Ok(DmaFileHandle {
            file,
            path,
            size: bytes,
            write_through: self.write_through,
            metadata_dirty: std::cell::Cell::new(true),
        })
    }

    async fn open(&self, name: &str) -> Result<DmaFileHandle> {
        let path = self.path(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(self.open_flags())
            .dma_open(&path)
            .await
            .map_err(|e| Error::io("opening", &path, e.into()))?;
        let size = file
            .file_size()
            .await
            .map_err(|e| Error::io("sizing", &path, e.into()))?;
        Ok(DmaFileHandle {
            file,
            path,
            size,
            write_through: self.write_through,
            metadata_dirty: std::cell::Cell::new(false),
        })
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        std::fs::rename(self.path(from), self.path(to))
            .map_err(|e| Error::io("renaming", self.path(from), e))
    }

    async fn remove(&self, name: &str) -> Result<()> {
        std::fs::remove_file(self.path(name)).map_err(|e| Error::io("removing", self.path(name), e))
    }

    async fn sync_dir(&self) -> Result<()> {
        let dir =
            std::fs::File::open(&*self.dir).map_err(|e| Error::io("opening", &*self.dir, e))?;
        dir.sync_all()
            .map_err(|e| Error::io("syncing", &*self.dir, e))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl DmaFileHandle {
    /// Turns a write's result into ours: an error, or a short write, is an I/O error.
    fn check_written(&self, written: glommio::Result<usize, ()>, len: u64) -> Result<()> {
        let written = written.map_err(|e| Error::io("writing", &self.path, e.into()))?;
        if written as u64 == len {
            Ok(())
        } else {
            let short = std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes"),
            );
            Err(Error::io("writing", &self.path, short))
        }
    }
}

impl StorageFile for DmaFileHandle {
    type Buffer = PooledBuffer;

    fn size(&self) -> u64 {
        self.size
    }

    async fn write_buffers(&self, offset: u64, buffers: Vec<PooledBuffer>) -> Result<()> {
        let mut at = offset;
        let mut writes: Vec<Pin<Box<dyn Future<Output = Result<()>> + '_>>> = Vec::new();
        for pooled in buffers {
            let len = pooled.as_ref().len() as u64;
            check_aligned(at, len).map_err(|e| Error::io("writing", &self.path, e))?;
            let pos = at;
            writes.push(Box::pin(async move {
                let written = self.file.write_rc_at(pooled.rc().clone(), pos).await;
                // The write is done with the memory: dropping `pooled` may return it to the pool.
                drop(pooled);
                self.check_written(written, len)
            }));
            at += len;
        }
        run_window(writes, WRITES_IN_FLIGHT_MAX).await
    }

    async fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        check_aligned(offset, data.len() as u64)
            .map_err(|e| Error::io("writing", &self.path, e))?;
        let mut buffer = self.file.alloc_dma_buffer(data.len());
        buffer.as_bytes_mut().copy_from_slice(data);
        let written = self.file.write_at(buffer, offset).await;
        self.check_written(written, data.len() as u64)
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let len = len.min(usize::try_from(self.size.saturating_sub(offset)).unwrap_or(usize::MAX));
        if len == 0 {
            return Ok(Vec::new());
        }
        let result = self
            .file
            .read_at(offset, len)
            .await
            .map_err(|e| Error::io("reading", &self.path, e.into()))?;
        Ok(result.to_vec())
    }

    async fn sync(&self) -> Result<()> {
        if self.write_through && !self.metadata_dirty.get() {
            return Ok(());
        }
        self.file
            .fdatasync()
            .await
            .map_err(|e| Error::io("syncing", &self.path, e.into()))?;
        self.metadata_dirty.set(false);
        Ok(())
    }

    async fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        check_aligned(offset, len).map_err(|e| Error::io("zeroing", &self.path, e))?;
        self.metadata_dirty.set(true);
        if len == 0 {
            return Ok(());
        }
        // Punch a hole: the range reads as zeros at once, and the file keeps its size.
        self.file
            .deallocate(offset, len)
            .await
            .map_err(|e| Error::io("zeroing", &self.path, e.into()))
    }
}

/// Runs `futures` keeping up to `window` in flight (a new one starts as soon as one finishes, so
/// the device queue never drains between groups). The first error wins; every started future
/// still runs to completion, so no write is left in flight with its buffer released.
async fn run_window<'a>(
    futures: Vec<Pin<Box<dyn Future<Output = Result<()>> + 'a>>>,
    window: usize,
) -> Result<()> {
    let mut waiting = futures.into_iter();
    let mut running: Vec<Pin<Box<dyn Future<Output = Result<()>> + 'a>>> = Vec::new();
    let mut first_error = None;
    poll_fn(|cx| {
        loop {
            while first_error.is_none() && running.len() < window {
                match waiting.next() {
                    Some(f) => running.push(f),
                    None => break,
                }
            }
            // Empty after refilling: every future has finished (or an error stopped the rest).
            if running.is_empty() {
                return Poll::Ready(());
            }
            let before = running.len();
            running.retain_mut(|f| match f.as_mut().poll(cx) {
                Poll::Ready(result) => {
                    if let Err(e) = result {
                        first_error.get_or_insert(e);
                    }
                    false
                }
                Poll::Pending => true,
            });
            if running.len() == before {
                return Poll::Pending;
            }
        }
    })
    .await;
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use futures_lite::future::{block_on, yield_now};

    use super::*;

    type Boxed<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

    /// `count` futures, each yielding `yields(i)` times before it finishes; tracks how many run at
    /// once and how many finished.
    fn tracked<'a>(
        count: usize,
        yields: impl Fn(usize) -> usize,
        live: &'a Cell<usize>,
        peak: &'a Cell<usize>,
        done: &'a Cell<usize>,
    ) -> Vec<Boxed<'a>> {
        (0..count)
            .map(|i| {
                let n = yields(i);
                Box::pin(async move {
                    live.set(live.get() + 1);
                    peak.set(peak.get().max(live.get()));
                    for _ in 0..n {
                        yield_now().await;
                    }
                    live.set(live.get() - 1);
                    done.set(done.get() + 1);
                    Ok(())
                }) as Boxed<'a>
            })
            .collect()
    }

    #[test]
    fn run_window_runs_every_future_within_the_window() {
        for window in 1..=9 {
            for pattern in 0..3usize {
                let (live, peak, done) = (Cell::new(0), Cell::new(0), Cell::new(0));
                // Ready at once (a whole window can finish in one poll), uneven, and slow.
                let yields = |i: usize| match pattern {
                    0 => 0,
                    1 => i * 7 % 4,
                    _ => 3,
                };
                let futures = tracked(20, yields, &live, &peak, &done);
                block_on(run_window(futures, window)).expect("no error");
                assert_eq!(done.get(), 20, "window {window}, pattern {pattern}");
                assert!(
                    peak.get() <= window,
                    "window {window}: {} ran at once",
                    peak.get()
                );
            }
        }
    }

    #[test]
    fn run_window_returns_the_first_error_after_the_started_ones_finish() {
        let started = Cell::new(0);
        let finished = Cell::new(0);
        let futures: Vec<Boxed<'_>> = (0..10)
            .map(|i| {
                let (started, finished) = (&started, &finished);
                Box::pin(async move {
                    started.set(started.get() + 1);
                    yield_now().await;
                    finished.set(finished.get() + 1);
                    if i == 1 {
                        Err(Error::io(
                            "writing",
                            Path::new("x"),
                            std::io::Error::from_raw_os_error(libc::EIO),
                        ))
                    } else {
                        Ok(())
                    }
                }) as Boxed<'_>
            })
            .collect();
        let result = block_on(run_window(futures, 3));
        assert!(result.is_err(), "the error is returned");
        assert_eq!(
            started.get(),
            finished.get(),
            "every started write finished"
        );
        assert!(started.get() < 10, "no write starts after the error");
    }
}
