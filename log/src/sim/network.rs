//! A simulated network between nodes of one single-threaded simulation.
//!
//! [`SimNetwork`] holds messages in flight, each with a delivery time drawn from the
//! [`NetworkFaults`] delay range, so messages on one link overtake each other. It loses and
//! duplicates messages by seeded chance, and drops whatever crosses a blocked link, both when the
//! message is sent and when it is due: a partition that starts while a message is in flight
//! catches it. Time is the caller's virtual clock in milliseconds, passed to every call.
//!
//! ```
//! use sluice_log::sim::network::{NetworkFaults, SimNetwork};
//! use sluice_log::sim::rng::Streams;
//!
//! let mut network = SimNetwork::new(Streams::new(1).network(), NetworkFaults::default());
//! network.send(0, 1, 2, "vote?");
//! let due_ms = network.next_delivery_ms().expect("one message in flight");
//! for delivery in network.deliver_due(due_ms) {
//!     assert_eq!((delivery.from, delivery.to, delivery.msg), (1, 2, "vote?"));
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use super::rng::{PER_MILLE, Rng};

/// Messages held in flight at most; a send beyond it is dropped and counted in
/// [`NetworkStats::dropped_overflow`], as a full socket buffer would.
pub const IN_FLIGHT_MAX: usize = 65_536;

/// The largest delay a [`NetworkFaults`] may configure.
pub const DELAY_MAX_MS: u64 = 60_000;

/// Directed links that may be blocked at once (a full partition of 256 nodes in two halves).
pub const BLOCKED_LINKS_MAX: usize = 65_536;

/// How the network misbehaves. Reordering comes from the spread between the delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkFaults {
    /// Chance, per thousand, that a sent message is lost.
    pub loss_per_mille: u32,
    /// Chance, per thousand, that a message that is not lost is delivered twice.
    pub duplicate_per_mille: u32,
    /// Shortest delay between send and delivery.
    pub delay_min_ms: u64,
    /// Longest delay between send and delivery, included.
    pub delay_max_ms: u64,
}

impl Default for NetworkFaults {
    /// A perfect network: nothing lost or duplicated, every message delivered after 1 ms, in
    /// send order.
    fn default() -> Self {
        Self {
            loss_per_mille: 0,
            duplicate_per_mille: 0,
            delay_min_ms: 1,
            delay_max_ms: 1,
        }
    }
}

impl NetworkFaults {
    /// A healthy data-center network: nothing lost, a little jitter that reorders now and then.
    #[must_use]
    pub const fn calm() -> Self {
        Self {
            loss_per_mille: 0,
            duplicate_per_mille: 0,
            delay_min_ms: 1,
            delay_max_ms: 10,
        }
    }

    /// A bad network: one message in ten lost, one in twenty duplicated, delays from 1 ms to
    /// several election timeouts, so messages arrive stale and far out of order.
    #[must_use]
    pub const fn chaotic() -> Self {
        Self {
            loss_per_mille: 100,
            duplicate_per_mille: 50,
            delay_min_ms: 1,
            delay_max_ms: 500,
        }
    }

    /// Whether the probabilities are at most 1000 per mille and the delays form a range within
    /// [`DELAY_MAX_MS`].
    #[must_use]
    pub const fn is_valid(&self) -> bool {
        self.loss_per_mille <= PER_MILLE
            && self.duplicate_per_mille <= PER_MILLE
            && self.delay_min_ms <= self.delay_max_ms
            && self.delay_max_ms <= DELAY_MAX_MS
    }

    /// Panics unless [`is_valid`](Self::is_valid).
    pub fn assert_valid(&self) {
        assert!(
            self.is_valid(),
            "invalid network faults (probabilities are per mille, at most {PER_MILLE}; \
             delay_min_ms <= delay_max_ms <= {DELAY_MAX_MS}): {self:?}"
        );
    }
}

const _: () = assert!(NetworkFaults::calm().is_valid());
const _: () = assert!(NetworkFaults::chaotic().is_valid());

/// A message handed to its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<M> {
    /// The sending node.
    pub from: u64,
    /// The receiving node.
    pub to: u64,
    /// Virtual time of the send.
    pub sent_ms: u64,
    /// Virtual time the message became due.
    pub deliver_ms: u64,
    /// The message itself.
    pub msg: M,
}

/// What became of one [`SimNetwork::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued for delivery: once, or twice when duplicated. A copy that did not fit under
    /// [`IN_FLIGHT_MAX`] is not counted here.
    Queued {
        /// Copies in flight from this send, 0 to 2.
        copies: u32,
    },
    /// Dropped at once: the link from sender to receiver is blocked.
    Blocked,
    /// Lost by chance.
    Lost,
}

/// Counters since the network was created. Every message (each copy of a duplicate counts) is
/// either in flight, delivered, or dropped for exactly one reason:
/// `sent + duplicated == delivered + dropped() + in_flight`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Calls to [`SimNetwork::send`].
    pub sent: u64,
    /// Messages handed out by [`SimNetwork::deliver_due`].
    pub delivered: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Lost by chance.
    pub dropped_loss: u64,
    /// Dropped at a blocked link, at send or at delivery.
    pub dropped_partition: u64,
    /// Dropped because [`IN_FLIGHT_MAX`] messages were already in flight.
    pub dropped_overflow: u64,
    /// Dropped by [`SimNetwork::clear_node`].
    pub dropped_crash: u64,
}

impl NetworkStats {
    /// All messages dropped, for any reason.
    #[must_use]
    pub const fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_partition + self.dropped_overflow + self.dropped_crash
    }
}

/// The simulated network. See the [module docs](self).
#[derive(Debug)]
pub struct SimNetwork<M> {
    rng: Rng,
    faults: NetworkFaults,
    /// Keyed by (delivery time, send sequence): iteration order is delivery order, and messages
    /// due at the same millisecond leave in the order they were queued.
    in_flight: BTreeMap<(u64, u64), Delivery<M>>,
    sequence_next: u64,
    /// Directed links (from, to) on which nothing passes.
    blocked: BTreeSet<(u64, u64)>,
    /// The latest time seen; virtual time never goes back.
    now_ms: u64,
    stats: NetworkStats,
}

impl<M: Clone> SimNetwork<M> {
    /// An empty network at time 0, drawing its chances from `rng` (use
    /// [`Streams::network`](super::rng::Streams::network)).
    #[must_use]
    pub fn new(rng: Rng, faults: NetworkFaults) -> Self {
        faults.assert_valid();
        Self {
            rng,
            faults,
            in_flight: BTreeMap::new(),
            sequence_next: 0,
            blocked: BTreeSet::new(),
            now_ms: 0,
            stats: NetworkStats::default(),
        }
    }

    /// Sends `msg` from `from` to `to` at `now_ms`. A node may send to itself.
    pub fn send(&mut self, now_ms: u64, from: u64, to: u64, msg: M) -> SendOutcome {
        self.advance_to(now_ms);
        self.stats.sent += 1;
        let outcome = if self.is_blocked(from, to) {
            self.stats.dropped_partition += 1;
            SendOutcome::Blocked
        } else if self.rng.chance(self.faults.loss_per_mille) {
            self.stats.dropped_loss += 1;
            SendOutcome::Lost
        } else {
            let mut copies = 0;
            if self.rng.chance(self.faults.duplicate_per_mille) {
                self.stats.duplicated += 1;
                copies += self.enqueue(now_ms, from, to, msg.clone());
            }
            copies += self.enqueue(now_ms, from, to, msg);
            SendOutcome::Queued { copies }
        };
        self.assert_accounting();
        outcome
    }

    /// Queues one copy with its own random delay; returns 1 if it fits, 0 if dropped.
    fn enqueue(&mut self, now_ms: u64, from: u64, to: u64, msg: M) -> u32 {
        // Draw the delay even when the queue is full, so overflow does not shift the stream.
        let delay_ms = self
            .rng
            .range(self.faults.delay_min_ms, self.faults.delay_max_ms);
        if self.in_flight.len() >= IN_FLIGHT_MAX {
            self.stats.dropped_overflow += 1;
            return 0;
        }
        let deliver_ms = now_ms.saturating_add(delay_ms);
        let sequence = self.sequence_next;
        self.sequence_next += 1;
        let delivery = Delivery {
            from,
            to,
            sent_ms: now_ms,
            deliver_ms,
            msg,
        };
        let previous = self.in_flight.insert((deliver_ms, sequence), delivery);
        assert!(previous.is_none(), "send sequence numbers are unique");
        1
    }

    /// Every message due at or before `now_ms`, in delivery-time order (ties in send order).
    /// Messages whose link is blocked by now are dropped instead.
    #[must_use]
    pub fn deliver_due(&mut self, now_ms: u64) -> Vec<Delivery<M>> {
        let mut out = Vec::new();
        self.deliver_due_into(now_ms, &mut out);
        out
    }

    /// [`deliver_due`](Self::deliver_due) into a buffer the caller owns and reuses; appends and
    /// returns how many were appended.
    pub fn deliver_due_into(&mut self, now_ms: u64, out: &mut Vec<Delivery<M>>) -> usize {
        self.advance_to(now_ms);
        let before = out.len();
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let delivery = entry.remove();
            if self.is_blocked(delivery.from, delivery.to) {
                self.stats.dropped_partition += 1;
            } else {
                self.stats.delivered += 1;
                out.push(delivery);
            }
        }
        self.assert_accounting();
        out.len() - before
    }

    /// When the earliest message in flight is due, if any. It may still be dropped then by a
    /// partition.
    #[must_use]
    pub fn next_delivery_ms(&self) -> Option<u64> {
        self.in_flight
            .keys()
            .next()
            .map(|&(deliver_ms, _)| deliver_ms)
    }

    /// Splits the nodes of `a` from those of `b`: nothing passes between the groups, either way,
    /// including messages already in flight. Links within a group and to other nodes are
    /// untouched. Adds to any earlier partition until [`heal`](Self::heal).
    pub fn partition(&mut self, a: &[u64], b: &[u64]) {
        for &x in a {
            for &y in b {
                assert!(x != y, "node {x} is on both sides of a partition");
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
        self.assert_blocked_bounded();
    }

    /// Blocks the link from `from` to `to` only; the other direction still works.
    pub fn block_one_way(&mut self, from: u64, to: u64) {
        self.blocked.insert((from, to));
        self.assert_blocked_bounded();
    }

    /// Removes every partition and blocked link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Whether messages from `from` to `to` are dropped now.
    #[must_use]
    pub fn is_blocked(&self, from: u64, to: u64) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Changes loss, duplication and delay for messages sent from now on; messages in flight
    /// keep their delivery times.
    pub fn set_faults(&mut self, faults: NetworkFaults) {
        faults.assert_valid();
        self.faults = faults;
    }

    /// The current faults.
    #[must_use]
    pub const fn faults(&self) -> NetworkFaults {
        self.faults
    }

    /// Messages in flight, including those that a partition will drop when they are due.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Drops every message in flight to or from `id`, as when that node crashes: its sockets and
    /// their buffers are gone. Returns how many were dropped.
    pub fn clear_node(&mut self, id: u64) -> usize {
        let before = self.in_flight.len();
        self.in_flight
            .retain(|_, delivery| delivery.from != id && delivery.to != id);
        let dropped = before - self.in_flight.len();
        self.stats.dropped_crash += u64::try_from(dropped).expect("counts fit in u64");
        self.assert_accounting();
        dropped
    }

    /// The latest virtual time passed in; calls with an earlier time panic.
    #[must_use]
    pub const fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The counters.
    #[must_use]
    pub const fn stats(&self) -> NetworkStats {
        self.stats
    }

    fn advance_to(&mut self, now_ms: u64) {
        assert!(
            now_ms >= self.now_ms,
            "virtual time went back from {} ms to {now_ms} ms",
            self.now_ms
        );
        self.now_ms = now_ms;
    }

    fn assert_blocked_bounded(&self) {
        assert!(
            self.blocked.len() <= BLOCKED_LINKS_MAX,
            "more than {BLOCKED_LINKS_MAX} blocked links"
        );
    }

    fn assert_accounting(&self) {
        let stats = &self.stats;
        let in_flight = u64::try_from(self.in_flight.len()).expect("counts fit in u64");
        assert_eq!(
            stats.sent + stats.duplicated,
            stats.delivered + stats.dropped() + in_flight,
            "network lost track of a message: {stats:?}, {in_flight} in flight"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rng::Streams;

    fn network(seed: u64, faults: NetworkFaults) -> SimNetwork<u64> {
        SimNetwork::new(Streams::new(seed).network(), faults)
    }

    /// Runs the clock until nothing is in flight; returns every delivery.
    fn drain(net: &mut SimNetwork<u64>) -> Vec<Delivery<u64>> {
        let mut out = Vec::new();
        while let Some(due_ms) = net.next_delivery_ms() {
            net.deliver_due_into(due_ms.max(net.now_ms()), &mut out);
        }
        out
    }

    #[test]
    fn default_delivers_everything_in_order_after_one_ms() {
        let mut net = network(1, NetworkFaults::default());
        for i in 0..100 {
            assert_eq!(net.send(5, 1, 2, i), SendOutcome::Queued { copies: 1 });
        }
        assert_eq!(net.next_delivery_ms(), Some(6));
        assert!(net.deliver_due(5).is_empty());
        let got = net.deliver_due(6);
        assert_eq!(
            got.iter().map(|d| d.msg).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
        assert!(
            got.iter()
                .all(|d| d.from == 1 && d.to == 2 && d.sent_ms == 5 && d.deliver_ms == 6)
        );
        assert_eq!(net.in_flight(), 0);
        assert_eq!(net.next_delivery_ms(), None);
        let stats = net.stats();
        assert_eq!(
            (stats.sent, stats.delivered, stats.dropped()),
            (100, 100, 0)
        );
    }

    #[test]
    fn loss_drops_about_the_configured_share() {
        let faults = NetworkFaults {
            loss_per_mille: 200,
            ..NetworkFaults::default()
        };
        let mut net = network(2, faults);
        for i in 0..10_000 {
            net.send(0, 1, 2, i);
        }
        let delivered = drain(&mut net).len();
        let stats = net.stats();
        assert!((1700..2300).contains(&stats.dropped_loss), "{stats:?}");
        assert_eq!(stats.delivered, u64::try_from(delivered).expect("fits"));
        assert_eq!(stats.delivered + stats.dropped_loss, 10_000);

        let all_lost = NetworkFaults {
            loss_per_mille: 1000,
            ..NetworkFaults::default()
        };
        let mut net = network(2, all_lost);
        assert_eq!(net.send(0, 1, 2, 7), SendOutcome::Lost);
        assert_eq!(net.in_flight(), 0);
    }

    #[test]
    fn duplication_delivers_some_messages_twice() {
        let faults = NetworkFaults {
            duplicate_per_mille: 300,
            ..NetworkFaults::default()
        };
        let mut net = network(3, faults);
        for i in 0..1000 {
            net.send(0, 1, 2, i);
        }
        let got = drain(&mut net);
        let stats = net.stats();
        assert!((220..380).contains(&stats.duplicated), "{stats:?}");
        assert_eq!(
            u64::try_from(got.len()).expect("fits"),
            1000 + stats.duplicated
        );
        let mut ids: Vec<u64> = got.iter().map(|d| d.msg).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 1000, "every message arrives at least once");
    }

    #[test]
    fn random_delays_reorder_within_bounds() {
        let faults = NetworkFaults {
            delay_min_ms: 5,
            delay_max_ms: 50,
            ..NetworkFaults::default()
        };
        let mut net = network(4, faults);
        for i in 0..500 {
            net.send(i, 1, 2, i);
        }
        let got = drain(&mut net);
        assert_eq!(got.len(), 500);
        for d in &got {
            assert!(
                d.deliver_ms >= d.sent_ms + 5 && d.deliver_ms <= d.sent_ms + 50,
                "{d:?}"
            );
            assert_eq!(d.sent_ms, d.msg);
        }
        assert!(got.windows(2).all(|w| w[0].deliver_ms <= w[1].deliver_ms));
        let overtaken = got.windows(2).filter(|w| w[0].msg > w[1].msg).count();
        assert!(overtaken > 50, "only {overtaken} reorderings");
    }

    #[test]
    fn deliveries_due_together_leave_in_send_order() {
        let faults = NetworkFaults {
            delay_min_ms: 0,
            delay_max_ms: 3,
            ..NetworkFaults::default()
        };
        let mut net = network(5, faults);
        for i in 0..200 {
            net.send(0, 1 + i % 3, 2, i);
        }
        let got = net.deliver_due(3);
        assert_eq!(got.len(), 200);
        for w in got.windows(2) {
            assert!(
                w[0].deliver_ms < w[1].deliver_ms
                    || (w[0].deliver_ms == w[1].deliver_ms && w[0].msg < w[1].msg),
                "{w:?}"
            );
        }
    }

    #[test]
    fn partition_is_symmetric_and_catches_messages_in_flight() {
        let faults = NetworkFaults {
            delay_min_ms: 10,
            delay_max_ms: 10,
            ..NetworkFaults::default()
        };
        let mut net = network(6, faults);
        net.send(0, 1, 3, 100); // in flight when the partition starts
        net.send(0, 1, 2, 101); // same side: unaffected
        net.partition(&[1, 2], &[3]);
        assert!(net.is_blocked(1, 3) && net.is_blocked(3, 1));
        assert!(net.is_blocked(2, 3) && net.is_blocked(3, 2));
        assert!(!net.is_blocked(1, 2) && !net.is_blocked(2, 1));
        assert_eq!(net.send(1, 3, 1, 102), SendOutcome::Blocked);
        assert_eq!(net.send(1, 2, 3, 103), SendOutcome::Blocked);
        net.send(1, 3, 4, 104); // node 4 is in neither group
        let got: Vec<u64> = drain(&mut net).iter().map(|d| d.msg).collect();
        assert_eq!(got, vec![101, 104]);
        assert_eq!(net.stats().dropped_partition, 3);
    }

    #[test]
    fn one_way_block_leaves_the_other_direction_open() {
        let mut net = network(7, NetworkFaults::default());
        net.block_one_way(1, 2);
        assert_eq!(net.send(0, 1, 2, 1), SendOutcome::Blocked);
        assert_eq!(net.send(0, 2, 1, 2), SendOutcome::Queued { copies: 1 });
        let got = drain(&mut net);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].from, got[0].to, got[0].msg), (2, 1, 2));
    }

    #[test]
    fn heal_reopens_every_link() {
        let mut net = network(8, NetworkFaults::default());
        net.partition(&[1], &[2, 3]);
        net.block_one_way(3, 2);
        net.heal();
        for (from, to) in [(1, 2), (2, 1), (1, 3), (3, 1), (3, 2), (2, 3)] {
            assert!(!net.is_blocked(from, to));
            assert_eq!(net.send(0, from, to, 0), SendOutcome::Queued { copies: 1 });
        }
        assert_eq!(drain(&mut net).len(), 6);
    }

    #[test]
    fn in_flight_is_bounded() {
        let mut net = network(9, NetworkFaults::default());
        for i in 0..IN_FLIGHT_MAX + 10 {
            net.send(0, 1, 2, u64::try_from(i).expect("fits"));
        }
        assert_eq!(net.in_flight(), IN_FLIGHT_MAX);
        assert_eq!(net.send(0, 1, 2, 0), SendOutcome::Queued { copies: 0 });
        assert_eq!(net.stats().dropped_overflow, 11);
        assert_eq!(net.deliver_due(1).len(), IN_FLIGHT_MAX);
        assert_eq!(net.send(1, 1, 2, 0), SendOutcome::Queued { copies: 1 });
    }

    #[test]
    fn clear_node_drops_its_traffic_both_ways() {
        let mut net = network(10, NetworkFaults::calm());
        net.send(0, 1, 2, 0);
        net.send(0, 2, 1, 1);
        net.send(0, 2, 3, 2);
        net.send(0, 3, 2, 3);
        net.send(0, 1, 3, 4);
        assert_eq!(net.clear_node(2), 4);
        assert_eq!(net.in_flight(), 1);
        assert_eq!(net.stats().dropped_crash, 4);
        assert_eq!(drain(&mut net)[0].msg, 4);
    }

    #[test]
    fn same_seed_same_deliveries() {
        let run = |seed: u64| {
            let mut net = network(seed, NetworkFaults::chaotic());
            let mut out = Vec::new();
            for now_ms in 0..2000 {
                if now_ms == 700 {
                    net.partition(&[1], &[2, 3]);
                }
                if now_ms == 1300 {
                    net.heal();
                }
                for from in 1..=3 {
                    let to = 1 + now_ms % 3;
                    net.send(now_ms, from, to, now_ms * 10 + from);
                }
                net.deliver_due_into(now_ms, &mut out);
            }
            while let Some(due_ms) = net.next_delivery_ms() {
                net.deliver_due_into(due_ms, &mut out);
            }
            (out, net.stats())
        };
        let (a, stats_a) = run(11);
        let (b, stats_b) = run(11);
        assert_eq!(a, b);
        assert_eq!(stats_a, stats_b);
        assert!(
            stats_a.dropped_loss > 0 && stats_a.duplicated > 0 && stats_a.dropped_partition > 0
        );
        let (c, _) = run(12);
        assert_ne!(a, c);
    }

    #[test]
    fn profiles_are_valid() {
        NetworkFaults::default().assert_valid();
        NetworkFaults::calm().assert_valid();
        NetworkFaults::chaotic().assert_valid();
    }

    #[test]
    #[should_panic(expected = "invalid network faults")]
    fn inverted_delay_range_is_rejected() {
        let faults = NetworkFaults {
            delay_min_ms: 5,
            delay_max_ms: 4,
            ..NetworkFaults::default()
        };
        let _ = network(13, faults);
    }

    #[test]
    #[should_panic(expected = "virtual time went back")]
    fn time_cannot_go_back() {
        let mut net = network(14, NetworkFaults::default());
        net.send(10, 1, 2, 0);
        let _ = net.deliver_due(9);
    }
}
