//! Raft's in-memory view of the partition's log: the term of every index (as runs), the recent
//! entries (a bounded cache for replication), and how far the journal is durable. The journal
//! itself is written by the driver; this view only follows it.
//!
//! **Truncation epochs.** The driver carries out every cut Raft hands it with one journal call
//! (`truncate_after` for `Ready::truncate_after`, `reset` for an installed snapshot), and the
//! journal counts those calls. The view counts the cuts it hands out the same way, so both
//! agree on the epoch, and it remembers where the recent cuts were: a flush report read in an
//! older epoch still vouches for the entries below every cut made since (a cut removes only what
//! lies after it and the journal keeps the prefix durable), never for anything above one, where
//! other entries may now sit.

use std::collections::VecDeque;

use super::message::Entry;
use crate::journal::FlushReport;

/// Cuts remembered for judging flush reports. A report older than this many cuts vouches for
/// nothing; the flushes of the entries appended after those cuts report again.
const CUTS_REMEMBERED_MAX: usize = 16;

/// The terms of `(snapshot_index, last_index]`, as runs of equal terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftLog {
    /// Entries up to here are compacted into a snapshot.
    snapshot_index: u64,
    snapshot_term: u64,
    last_index: u64,
    /// `(first index, term)` of each run, ascending; covers `snapshot_index + 1..=last_index`.
    runs: Vec<(u64, u64)>,
    /// Recent entries, contiguous, ending at `last_index`.
    cache: VecDeque<Entry>,
    cache_bytes: u64,
    cache_bytes_max: u64,
    /// How far the journal is flushed (and matches this view).
    durable_index: u64,
    /// The journal's truncation epoch once the cuts handed out so far are carried out.
    journal_epoch: u64,
    /// Where the most recent cuts were, the newest (that of `journal_epoch`) last; at most
    /// `CUTS_REMEMBERED_MAX`.
    cuts: VecDeque<u64>,
}

impl RaftLog {
    /// A log after recovery: `terms` are the `(first index, term)` runs of the journal's entries
    /// after the snapshot, all of them durable. `journal_epoch` is the journal's
    /// [`truncation_epoch`](crate::Journal::truncation_epoch) now (not 0 if the driver cut or
    /// reset it since opening it).
    ///
    /// # Panics
    /// If the runs are not ascending, start at or before the snapshot, or end past `last_index`.
    #[must_use]
    pub fn recovered(
        snapshot_index: u64,
        snapshot_term: u64,
        runs: Vec<(u64, u64)>,
        last_index: u64,
        journal_epoch: u64,
        cache_bytes_max: u64,
    ) -> Self {
        assert!(last_index >= snapshot_index, "log ends before its snapshot");
        if last_index > snapshot_index {
            assert_eq!(
                runs.first().map(|r| r.0),
                Some(snapshot_index + 1),
                "term runs must start right after the snapshot"
            );
        }
        assert!(
            runs.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
            "term runs must ascend in index and term"
        );
        assert!(runs.last().is_none_or(|r| r.0 <= last_index));
        RaftLog {
            snapshot_index,
            snapshot_term,
            last_index,
            runs,
            cache: VecDeque::new(),
            cache_bytes: 0,
            cache_bytes_max,
            durable_index: last_index,
            journal_epoch,
            cuts: VecDeque::with_capacity(CUTS_REMEMBERED_MAX),
        }
    }

    #[must_use]
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    #[must_use]
    pub fn last_term(&self) -> u64 {
        self.runs.last().map_or(self.snapshot_term, |r| r.1)
    }

    #[must_use]
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    #[must_use]
    pub fn durable_index(&self) -> u64 {
        self.durable_index
    }

    /// The journal's truncation epoch once every cut handed out so far is carried out.
    #[must_use]
    pub fn journal_epoch(&self) -> u64 {
        self.journal_epoch
    }

    /// The term of the entry at `index`: the snapshot's term at its index, `None` outside
    /// `snapshot_index..=last_index`.
    #[must_use]
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last_index {
            return None;
        }
        let run = self.runs.partition_point(|r| r.0 <= index);
        Some(self.runs[run - 1].1)
    }

    /// The first index of the run of equal terms that holds `index` (which must be in the log
    /// after the snapshot).
    #[must_use]
    pub fn first_index_of_term_at(&self, index: u64) -> u64 {
        let run = self.runs.partition_point(|r| r.0 <= index);
        assert!(
            run > 0 && index <= self.last_index,
            "index {index} not in the log"
        );
        self.runs[run - 1].0
    }

    /// The last index whose term is at most `term`, from `index` down (for skipping a
    /// follower's conflicting term).
    #[must_use]
    pub fn last_index_with_term_at_most(&self, term: u64, index: u64) -> u64 {
        let mut i = index.min(self.last_index);
        while i > self.snapshot_index {
            let run = self.runs.partition_point(|r| r.0 <= i) - 1;
            if self.runs[run].1 <= term {
                return i;
            }
            i = self.runs[run].0 - 1;
        }
        self.snapshot_index
    }

    /// True if a log ending at `(last_index, last_term)` is at least as up to date as this one.
    #[must_use]
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index)
    }

    /// Appends one entry after the last.
    ///
    /// # Panics
    /// If it does not follow the last entry or its term goes backwards.
    pub fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index + 1, "entries are contiguous");
        assert!(entry.term >= self.last_term(), "terms never go backwards");
        if entry.term != self.last_term() || self.runs.is_empty() {
            self.runs.push((entry.index, entry.term));
        }
        self.last_index = entry.index;
        self.cache_bytes += entry.size_bytes();
        self.cache.push_back(entry);
        while self.cache_bytes > self.cache_bytes_max && self.cache.len() > 1 {
            let old = self.cache.pop_front().expect("not empty");
            self.cache_bytes -= old.size_bytes();
        }
    }

    /// Drops every entry after `index`.
    ///
    /// # Panics
    /// If `index` is below the snapshot.
    pub fn truncate_after(&mut self, index: u64) {
        assert!(
            index >= self.snapshot_index,
            "cannot truncate into the snapshot"
        );
        if index >= self.last_index {
            return;
        }
        while self.runs.last().is_some_and(|r| r.0 > index) {
            self.runs.pop();
        }
        while self.cache.back().is_some_and(|e| e.index > index) {
            let e = self.cache.pop_back().expect("not empty");
            self.cache_bytes -= e.size_bytes();
        }
        self.last_index = index;
        self.durable_index = self.durable_index.min(index);
    }

    /// Forgets entries up to `index` (term `term`), now in a snapshot.
    ///
    /// # Panics
    /// If `index` is past the durable end or its term does not match.
    pub fn compact(&mut self, index: u64, term: u64) {
        if index <= self.snapshot_index {
            return;
        }
        assert!(
            index <= self.durable_index,
            "compacting past the durable end"
        );
        assert_eq!(self.term_at(index), Some(term), "snapshot term at {index}");
        let keep = self.runs.partition_point(|r| r.0 <= index);
        // The run holding `index` continues after it, starting at `index + 1`.
        let mut runs: Vec<(u64, u64)> = self.runs[keep..].to_vec();
        if index < self.last_index && runs.first().is_none_or(|r| r.0 > index + 1) {
            runs.insert(0, (index + 1, self.runs[keep - 1].1));
        }
        self.runs = runs;
        self.snapshot_index = index;
        self.snapshot_term = term;
        while self.cache.front().is_some_and(|e| e.index <= index) {
            let e = self.cache.pop_front().expect("not empty");
            self.cache_bytes -= e.size_bytes();
        }
    }

    /// Starts over after a snapshot up to `index` was installed: nothing after it is held. The
    /// journal was reset with it, a cut at `index`.
    pub fn reset(&mut self, index: u64, term: u64) {
        let cuts = std::mem::take(&mut self.cuts);
        let journal_epoch = self.journal_epoch;
        *self = RaftLog::recovered(
            index,
            term,
            Vec::new(),
            index,
            journal_epoch,
            self.cache_bytes_max,
        );
        self.cuts = cuts;
        self.note_handed_cut(index);
    }

    /// Records a cut at `index` handed to the driver: the journal's next epoch.
    pub(super) fn note_handed_cut(&mut self, index: u64) {
        if self.cuts.len() == CUTS_REMEMBERED_MAX {
            self.cuts.pop_front();
        }
        self.cuts.push_back(index);
        self.journal_epoch += 1;
    }

    /// How far `report` still vouches for this log: its durable index, clamped below every cut
    /// handed out after its epoch; 0 (nothing) when it predates the cuts remembered.
    ///
    /// # Panics
    /// If the report is from an epoch this view never handed out: the driver cut the journal
    /// without being told to, or built this view with the wrong `journal_epoch`.
    pub(super) fn vouched_durable(&self, report: FlushReport) -> u64 {
        assert!(
            report.epoch <= self.journal_epoch,
            "a flush report from truncation epoch {} but Raft handed out cuts only up to epoch {}: \
             the driver must carry out each cut with one journal call and build the RaftLog \
             with the journal's epoch",
            report.epoch,
            self.journal_epoch
        );
        let since = usize::try_from(self.journal_epoch - report.epoch).unwrap_or(usize::MAX);
        if since > self.cuts.len() {
            return 0;
        }
        let lowest_cut = self.cuts.iter().rev().take(since).min();
        lowest_cut.map_or(report.durable_index, |cut| report.durable_index.min(*cut))
    }

    /// Records that the journal is durable up to `index` (clamped to what this view holds).
    pub(super) fn set_durable(&mut self, index: u64) {
        self.durable_index = self.durable_index.max(index.min(self.last_index));
    }

    /// Cached entries from `from_index`, at most `bytes_max` (at least one entry), or `None` when
    /// `from_index` is no longer cached (the driver must read it from the journal).
    #[must_use]
    pub fn cached_entries(&self, from_index: u64, bytes_max: u64) -> Option<Vec<Entry>> {
        if from_index > self.last_index {
            return Some(Vec::new());
        }
        let first = self.cache.front()?.index;
        if from_index < first {
            return None;
        }
        let start = usize::try_from(from_index - first).expect("cache fits memory");
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in self.cache.range(start..) {
            if !out.is_empty() && bytes + e.size_bytes() > bytes_max {
                break;
            }
            bytes += e.size_bytes();
            out.push(e.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            payload: Rc::from(vec![0u8; 100]),
        }
    }

    #[test]
    fn terms_follow_appends_and_truncations() {
        let mut log = RaftLog::recovered(0, 0, vec![], 0, 0, 1 << 20);
        for (i, t) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 4)] {
            log.append(entry(i, t));
        }
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(2), Some(1));
        assert_eq!(log.term_at(4), Some(2));
        assert_eq!(log.term_at(5), Some(4));
        assert_eq!(log.term_at(6), None);
        assert_eq!(log.first_index_of_term_at(4), 3);
        assert_eq!(log.last_index_with_term_at_most(3, 5), 4);
        assert_eq!(log.last_index_with_term_at_most(1, 5), 2);
        assert_eq!(log.last_index_with_term_at_most(0, 5), 0);
        log.set_durable(5);
        log.truncate_after(3);
        assert_eq!(
            (log.last_index(), log.last_term(), log.durable_index()),
            (3, 2, 3)
        );
        log.append(entry(4, 5));
        assert_eq!(log.term_at(4), Some(5));
        assert!(log.is_up_to_date(4, 5));
        assert!(!log.is_up_to_date(9, 4));
    }

    #[test]
    fn the_cache_is_bounded_and_reports_misses() {
        let mut log = RaftLog::recovered(10, 3, vec![], 10, 0, 1000);
        for i in 11..=30 {
            log.append(entry(i, 3));
        }
        // 164 bytes an entry: six fit in 1000.
        assert!(log.cached_entries(11, 1 << 20).is_none());
        let got = log.cached_entries(27, 1 << 20).expect("cached");
        assert_eq!(
            got.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![27, 28, 29, 30]
        );
        assert_eq!(log.cached_entries(29, 1).expect("cached").len(), 1);
        assert_eq!(log.cached_entries(31, 100), Some(vec![]));
        assert_eq!(log.term_at(10), Some(3));
        assert_eq!(log.term_at(9), None);
    }

    #[test]
    fn compaction_keeps_the_terms_after_the_snapshot() {
        let mut log = RaftLog::recovered(0, 0, vec![], 0, 0, 1 << 20);
        for (i, t) in [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)] {
            log.append(entry(i, t));
        }
        log.set_durable(5);
        log.compact(2, 1);
        assert_eq!(log.snapshot_index(), 2);
        assert_eq!(log.term_at(2), Some(1));
        assert_eq!(log.term_at(1), None);
        assert_eq!(log.term_at(3), Some(1));
        assert_eq!(log.term_at(4), Some(2));
        assert!(log.cached_entries(2, 1 << 20).is_none());
        assert_eq!(log.cached_entries(3, 1 << 20).expect("cached").len(), 3);
        log.compact(5, 2);
        assert_eq!(
            (log.last_index(), log.last_term(), log.term_at(5)),
            (5, 2, Some(2))
        );
        log.append(entry(6, 3));
        assert_eq!(log.term_at(6), Some(3));
        log.reset(9, 4);
        assert_eq!(
            (log.last_index(), log.last_term(), log.durable_index()),
            (9, 4, 9)
        );
    }
}
