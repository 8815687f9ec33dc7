//! Durable file replacement, durable directory creation, and running them off the shard.
//!
//! Every file the broker replaces as a whole (a snapshot, the Raft hard state, the topology)
//! goes through [`replace_file`]: the bytes go to `<name>.tmp` in the same directory, the file is
//! synced, renamed over `<name>`, and the directory is synced, so a crash leaves the old file or
//! the new one and never a mix. On any error the temporary file is removed: a full disk gets its
//! space back at once. A temporary file a crash left behind is removed (and reported) at
//! start-up by [`remove_stale_temps`]. [`create_dir_all`] syncs every directory it creates in its
//! parent, so a new partition or snapshot directory survives a crash with the files in it.
//!
//! These calls block (`write`, `fsync`, `rename`): on a shard they would stall every partition
//! it hosts. The drivers run them with [`off_shard`] on the executor's blocking pool and await
//! the result, which keeps their order (a write is durable when the await returns) without
//! stopping the shard. Failed writes are retried after a [`Backoff`]; [`LatestWriter`] keeps one
//! file (the topology) up to date in the background that way.

use std::cell::RefCell;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What [`replace_file`] appends to a file's name for its temporary file.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Directories [`create_dir_all`] creates at most in one call.
pub const CREATED_DIRS_MAX: usize = 64;

/// A failed durable write: which step, on which path, and the system's error.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {}: {source}{}", .path.display(), hint(.source))]
pub struct DurableError {
    /// The step that failed ("write", "sync", "rename into place", ...).
    pub operation: &'static str,
    /// The file or directory it failed on.
    pub path: PathBuf,
    /// The system's error.
    #[source]
    pub source: io::Error,
}

impl DurableError {
    /// Whether the file system is full (`ENOSPC`, or `EDQUOT` for a quota).
    #[must_use]
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::ENOSPC | libc::EDQUOT)
        )
    }
}

fn hint(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => {
            " (the disk is full: free space on the data directory's file system; the write is \
             retried and nothing was lost)"
        }
        _ => "",
    }
}

/// A crate-local result.
pub type Result<T> = std::result::Result<T, DurableError>;

fn failed(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DurableError {
    let path = path.to_owned();
    move |source| DurableError {
        operation,
        path,
        source,
    }
}

/// The steps of [`replace_file`] and [`create_dir_all`], for tests that make one fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step<'a> {
    Create(&'a Path),
    Write(&'a Path),
    Sync(&'a Path),
    Rename(&'a Path),
    SyncDir(&'a Path),
    CreateDir(&'a Path),
}

/// Called before each step; an `Err` fails that step (tests only; production passes [`no_fault`]).
type Faults<'f> = &'f mut dyn FnMut(Step<'_>) -> io::Result<()>;

#[expect(clippy::unnecessary_wraps, reason = "the signature of a fault hook")]
fn no_fault(_: Step<'_>) -> io::Result<()> {
    Ok(())
}

/// The temporary file [`replace_file`] writes before renaming it over `path`.
#[must_use]
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(TEMP_SUFFIX);
    path.with_file_name(name)
}

/// Replaces `path` with the concatenation of `parts`, durably and atomically: `<path>.tmp`
/// written and synced, renamed over `path`, the directory synced. On an error the temporary
/// file is gone and `path` holds its old content (or, if only the directory sync failed, the
/// new content, maybe not yet durable: write again).
pub fn replace_file(path: &Path, parts: &[&[u8]]) -> Result<()> {
    replace_file_with(path, parts, &mut no_fault)
}

fn replace_file_with(path: &Path, parts: &[&[u8]], fault: Faults<'_>) -> Result<()> {
    let temp = temp_path(path);
    let written = write_synced(&temp, parts, fault).and_then(|()| {
        fault(Step::Rename(path))
            .and_then(|()| fs::rename(&temp, path))
            .map_err(failed("rename into place", path))
    });
    if let Err(error) = written {
        // Whatever the step, the temporary file must not stay: on a full disk it holds the
        // space the next attempt (and the journal) needs.
        match fs::remove_file(&temp) {
            Ok(()) => {}
            Err(remove) if remove.kind() == io::ErrorKind::NotFound => {}
            Err(remove) => eprintln!(
                "removing {} after a failed write: {remove}; it is removed at the next start",
                temp.display()
            ),
        }
        return Err(error);
    }
    sync_dir_of(path, fault)
}

fn write_synced(temp: &Path, parts: &[&[u8]], fault: Faults<'_>) -> Result<()> {
    let mut file = fault(Step::Create(temp))
        .and_then(|()| fs::File::create(temp))
        .map_err(failed("create", temp))?;
    for part in parts {
        fault(Step::Write(temp))
            .and_then(|()| file.write_all(part))
            .map_err(failed("write", temp))?;
    }
    fault(Step::Sync(temp))
        .and_then(|()| file.sync_all())
        .map_err(failed("sync", temp))
}

/// Syncs the directory holding `path`, making a rename or a creation in it durable.
fn sync_dir_of(path: &Path, fault: Faults<'_>) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fault(Step::SyncDir(dir))
        .and_then(|()| fs::File::open(dir))
        .and_then(|dir| dir.sync_all())
        .map_err(failed("sync the directory", dir))
}

/// Creates `path` and its missing ancestors, syncing each new directory's parent so the new
/// entry survives a crash. Returns the directories it created, outermost first.
pub fn create_dir_all(path: &Path) -> Result<Vec<PathBuf>> {
    create_dir_all_with(path, &mut no_fault)
}

fn create_dir_all_with(path: &Path, fault: Faults<'_>) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = path;
    while !at.as_os_str().is_empty() && !at.is_dir() {
        if missing.len() == CREATED_DIRS_MAX {
            return Err(DurableError {
                operation: "create the directory",
                path: path.to_owned(),
                source: io::Error::other(format!(
                    "more than {CREATED_DIRS_MAX} missing ancestors; create the data directory \
                     first"
                )),
            });
        }
        missing.push(at.to_owned());
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    missing.reverse();
    for dir in &missing {
        let created = fault(Step::CreateDir(dir)).and_then(|()| fs::create_dir(dir));
        match created {
            Ok(()) => {}
            // Created meanwhile by someone else: its parent sync is theirs.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(error) => return Err(failed("create the directory", dir)(error)),
        }
        sync_dir_of(dir, fault)?;
    }
    Ok(missing)
}

/// Removes the temporary files (`*.tmp`) in `dir` that an interrupted [`replace_file`] left,
/// reporting each. A missing `dir` has none. Returns the files removed.
pub fn remove_stale_temps(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(failed("list the directory", dir)(error)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(failed("list the directory", dir))?;
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.ends_with(TEMP_SUFFIX));
        let is_file = entry.file_type().is_ok_and(|kind| kind.is_file());
        if !is_temp || !is_file {
            continue;
        }
        let path = entry.path();
        fs::remove_file(&path).map_err(failed("remove the stale temporary file", &path))?;
        eprintln!(
            "removed {}: a temporary file an interrupted write left behind (the file it was \
             to replace is intact)",
            path.display()
        );
        removed.push(path);
    }
    Ok(removed)
}

/// Runs the blocking `work` on the current executor's blocking pool and awaits its result:
/// the shard goes on serving its other tasks meanwhile. Only inside a glommio executor.
pub async fn off_shard<R, F>(work: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(work).await
}

/// Pauses between attempts of a failing write: doubling from `pause_min` up to `pause_max`,
/// back to `pause_min` after a success. Time is an argument.
#[derive(Debug, Clone)]
pub struct Backoff {
    pause_min: Duration,
    pause_max: Duration,
    next_pause: Duration,
    retry_at: Option<Instant>,
    /// Failures since the last success.
    pub failures: u32,
}

impl Backoff {
    /// A back-off that has not failed yet.
    #[must_use]
    pub fn new(pause_min: Duration, pause_max: Duration) -> Self {
        assert!(pause_min <= pause_max && !pause_min.is_zero());
        Self {
            pause_min,
            pause_max,
            next_pause: pause_min,
            retry_at: None,
            failures: 0,
        }
    }

    /// An attempt failed at `now`: the pause before the next one.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let pause = self.next_pause;
        self.next_pause = (pause * 2).min(self.pause_max);
        self.retry_at = Some(now + pause);
        self.failures = self.failures.saturating_add(1);
        pause
    }

    /// An attempt succeeded.
    pub fn succeeded(&mut self) {
        self.next_pause = self.pause_min;
        self.retry_at = None;
        self.failures = 0;
    }

    /// Whether an attempt may be made at `now`.
    #[must_use]
    pub fn ready(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }
}

/// Pauses of [`LatestWriter`] after a failed write.
const LATEST_RETRY_PAUSE_MIN: Duration = Duration::from_millis(200);
const LATEST_RETRY_PAUSE_MAX: Duration = Duration::from_mins(1);
/// How often [`LatestWriter::written`] looks.
const LATEST_POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Default)]
struct LatestState {
    /// The newest content not yet written.
    pending: Option<Vec<u8>>,
    /// A writer task runs.
    running: bool,
    /// The last write's error, until a write succeeds.
    error: Option<String>,
    failures: u64,
}

/// Keeps one file durably at the newest content given to [`LatestWriter::submit`], in the
/// background: one write at a time (so writes of the file never interleave), content that
/// arrives meanwhile replaces what waits, and a failed write is reported and retried after a
/// back-off (doubling up to a minute) unless newer content came. Never fatal. On a glommio
/// executor only.
#[derive(Debug, Clone)]
pub struct LatestWriter {
    path: PathBuf,
    what: String,
    state: Rc<RefCell<LatestState>>,
}

impl LatestWriter {
    /// A writer of `path`, named `what` in its reports.
    #[must_use]
    pub fn new(path: PathBuf, what: String) -> Self {
        Self {
            path,
            what,
            state: Rc::default(),
        }
    }

    /// Writes `bytes` over the file soon (replacing content still waiting).
    pub fn submit(&self, bytes: Vec<u8>) {
        let mut state = self.state.borrow_mut();
        state.pending = Some(bytes);
        if state.running {
            return;
        }
        state.running = true;
        drop(state);
        glommio::spawn_local(self.clone().write_pending()).detach();
    }

    /// The last write's error, if it failed and no write succeeded since.
    #[must_use]
    pub fn error(&self) -> Option<String> {
        self.state.borrow().error.clone()
    }

    /// Writes that failed so far.
    #[must_use]
    pub fn failures(&self) -> u64 {
        self.state.borrow().failures
    }

    /// Waits until everything submitted is written, or for `timeout` at most (a failing write
    /// goes on retrying); whether everything is written. For a shutdown.
    pub async fn written(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.state.borrow().running {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            glommio::timer::sleep(LATEST_POLL.min(deadline - now)).await;
        }
    }

    async fn write_pending(self) {
        let mut backoff = Backoff::new(LATEST_RETRY_PAUSE_MIN, LATEST_RETRY_PAUSE_MAX);
        loop {
            let Some(bytes) = self.state.borrow_mut().pending.take() else {
                self.state.borrow_mut().running = false;
                return;
            };
            let path = self.path.clone();
            let (written, bytes) = off_shard(move || {
                let written = replace_file(&path, &[&bytes]);
                (written, bytes)
            })
            .await;
            let retry_in = {
                let mut state = self.state.borrow_mut();
                match written {
                    Ok(()) => {
                        if state.error.take().is_some() {
                            eprintln!("{}: written again after the earlier failures", self.what);
                        }
                        backoff.succeeded();
                        None
                    }
                    Err(error) => {
                        let pause = backoff.failed(Instant::now());
                        state.failures += 1;
                        let message = error.to_string();
                        if state.error.as_deref() != Some(message.as_str()) {
                            eprintln!(
                                "{}: not saved ({message}); the broker goes on with it in memory \
                                 and retries in {pause:?}",
                                self.what
                            );
                        }
                        state.error = Some(message);
                        // Newer content replaces this one; otherwise it is written again.
                        state.pending.get_or_insert(bytes);
                        Some(pause)
                    }
                }
            };
            if let Some(pause) = retry_in {
                glommio::timer::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sluice-durable-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch directory");
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("lists")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8")
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_replaced_file_holds_the_new_bytes_and_no_temporary_file_stays() {
        let dir = scratch("replace");
        let path = dir.join("state.bin");
        replace_file(&path, &[b"old"]).expect("first write");
        replace_file(&path, &[b"new ", b"content"]).expect("second write");
        assert_eq!(fs::read(&path).expect("reads"), b"new content");
        assert_eq!(names(&dir), ["state.bin"]);
        assert_eq!(temp_path(&path), dir.join("state.bin.tmp"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failure_at_any_step_before_the_rename_removes_the_temporary_file() {
        let dir = scratch("faults");
        let path = dir.join("state.bin");
        replace_file(&path, &[b"old"]).expect("first write");
        let steps: [fn(Step<'_>) -> bool; 4] = [
            |step| matches!(step, Step::Create(_)),
            |step| matches!(step, Step::Write(_)),
            |step| matches!(step, Step::Sync(_)),
            |step| matches!(step, Step::Rename(_)),
        ];
        for failing in steps {
            let mut fault = |step: Step<'_>| {
                if failing(step) {
                    Err(io::Error::from_raw_os_error(libc::ENOSPC))
                } else {
                    Ok(())
                }
            };
            let error = replace_file_with(&path, &[b"new"], &mut fault).expect_err("fails");
            assert!(error.is_disk_full(), "{error}");
            assert!(error.to_string().contains("free space"), "{error}");
            assert_eq!(names(&dir), ["state.bin"], "after {}", error.operation);
            assert_eq!(fs::read(&path).expect("reads"), b"old");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_real_rename_failure_removes_the_temporary_file() {
        // A non-empty directory in the way: the rename fails for real, after the temp file
        // was written and synced.
        let dir = scratch("rename");
        let path = dir.join("blocked");
        fs::create_dir_all(path.join("inside")).expect("blocking directory");
        let error = replace_file(&path, &[b"bytes"]).expect_err("cannot rename over it");
        assert_eq!(error.operation, "rename into place");
        assert!(!temp_path(&path).exists(), "the temporary file is removed");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn new_directories_are_synced_in_their_parents() {
        let dir = scratch("mkdir");
        let target = dir.join("a").join("b").join("c");
        let mut synced = Vec::new();
        let mut record = |step: Step<'_>| {
            if let Step::SyncDir(parent) = step {
                synced.push(parent.to_owned());
            }
            Ok(())
        };
        let created = create_dir_all_with(&target, &mut record).expect("creates");
        assert_eq!(
            created,
            [dir.join("a"), dir.join("a/b"), dir.join("a/b/c")],
            "outermost first"
        );
        assert_eq!(
            synced,
            [dir.clone(), dir.join("a"), dir.join("a/b")],
            "each parent synced after its new entry"
        );
        assert!(target.is_dir());
        assert!(
            create_dir_all(&target).expect("exists").is_empty(),
            "nothing new"
        );
        // A failed sync is an error naming the directory.
        let mut failing = |step: Step<'_>| match step {
            Step::SyncDir(_) => Err(io::Error::from_raw_os_error(libc::EIO)),
            _ => Ok(()),
        };
        let error = create_dir_all_with(&dir.join("d"), &mut failing).expect_err("fails");
        assert_eq!(error.path, dir);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn stale_temporary_files_are_removed_and_nothing_else() {
        let dir = scratch("stale");
        fs::write(dir.join("raft-state.bin"), b"kept").expect("writes");
        fs::write(dir.join("raft-state.bin.tmp"), b"stale").expect("writes");
        fs::write(dir.join("raft-state.tmp"), b"stale, older name").expect("writes");
        fs::create_dir_all(dir.join("journal.tmp")).expect("a directory is not touched");
        let removed = remove_stale_temps(&dir).expect("sweeps");
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert_eq!(names(&dir), ["journal.tmp", "raft-state.bin"]);
        assert!(
            remove_stale_temps(&dir.join("missing"))
                .expect("a missing directory")
                .is_empty()
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_resets() {
        let start = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        assert!(backoff.ready(start));
        let pauses: Vec<u128> = (0..5).map(|_| backoff.failed(start).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 500, 500]);
        assert!(!backoff.ready(start));
        assert!(backoff.ready(start + Duration::from_millis(500)));
        assert_eq!(backoff.failures, 5);
        backoff.succeeded();
        assert!(backoff.ready(start));
        assert_eq!(backoff.failed(start), Duration::from_millis(100));
    }

    #[test]
    fn off_shard_writes_and_the_latest_writer_keeps_the_newest() {
        let dir = scratch("executor");
        let path = dir.join("topology.bin");
        let check = path.clone();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .make()
            .expect("an executor")
            .run(async move {
                let thread = off_shard(|| std::thread::current().id()).await;
                assert_ne!(thread, std::thread::current().id(), "another thread");
                let writer = LatestWriter::new(path.clone(), "the test file".to_owned());
                for n in 0..20u8 {
                    writer.submit(vec![n; 100]);
                }
                assert!(writer.written(Duration::from_secs(10)).await);
                assert_eq!(writer.error(), None);
                // A directory in the way: the write fails, is reported and retried.
                fs::remove_file(&path).expect("removes");
                fs::create_dir_all(path.join("in-the-way")).expect("blocks");
                writer.submit(vec![7; 10]);
                while writer.failures() == 0 {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                assert!(writer.error().is_some());
                assert!(
                    !writer.written(Duration::from_millis(1)).await,
                    "still failing"
                );
                fs::remove_dir_all(&path).expect("unblocks");
                assert!(writer.written(Duration::from_secs(10)).await);
                assert_eq!(writer.error(), None, "the retry succeeded");
            });
        assert_eq!(fs::read(&check).expect("reads"), vec![7; 10]);
        assert_eq!(names(&dir), ["topology.bin"]);
        let _ = fs::remove_dir_all(&dir);
    }
}
