//! A replica's snapshots on disk: the engine state up to a log index, one file per snapshot.
//!
//! `snapshots/snapshot-<index>-<term>.bin` holds a 32-byte header and then the engine's own
//! snapshot (`sluice_engine::snapshot`, itself checksummed):
//!
//! ```text
//! offset  bytes  field
//!      0      4  magic          "SLPS"
//!      4      2  version        1
//!      6      2  reserved       0
//!      8      8  index          the last log index the state covers
//!     16      8  term           that entry's term
//!     24      4  reserved       0
//!     28      4  header_crc     crc32c of bytes 0..28
//! ```
//!
//! A snapshot is written with [`crate::durable::replace_file`] (a temporary file, synced, renamed
//! into place, the directory synced), so a crash leaves either the old set or the new one, and a
//! failed write (a full disk) leaves no temporary file behind. The store's methods block: the
//! replica's driver runs them off its shard ([`crate::durable::off_shard`]). The two newest are
//! kept: when
//! the newest turns out damaged (a bad sector), recovery falls back to the one before it, whose
//! journal entries are still there because compaction only goes below the snapshot before last.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_engine::snapshot::decode_snapshot;
use sluice_engine::state::State;

const MAGIC: &[u8; 4] = b"SLPS";
const VERSION: u16 = 1;
/// Bytes of the file header.
pub const HEADER_BYTES: usize = 32;
/// Snapshots kept on disk.
pub const KEPT: usize = 2;

/// A snapshot held in memory: what it covers and the engine's bytes (sent to lagging
/// followers as they are, and shared with the thread that writes them).
#[derive(Debug, Clone)]
pub struct StoredSnapshot {
    pub index: u64,
    pub term: u64,
    pub bytes: Arc<[u8]>,
}

/// The snapshot directory of one replica.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

fn file_name(index: u64, term: u64) -> String {
    format!("snapshot-{index:020}-{term:020}.bin")
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("snapshot-")?.strip_suffix(".bin")?;
    let (index, term) = rest.split_once('-')?;
    Some((index.parse().ok()?, term.parse().ok()?))
}

fn header(index: u64, term: u64) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[0..4].copy_from_slice(MAGIC);
    header[4..6].copy_from_slice(&VERSION.to_le_bytes());
    header[8..16].copy_from_slice(&index.to_le_bytes());
    header[16..24].copy_from_slice(&term.to_le_bytes());
    let crc = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Checks a file's header against the index and term its name gives.
fn check_header(bytes: &[u8], index: u64, term: u64) -> Result<(), String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!("{} bytes, shorter than the header", bytes.len()));
    }
    let stored_crc = u32::from_le_bytes(bytes[28..32].try_into().expect("4 bytes"));
    let actual_crc = crc32c::crc32c(&bytes[..28]);
    if stored_crc != actual_crc {
        return Err(format!(
            "header checksum mismatch (stored {stored_crc:08x}, computed {actual_crc:08x})"
        ));
    }
    if &bytes[0..4] != MAGIC {
        return Err("not a snapshot file (bad magic)".to_owned());
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(format!("unsupported snapshot version {version}"));
    }
    let stored_index = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let stored_term = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    if (stored_index, stored_term) != (index, term) {
        return Err(format!(
            "the header says index {stored_index} term {stored_term}, the name index {index} \
             term {term}"
        ));
    }
    Ok(())
}

impl SnapshotStore {
    /// The store in `dir`: created if missing (durably, in its parent), and rid of the temporary
    /// files of writes a crash interrupted.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        crate::durable::create_dir_all(dir)
            .map_err(|error| anyhow::anyhow!("creating the snapshot directory: {error}"))?;
        crate::durable::remove_stale_temps(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Snapshot files by (index, term), newest first.
    fn list(&self) -> anyhow::Result<Vec<(u64, u64, PathBuf)>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if let Some((index, term)) = name.to_str().and_then(parse_name) {
                found.push((index, term, entry.path()));
            }
        }
        found.sort_by_key(|(index, term, _)| std::cmp::Reverse((*index, *term)));
        Ok(found)
    }

    /// The newest snapshot that reads back intact, with its decoded state. A damaged one is
    /// reported and skipped (the one before it is used).
    pub fn load_latest(&self) -> anyhow::Result<Option<(StoredSnapshot, State)>> {
        for (index, term, path) in self.list()? {
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    eprintln!(
                        "snapshot {}: unreadable ({error}); trying an older one",
                        path.display()
                    );
                    continue;
                }
            };
            let checked = check_header(&bytes, index, term).and_then(|()| {
                decode_snapshot(&bytes[HEADER_BYTES..]).map_err(|error| error.to_string())
            });
            match checked {
                Ok(state) => {
                    return Ok(Some((
                        StoredSnapshot {
                            index,
                            term,
                            bytes: Arc::from(&bytes[HEADER_BYTES..]),
                        },
                        state,
                    )));
                }
                Err(error) => eprintln!(
                    "snapshot {}: damaged ({error}); trying an older one",
                    path.display()
                ),
            }
        }
        Ok(None)
    }

    /// Writes a snapshot durably, then keeps only the [`KEPT`] newest. Returns the index of the
    /// oldest snapshot kept (the journal may be compacted below it only). An error means the
    /// snapshot is not on disk (and no temporary file is left); a kept older snapshot that
    /// cannot be removed is only reported.
    pub fn save(&self, snapshot: &StoredSnapshot) -> crate::durable::Result<Option<u64>> {
        let path = self.dir.join(file_name(snapshot.index, snapshot.term));
        crate::durable::replace_file(
            &path,
            &[&header(snapshot.index, snapshot.term), &snapshot.bytes],
        )?;
        let listed = match self.list() {
            Ok(listed) => listed,
            Err(error) => {
                eprintln!(
                    "snapshot {}: written, but listing {} failed ({error}); older snapshots \
                     stay until the next one",
                    path.display(),
                    self.dir.display()
                );
                return Ok(None);
            }
        };
        let mut oldest_kept = None;
        for (position, (index, _, old)) in listed.into_iter().enumerate() {
            if position < KEPT {
                oldest_kept = Some(index);
            } else if let Err(error) = fs::remove_file(&old) {
                eprintln!(
                    "snapshot {}: not removed ({error}); it stays until the next snapshot",
                    old.display()
                );
                oldest_kept = Some(index);
            }
        }
        Ok(oldest_kept)
    }

    /// Deletes every snapshot older than `index` (after installing a leader's snapshot the
    /// journal restarts after it, so older ones can no longer be completed from the log).
    pub fn remove_older_than(&self, index: u64) -> anyhow::Result<()> {
        for (older, _, path) in self.list()? {
            if older < index {
                fs::remove_file(&path)
                    .map_err(|error| anyhow::anyhow!("removing {}: {error}", path.display()))?;
            }
        }
        Ok(())
    }

    /// The index of the oldest kept snapshot: the journal may be compacted below it only.
    pub fn oldest_kept_index(&self) -> anyhow::Result<Option<u64>> {
        Ok(self.list()?.last().map(|(index, _, _)| *index))
    }

    /// The snapshot's path for `index`/`term` (for tests that damage it).
    #[must_use]
    pub fn path_of(&self, index: u64, term: u64) -> PathBuf {
        self.dir.join(file_name(index, term))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_newest_first() {
        assert_eq!(parse_name(&file_name(42, 7)), Some((42, 7)));
        assert_eq!(parse_name("snapshot-x-1.bin"), None);
        assert_eq!(parse_name("other.bin"), None);
    }

    #[test]
    fn a_damaged_header_is_refused() {
        let mut bytes = header(5, 2).to_vec();
        assert!(check_header(&bytes, 5, 2).is_ok());
        assert!(check_header(&bytes, 6, 2).is_err(), "the name must match");
        bytes[9] ^= 1;
        assert!(
            check_header(&bytes, 5, 2).is_err(),
            "a flipped bit is caught"
        );
        assert!(check_header(&bytes[..10], 5, 2).is_err(), "short");
    }

    #[test]
    fn the_newest_intact_snapshot_wins_and_two_are_kept() {
        let dir = std::env::temp_dir().join(format!("sluice-snapshots-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = SnapshotStore::open(&dir).expect("opens");
        let state = State::new(1);
        let bytes: Arc<[u8]> = Arc::from(sluice_engine::snapshot::encode_snapshot(&state));
        for (index, oldest) in [(10, 10), (20, 10), (30, 20)] {
            let kept = store
                .save(&StoredSnapshot {
                    index,
                    term: 1,
                    bytes: Arc::clone(&bytes),
                })
                .expect("saves");
            assert_eq!(kept, Some(oldest), "the oldest kept after saving {index}");
        }
        assert_eq!(store.list().expect("lists").len(), KEPT);
        assert_eq!(store.oldest_kept_index().expect("lists"), Some(20));
        let (latest, _) = store.load_latest().expect("reads").expect("one exists");
        assert_eq!(latest.index, 30);
        // Damage the newest: the one before it is used.
        let path = store.path_of(30, 1);
        let mut damaged = fs::read(&path).expect("reads");
        let last = damaged.len() - 1;
        damaged[last] ^= 0x40;
        fs::write(&path, damaged).expect("writes");
        let (fallback, _) = store.load_latest().expect("reads").expect("one intact");
        assert_eq!(fallback.index, 20);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_save_leaves_no_temporary_file_and_open_sweeps_stale_ones() {
        let dir =
            std::env::temp_dir().join(format!("sluice-snapshots-fail-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = SnapshotStore::open(&dir).expect("opens");
        let bytes: Arc<[u8]> = Arc::from(sluice_engine::snapshot::encode_snapshot(&State::new(1)));
        let snapshot = |index| StoredSnapshot {
            index,
            term: 1,
            bytes: Arc::clone(&bytes),
        };
        store.save(&snapshot(10)).expect("saves");
        // A directory where the new snapshot goes: written and synced, the rename fails.
        let blocked = store.path_of(20, 1);
        fs::create_dir_all(blocked.join("in-the-way")).expect("blocks");
        let error = store.save(&snapshot(20)).expect_err("the rename fails");
        assert_eq!(error.operation, "rename into place", "{error}");
        fs::remove_dir_all(&blocked).expect("unblocks");
        let temps = |dir: &Path| {
            fs::read_dir(dir)
                .expect("lists")
                .filter(|entry| {
                    entry
                        .as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                })
                .count()
        };
        assert_eq!(temps(&dir), 0, "no temporary file stays");
        assert_eq!(store.oldest_kept_index().expect("lists"), Some(10));
        // A crash in the middle of a write: the next open removes its temporary file.
        fs::write(dir.join(format!("{}.tmp", file_name(30, 1))), b"torn").expect("writes");
        let store = SnapshotStore::open(&dir).expect("opens again");
        assert_eq!(temps(&dir), 0, "the stale temporary file is gone");
        let (latest, _) = store.load_latest().expect("reads").expect("one");
        assert_eq!(latest.index, 10);
        let _ = fs::remove_dir_all(&dir);
    }
}
