//! An in-memory disk that models what a real one does at a crash.
//!
//! Every file keeps its durable content (as of its last `sync`) and the writes made since. A
//! crash keeps the durable content and, for each unsynced write in order, seeded-randomly drops
//! it, applies it, or tears it (only a prefix of its 512-byte sectors persists): a device with a
//! volatile cache may persist any subset of the writes it acknowledged. Directory
//! entries (creations, renames, removals) made since the last `sync_dir` are lost the same way.
//! A capacity limit makes writes and preallocations fail with `ENOSPC`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use super::{SECTOR_BYTES, Storage, StorageFile, WriteBuffer, check_aligned};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    Zero { offset: u64, len: u64 },
}

#[derive(Debug, Default)]
struct FileData {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug, Default)]
struct Disk {
    files: BTreeMap<u64, FileData>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    next_id: u64,
    /// Bumped at every crash; handles from before a crash stop working.
    epoch: u64,
    capacity_bytes: Option<u64>,
    syncs: u64,
    fail_writes: bool,
    /// Seeded scheduling noise: each file operation first yields to the executor up to this
    /// many times, so concurrent writes and syncs interleave as on a real device.
    io_delay: Option<(SplitMix, IoDelay)>,
}

impl Disk {
    fn used_bytes(&self) -> u64 {
        self.names
            .values()
            .filter_map(|id| self.files.get(id))
            .map(|f| f.current.len() as u64)
            .sum()
    }

    fn check_room(&self, growth: u64) -> std::io::Result<()> {
        match self.capacity_bytes {
            Some(cap) if self.used_bytes() + growth > cap => {
                Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
            }
            _ => Ok(()),
        }
    }

    fn collect_garbage(&mut self) {
        let live: Vec<u64> = self
            .names
            .values()
            .chain(self.durable_names.values())
            .copied()
            .collect();
        self.files.retain(|id, _| live.contains(id));
    }
}

/// Scheduling noise of a [`MemStorage`]: the most times an operation yields before it takes
/// effect. Slow syncs and fast writes let the flush pipeline run several plans ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoDelay {
    /// For writes and zeroing.
    pub write_yields_max: u64,
    /// For syncs.
    pub sync_yields_max: u64,
}

#[derive(Debug, Clone, Copy)]
enum IoKind {
    Write,
    Sync,
}

/// A shared write buffer of the in-memory disk.
#[derive(Debug, Clone)]
pub struct MemBuffer(Rc<Vec<u8>>);

impl MemBuffer {
    /// A zeroed buffer of `len` bytes.
    #[must_use]
    pub fn zeroed(len: usize) -> Self {
        MemBuffer(Rc::new(vec![0; len]))
    }
}

impl AsRef<[u8]> for MemBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl WriteBuffer for MemBuffer {
    fn get_mut(&mut self) -> Option<&mut [u8]> {
        Rc::get_mut(&mut self.0).map(Vec::as_mut_slice)
    }
    fn deep_copy(&self) -> Self {
        MemBuffer(Rc::new(self.0.to_vec()))
    }
}

/// A cloneable handle to one in-memory disk holding one directory.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    disk: Rc<RefCell<Disk>>,
}

/// A file on a [`MemStorage`].
#[derive(Debug)]
pub struct MemFileHandle {
    disk: Rc<RefCell<Disk>>,
    id: u64,
    epoch: u64,
    name: String,
}

/// A tiny deterministic generator (splitmix64) so a crash is reproducible from its seed.
#[derive(Debug, Clone)]
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

fn apply(content: &mut Vec<u8>, op: &Pending, persisted_bytes: Option<u64>) {
    let (offset, bytes): (u64, std::borrow::Cow<'_, [u8]>) = match op {
        Pending::Write { offset, data } => (*offset, data.as_slice().into()),
        Pending::Zero { offset, len } => (*offset, vec![0; usize_of(*len)].into()),
    };
    let len = persisted_bytes.map_or(bytes.len(), |p| usize_of(p).min(bytes.len()));
    let start = usize_of(offset);
    if content.len() < start + len {
        content.resize(start + len, 0);
    }
    content[start..start + len].copy_from_slice(&bytes[..len]);
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "in-memory sizes fit in memory"
)]
fn usize_of(v: u64) -> usize {
    v as usize
}

impl MemStorage {
    /// An empty disk without a capacity limit.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits the total size of all files; `None` removes the limit.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.disk.borrow_mut().capacity_bytes = capacity_bytes;
    }

    /// Makes every write fail with `EIO` while `fail` is set.
    pub fn set_fail_writes(&self, fail: bool) {
        self.disk.borrow_mut().fail_writes = fail;
    }

    /// Makes every later file operation yield to the executor a seeded-random number of times
    /// (up to the maximum `delay` gives for its kind) before it takes effect, so that flushes and
    /// appends running concurrently interleave in many orders. `None` turns it off.
    pub fn set_io_delay(&self, seed: u64, delay: Option<IoDelay>) {
        self.disk.borrow_mut().io_delay = delay.map(|d| (SplitMix(seed), d));
    }

    /// Yields as [`MemStorage::set_io_delay`] asks, for an operation of `kind`.
    async fn io_delay(disk: &RefCell<Disk>, kind: IoKind) {
        let yields = match &mut disk.borrow_mut().io_delay {
            Some((rng, delay)) => rng.below(
                match kind {
                    IoKind::Write => delay.write_yields_max,
                    IoKind::Sync => delay.sync_yields_max,
                } + 1,
            ),
            None => 0,
        };
        for _ in 0..yields {
            futures_lite::future::yield_now().await;
        }
    }

    /// How many file syncs have completed.
    #[must_use]
    pub fn sync_count(&self) -> u64 {
        self.disk.borrow().syncs
    }

    /// Simulates a power loss. Keeps what was synced; each unsynced write of each file is
    /// dropped, applied, or torn at a sector boundary, independently. Directory changes since the
    /// last `sync_dir` are lost. Handles opened before the crash stop working.
    pub fn crash(&self, seed: u64) {
        let mut rng = SplitMix(seed);
        let mut disk = self.disk.borrow_mut();
        disk.epoch += 1;
        disk.names = disk.durable_names.clone();
        for file in disk.files.values_mut() {
            let mut content = file.durable.clone();
            let pending = std::mem::take(&mut file.pending);
            for op in &pending {
                let op_len = match op {
                    Pending::Write { data, .. } => data.len() as u64,
                    Pending::Zero { len, .. } => *len,
                };
                match rng.below(3) {
                    0 => {}
                    1 => apply(&mut content, op, None),
                    _ => {
                        let sectors = rng.below(op_len / SECTOR_BYTES + 1);
                        apply(&mut content, op, Some(sectors * SECTOR_BYTES));
                    }
                }
            }
            file.durable.clone_from(&content);
            file.current = content;
        }
        disk.collect_garbage();
    }

    /// Changes one byte of a file's durable and current content, as bit rot would.
    pub fn corrupt(&self, name: &str, offset: u64, xor: u8) {
        let mut disk = self.disk.borrow_mut();
        let id = *disk.names.get(name).expect("corrupt: no such file");
        let file = disk.files.get_mut(&id).expect("file data");
        let at = usize_of(offset);
        file.current[at] ^= xor;
        if at < file.durable.len() {
            file.durable[at] ^= xor;
        }
    }

    /// A file's current content (for tests).
    #[must_use]
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        let disk = self.disk.borrow();
        let id = disk.names.get(name)?;
        disk.files.get(id).map(|f| f.current.clone())
    }

    /// Writes a file directly and durably (for tests that plant foreign files).
    pub fn put_file(&self, name: &str, content: &[u8]) {
        let mut disk = self.disk.borrow_mut();
        let id = disk.next_id;
        disk.next_id += 1;
        disk.files.insert(
            id,
            FileData {
                durable: content.to_vec(),
                current: content.to_vec(),
                pending: vec![],
            },
        );
        disk.names.insert(name.to_owned(), id);
        disk.durable_names.insert(name.to_owned(), id);
    }

    fn handle(&self, name: &str, id: u64) -> MemFileHandle {
        MemFileHandle {
            disk: self.disk.clone(),
            id,
            epoch: self.disk.borrow().epoch,
            name: name.to_owned(),
        }
    }
}

impl Storage for MemStorage {
    type File = MemFileHandle;

    fn alloc_buffer(&self, len: usize) -> MemBuffer {
        MemBuffer::zeroed(len)
    }

    async fn list(&self) -> Result<Vec<String>> {
        Ok(self.disk.borrow().names.keys().cloned().collect())
    }

    async fn create(&self, name: &str, bytes: u64) -> Result<MemFileHandle> {
        let id = {
            let mut disk = self.disk.borrow_mut();
            let replaced = disk
                .names
                .get(name)
                .and_then(|id| disk.files.get(id))
                .map_or(0, |f| f.current.len() as u64);
            disk.check_room(bytes.saturating_sub(replaced))
                .map_err(|e| Error::io("creating", self.path(name), e))?;
            let id = disk.next_id;
            disk.next_id += 1;
            disk.files.insert(
                id,
                FileData {
                    durable: vec![],
                    current: vec![0; usize_of(bytes)],
                    pending: vec![Pending::Zero {
                        offset: 0,
                        len: bytes,
                    }],
                },
            );
            disk.names.insert(name.to_owned(), id);
            disk.collect_garbage();
            id
        };
        Ok(self.handle(name, id))
    }

    async fn open(&self, name: &str) -> Result<MemFileHandle> {
        let id = self.disk.borrow().names.get(name).copied();
        match id {
            Some(id) => Ok(self.handle(name, id)),
            None => Err(Error::io(
                "opening",
                self.path(name),
                std::io::Error::from_raw_os_error(libc::ENOENT),
            )),
        }
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut disk = self.disk.borrow_mut();
        let id = disk.names.remove(from).ok_or_else(|| {
            Error::io(
                "renaming",
                self.path(from),
                std::io::Error::from_raw_os_error(libc::ENOENT),
            )
        })?;
        disk.names.insert(to.to_owned(), id);
        disk.collect_garbage();
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.names.remove(name).ok_or_else(|| {
            Error::io(
                "removing",
                self.path(name),
                std::io::Error::from_raw_os_error(libc::ENOENT),
            )
        })?;
        disk.collect_garbage();
        Ok(())
    }

    async fn sync_dir(&self) -> Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.durable_names = disk.names.clone();
        disk.collect_garbage();
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from("mem:").join(name)
    }
}

impl MemFileHandle {
    fn with_file<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Disk) -> std::io::Result<T>,
    ) -> Result<T> {
        let mut disk = self.disk.borrow_mut();
        let result = if disk.epoch != self.epoch || !disk.files.contains_key(&self.id) {
            Err(std::io::Error::from_raw_os_error(libc::EBADF))
        } else {
            f(&mut disk)
        };
        result.map_err(|e| Error::io(op, PathBuf::from("mem:").join(&self.name), e))
    }
}

impl StorageFile for MemFileHandle {
    type Buffer = MemBuffer;

    async fn write_buffers(&self, offset: u64, buffers: Vec<MemBuffer>) -> Result<()> {
        let mut at = offset;
        for b in buffers {
            self.write_at(at, b.as_ref()).await?;
            at += b.as_ref().len() as u64;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.disk
            .borrow()
            .files
            .get(&self.id)
            .map_or(0, |f| f.current.len() as u64)
    }

    async fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        MemStorage::io_delay(&self.disk, IoKind::Write).await;
        self.with_file("writing", |disk| {
            check_aligned(offset, data.len() as u64)?;
            if disk.fail_writes {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            let size = disk.files[&self.id].current.len() as u64;
            disk.check_room((offset + data.len() as u64).saturating_sub(size))?;
            let file = disk.files.get_mut(&self.id).expect("checked");
            let op = Pending::Write {
                offset,
                data: data.to_vec(),
            };
            apply(&mut file.current, &op, None);
            file.pending.push(op);
            Ok(())
        })
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.with_file("reading", |disk| {
            let content = &disk.files[&self.id].current;
            let start = usize_of(offset).min(content.len());
            let end = (start + len).min(content.len());
            Ok(content[start..end].to_vec())
        })
    }

    async fn sync(&self) -> Result<()> {
        MemStorage::io_delay(&self.disk, IoKind::Sync).await;
        self.with_file("syncing", |disk| {
            if disk.fail_writes {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            disk.syncs += 1;
            let file = disk.files.get_mut(&self.id).expect("checked");
            file.durable.clone_from(&file.current);
            file.pending.clear();
            Ok(())
        })
    }

    async fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        MemStorage::io_delay(&self.disk, IoKind::Write).await;
        self.with_file("zeroing", |disk| {
            check_aligned(offset, len)?;
            let file = disk.files.get_mut(&self.id).expect("checked");
            let end = usize_of(offset + len).min(file.current.len());
            let start = usize_of(offset).min(end);
            let op = Pending::Zero {
                offset: start as u64,
                len: (end - start) as u64,
            };
            apply(&mut file.current, &op, None);
            file.pending.push(op);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn crash_loses_unsynced_writes_and_names() {
        block_on(async {
            let s = MemStorage::new();
            let f = s.create("a", 8192).await.expect("create");
            s.sync_dir().await.expect("sync dir");
            f.write_at(0, &[1; 4096]).await.expect("write");
            f.sync().await.expect("sync");
            f.write_at(4096, &[2; 4096]).await.expect("write");
            let _g = s.create("b", 4096).await.expect("create b");
            // With one pending write, each seed either drops it, tears it or keeps it.
            let mut outcomes = std::collections::BTreeSet::new();
            for seed in 0..64 {
                let s2 = MemStorage::new();
                let f2 = s2.create("a", 8192).await.expect("create");
                s2.sync_dir().await.expect("sync dir");
                f2.write_at(0, &[1; 4096]).await.expect("write");
                f2.sync().await.expect("sync");
                f2.write_at(4096, &[2; 4096]).await.expect("write");
                s2.crash(seed);
                let c = s2.contents("a").expect("a survives");
                assert_eq!(&c[..4096], &[1; 4096][..], "synced data is never lost");
                let persisted = c[4096..].iter().take_while(|b| **b == 2).count();
                assert!(
                    c[4096 + persisted..].iter().all(|b| *b == 0),
                    "a tear keeps a prefix"
                );
                assert_eq!(persisted % 512, 0);
                outcomes.insert(persisted);
                assert!(
                    f2.read_at(0, 1).await.is_err(),
                    "old handles die at a crash"
                );
            }
            assert!(outcomes.contains(&0) && outcomes.contains(&4096) && outcomes.len() > 2);
            s.crash(1);
            assert!(s.contents("b").is_none(), "an unsynced creation is lost");
        });
    }

    #[test]
    fn capacity_gives_enospc_and_misaligned_writes_fail() {
        block_on(async {
            let s = MemStorage::new();
            s.set_capacity(Some(8192));
            let f = s.create("a", 8192).await.expect("fits");
            assert!(matches!(
                s.create("b", 4096).await,
                Err(Error::DiskFull { .. })
            ));
            assert!(f.write_at(100, &[0; 4096]).await.is_err());
            assert!(matches!(
                f.write_at(8192, &[0; 4096]).await,
                Err(Error::DiskFull { .. })
            ));
        });
    }
}
