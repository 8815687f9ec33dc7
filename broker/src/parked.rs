//! The job activation polls a partition leader keeps until jobs of their type are available
//! ([`crate::apply`]): a bounded set, in count and in bytes, ordered two ways so that nothing is
//! found by scanning.
//!
//! - by job type, in arrival order: [`ParkedPolls::take_oldest`] wakes the longest-parked poll
//!   of a type when a job of that type becomes available;
//! - by deadline: [`ParkedPolls::pop_expired`] hands back the polls whose wait ran out, one at a
//!   time, and [`ParkedPolls::next_deadline_ms`] says when the next one does.
//!
//! Every operation is O(log n) in the polls parked. Time is an argument (wall-clock ms, the
//! engine's clock); nothing here reads a clock. A poll over either bound is handed back by
//! [`ParkedPolls::park`] with the bound it hit: the caller answers it `RESOURCE_EXHAUSTED`.
//!
//! ```text
//! match parked.park(job_type, until_ms, bytes, poll) {
//!     Ok(()) => {}
//!     Err((poll, full)) => answer poll with Overloaded(full),
//! }
//! while let Some(poll) = parked.pop_expired(now_ms) { answer poll with its empty batch }
//! if let Some((poll, until_ms)) = parked.take_oldest(job_type) { process poll again }
//! ```

use std::collections::{BTreeSet, HashMap};

/// Most polls one partition keeps parked.
pub const PARKED_POLLS_MAX: usize = 16_384;
/// Most bytes the polls one partition keeps parked may hold (see [`parked_poll_bytes`]).
pub const PARKED_POLL_BYTES_MAX: usize = 64 << 20;
/// What a parked poll costs besides its strings: its records, its responder, the indexes.
pub const PARKED_POLL_OVERHEAD_BYTES: usize = 512;
const _: () = assert!(PARKED_POLLS_MAX * PARKED_POLL_OVERHEAD_BYTES <= PARKED_POLL_BYTES_MAX);

/// The bytes a parked poll holds: its command and its empty reply both carry the job type, the
/// worker and the variable names, plus [`PARKED_POLL_OVERHEAD_BYTES`].
#[must_use]
pub fn parked_poll_bytes(job_type: &str, worker: &str, fetch_variables: &[String]) -> usize {
    let strings =
        job_type.len() + worker.len() + fetch_variables.iter().map(String::len).sum::<usize>();
    strings.saturating_mul(2) + PARKED_POLL_OVERHEAD_BYTES
}

/// Which bound a poll that could not be parked hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkFull {
    /// As many polls as [`ParkedPolls::count_max`] are parked.
    Count {
        /// The bound.
        max: usize,
    },
    /// The poll's bytes would take the parked bytes above [`ParkedPolls::bytes_max`].
    Bytes {
        /// The bytes parked now.
        parked: usize,
        /// The poll's bytes.
        poll: usize,
        /// The bound.
        max: usize,
    },
}

impl std::fmt::Display for ParkFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParkFull::Count { max } => write!(f, "{max} job polls are parked, its bound"),
            ParkFull::Bytes { parked, poll, max } => write!(
                f,
                "the parked job polls hold {parked} bytes and this one {poll}, above the bound of \
                 {max} bytes"
            ),
        }
    }
}

struct Entry<T> {
    job_type: String,
    until_ms: i64,
    bytes: usize,
    poll: T,
}

/// See the module docs. `T` is what the caller keeps for each poll (its command, its responder).
pub struct ParkedPolls<T> {
    /// By ticket; tickets grow with arrival.
    entries: HashMap<u64, Entry<T>>,
    /// `(until_ms, ticket)` of every entry.
    by_deadline: BTreeSet<(i64, u64)>,
    /// Tickets of every entry by job type; no empty set is kept.
    by_type: HashMap<String, BTreeSet<u64>>,
    next_ticket: u64,
    bytes: usize,
    count_max: usize,
    bytes_max: usize,
}

impl<T> std::fmt::Debug for ParkedPolls<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkedPolls")
            .field("len", &self.entries.len())
            .field("bytes", &self.bytes)
            .field("count_max", &self.count_max)
            .field("bytes_max", &self.bytes_max)
            .finish_non_exhaustive()
    }
}

impl<T> Default for ParkedPolls<T> {
    fn default() -> Self {
        Self::new(PARKED_POLLS_MAX, PARKED_POLL_BYTES_MAX)
    }
}

impl<T> ParkedPolls<T> {
    /// An empty set that keeps at most `count_max` polls holding at most `bytes_max` bytes.
    #[must_use]
    pub fn new(count_max: usize, bytes_max: usize) -> Self {
        ParkedPolls {
            entries: HashMap::new(),
            by_deadline: BTreeSet::new(),
            by_type: HashMap::new(),
            next_ticket: 0,
            bytes: 0,
            count_max,
            bytes_max,
        }
    }

    /// Polls parked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is parked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes the parked polls hold, as their callers counted them.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The count bound.
    #[must_use]
    pub fn count_max(&self) -> usize {
        self.count_max
    }

    /// The bytes bound.
    #[must_use]
    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Parks `poll` for jobs of `job_type` until `until_ms`, counted as `bytes`; hands it back
    /// with the bound it would exceed.
    pub fn park(
        &mut self,
        job_type: &str,
        until_ms: i64,
        bytes: usize,
        poll: T,
    ) -> Result<(), (T, ParkFull)> {
        if self.entries.len() >= self.count_max {
            let full = ParkFull::Count {
                max: self.count_max,
            };
            return Err((poll, full));
        }
        if self.bytes.saturating_add(bytes) > self.bytes_max {
            let full = ParkFull::Bytes {
                parked: self.bytes,
                poll: bytes,
                max: self.bytes_max,
            };
            return Err((poll, full));
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.by_deadline.insert((until_ms, ticket));
        self.by_type
            .entry(job_type.to_owned())
            .or_default()
            .insert(ticket);
        self.entries.insert(
            ticket,
            Entry {
                job_type: job_type.to_owned(),
                until_ms,
                bytes,
                poll,
            },
        );
        self.bytes += bytes;
        self.check();
        Ok(())
    }

    /// Takes the longest-parked poll for `job_type`, with its deadline.
    pub fn take_oldest(&mut self, job_type: &str) -> Option<(T, i64)> {
        let ticket = *self.by_type.get(job_type)?.first()?;
        let entry = self.remove(ticket);
        Some((entry.poll, entry.until_ms))
    }

    /// Takes one poll whose deadline is at or before `now_ms`, the earliest first.
    pub fn pop_expired(&mut self, now_ms: i64) -> Option<T> {
        let &(until_ms, ticket) = self.by_deadline.first()?;
        if until_ms > now_ms {
            return None;
        }
        Some(self.remove(ticket).poll)
    }

    /// The earliest deadline of a parked poll.
    #[must_use]
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.by_deadline.first().map(|&(until_ms, _)| until_ms)
    }

    /// Takes every parked poll, in arrival order.
    pub fn drain(&mut self) -> Vec<T> {
        let mut entries: Vec<(u64, Entry<T>)> = self.entries.drain().collect();
        entries.sort_unstable_by_key(|(ticket, _)| *ticket);
        self.by_deadline.clear();
        self.by_type.clear();
        self.bytes = 0;
        entries.into_iter().map(|(_, entry)| entry.poll).collect()
    }

    fn remove(&mut self, ticket: u64) -> Entry<T> {
        let entry = self
            .entries
            .remove(&ticket)
            .expect("the indexes name only parked polls");
        assert!(self.by_deadline.remove(&(entry.until_ms, ticket)));
        let tickets = self
            .by_type
            .get_mut(&entry.job_type)
            .expect("every parked poll is indexed by its type");
        assert!(tickets.remove(&ticket));
        if tickets.is_empty() {
            self.by_type.remove(&entry.job_type);
        }
        self.bytes -= entry.bytes;
        self.check();
        entry
    }

    fn check(&self) {
        debug_assert_eq!(self.by_deadline.len(), self.entries.len());
        debug_assert_eq!(
            self.by_type.values().map(BTreeSet::len).sum::<usize>(),
            self.entries.len()
        );
        assert!(self.entries.len() <= self.count_max);
        assert!(self.bytes <= self.bytes_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(count_max: usize, bytes_max: usize) -> ParkedPolls<&'static str> {
        ParkedPolls::new(count_max, bytes_max)
    }

    #[test]
    fn the_oldest_poll_of_a_type_is_woken_first() {
        let mut polls = parked(8, 1_000);
        polls.park("a", 300, 10, "a1").expect("room");
        polls.park("b", 100, 10, "b1").expect("room");
        polls.park("a", 100, 10, "a2").expect("room");
        assert_eq!(polls.take_oldest("a"), Some(("a1", 300)));
        assert_eq!(polls.take_oldest("c"), None);
        assert_eq!(polls.take_oldest("a"), Some(("a2", 100)));
        assert_eq!(polls.take_oldest("a"), None);
        assert_eq!(polls.len(), 1);
        assert_eq!(polls.bytes(), 10);
    }

    #[test]
    fn polls_expire_in_deadline_order_and_only_when_due() {
        let mut polls = parked(8, 1_000);
        polls.park("a", 300, 1, "late").expect("room");
        polls.park("b", 100, 1, "early").expect("room");
        polls.park("a", 200, 1, "middle").expect("room");
        polls.park("c", 200, 1, "middle, later").expect("room");
        assert_eq!(polls.next_deadline_ms(), Some(100));
        assert_eq!(polls.pop_expired(99), None);
        assert_eq!(polls.pop_expired(200), Some("early"));
        assert_eq!(polls.pop_expired(200), Some("middle"));
        assert_eq!(polls.pop_expired(200), Some("middle, later"));
        assert_eq!(polls.pop_expired(200), None);
        assert_eq!(polls.next_deadline_ms(), Some(300));
        // The expired ones are gone from their types too.
        assert_eq!(polls.take_oldest("b"), None);
        assert_eq!(polls.take_oldest("a"), Some(("late", 300)));
        assert!(polls.is_empty());
        assert_eq!(polls.next_deadline_ms(), None);
    }

    #[test]
    fn polls_over_the_count_bound_are_handed_back() {
        let mut polls = parked(2, 1_000);
        polls.park("a", 1, 1, "1").expect("room");
        polls.park("a", 1, 1, "2").expect("room");
        assert_eq!(
            polls.park("b", 1, 1, "3"),
            Err(("3", ParkFull::Count { max: 2 }))
        );
        assert_eq!(polls.pop_expired(1), Some("1"));
        polls.park("b", 1, 1, "3").expect("room again");
    }

    #[test]
    fn polls_over_the_bytes_bound_are_handed_back() {
        let mut polls = parked(100, 100);
        polls.park("a", 1, 60, "big").expect("room");
        assert_eq!(
            polls.park("a", 1, 41, "too big"),
            Err((
                "too big",
                ParkFull::Bytes {
                    parked: 60,
                    poll: 41,
                    max: 100
                }
            ))
        );
        polls
            .park("a", 1, 40, "fits")
            .expect("exactly at the bound");
        assert_eq!(polls.bytes(), 100);
        assert_eq!(polls.take_oldest("a"), Some(("big", 1)));
        assert_eq!(polls.bytes(), 40);
        let full = ParkFull::Bytes {
            parked: 60,
            poll: 41,
            max: 100,
        };
        assert!(full.to_string().contains("100 bytes"), "{full}");
    }

    #[test]
    fn drain_takes_everything_in_arrival_order() {
        let mut polls = parked(8, 1_000);
        for (index, name) in ["x", "y", "z"].into_iter().enumerate() {
            let until = 100 - i64::try_from(index).expect("small");
            polls.park(name, until, 5, name).expect("room");
        }
        assert_eq!(polls.drain(), ["x", "y", "z"]);
        assert!(polls.is_empty());
        assert_eq!(polls.bytes(), 0);
        assert_eq!(polls.next_deadline_ms(), None);
        polls.park("x", 1, 5, "again").expect("room after a drain");
    }

    #[test]
    fn the_byte_count_of_a_poll_counts_its_strings_twice() {
        let vars = vec!["ab".to_owned(), "c".to_owned()];
        assert_eq!(
            parked_poll_bytes("type", "worker", &vars),
            2 * (4 + 6 + 3) + PARKED_POLL_OVERHEAD_BYTES
        );
    }

    /// A random mix of operations keeps the indexes consistent with a plain list.
    #[test]
    fn random_operations_agree_with_a_linear_model() {
        let mut polls: ParkedPolls<u64> = ParkedPolls::new(64, 64 * 8);
        // (ticket, type, until, bytes), in arrival order.
        let mut model: Vec<(u64, u8, i64, usize)> = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut now = 0i64;
        for id in 0..20_000u64 {
            let roll = next() % 10;
            let job_type = u8::try_from(next() % 4).expect("small");
            let name = format!("t{job_type}");
            if roll < 5 {
                let until = now + i64::try_from(next() % 50).expect("small");
                let bytes = usize::try_from(next() % 16).expect("small");
                let fits =
                    model.len() < 64 && model.iter().map(|m| m.3).sum::<usize>() + bytes <= 64 * 8;
                assert_eq!(polls.park(&name, until, bytes, id).is_ok(), fits);
                if fits {
                    model.push((id, job_type, until, bytes));
                }
            } else if roll < 8 {
                let expected = model.iter().position(|m| m.1 == job_type);
                let taken = polls.take_oldest(&name);
                assert_eq!(taken.map(|(id, _)| id), expected.map(|at| model[at].0));
                if let Some(at) = expected {
                    model.remove(at);
                }
            } else {
                now += i64::try_from(next() % 20).expect("small");
                while let Some(id) = polls.pop_expired(now) {
                    let at = model
                        .iter()
                        .position(|m| m.0 == id)
                        .expect("an expired poll was parked");
                    let earliest = model.iter().map(|m| m.2).min().expect("not empty");
                    assert_eq!(model[at].2, earliest, "expired in deadline order");
                    assert!(model[at].2 <= now);
                    model.remove(at);
                }
                assert!(model.iter().all(|m| m.2 > now), "every due poll expired");
            }
            assert_eq!(polls.len(), model.len());
            assert_eq!(polls.bytes(), model.iter().map(|m| m.3).sum::<usize>());
            assert_eq!(polls.next_deadline_ms(), model.iter().map(|m| m.2).min());
        }
    }
}
