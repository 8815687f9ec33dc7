//! SWIM gossip membership as a sans-IO core.
//!
//! [`Swim`] is a plain value: it reads no clock, does no I/O and starts no thread. The driver
//! owns the socket and the timer and pumps the core:
//!
//! ```text
//! let mut swim = Swim::new(config, node_id, address, metadata, seed, now_ms)?;
//! swim.join(&contact_points)?;
//! loop {
//!     while let Some(transmit) = swim.poll_transmit() { send(transmit.to_address, transmit.message) }
//!     while let Some(event) = swim.poll_event() { tell_the_broker(event) }
//!     wait until swim.poll_timeout() or until a message arrives;
//!     on a message: swim.handle_message(&from_address, message, now_ms) (an `Err` is only for logging)
//!     on the deadline: swim.handle_tick(now_ms)
//! }
//! ```
//!
//! The protocol is SWIM (Das, Gupta, Motivala 2002) with the usual refinements Zeebe's gossip
//! also uses: suspicion before death, incarnation numbers to refute, infection-style
//! dissemination piggybacked on every message, and a periodic full sync for anti-entropy.
//!
//! - Every `probe_interval_ms` the member pings the next member of a shuffled round-robin list.
//!   Without an ack within `probe_timeout_ms` it asks `suspect_probes` other members to ping the
//!   target on its behalf (`PingReq`); they relay the ack. Without any ack by the end of the
//!   interval the target becomes Suspect. A probe whose target goes down (Dead or Left) meanwhile
//!   ends at once: no `PingReq`, no suspicion. A member asked to probe a target it holds down
//!   does not ping it but sends the requester its record of the target.
//! - Every `Ping` and every direct `Ack` carries the sender's own record first, and a relayed
//!   `Ack` carries the relay's record of the target first: whoever probes a member (directly or
//!   not) learns its current record, refutations included, and a member learns whoever probes
//!   it.
//! - A Suspect that does not refute within `failure_timeout_ms` becomes Dead. A member that hears
//!   it is suspected (or declared dead) refutes by raising its incarnation and gossiping Alive.
//!   Both the suspicion and the refutation are bounded broadcasts whose transmissions may all
//!   be lost (or spent into a partition), so:
//!   - a member that suspects another piggybacks that record first on every message to it, and
//!     every probe interval sends it to up to `gossip_fanout` random Suspect members besides the
//!     one it probes: the suspect hears the doubt as long as it lasts;
//!   - a member answers a message that carries a Suspect, Dead or Left record of itself (after
//!     refuting it, if it was at or above its incarnation) with its own record: directly in the
//!     `Ack` to a `Ping` or the `Sync` to a `Join`, else in a `Gossip` to the sender;
//!   - a member that hears such a record of itself *below* its incarnation (a doubt its
//!     refutation has not dispelled there) also disseminates its own record again from scratch;
//!   - a member that comes to hold another Dead (by its own verdict or by gossip) sends it that
//!     record once, as nothing else goes to a Dead member but anti-entropy: a live one (say,
//!     across a healed split whose stale verdicts now cross over) refutes at once.
//! - A message that carries the sender's own record which, after merging, differs from the
//!   receiver's record of the sender (the receiver's is newer, or it is the same incarnation
//!   with other content) is answered with a `Gossip` to the sender carrying the receiver's
//!   record (a `Join` is answered by the `Sync` anyway): the sender is behind on itself and
//!   refutes. This is what repairs a restarted member that reused an incarnation of an earlier
//!   life with other metadata (Alive needs a strictly higher incarnation, so the old record
//!   would otherwise stay wherever it is held). [`Swim::with_initial_incarnation`] lets a
//!   driver avoid the reuse in the first place.
//! - Updates ride on every message, least-sent and most recent first, each at most
//!   `retransmit_multiplier * (log2(n) + 1)` times; every `gossip_interval_ms` pending updates are
//!   also pushed to `gossip_fanout` random members.
//! - Contact points are addresses only. The member sends `Join` to every contact point at whose
//!   address it knows no live (Alive or Suspect) member, and to all of them until it first
//!   receives a `Sync` (knowing a member from its ping is not knowing its table; a member
//!   without contact points joins a random live member it knows of instead): every probe
//!   interval while it knows no live member at all, else at an interval that doubles from the
//!   probe interval up to `sync_interval_ms`, and starts over when a contact point's member is
//!   declared Dead. So sub-clusters that formed before a contact point came up meet through it
//!   within seconds.
//! - Anti-entropy is push-pull: every `sync_interval_ms` the member sends `Join` to a random
//!   address among those of known members (Dead ones included) and contact points, each address
//!   once, but none where a member it holds Left was. A `Join` carries the joiner's own record
//!   first, then its member table (a random window of it if it exceeds `message_updates_max`),
//!   and is answered with the receiver's table in `Sync` messages. That exchange is what lets
//!   members that were partitioned away come back.
//! - [`Swim::leave`] announces Left to every live member at once and again every
//!   `gossip_interval_ms` for `retransmit_multiplier` more rounds. Meanwhile, and for as long as
//!   the driver keeps the core, it answers a `Ping` with an `Ack` and a `PingReq` or `Join` with
//!   a `Gossip`, each carrying only its Left record. Members do not answer (ack, relay for,
//!   correct) a member they hold Left, except its `Join` (a restarted member's).
//!
//! Precedence on incarnations, for an update about member `m` currently known at incarnation `i`:
//! Alive(j) wins iff `j > i`; Suspect(j) wins over Alive iff `j >= i` and over Suspect iff
//! `j > i`; Dead(j) and Left(j) win over Alive and Suspect iff `j >= i`; Left(j) wins over
//! Dead iff `j >= i` (a member leaves at an incarnation above its last Alive one, so a leave
//! during a split overrides the other side's Dead verdict after the heal); nothing but Alive
//! wins over Left (Left is final for a life), and neither Suspect nor Dead wins over Dead. A
//! Dead or Left member comes back only with a strictly higher incarnation, which it picks
//! itself when it hears of its own death (or, restarted, of its earlier life). Claims about the
//! local member at its incarnation or above that differ from its own record are always refuted.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::{Error, Result};

/// A member's id: the broker's node id (`cluster.nodeId`).
pub type MemberId = u64;

/// Upper limit for `SwimConfig::members_max`; the member table is scanned linearly per message.
pub const MEMBERS_LIMIT: u32 = 4096;
/// Upper limit for `SwimConfig::message_updates_max`, which bounds one message's size.
pub const MESSAGE_UPDATES_LIMIT: u32 = 1024;
/// Upper limit for `SwimConfig::metadata_bytes_max`.
pub const METADATA_BYTES_LIMIT: u32 = 64 * 1024;
/// Longest member address accepted, locally or on the wire (a host name plus port fits).
pub const ADDRESS_BYTES_MAX: usize = 255;
/// Most initial contact points kept by [`Swim::join`].
pub const CONTACT_POINTS_MAX: usize = 64;
/// Most outgoing messages queued before new ones are dropped (and counted): a driver that does
/// not drain `poll_transmit` must not make the core grow without bound.
pub const TRANSMITS_QUEUED_MAX: usize = 4096;
/// Most membership events queued before the oldest are dropped (and counted).
pub const EVENTS_QUEUED_MAX: usize = 4096;
/// Most indirect pings this member runs at once on behalf of others.
pub const RELAYS_IN_FLIGHT_MAX: usize = 256;

/// Tunables of the gossip protocol. [`SwimConfig::default`] holds Zeebe's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwimConfig {
    /// Time between two probes of this member (Zeebe: 1000 ms).
    pub probe_interval_ms: u64,
    /// Time to wait for a direct ack before asking others to probe (Zeebe: 100 ms).
    pub probe_timeout_ms: u64,
    /// Members asked to probe indirectly after a direct probe timed out (Zeebe: 3).
    pub suspect_probes: u32,
    /// Time a member stays Suspect before it is declared Dead (Zeebe: 10000 ms).
    pub failure_timeout_ms: u64,
    /// Time between two pushes of pending updates (Zeebe: 250 ms).
    pub gossip_interval_ms: u64,
    /// Members each periodic push goes to (Zeebe: 2).
    pub gossip_fanout: u32,
    /// Time between two full-membership syncs with a random known address (Zeebe: 10000 ms).
    pub sync_interval_ms: u64,
    /// λ in "each update is sent at most λ·(log2(n) + 1) times".
    pub retransmit_multiplier: u32,
    /// Most members kept, the local one and Dead ones included.
    pub members_max: u32,
    /// Most updates this member piggybacks on one outgoing message.
    pub piggyback_updates_max: u32,
    /// Most updates accepted in one incoming message; larger messages are dropped.
    pub message_updates_max: u32,
    /// Largest metadata of one member, in bytes.
    pub metadata_bytes_max: u32,
}

impl Default for SwimConfig {
    fn default() -> Self {
        Self {
            probe_interval_ms: 1000,
            probe_timeout_ms: 100,
            suspect_probes: 3,
            failure_timeout_ms: 10_000,
            gossip_interval_ms: 250,
            gossip_fanout: 2,
            sync_interval_ms: 10_000,
            retransmit_multiplier: 3,
            members_max: 256,
            piggyback_updates_max: 16,
            message_updates_max: 256,
            metadata_bytes_max: 4096,
        }
    }
}

fn invalid(field: &'static str, reason: String) -> Error {
    Error::InvalidConfig { field, reason }
}

impl SwimConfig {
    /// Checks every field against its range; the error names the field and the range.
    pub fn validate(&self) -> Result<()> {
        if self.probe_interval_ms == 0 {
            return Err(invalid("probe_interval_ms", "must be at least 1".into()));
        }
        if self.probe_timeout_ms == 0 || self.probe_timeout_ms >= self.probe_interval_ms {
            return Err(invalid(
                "probe_timeout_ms",
                format!(
                    "is {} but must be at least 1 and below probe_interval_ms ({}), so that \
                     indirect probes have time to answer within the interval",
                    self.probe_timeout_ms, self.probe_interval_ms
                ),
            ));
        }
        if self.suspect_probes >= self.members_max {
            return Err(invalid(
                "suspect_probes",
                format!(
                    "is {} but must be below members_max ({})",
                    self.suspect_probes, self.members_max
                ),
            ));
        }
        if self.failure_timeout_ms < self.probe_interval_ms {
            return Err(invalid(
                "failure_timeout_ms",
                format!(
                    "is {} but must be at least probe_interval_ms ({}), or a suspect has no \
                     chance to refute",
                    self.failure_timeout_ms, self.probe_interval_ms
                ),
            ));
        }
        for (field, value) in [
            ("gossip_interval_ms", self.gossip_interval_ms),
            ("sync_interval_ms", self.sync_interval_ms),
            ("gossip_fanout", u64::from(self.gossip_fanout)),
            (
                "retransmit_multiplier",
                u64::from(self.retransmit_multiplier),
            ),
            (
                "piggyback_updates_max",
                u64::from(self.piggyback_updates_max),
            ),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1".into()));
            }
        }
        if self.members_max < 2 || self.members_max > MEMBERS_LIMIT {
            return Err(invalid(
                "members_max",
                format!("is {} but must be 2 to {MEMBERS_LIMIT}", self.members_max),
            ));
        }
        if self.message_updates_max < self.piggyback_updates_max
            || self.message_updates_max > MESSAGE_UPDATES_LIMIT
        {
            return Err(invalid(
                "message_updates_max",
                format!(
                    "is {} but must be piggyback_updates_max ({}) to {MESSAGE_UPDATES_LIMIT}, \
                     or members would drop each other's messages",
                    self.message_updates_max, self.piggyback_updates_max
                ),
            ));
        }
        if self.metadata_bytes_max > METADATA_BYTES_LIMIT {
            return Err(invalid(
                "metadata_bytes_max",
                format!(
                    "is {} but must be at most {METADATA_BYTES_LIMIT}",
                    self.metadata_bytes_max
                ),
            ));
        }
        Ok(())
    }
}

/// What the cluster believes about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Answers probes, or refuted the last suspicion.
    Alive,
    /// Missed a probe; becomes Dead unless it refutes within `failure_timeout_ms`.
    Suspect,
    /// Failed: did not refute a suspicion in time.
    Dead,
    /// Left the cluster on purpose with [`Swim::leave`].
    Left,
}

impl MemberState {
    /// Dead or Left: not probed, not gossiped to, only kept to stop stale updates reviving it.
    #[must_use]
    pub fn is_down(self) -> bool {
        matches!(self, Self::Dead | Self::Left)
    }
}

/// One member as known locally; also the unit of dissemination on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The broker's node id.
    pub id: MemberId,
    /// Where the transport reaches it; opaque to the core.
    pub address: String,
    /// Alive, Suspect, Dead or Left.
    pub state: MemberState,
    /// Raised only by the member itself, to refute suspicion or to publish new metadata.
    pub incarnation: u64,
    /// Opaque bytes owned by the broker (partition roles), at most `metadata_bytes_max`.
    pub metadata: Vec<u8>,
}

/// A gossip message. The transport encodes it; the core only builds and checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The member that sent it.
    pub sender_id: MemberId,
    /// What the message asks for.
    pub kind: MessageKind,
    /// Piggybacked member updates. For `Join`, `Ping` and a direct `Ack` the sender's own
    /// record comes first (for `Join` followed by the sender's member table); for a relayed
    /// `Ack` the target's record comes first; for `Sync` this is a slice of the sender's whole
    /// member table.
    pub updates: Vec<Member>,
}

/// The request or reply a [`Message`] carries besides its updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// "Here I am and these are my members, send me yours": answered with one or more `Sync`.
    Join,
    /// A slice of the sender's member table, in answer to `Join`.
    Sync,
    /// A probe; answered with `Ack { sequence }`.
    Ping {
        /// Chosen by the prober, echoed in the ack.
        sequence: u64,
        /// The member the prober means to reach, so a different broker now at that address
        /// does not answer for it.
        target_id: MemberId,
    },
    /// The answer to `Ping`, or an indirect probe's answer relayed to the original prober.
    Ack {
        /// The sequence of the ping being answered.
        sequence: u64,
    },
    /// "Ping `target_id` for me and relay its ack under my `sequence`".
    PingReq {
        /// The requester's probe sequence, to put in the relayed ack.
        sequence: u64,
        /// The member to probe.
        target_id: MemberId,
        /// Where to probe it.
        target_address: String,
    },
    /// Only carries updates: the periodic push.
    Gossip,
}

/// A message to send, produced by [`Swim::poll_transmit`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// The address to send it to.
    pub to_address: String,
    /// The message.
    pub message: Message,
}

/// A change in the local view of the cluster, produced by [`Swim::poll_event`]. Each carries
/// the member's record right after the change. No events are produced about the local member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member was heard of for the first time (in state Alive or Suspect).
    MemberAdded(Member),
    /// A member missed a probe, here or elsewhere.
    MemberSuspect(Member),
    /// A Suspect refuted, or a Dead or Left member came back with a higher incarnation.
    MemberAlive(Member),
    /// A member did not refute in time.
    MemberDead(Member),
    /// A member left on purpose.
    MemberLeft(Member),
    /// A member published new metadata.
    MetadataChanged(Member),
}

/// Counters for the driver's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwimStats {
    /// Messages given to `handle_message`.
    pub messages_received: u64,
    /// Messages dropped because they broke a bound or rule.
    pub messages_dropped: u64,
    /// Outgoing messages dropped because `TRANSMITS_QUEUED_MAX` was reached.
    pub transmits_dropped: u64,
    /// Events dropped because `EVENTS_QUEUED_MAX` was reached.
    pub events_dropped: u64,
    /// Updates ignored because the member table was full of live members.
    pub members_rejected: u64,
}

/// A tiny seeded generator (splitmix64): the only randomness the core uses.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound`; the modulo bias is irrelevant for picking among few members.
    pub(crate) fn below(&mut self, bound: usize) -> usize {
        assert!(bound > 0, "below(0) has no value to return");
        let bound = u64::try_from(bound).expect("usize fits u64");
        usize::try_from(self.next_u64() % bound).expect("a value below a usize fits usize")
    }

    /// Moves `k` uniformly chosen elements to the front (partial Fisher-Yates).
    fn choose<T>(&mut self, items: &mut [T], k: usize) {
        for i in 0..k.min(items.len()) {
            let j = i + self.below(items.len() - i);
            items.swap(i, j);
        }
    }
}

/// A member as kept locally.
#[derive(Debug)]
struct Entry {
    member: Member,
    /// When the member last changed state here: the start of its suspicion timer.
    state_since_ms: u64,
}

/// An update still being disseminated; its content is the member's current record.
#[derive(Debug)]
struct Broadcast {
    id: MemberId,
    transmits: u32,
    /// Higher is more recent.
    order: u64,
}

/// The probe of the current protocol period.
#[derive(Debug)]
struct Probe {
    target_id: MemberId,
    sequence: u64,
    sent_at_ms: u64,
    acked: bool,
    indirect_sent: bool,
}

/// An indirect probe run for another member.
#[derive(Debug)]
struct Relay {
    sequence: u64,
    target_id: MemberId,
    requester: Option<MemberId>,
    requester_address: String,
    requester_sequence: u64,
    expires_at_ms: u64,
}

/// The SWIM membership core of one broker. See the module docs for how to drive it.
#[derive(Debug)]
pub struct Swim {
    config: SwimConfig,
    self_id: MemberId,
    /// Every known member, the local one included; ordered so iteration is deterministic.
    members: BTreeMap<MemberId, Entry>,
    broadcasts: Vec<Broadcast>,
    broadcast_order: u64,
    contact_points: Vec<String>,
    probe_order: Vec<MemberId>,
    probe_index: usize,
    probe: Option<Probe>,
    relays: VecDeque<Relay>,
    next_sequence: u64,
    rng: SplitMix64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<MembershipEvent>,
    stats: SwimStats,
    now_ms: u64,
    next_probe_at_ms: u64,
    next_gossip_at_ms: u64,
    next_sync_at_ms: u64,
    next_join_at_ms: u64,
    /// The pause before the next round of `Join`s to unknown contact points: the probe interval
    /// while alone or right after a contact point was declared Dead, doubling to the sync
    /// interval.
    join_interval_ms: u64,
    /// Whether a `Sync` (someone's member table) ever arrived: until then every contact point
    /// is joined, known or not, as knowing a member from its ping alone is not knowing its
    /// table.
    synced: bool,
    left: bool,
    /// Rounds of the `Left` announcement still to repeat after `leave`, one per gossip interval.
    farewells_left: u32,
}

fn check_address(address: &str) -> Result<()> {
    if address.is_empty() || address.len() > ADDRESS_BYTES_MAX {
        return Err(Error::InvalidAddress {
            address_bytes: address.len(),
        });
    }
    Ok(())
}

fn as_usize(value: u32) -> usize {
    usize::try_from(value).expect("u32 fits usize on supported targets")
}

impl Swim {
    /// Creates the core for member `self_id` reachable at `self_address`, Alive at
    /// incarnation 0. `seed` drives every random choice; `now_ms` is the driver's clock.
    pub fn new(
        config: SwimConfig,
        self_id: MemberId,
        self_address: String,
        metadata: Vec<u8>,
        seed: u64,
        now_ms: u64,
    ) -> Result<Self> {
        config.validate()?;
        check_address(&self_address)?;
        if metadata.len() > as_usize(config.metadata_bytes_max) {
            return Err(Error::MetadataTooLarge {
                bytes: metadata.len(),
                bytes_max: config.metadata_bytes_max,
            });
        }
        let member = Member {
            id: self_id,
            address: self_address,
            state: MemberState::Alive,
            incarnation: 0,
            metadata,
        };
        let mut members = BTreeMap::new();
        members.insert(
            self_id,
            Entry {
                member,
                state_since_ms: now_ms,
            },
        );
        let mut swim = Self {
            next_probe_at_ms: now_ms + config.probe_interval_ms,
            next_gossip_at_ms: now_ms + config.gossip_interval_ms,
            next_sync_at_ms: now_ms + config.sync_interval_ms,
            // `join` sends at once; without contact points the first pull from a member
            // learnt meanwhile waits a probe interval.
            next_join_at_ms: now_ms + config.probe_interval_ms,
            join_interval_ms: config.probe_interval_ms,
            synced: false,
            config,
            self_id,
            members,
            broadcasts: Vec::new(),
            broadcast_order: 0,
            contact_points: Vec::new(),
            probe_order: Vec::new(),
            probe_index: 0,
            probe: None,
            relays: VecDeque::new(),
            next_sequence: 0,
            rng: SplitMix64::new(seed),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: SwimStats::default(),
            now_ms,
            left: false,
            farewells_left: 0,
        };
        swim.broadcast(self_id);
        Ok(swim)
    }

    /// Starts the local member at `incarnation` instead of 0; call it right after
    /// [`Swim::new`], before [`Swim::join`].
    ///
    /// A fresh core knows nothing of its previous lives. Started at 0 it refutes to one above
    /// the first record of itself it hears of, which may be stale, and then publishes an
    /// incarnation its previous life already used with other metadata; the core repairs that
    /// (members that hold the other record tell it, and it raises its incarnation again), but
    /// only after a round trip. A driver that starts each life above every incarnation of the
    /// previous ones avoids the detour: the broker passes the wall-clock milliseconds at start,
    /// which only a life that raised its incarnation more than once per millisecond could
    /// overtake.
    #[must_use]
    pub fn with_initial_incarnation(mut self, incarnation: u64) -> Self {
        self.local_mut().incarnation = incarnation;
        self
    }

    /// Remembers the initial contact points (addresses; ids are learnt from their answers) and
    /// sends each a `Join`. A contact point at whose address no live member is known (any
    /// contact point, until a `Sync` arrived) keeps getting `Join`s: every probe interval while
    /// no other member is known alive, else at an
    /// interval that doubles from the probe interval to the sync interval (and starts over when
    /// a contact point's member is declared Dead). The local address is skipped.
    pub fn join<S: AsRef<str>>(&mut self, contact_points: &[S]) -> Result<()> {
        if self.left {
            return Err(Error::Left);
        }
        if contact_points.len() > CONTACT_POINTS_MAX {
            return Err(Error::TooManyContactPoints {
                count: contact_points.len(),
                count_max: CONTACT_POINTS_MAX,
            });
        }
        for address in contact_points {
            check_address(address.as_ref())?;
        }
        let own_address = self.local().address.clone();
        self.contact_points = contact_points
            .iter()
            .map(|address| address.as_ref().to_owned())
            .filter(|address| *address != own_address)
            .collect();
        self.contact_points.sort();
        self.contact_points.dedup();
        self.next_join_at_ms = self.now_ms;
        self.join_interval_ms = self.config.probe_interval_ms;
        self.run_joins();
        Ok(())
    }

    /// Publishes new metadata: raises the local incarnation so it wins everywhere.
    pub fn update_metadata(&mut self, metadata: Vec<u8>) -> Result<()> {
        if self.left {
            return Err(Error::Left);
        }
        if metadata.len() > as_usize(self.config.metadata_bytes_max) {
            return Err(Error::MetadataTooLarge {
                bytes: metadata.len(),
                bytes_max: self.config.metadata_bytes_max,
            });
        }
        let local = self.local_mut();
        local.incarnation += 1;
        local.metadata = metadata;
        self.broadcast(self.self_id);
        Ok(())
    }

    /// Leaves gracefully: announces Left to every live member at once, and again every gossip
    /// interval for `retransmit_multiplier` more rounds; after that `poll_timeout` is
    /// `u64::MAX`. From the call on the core probes, gossips and joins no more, merges nothing,
    /// and answers a `Ping` (with an `Ack`), a `PingReq` or a `Join` (with a `Gossip`) only with
    /// its `Left` record, so a member that missed every announcement learns of the leave from
    /// its next probe. The driver keeps pumping the core until `poll_timeout` is `u64::MAX`.
    pub fn leave(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        self.probe = None;
        self.relays.clear();
        let local = self.local_mut();
        local.incarnation = local.incarnation.saturating_add(1);
        local.state = MemberState::Left;
        self.announce_left();
        self.farewells_left = self.config.retransmit_multiplier;
        self.next_gossip_at_ms = self.now_ms + self.config.gossip_interval_ms;
    }

    /// Advances timers to `now_ms`: probes, indirect probes, suspicion timeouts, gossip and sync.
    pub fn handle_tick(&mut self, now_ms: u64) {
        self.advance_clock(now_ms);
        if self.left {
            if self.farewells_left > 0 && now_ms >= self.next_gossip_at_ms {
                self.farewells_left -= 1;
                self.next_gossip_at_ms = now_ms + self.config.gossip_interval_ms;
                self.announce_left();
            }
            return;
        }
        self.relays.retain(|relay| relay.expires_at_ms > now_ms);
        self.expire_suspects();
        self.run_probe_period();
        self.run_gossip();
        self.run_joins();
        self.run_sync();
    }

    /// Handles one message received from `from_address`. A message that breaks a bound or rule
    /// is dropped and counted; the returned error says why, for logging only.
    pub fn handle_message(
        &mut self,
        from_address: &str,
        message: Message,
        now_ms: u64,
    ) -> Result<()> {
        self.advance_clock(now_ms);
        self.stats.messages_received += 1;
        if let Err(reason) = self.check_message(from_address, &message) {
            self.stats.messages_dropped += 1;
            return Err(Error::MalformedMessage { reason });
        }
        if self.left {
            self.answer_after_leave(from_address, &message.kind);
            return Ok(());
        }
        let Message {
            sender_id,
            kind,
            updates,
        } = message;
        // What the sender says about itself, to check below that it is not behind on itself.
        let claim = updates
            .iter()
            .find(|update| update.id == sender_id)
            .cloned();
        let doubted = updates
            .iter()
            .any(|update| update.id == self.self_id && update.state != MemberState::Alive);
        for update in updates {
            self.merge(update);
        }
        // The sender's record of itself lost against ours or tied with other content: it is
        // behind on itself (it restarted and reused an incarnation of an earlier life, or has
        // not heard that it is suspected). Our record of it goes back, so it refutes.
        let mut correction = claim.and_then(|claim| {
            self.member(sender_id)
                .filter(|ours| **ours != claim)
                .cloned()
        });
        let sender = self.members.contains_key(&sender_id).then_some(sender_id);
        let is_join = kind == MessageKind::Join;
        self.synced |= kind == MessageKind::Sync;
        // The ack to a ping and the sync to a join carry our records anyway.
        let answered = matches!(kind, MessageKind::Join | MessageKind::Ping { .. });
        // A message from a member that left was sent before it left (or is a restarted
        // member's, which its `Join` brings back): answering it would reach nobody. Only a
        // `Join` is answered, with the record that makes a restarted member refute.
        let sender_left = self
            .member(sender_id)
            .is_some_and(|member| member.state == MemberState::Left);
        if sender_left && !is_join {
            return Ok(());
        }
        match kind {
            MessageKind::Join => self.send_sync(from_address),
            MessageKind::Sync | MessageKind::Gossip => {}
            MessageKind::Ping { sequence, .. } => {
                // The own record rides first on every ack: the prober learns us, and a prober
                // that still doubts us at an old incarnation sees our refutation at once.
                let mut records = vec![self.local().clone()];
                records.extend(correction.take());
                self.send_with(
                    from_address.to_owned(),
                    sender,
                    MessageKind::Ack { sequence },
                    records,
                );
            }
            MessageKind::Ack { sequence } => self.handle_ack(sequence),
            MessageKind::PingReq {
                sequence,
                target_id,
                target_address,
            } => {
                self.relay_probe(from_address, sender, sequence, target_id, target_address);
            }
        }
        if !answered {
            self.answer_doubts(from_address, sender, doubted, correction);
        }
        Ok(())
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next membership change, if any.
    pub fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.events.pop_front()
    }

    /// When `handle_tick` must be called next, on the driver's clock. `u64::MAX` once the
    /// announcements of `leave` are over.
    #[must_use]
    pub fn poll_timeout(&self) -> u64 {
        if self.left {
            return if self.farewells_left > 0 {
                self.next_gossip_at_ms
            } else {
                u64::MAX
            };
        }
        let mut deadline = self
            .next_probe_at_ms
            .min(self.next_gossip_at_ms)
            .min(self.next_sync_at_ms);
        if let Some(probe) = &self.probe
            && !probe.acked
            && !probe.indirect_sent
        {
            deadline = deadline.min(probe.sent_at_ms + self.config.probe_timeout_ms);
        }
        if !self.contact_points.is_empty() || !self.synced {
            deadline = deadline.min(self.next_join_at_ms);
        }
        for entry in self.members.values() {
            if entry.member.state == MemberState::Suspect {
                deadline = deadline.min(entry.state_since_ms + self.config.failure_timeout_ms);
            }
        }
        deadline
    }

    /// Every known member, the local one included, in id order. Dead and Left members stay
    /// listed so that late updates cannot revive them; filter on `state` for the live view.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|entry| &entry.member)
    }

    /// One member by id.
    #[must_use]
    pub fn member(&self, id: MemberId) -> Option<&Member> {
        self.members.get(&id).map(|entry| &entry.member)
    }

    /// The local member's record.
    #[must_use]
    pub fn local(&self) -> &Member {
        &self
            .members
            .get(&self.self_id)
            .expect("the local member is always in the table")
            .member
    }

    /// Counters for metrics.
    #[must_use]
    pub fn stats(&self) -> SwimStats {
        self.stats
    }

    /// The configuration this core runs with.
    #[must_use]
    pub fn config(&self) -> &SwimConfig {
        &self.config
    }

    fn local_mut(&mut self) -> &mut Member {
        &mut self
            .members
            .get_mut(&self.self_id)
            .expect("the local member is always in the table")
            .member
    }

    fn advance_clock(&mut self, now_ms: u64) {
        // Time running backwards is a driver bug; every deadline here assumes it cannot.
        assert!(
            now_ms >= self.now_ms,
            "clock went backwards: {now_ms} < {}",
            self.now_ms
        );
        self.now_ms = now_ms;
    }

    fn check_message(
        &self,
        from_address: &str,
        message: &Message,
    ) -> std::result::Result<(), &'static str> {
        if from_address.len() > ADDRESS_BYTES_MAX {
            return Err("sender address is too long");
        }
        if message.sender_id == self.self_id {
            return Err("sender claims the local member's id");
        }
        if message.updates.len() > as_usize(self.config.message_updates_max) {
            return Err("too many updates");
        }
        for update in &message.updates {
            if update.address.is_empty() || update.address.len() > ADDRESS_BYTES_MAX {
                return Err("an update has an empty or too long address");
            }
            if update.metadata.len() > as_usize(self.config.metadata_bytes_max) {
                return Err("an update has too much metadata");
            }
        }
        match &message.kind {
            MessageKind::Join => match message.updates.first() {
                Some(first)
                    if first.id == message.sender_id && first.state == MemberState::Alive => {}
                _ => return Err("join does not start with the sender's own alive record"),
            },
            MessageKind::Ping { target_id, .. } if *target_id != self.self_id => {
                return Err("ping is meant for another member id");
            }
            MessageKind::PingReq {
                target_id,
                target_address,
                ..
            } => {
                if target_address.is_empty() || target_address.len() > ADDRESS_BYTES_MAX {
                    return Err("ping request has an empty or too long target address");
                }
                if *target_id == self.self_id || *target_id == message.sender_id {
                    return Err("ping request targets the relay or the requester");
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies one remote update under the incarnation precedence rules.
    fn merge(&mut self, update: Member) {
        if update.id == self.self_id {
            self.merge_about_self(&update);
            return;
        }
        let Some(entry) = self.members.get_mut(&update.id) else {
            self.add_member(update);
            return;
        };
        let current = &entry.member;
        let wins = match (update.state, current.state) {
            (MemberState::Alive, _) | (MemberState::Suspect, MemberState::Suspect) => {
                update.incarnation > current.incarnation
            }
            (MemberState::Suspect, MemberState::Alive)
            | (MemberState::Dead | MemberState::Left, MemberState::Alive | MemberState::Suspect)
            | (MemberState::Left, MemberState::Dead) => update.incarnation >= current.incarnation,
            (MemberState::Suspect | MemberState::Dead, MemberState::Dead | MemberState::Left)
            | (MemberState::Left, MemberState::Left) => false,
        };
        if !wins {
            return;
        }
        let previous_state = current.state;
        let metadata_changed = current.metadata != update.metadata;
        if previous_state != update.state {
            entry.state_since_ms = self.now_ms;
        }
        entry.member = update;
        let record = entry.member.clone();
        let id = record.id;
        match record.state {
            MemberState::Alive if previous_state != MemberState::Alive => {
                self.push_event(MembershipEvent::MemberAlive(record.clone()));
            }
            MemberState::Suspect if previous_state != MemberState::Suspect => {
                self.push_event(MembershipEvent::MemberSuspect(record.clone()));
            }
            MemberState::Dead => self.push_event(MembershipEvent::MemberDead(record.clone())),
            MemberState::Left => self.push_event(MembershipEvent::MemberLeft(record.clone())),
            _ => {}
        }
        let went_down = record.state.is_down() && !previous_state.is_down();
        if metadata_changed && !record.state.is_down() {
            self.push_event(MembershipEvent::MetadataChanged(record));
        }
        self.broadcast(id);
        if went_down {
            self.on_down(id);
        }
    }

    /// Someone gossips about us. A record at our incarnation or above that differs from ours is
    /// refuted by claiming a higher incarnation, so our record wins everywhere. A Suspect, Dead
    /// or Left record below our incarnation is a doubt our refutation has not dispelled where
    /// it comes from (all its transmissions may have been lost): our record is disseminated
    /// again from scratch.
    fn merge_about_self(&mut self, update: &Member) {
        let local = self.local();
        if update.incarnation > local.incarnation
            || (update.incarnation == local.incarnation && update != local)
        {
            self.local_mut().incarnation = update.incarnation.saturating_add(1);
            self.broadcast(self.self_id);
        } else if update.incarnation < local.incarnation && update.state != MemberState::Alive {
            self.broadcast(self.self_id);
        }
    }

    /// Answers a message that needs an answer and got none with a `Gossip` to its sender:
    /// - it doubted us (`doubted`: it carried a Suspect, Dead or Left record of us, which we
    ///   refuted just now or earlier): our own record, so the doubter hears the refutation
    ///   directly instead of by chance;
    /// - the sender is behind on itself: our record of it (`correction`), so it refutes.
    fn answer_doubts(
        &mut self,
        from_address: &str,
        sender: Option<MemberId>,
        doubted: bool,
        correction: Option<Member>,
    ) {
        let mut records = Vec::new();
        if doubted {
            records.push(self.local().clone());
        }
        records.extend(correction);
        if records.is_empty() {
            return;
        }
        self.send_with(
            from_address.to_owned(),
            sender,
            MessageKind::Gossip,
            records,
        );
    }

    /// Sends our doubt (the piggyback puts a doubted recipient's record first) to up to
    /// `gossip_fanout` random Suspect members besides the one probed this period: a suspicion
    /// whose broadcast was spent (say, into a partition) still reaches the suspect, so it
    /// refutes before it is declared Dead.
    fn remind_suspects(&mut self, probed: Option<MemberId>) {
        let mut suspects: Vec<(MemberId, String)> = self
            .members
            .values()
            .filter(|entry| {
                entry.member.state == MemberState::Suspect
                    && entry.member.id != self.self_id
                    && Some(entry.member.id) != probed
            })
            .map(|entry| (entry.member.id, entry.member.address.clone()))
            .collect();
        let count = as_usize(self.config.gossip_fanout).min(suspects.len());
        self.rng.choose(&mut suspects, count);
        for (id, address) in suspects.into_iter().take(count) {
            self.send(address, Some(id), MessageKind::Gossip);
        }
    }

    /// A member went down here: a probe of it under way ends at once. A member declared Dead is
    /// sent its Dead record, and if it was a contact point (a split may heal), joining that
    /// address starts over at the probe interval. A contact point that left answers only with
    /// its Left record; it is still joined at the longest interval, in case it comes back with
    /// a new life.
    fn on_down(&mut self, id: MemberId) {
        if self
            .probe
            .as_ref()
            .is_some_and(|probe| probe.target_id == id)
        {
            self.probe = None;
        }
        let Some(member) = self.member(id) else {
            return;
        };
        if member.state != MemberState::Dead {
            return;
        }
        // Nothing is sent to a Dead member but anti-entropy: tell it now, once, so that if it
        // lives (a verdict from across a healed split, a stale record) it refutes at once.
        let (address, record) = (member.address.clone(), member.clone());
        let is_contact_point = self.contact_points.contains(&address);
        self.send_with(address, Some(id), MessageKind::Gossip, vec![record]);
        if is_contact_point {
            self.join_interval_ms = self.config.probe_interval_ms;
            self.next_join_at_ms = self
                .next_join_at_ms
                .min(self.now_ms + self.config.probe_interval_ms);
        }
    }

    /// After `leave`: answers requests (which only members that have not heard of the leave
    /// send) with the `Left` record alone.
    fn answer_after_leave(&mut self, from_address: &str, kind: &MessageKind) {
        let kind = match kind {
            MessageKind::Ping { sequence, .. } => MessageKind::Ack {
                sequence: *sequence,
            },
            MessageKind::PingReq { .. } | MessageKind::Join => MessageKind::Gossip,
            MessageKind::Sync | MessageKind::Ack { .. } | MessageKind::Gossip => return,
        };
        let message = Message {
            sender_id: self.self_id,
            kind,
            updates: vec![self.local().clone()],
        };
        self.push_transmit(Transmit {
            to_address: from_address.to_owned(),
            message,
        });
    }

    /// Sends the `Left` record to every member not known down.
    fn announce_left(&mut self) {
        let record = self.local().clone();
        let targets: Vec<String> = self
            .members
            .values()
            .filter(|entry| entry.member.id != self.self_id && !entry.member.state.is_down())
            .map(|entry| entry.member.address.clone())
            .collect();
        for to_address in targets {
            let message = Message {
                sender_id: self.self_id,
                kind: MessageKind::Gossip,
                updates: vec![record.clone()],
            };
            self.push_transmit(Transmit {
                to_address,
                message,
            });
        }
    }

    fn add_member(&mut self, update: Member) {
        // A Dead or Left member we never knew needs no tombstone: nothing here can revive it.
        if update.state.is_down() {
            return;
        }
        if self.members.len() >= as_usize(self.config.members_max) {
            // Make room by forgetting the down member that has been down longest.
            let oldest_down = self
                .members
                .values()
                .filter(|entry| entry.member.state.is_down())
                .min_by_key(|entry| entry.state_since_ms)
                .map(|entry| entry.member.id);
            let Some(id) = oldest_down else {
                self.stats.members_rejected += 1;
                return;
            };
            self.members.remove(&id);
            self.broadcasts.retain(|broadcast| broadcast.id != id);
        }
        let id = update.id;
        self.members.insert(
            id,
            Entry {
                member: update.clone(),
                state_since_ms: self.now_ms,
            },
        );
        // New members join the current round at a random place rather than waiting a round.
        let start = self.probe_index.min(self.probe_order.len());
        let position = start + self.rng.below(self.probe_order.len() - start + 1);
        self.probe_order.insert(position, id);
        self.push_event(MembershipEvent::MemberAdded(update));
        self.broadcast(id);
    }

    fn set_state(&mut self, id: MemberId, state: MemberState) {
        let now_ms = self.now_ms;
        let Some(entry) = self.members.get_mut(&id) else {
            return;
        };
        entry.member.state = state;
        entry.state_since_ms = now_ms;
        let record = entry.member.clone();
        self.push_event(match state {
            MemberState::Alive => MembershipEvent::MemberAlive(record),
            MemberState::Suspect => MembershipEvent::MemberSuspect(record),
            MemberState::Dead => MembershipEvent::MemberDead(record),
            MemberState::Left => MembershipEvent::MemberLeft(record),
        });
        self.broadcast(id);
        if state.is_down() {
            self.on_down(id);
        }
    }

    fn expire_suspects(&mut self) {
        let now_ms = self.now_ms;
        let failure_timeout_ms = self.config.failure_timeout_ms;
        let expired: Vec<MemberId> = self
            .members
            .values()
            .filter(|entry| {
                entry.member.state == MemberState::Suspect
                    && now_ms >= entry.state_since_ms + failure_timeout_ms
            })
            .map(|entry| entry.member.id)
            .collect();
        for id in expired {
            self.set_state(id, MemberState::Dead);
        }
    }

    fn run_probe_period(&mut self) {
        let now_ms = self.now_ms;
        let probe_timeout_ms = self.config.probe_timeout_ms;
        if let Some(probe) = &mut self.probe
            && !probe.acked
            && !probe.indirect_sent
            && now_ms >= probe.sent_at_ms + probe_timeout_ms
        {
            probe.indirect_sent = true;
            let (target_id, sequence) = (probe.target_id, probe.sequence);
            // `on_down` ends the probe of a member that goes down; this covers a target that
            // was forgotten meanwhile.
            if self
                .member(target_id)
                .is_some_and(|member| !member.state.is_down())
            {
                self.send_ping_requests(target_id, sequence);
            } else {
                self.probe = None;
            }
        }
        if now_ms < self.next_probe_at_ms {
            return;
        }
        if let Some(probe) = self.probe.take()
            && !probe.acked
            && self
                .member(probe.target_id)
                .is_some_and(|member| member.state == MemberState::Alive)
        {
            self.set_state(probe.target_id, MemberState::Suspect);
        }
        // From now, not from the old deadline: a stalled driver must not cause a probe burst.
        self.next_probe_at_ms = now_ms + self.config.probe_interval_ms;
        let target = self.next_probe_target();
        self.remind_suspects(target);
        if let Some(target_id) = target {
            let sequence = self.take_sequence();
            let address = self.members[&target_id].member.address.clone();
            self.probe = Some(Probe {
                target_id,
                sequence,
                sent_at_ms: now_ms,
                acked: false,
                indirect_sent: false,
            });
            // The own record rides first on every ping: the target learns the prober even if
            // every other way it could have was lost.
            let record = self.local().clone();
            self.send_with(
                address,
                Some(target_id),
                MessageKind::Ping {
                    sequence,
                    target_id,
                },
                vec![record],
            );
        }
    }

    fn next_probe_target(&mut self) -> Option<MemberId> {
        for _round in 0..2 {
            while self.probe_index < self.probe_order.len() {
                let id = self.probe_order[self.probe_index];
                self.probe_index += 1;
                if self
                    .member(id)
                    .is_some_and(|member| !member.state.is_down())
                {
                    return Some(id);
                }
            }
            // End of a round: reshuffle the live members so every one is probed once per round.
            self.probe_order = self
                .members
                .values()
                .filter(|entry| entry.member.id != self.self_id && !entry.member.state.is_down())
                .map(|entry| entry.member.id)
                .collect();
            let count = self.probe_order.len();
            self.rng.choose(&mut self.probe_order, count);
            self.probe_index = 0;
        }
        None
    }

    fn send_ping_requests(&mut self, target_id: MemberId, sequence: u64) {
        let Some(target_address) = self.member(target_id).map(|member| member.address.clone())
        else {
            return;
        };
        let mut helpers = self.live_peers_except(target_id);
        let count = as_usize(self.config.suspect_probes).min(helpers.len());
        self.rng.choose(&mut helpers, count);
        for (helper_id, helper_address) in helpers.into_iter().take(count) {
            let kind = MessageKind::PingReq {
                sequence,
                target_id,
                target_address: target_address.clone(),
            };
            self.send(helper_address, Some(helper_id), kind);
        }
    }

    fn relay_probe(
        &mut self,
        from_address: &str,
        requester: Option<MemberId>,
        requester_sequence: u64,
        target_id: MemberId,
        target_address: String,
    ) {
        if let Some(target) = self.member(target_id)
            && target.state.is_down()
        {
            // We know it is gone (for good, if it left): no ping, but the requester hears why.
            let record = target.clone();
            self.send_with(
                from_address.to_owned(),
                requester,
                MessageKind::Gossip,
                vec![record],
            );
            return;
        }
        if self.relays.len() >= RELAYS_IN_FLIGHT_MAX {
            // Indirect probes are best effort: the requester has other helpers.
            return;
        }
        let sequence = self.take_sequence();
        self.relays.push_back(Relay {
            sequence,
            target_id,
            requester,
            requester_address: from_address.to_owned(),
            requester_sequence,
            expires_at_ms: self.now_ms + self.config.probe_interval_ms,
        });
        let record = self.local().clone();
        self.send_with(
            target_address,
            Some(target_id),
            MessageKind::Ping {
                sequence,
                target_id,
            },
            vec![record],
        );
    }

    fn handle_ack(&mut self, sequence: u64) {
        if let Some(probe) = &mut self.probe
            && probe.sequence == sequence
        {
            probe.acked = true;
            return;
        }
        if let Some(index) = self
            .relays
            .iter()
            .position(|relay| relay.sequence == sequence)
        {
            let relay = self.relays.remove(index).expect("the index was just found");
            if let Some(requester) = relay.requester
                && self
                    .member(requester)
                    .is_some_and(|member| member.state == MemberState::Left)
            {
                // The requester left meanwhile: the answer would reach nobody.
                return;
            }
            let kind = MessageKind::Ack {
                sequence: relay.requester_sequence,
            };
            // The target's record rides first, as the target's own ack carried it to us: a
            // requester that cannot hear the target directly still learns its refutations.
            let record: Vec<Member> = self.member(relay.target_id).cloned().into_iter().collect();
            self.send_with(relay.requester_address, None, kind, record);
        }
        // Otherwise a late ack of an earlier period: the verdict on it is already taken.
    }

    fn run_gossip(&mut self) {
        if self.now_ms < self.next_gossip_at_ms {
            return;
        }
        self.next_gossip_at_ms = self.now_ms + self.config.gossip_interval_ms;
        if self.broadcasts.is_empty() {
            return;
        }
        let mut peers = self.live_peers_except(self.self_id);
        let count = as_usize(self.config.gossip_fanout).min(peers.len());
        self.rng.choose(&mut peers, count);
        for (peer_id, peer_address) in peers.into_iter().take(count) {
            self.send(peer_address, Some(peer_id), MessageKind::Gossip);
        }
    }

    /// Joins the contact points at whose address no live member is known: sub-clusters that
    /// formed before a contact point came up find it (and through it each other) within a
    /// join interval instead of waiting for a lucky anti-entropy pick. Until a `Sync` arrived,
    /// every contact point is joined, and a member without contact points (say, the first
    /// broker, restarted) joins a random live member it knows of.
    fn run_joins(&mut self) {
        if self.now_ms < self.next_join_at_ms || (self.contact_points.is_empty() && self.synced) {
            return;
        }
        let live: BTreeSet<&str> = self
            .members
            .values()
            .filter(|entry| entry.member.id != self.self_id && !entry.member.state.is_down())
            .map(|entry| entry.member.address.as_str())
            .collect();
        let alone = live.is_empty();
        let synced = self.synced;
        let mut targets: Vec<String> = self
            .contact_points
            .iter()
            .filter(|address| !synced || !live.contains(address.as_str()))
            .cloned()
            .collect();
        if targets.is_empty() && !synced && !alone {
            let index = self.rng.below(live.len());
            targets.extend(live.iter().nth(index).map(|address| (*address).to_owned()));
        }
        if alone {
            self.join_interval_ms = self.config.probe_interval_ms;
        }
        self.next_join_at_ms = self.now_ms + self.join_interval_ms;
        if !alone && !targets.is_empty() {
            self.join_interval_ms = (2 * self.join_interval_ms).min(self.config.sync_interval_ms);
        }
        for address in targets {
            self.send_join(address);
        }
    }

    /// Anti-entropy: a full snapshot from a random known address heals what dissemination
    /// missed, including members that were partitioned away and declared dead on both sides.
    fn run_sync(&mut self) {
        if self.now_ms < self.next_sync_at_ms {
            return;
        }
        self.next_sync_at_ms = self.now_ms + self.config.sync_interval_ms;
        // Every address once: known members (Dead ones too, which is how split sides meet
        // again) and contact points, but not where a member we hold Left was, as a Left member
        // answers with its Left record only.
        let mut left: BTreeSet<&str> = BTreeSet::new();
        let mut candidates: BTreeSet<&str> = BTreeSet::new();
        for entry in self.members.values() {
            if entry.member.id == self.self_id {
                continue;
            }
            if entry.member.state == MemberState::Left {
                left.insert(&entry.member.address);
            } else {
                candidates.insert(&entry.member.address);
            }
        }
        for address in &self.contact_points {
            if !left.contains(address.as_str()) {
                candidates.insert(address);
            }
        }
        if candidates.is_empty() {
            return;
        }
        let index = self.rng.below(candidates.len());
        let address = candidates
            .into_iter()
            .nth(index)
            .expect("the index is below the count")
            .to_owned();
        self.send_join(address);
    }

    /// A `Join` is push-pull: it carries our own record first, then our table (a random
    /// window of it when it exceeds `message_updates_max`), and is answered with the
    /// receiver's table. Either side's news reaches the other in one exchange.
    fn send_join(&mut self, to_address: String) {
        let mut updates = vec![self.local().clone()];
        let others: Vec<&Member> = self
            .members
            .values()
            .map(|entry| &entry.member)
            .filter(|member| member.id != self.self_id)
            .collect();
        let room = as_usize(self.config.message_updates_max) - 1;
        let start = if others.len() > room {
            self.rng.below(others.len())
        } else {
            0
        };
        updates.extend(
            others
                .iter()
                .cycle()
                .skip(start)
                .take(room.min(others.len()))
                .map(|member| (*member).clone()),
        );
        let message = Message {
            sender_id: self.self_id,
            kind: MessageKind::Join,
            updates,
        };
        self.push_transmit(Transmit {
            to_address,
            message,
        });
    }

    fn send_sync(&mut self, to_address: &str) {
        let records: Vec<Member> = self.members().cloned().collect();
        for chunk in records.chunks(as_usize(self.config.message_updates_max)) {
            let message = Message {
                sender_id: self.self_id,
                kind: MessageKind::Sync,
                updates: chunk.to_vec(),
            };
            self.push_transmit(Transmit {
                to_address: to_address.to_owned(),
                message,
            });
        }
    }

    fn live_peers_except(&self, excluded: MemberId) -> Vec<(MemberId, String)> {
        self.members
            .values()
            .filter(|entry| {
                let id = entry.member.id;
                id != self.self_id && id != excluded && !entry.member.state.is_down()
            })
            .map(|entry| (entry.member.id, entry.member.address.clone()))
            .collect()
    }

    fn take_sequence(&mut self) -> u64 {
        self.next_sequence += 1;
        self.next_sequence
    }

    fn send(&mut self, to_address: String, to_id: Option<MemberId>, kind: MessageKind) {
        self.send_with(to_address, to_id, kind, Vec::new());
    }

    /// Sends `kind` carrying `updates` first, then pending updates up to the piggyback limit.
    fn send_with(
        &mut self,
        to_address: String,
        to_id: Option<MemberId>,
        kind: MessageKind,
        mut updates: Vec<Member>,
    ) {
        let limit = as_usize(self.config.piggyback_updates_max).saturating_sub(updates.len());
        self.piggyback(to_id, limit, &mut updates);
        let message = Message {
            sender_id: self.self_id,
            kind,
            updates,
        };
        self.push_transmit(Transmit {
            to_address,
            message,
        });
    }

    /// Appends up to `limit` pending updates: first the recipient's own record when we doubt it
    /// (so it can refute at once), then the least-sent, most recent ones. Members `updates`
    /// already holds are skipped.
    fn piggyback(&mut self, to_id: Option<MemberId>, limit: usize, updates: &mut Vec<Member>) {
        let mut budget = limit;
        if let Some(to_id) = to_id
            && budget > 0
            && let Some(entry) = self.members.get(&to_id)
            && entry.member.state != MemberState::Alive
            && !updates.iter().any(|member| member.id == to_id)
        {
            updates.push(entry.member.clone());
            budget -= 1;
        }
        self.broadcasts
            .sort_by_key(|broadcast| (broadcast.transmits, Reverse(broadcast.order)));
        let mut taken = 0;
        for broadcast in &mut self.broadcasts {
            if taken == budget {
                break;
            }
            if updates.iter().any(|member| member.id == broadcast.id) {
                continue;
            }
            if let Some(entry) = self.members.get(&broadcast.id) {
                updates.push(entry.member.clone());
                broadcast.transmits += 1;
                taken += 1;
            }
        }
        let transmits_max = self.transmits_max();
        self.broadcasts
            .retain(|broadcast| broadcast.transmits < transmits_max);
    }

    /// λ·(log2(n) + 1): enough for an update to reach everyone with high probability.
    fn transmits_max(&self) -> u32 {
        let members = u32::try_from(self.members.len()).expect("members_max is below u32::MAX");
        self.config.retransmit_multiplier * (members.max(1).ilog2() + 1)
    }

    fn broadcast(&mut self, id: MemberId) {
        self.broadcasts.retain(|broadcast| broadcast.id != id);
        self.broadcast_order += 1;
        self.broadcasts.push(Broadcast {
            id,
            transmits: 0,
            order: self.broadcast_order,
        });
    }

    fn push_transmit(&mut self, transmit: Transmit) {
        if self.transmits.len() >= TRANSMITS_QUEUED_MAX {
            self.stats.transmits_dropped += 1;
            return;
        }
        self.transmits.push_back(transmit);
    }

    fn push_event(&mut self, event: MembershipEvent) {
        if self.events.len() >= EVENTS_QUEUED_MAX {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    const SEED: u64 = 0x005E_ED0F_C1A5;

    fn address(id: MemberId) -> String {
        format!("node-{id}")
    }

    fn id_of(address: &str) -> MemberId {
        address
            .strip_prefix("node-")
            .and_then(|id| id.parse().ok())
            .expect("harness addresses are node-<id>")
    }

    /// A deterministic cluster: N cores, a message queue with 1-3 ms latency, a virtual clock,
    /// seeded loss, cut links and stopped nodes. Its own randomness is a separate stream from
    /// the cores' seeds, so changing a fault does not change the cores' choices.
    struct Sim {
        nodes: BTreeMap<MemberId, Swim>,
        stopped: BTreeSet<MemberId>,
        /// Directed links (from, to) that drop everything.
        cut: BTreeSet<(MemberId, MemberId)>,
        /// Nodes whose acks are dropped (their other messages pass).
        acks_dropped_from: BTreeSet<MemberId>,
        loss_per_mille: u64,
        queue: BTreeMap<(u64, u64), (MemberId, MemberId, Message)>,
        queued: u64,
        rng: SplitMix64,
        now_ms: u64,
        events: Vec<(u64, MemberId, MembershipEvent)>,
    }

    impl Sim {
        fn new(count: u64, seed: u64) -> Self {
            Self::with_config(count, seed, &SwimConfig::default())
        }

        fn with_config(count: u64, seed: u64, config: &SwimConfig) -> Self {
            let mut nodes = BTreeMap::new();
            for id in 1..=count {
                let metadata = vec![u8::try_from(id).expect("small ids")];
                let node = Swim::new(config.clone(), id, address(id), metadata, seed ^ id, 0)
                    .expect("valid harness config");
                nodes.insert(id, node);
            }
            Self {
                nodes,
                stopped: BTreeSet::new(),
                cut: BTreeSet::new(),
                acks_dropped_from: BTreeSet::new(),
                loss_per_mille: 0,
                queue: BTreeMap::new(),
                queued: 0,
                rng: SplitMix64::new(seed.rotate_left(17) ^ 0xA5A5),
                now_ms: 0,
                events: Vec::new(),
            }
        }

        /// Every node but the first joins through node 1's address only.
        fn join_all_via_first(&mut self) {
            for (id, node) in &mut self.nodes {
                if *id != 1 {
                    node.join(&[address(1)])
                        .expect("one contact point is valid");
                }
            }
        }

        fn node(&self, id: MemberId) -> &Swim {
            self.nodes.get(&id).expect("node exists")
        }

        fn isolate(&mut self, id: MemberId) {
            for other in self.nodes.keys().copied().filter(|other| *other != id) {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }

        fn drain_outputs(&mut self) {
            for (id, node) in &mut self.nodes {
                while let Some(event) = node.poll_event() {
                    self.events.push((self.now_ms, *id, event));
                }
                while let Some(transmit) = node.poll_transmit() {
                    let to = id_of(&transmit.to_address);
                    let is_ack = matches!(transmit.message.kind, MessageKind::Ack { .. });
                    let lost = self.loss_per_mille > 0
                        && self.rng.below(1000)
                            < usize::try_from(self.loss_per_mille).expect("small");
                    if self.cut.contains(&(*id, to))
                        || (is_ack && self.acks_dropped_from.contains(id))
                        || lost
                    {
                        continue;
                    }
                    let latency_ms = 1 + u64::try_from(self.rng.below(3)).expect("small");
                    self.queued += 1;
                    self.queue.insert(
                        (self.now_ms + latency_ms, self.queued),
                        (*id, to, transmit.message),
                    );
                }
            }
        }

        /// Runs until `done` holds (returns the time) or the clock passes `deadline_ms`.
        fn run_until(&mut self, deadline_ms: u64, done: impl Fn(&Self) -> bool) -> Option<u64> {
            let mut steps = 0_u64;
            loop {
                self.drain_outputs();
                if done(self) {
                    return Some(self.now_ms);
                }
                let next_message = self.queue.keys().next().map_or(u64::MAX, |(at, _)| *at);
                let next_timer = self
                    .nodes
                    .iter()
                    .filter(|(id, _)| !self.stopped.contains(id))
                    .map(|(_, node)| node.poll_timeout())
                    .min()
                    .unwrap_or(u64::MAX);
                let next = next_message.min(next_timer);
                if next > deadline_ms {
                    self.now_ms = deadline_ms;
                    return None;
                }
                // A deadline in the past after a tick would spin here forever.
                assert!(
                    next >= self.now_ms,
                    "poll_timeout {next} is before now {}",
                    self.now_ms
                );
                steps += 1;
                assert!(steps < 10_000_000, "simulation made no progress");
                self.now_ms = next;
                while let Some(entry) = self.queue.first_entry() {
                    if entry.key().0 > self.now_ms {
                        break;
                    }
                    let (from, to, message) = entry.remove();
                    if self.stopped.contains(&to) {
                        continue;
                    }
                    let node = self.nodes.get_mut(&to).expect("destination exists");
                    // Well-formed messages between honest nodes are never rejected.
                    node.handle_message(&address(from), message, self.now_ms)
                        .expect("harness messages are well formed");
                }
                for (id, node) in &mut self.nodes {
                    if !self.stopped.contains(id) && node.poll_timeout() <= self.now_ms {
                        node.handle_tick(self.now_ms);
                    }
                }
            }
        }

        fn run_for(&mut self, duration_ms: u64) {
            let deadline_ms = self.now_ms + duration_ms;
            assert!(self.run_until(deadline_ms, |_| false).is_none());
        }

        /// Every running node sees every running node Alive, and the others not Alive.
        fn converged(&self) -> bool {
            let running: Vec<MemberId> = self
                .nodes
                .keys()
                .copied()
                .filter(|id| !self.stopped.contains(id))
                .collect();
            running.iter().all(|id| {
                let node = self.node(*id);
                running.iter().all(|other| {
                    node.member(*other)
                        .is_some_and(|member| member.state == MemberState::Alive)
                })
            })
        }

        fn everyone_sees(&self, subject: MemberId, state: MemberState) -> bool {
            self.nodes
                .iter()
                .filter(|(id, _)| **id != subject && !self.stopped.contains(id))
                .all(|(_, node)| {
                    node.member(subject)
                        .is_some_and(|member| member.state == state)
                })
        }
    }

    fn converge(count: u64, seed: u64) -> (Sim, u64) {
        let mut sim = Sim::new(count, seed);
        sim.join_all_via_first();
        let at = sim.run_until(30_000, Sim::converged);
        let at = at.unwrap_or_else(|| {
            panic!("{count} nodes did not converge; replay with seed {seed:#x}")
        });
        (sim, at)
    }

    #[test]
    fn splitmix64_matches_reference_output() {
        // First outputs of the reference splitmix64 for seed 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn default_config_is_zeebes_and_valid() {
        let config = SwimConfig::default();
        assert_eq!(config.probe_interval_ms, 1000);
        assert_eq!(config.probe_timeout_ms, 100);
        assert_eq!(config.suspect_probes, 3);
        assert_eq!(config.failure_timeout_ms, 10_000);
        assert_eq!(config.gossip_interval_ms, 250);
        assert_eq!(config.gossip_fanout, 2);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn invalid_config_names_the_field() {
        let config = SwimConfig {
            probe_timeout_ms: 1000,
            ..SwimConfig::default()
        };
        let error = config
            .validate()
            .expect_err("timeout equal to the interval is refused");
        assert!(matches!(
            error,
            Error::InvalidConfig {
                field: "probe_timeout_ms",
                ..
            }
        ));
        assert!(error.to_string().contains("probe_timeout_ms"));

        let config = SwimConfig {
            piggyback_updates_max: 0,
            ..SwimConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(Error::InvalidConfig {
                field: "piggyback_updates_max",
                ..
            })
        ));
        let config = SwimConfig {
            members_max: MEMBERS_LIMIT + 1,
            ..SwimConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(Error::InvalidConfig {
                field: "members_max",
                ..
            })
        ));
        let result = Swim::new(SwimConfig::default(), 1, String::new(), Vec::new(), 1, 0);
        assert!(matches!(
            result,
            Err(Error::InvalidAddress { address_bytes: 0 })
        ));
        let result = Swim::new(SwimConfig::default(), 1, address(1), vec![0; 4097], 1, 0);
        assert!(matches!(
            result,
            Err(Error::MetadataTooLarge { bytes: 4097, .. })
        ));
    }

    #[test]
    fn three_nodes_converge_from_one_contact_point() {
        let (sim, at) = converge(3, SEED);
        assert!(at <= 5_000, "converged only at {at} ms");
        assert!(
            sim.nodes
                .values()
                .all(|node| node.stats().messages_dropped == 0)
        );
    }

    #[test]
    fn five_nodes_converge_from_one_contact_point() {
        let (mut sim, at) = converge(5, SEED);
        assert!(at <= 5_000, "converged only at {at} ms");
        // And stay converged: no false suspicion on a healthy network.
        sim.run_for(30_000);
        assert!(sim.converged());
        let suspicious = sim.events.iter().any(|(_, _, event)| {
            matches!(
                event,
                MembershipEvent::MemberSuspect(_) | MembershipEvent::MemberDead(_)
            )
        });
        assert!(!suspicious, "false suspicion on a healthy network");
    }

    #[test]
    fn stopped_node_is_suspected_then_declared_dead_by_all() {
        let (mut sim, _) = converge(5, SEED);
        sim.run_for(5_000);
        let stopped_at = sim.now_ms;
        sim.stopped.insert(5);
        let config = SwimConfig::default();
        // Each of the 4 others probes it within a round of 4 intervals; suspicion then spreads
        // within a few gossip rounds, and each node's own failure timeout runs from there.
        let bound_ms = 5 * config.probe_interval_ms + config.failure_timeout_ms + 2_000;
        let dead_at = sim
            .run_until(stopped_at + bound_ms, |sim| {
                sim.everyone_sees(5, MemberState::Dead)
            })
            .expect("everyone declares the stopped node dead in time");
        assert!(
            dead_at >= stopped_at + config.failure_timeout_ms,
            "dead too early at {dead_at}"
        );
        for id in 1..=4 {
            let events: Vec<&MembershipEvent> = sim
                .events
                .iter()
                .filter(|(at, node, event)| {
                    *at >= stopped_at && *node == id && event_member(event) == 5
                })
                .map(|(_, _, event)| event)
                .collect();
            assert!(
                matches!(events.first(), Some(MembershipEvent::MemberSuspect(_))),
                "{events:?}"
            );
            assert!(
                matches!(events.last(), Some(MembershipEvent::MemberDead(_))),
                "{events:?}"
            );
        }
        // Nobody else was accused.
        assert!(
            sim.events
                .iter()
                .all(|(_, _, event)| event_member(event) == 5
                    || !matches!(
                        event,
                        MembershipEvent::MemberSuspect(_) | MembershipEvent::MemberDead(_)
                    ))
        );
    }

    fn event_member(event: &MembershipEvent) -> MemberId {
        match event {
            MembershipEvent::MemberAdded(member)
            | MembershipEvent::MemberSuspect(member)
            | MembershipEvent::MemberAlive(member)
            | MembershipEvent::MemberDead(member)
            | MembershipEvent::MemberLeft(member)
            | MembershipEvent::MetadataChanged(member) => member.id,
        }
    }

    #[test]
    fn suspected_node_refutes_and_stays_alive() {
        let (mut sim, _) = converge(3, SEED);
        sim.run_for(2_000);
        let start_ms = sim.now_ms;
        sim.acks_dropped_from.insert(3);
        let suspected = sim.run_until(start_ms + 5_000, |sim| {
            sim.events.iter().any(|(at, _, event)| {
                *at >= start_ms
                    && matches!(event, MembershipEvent::MemberSuspect(member) if member.id == 3)
            })
        });
        assert!(suspected.is_some(), "node 3 was never suspected");
        sim.acks_dropped_from.clear();
        sim.run_for(SwimConfig::default().failure_timeout_ms + 5_000);
        assert!(sim.converged());
        assert!(
            sim.node(3).local().incarnation >= 1,
            "node 3 refuted with a higher incarnation"
        );
        assert!(sim.everyone_sees(3, MemberState::Alive));
        assert!(
            !sim.events
                .iter()
                .any(|(_, _, event)| matches!(event, MembershipEvent::MemberDead(_))),
            "a refuted suspicion must not end in death"
        );
    }

    #[test]
    fn metadata_update_propagates_to_everyone() {
        let (mut sim, _) = converge(5, SEED);
        sim.nodes
            .get_mut(&2)
            .expect("node 2")
            .update_metadata(b"leader:1,3".to_vec())
            .expect("small");
        let start_ms = sim.now_ms;
        let at = sim.run_until(start_ms + 5_000, |sim| {
            sim.nodes.values().all(|node| {
                node.member(2)
                    .is_some_and(|member| member.metadata == b"leader:1,3")
            })
        });
        assert!(at.is_some(), "metadata did not reach everyone");
        for id in [1, 3, 4, 5] {
            assert!(sim.events.iter().any(|(_, node, event)| *node == id
                && matches!(event, MembershipEvent::MetadataChanged(member) if member.id == 2)));
        }
        assert!(sim.converged());
    }

    #[test]
    fn partitioned_node_rejoins_after_heal() {
        let (mut sim, _) = converge(4, SEED);
        sim.isolate(4);
        let config = SwimConfig::default();
        let at = sim.run_until(sim.now_ms + 3 * config.failure_timeout_ms, |sim| {
            sim.everyone_sees(4, MemberState::Dead)
        });
        assert!(at.is_some(), "the isolated node was not declared dead");
        sim.cut.clear();
        let healed_ms = sim.now_ms;
        let at = sim.run_until(healed_ms + 6 * config.sync_interval_ms, Sim::converged);
        assert!(at.is_some(), "the cluster did not heal");
        assert!(
            sim.node(4).local().incarnation >= 1,
            "node 4 came back with a higher incarnation"
        );
    }

    #[test]
    fn graceful_leave_is_seen_by_everyone() {
        let (mut sim, _) = converge(3, SEED);
        sim.nodes.get_mut(&3).expect("node 3").leave();
        let config = SwimConfig::default();
        assert_eq!(
            sim.node(3).poll_timeout(),
            sim.now_ms + config.gossip_interval_ms,
            "the announcement is repeated"
        );
        let at = sim.run_until(sim.now_ms + 100, |sim| {
            sim.everyone_sees(3, MemberState::Left)
        });
        assert!(at.is_some(), "leave was not announced at once");
        let farewell_ms = u64::from(config.retransmit_multiplier) * config.gossip_interval_ms;
        sim.run_for(farewell_ms);
        assert_eq!(sim.node(3).poll_timeout(), u64::MAX, "the farewell is over");
        sim.stopped.insert(3);
        sim.run_for(20_000);
        assert!(sim.everyone_sees(3, MemberState::Left));
        assert!(sim.converged());
    }

    fn lossy_run(seed: u64) -> Vec<(u64, MemberId, MembershipEvent)> {
        let mut sim = Sim::new(5, seed);
        sim.loss_per_mille = 50;
        sim.join_all_via_first();
        sim.run_for(20_000);
        sim.stopped.insert(2);
        sim.run_for(20_000);
        sim.events
    }

    #[test]
    fn same_seed_gives_same_event_sequence() {
        let first = lossy_run(SEED);
        assert!(first.len() > 10, "the run produced almost nothing");
        assert_eq!(first, lossy_run(SEED));
        assert_ne!(first, lossy_run(SEED + 1), "the seed should matter");
    }

    #[test]
    fn lossy_network_still_converges() {
        let mut sim = Sim::new(5, SEED);
        sim.loss_per_mille = 100;
        sim.join_all_via_first();
        assert!(
            sim.run_until(30_000, Sim::converged).is_some(),
            "seed {SEED:#x}"
        );
    }

    fn lone_node() -> Swim {
        Swim::new(SwimConfig::default(), 1, address(1), Vec::new(), SEED, 0).expect("valid")
    }

    fn alive(id: MemberId, incarnation: u64) -> Member {
        Member {
            id,
            address: address(id),
            state: MemberState::Alive,
            incarnation,
            metadata: Vec::new(),
        }
    }

    fn gossip(sender_id: MemberId, updates: Vec<Member>) -> Message {
        Message {
            sender_id,
            kind: MessageKind::Gossip,
            updates,
        }
    }

    #[test]
    fn malformed_messages_are_counted_and_dropped() {
        let mut node = lone_node();
        let config = SwimConfig::default();
        let too_many = (0..=u64::from(config.message_updates_max))
            .map(|id| alive(id + 10, 0))
            .collect();
        let long_address = Member {
            address: "x".repeat(ADDRESS_BYTES_MAX + 1),
            ..alive(2, 0)
        };
        let big_metadata = Member {
            metadata: vec![0; 4097],
            ..alive(2, 0)
        };
        let bad = [
            gossip(2, too_many),
            gossip(2, vec![long_address]),
            gossip(
                2,
                vec![Member {
                    address: String::new(),
                    ..alive(2, 0)
                }],
            ),
            gossip(2, vec![big_metadata]),
            gossip(1, vec![alive(2, 0)]),
            Message {
                sender_id: 2,
                kind: MessageKind::Join,
                updates: vec![alive(3, 0)],
            },
            Message {
                sender_id: 2,
                kind: MessageKind::Join,
                updates: Vec::new(),
            },
            Message {
                sender_id: 2,
                kind: MessageKind::Ping {
                    sequence: 1,
                    target_id: 9,
                },
                updates: vec![alive(2, 0)],
            },
            Message {
                sender_id: 2,
                kind: MessageKind::PingReq {
                    sequence: 1,
                    target_id: 3,
                    target_address: String::new(),
                },
                updates: Vec::new(),
            },
        ];
        let count = u64::try_from(bad.len()).expect("small");
        for message in bad {
            let result = node.handle_message(&address(2), message, 10);
            assert!(matches!(result, Err(Error::MalformedMessage { .. })));
        }
        assert!(
            node.handle_message(&"y".repeat(300), gossip(2, Vec::new()), 10)
                .is_err()
        );
        assert_eq!(node.stats().messages_dropped, count + 1);
        assert_eq!(node.stats().messages_received, count + 1);
        assert_eq!(
            node.members().count(),
            1,
            "nothing from a dropped message was applied"
        );
        assert!(node.poll_transmit().is_none(), "nothing is answered");
        assert!(node.poll_event().is_none());
    }

    #[test]
    fn ping_from_unknown_sender_is_answered() {
        let mut node = lone_node();
        let ping = Message {
            sender_id: 7,
            kind: MessageKind::Ping {
                sequence: 42,
                target_id: 1,
            },
            updates: Vec::new(),
        };
        node.handle_message("somewhere", ping, 5)
            .expect("valid ping");
        let transmit = node.poll_transmit().expect("an ack");
        assert_eq!(transmit.to_address, "somewhere");
        assert_eq!(transmit.message.kind, MessageKind::Ack { sequence: 42 });
    }

    #[test]
    fn incarnation_precedence_rules() {
        let mut node = lone_node();
        let at = |state, incarnation| Member {
            state,
            incarnation,
            ..alive(2, 0)
        };
        let mut apply = |update: Member| {
            node.handle_message(&address(2), gossip(3, vec![update]), 1)
                .expect("valid");
            node.member(2)
                .map(|member| (member.state, member.incarnation))
        };
        assert_eq!(
            apply(at(MemberState::Alive, 5)),
            Some((MemberState::Alive, 5))
        );
        // Suspect(i) beats Alive(j) iff i >= j.
        assert_eq!(
            apply(at(MemberState::Suspect, 4)),
            Some((MemberState::Alive, 5))
        );
        assert_eq!(
            apply(at(MemberState::Suspect, 5)),
            Some((MemberState::Suspect, 5))
        );
        // Alive(i) beats Suspect(j) iff i > j.
        assert_eq!(
            apply(at(MemberState::Alive, 5)),
            Some((MemberState::Suspect, 5))
        );
        assert_eq!(
            apply(at(MemberState::Alive, 6)),
            Some((MemberState::Alive, 6))
        );
        // Dead beats Alive and Suspect of the same incarnation, not of a higher one.
        assert_eq!(
            apply(at(MemberState::Dead, 5)),
            Some((MemberState::Alive, 6))
        );
        assert_eq!(
            apply(at(MemberState::Dead, 6)),
            Some((MemberState::Dead, 6))
        );
        // Nothing but a higher Alive revives a dead member.
        assert_eq!(
            apply(at(MemberState::Suspect, 9)),
            Some((MemberState::Dead, 6))
        );
        assert_eq!(
            apply(at(MemberState::Alive, 6)),
            Some((MemberState::Dead, 6))
        );
        assert_eq!(
            apply(at(MemberState::Alive, 7)),
            Some((MemberState::Alive, 7))
        );
        // An unknown member reported dead leaves no tombstone.
        node.handle_message(
            &address(2),
            gossip(
                3,
                vec![Member {
                    state: MemberState::Dead,
                    ..alive(4, 0)
                }],
            ),
            1,
        )
        .expect("valid");
        assert!(node.member(4).is_none());
    }

    #[test]
    fn own_suspicion_is_refuted_with_higher_incarnation() {
        let mut node = lone_node();
        let suspect_me = Member {
            state: MemberState::Suspect,
            incarnation: 3,
            ..alive(1, 0)
        };
        node.handle_message(&address(2), gossip(2, vec![alive(2, 0), suspect_me]), 1)
            .expect("valid");
        assert_eq!(node.local().incarnation, 4);
        assert_eq!(node.local().state, MemberState::Alive);
        // The refutation is the first thing gossiped to the next peer.
        node.handle_tick(node.poll_timeout());
        let carried = std::iter::from_fn(|| node.poll_transmit()).any(|transmit| {
            transmit
                .message
                .updates
                .iter()
                .any(|member| member.id == 1 && member.incarnation == 4)
        });
        assert!(carried, "the refutation is disseminated");
    }

    #[test]
    fn poll_timeout_bounds_the_next_probe() {
        let mut node = lone_node();
        node.join(&["node-2"]).expect("valid");
        let join = node.poll_transmit().expect("join sent at once");
        assert_eq!(join.to_address, "node-2");
        assert_eq!(join.message.kind, MessageKind::Join);
        assert!(node.poll_timeout() <= SwimConfig::default().gossip_interval_ms);
        let result = node.join(&vec!["a"; CONTACT_POINTS_MAX + 1]);
        assert!(matches!(result, Err(Error::TooManyContactPoints { .. })));
    }

    /// Ticks `node` through `duration_ms` of its own deadlines, answering each of its pings as
    /// member `peer` would (its own record first), and returns everything it sent.
    fn pump(node: &mut Swim, peer: &Member, duration_ms: u64) -> Vec<Transmit> {
        let until_ms = node.poll_timeout() + duration_ms;
        let mut sent = Vec::new();
        while node.poll_timeout() <= until_ms {
            node.handle_tick(node.poll_timeout());
            while let Some(transmit) = node.poll_transmit() {
                if let MessageKind::Ping { sequence, .. } = transmit.message.kind {
                    let ack = Message {
                        sender_id: peer.id,
                        kind: MessageKind::Ack { sequence },
                        updates: vec![peer.clone()],
                    };
                    let now_ms = node.poll_timeout().min(until_ms);
                    node.handle_message(&peer.address, ack, now_ms)
                        .expect("valid ack");
                }
                sent.push(transmit);
            }
        }
        sent
    }

    fn carries(transmit: &Transmit, id: MemberId, incarnation: u64) -> bool {
        transmit
            .message
            .updates
            .iter()
            .any(|member| member.id == id && member.incarnation == incarnation)
    }

    #[test]
    fn stale_suspicion_is_refuted_again() {
        let mut node = lone_node();
        let suspect_me = |incarnation| Member {
            state: MemberState::Suspect,
            incarnation,
            ..alive(1, 0)
        };
        node.handle_message(&address(2), gossip(2, vec![alive(2, 0), suspect_me(0)]), 1)
            .expect("valid");
        assert_eq!(node.local().incarnation, 1, "refuted");
        // Spend every transmission of the refutation.
        let sent = pump(&mut node, &alive(2, 0), 30_000);
        assert!(sent.iter().any(|transmit| carries(transmit, 1, 1)));
        let sent = pump(&mut node, &alive(2, 0), 2_000);
        assert!(
            sent.iter()
                .all(|transmit| transmit.message.kind != MessageKind::Gossip),
            "nothing left to gossip: {sent:?}"
        );
        // Member 2 never heard the refutation and still doubts us at incarnation 0.
        let now_ms = node.poll_timeout();
        node.handle_message(&address(2), gossip(2, vec![suspect_me(0)]), now_ms)
            .expect("valid");
        assert_eq!(node.local().incarnation, 1, "no new incarnation needed");
        let sent = pump(&mut node, &alive(2, 0), 1_000);
        assert!(
            sent.iter().any(|transmit| {
                transmit.message.kind == MessageKind::Gossip && carries(transmit, 1, 1)
            }),
            "the refutation is disseminated again: {sent:?}"
        );
    }

    #[test]
    fn ping_carries_own_record_first() {
        let mut node = lone_node();
        node.handle_message(&address(2), gossip(2, vec![alive(2, 0)]), 1)
            .expect("valid");
        while node.poll_transmit().is_some() {}
        let ping = loop {
            assert!(node.now_ms < 10_000, "no probe");
            node.handle_tick(node.poll_timeout());
            if let Some(ping) = std::iter::from_fn(|| node.poll_transmit())
                .find(|transmit| matches!(transmit.message.kind, MessageKind::Ping { .. }))
            {
                break ping;
            }
        };
        assert_eq!(ping.message.updates.first(), Some(node.local()));
        // The target learns the prober from the ping alone.
        let mut target =
            Swim::new(SwimConfig::default(), 2, address(2), Vec::new(), 3, 0).expect("valid");
        target
            .handle_message(&address(1), ping.message, node.now_ms)
            .expect("valid");
        assert_eq!(target.member(1), Some(node.local()));
    }

    #[test]
    fn doubt_is_answered_with_own_record() {
        let mut node = lone_node();
        let suspect_me = Member {
            state: MemberState::Suspect,
            ..alive(1, 0)
        };
        node.handle_message(&address(2), gossip(2, vec![alive(2, 0), suspect_me]), 1)
            .expect("valid");
        assert_eq!(node.local().incarnation, 1);
        let answer = node.poll_transmit().expect("an answer");
        assert_eq!(answer.to_address, address(2));
        assert_eq!(answer.message.kind, MessageKind::Gossip);
        assert_eq!(answer.message.updates.first(), Some(node.local()));
        assert!(node.poll_transmit().is_none());
        // Agreement needs no answer.
        node.handle_message(&address(2), gossip(2, vec![alive(1, 1), alive(2, 0)]), 2)
            .expect("valid");
        assert!(node.poll_transmit().is_none());
    }

    #[test]
    fn suspects_hear_the_doubt_every_probe_period() {
        let mut node = lone_node();
        let suspect = Member {
            state: MemberState::Suspect,
            ..alive(3, 0)
        };
        let updates = vec![alive(2, 0), alive(4, 0), suspect.clone()];
        node.handle_message(&address(2), gossip(2, updates), 1)
            .expect("valid");
        while node.poll_transmit().is_some() {}
        let config = SwimConfig::default();
        let periods = 5;
        let until_ms = periods * config.probe_interval_ms;
        let mut reminded_at = BTreeSet::new();
        while node.poll_timeout() <= until_ms {
            let now_ms = node.poll_timeout();
            node.handle_tick(now_ms);
            while let Some(transmit) = node.poll_transmit() {
                if transmit.to_address == address(3) {
                    // A gossip carries it first, a probe right after the prober's own record.
                    assert!(
                        transmit
                            .message
                            .updates
                            .iter()
                            .take(2)
                            .any(|member| *member == suspect),
                        "{transmit:?}"
                    );
                    reminded_at.insert(now_ms / config.probe_interval_ms);
                } else if let MessageKind::Ping {
                    sequence,
                    target_id,
                } = transmit.message.kind
                {
                    let ack = Message {
                        sender_id: target_id,
                        kind: MessageKind::Ack { sequence },
                        updates: vec![alive(target_id, 0)],
                    };
                    node.handle_message(&transmit.to_address, ack, now_ms)
                        .expect("valid");
                }
            }
        }
        assert!(
            (1..=periods).all(|period| reminded_at.contains(&period)),
            "every probe period: {reminded_at:?}"
        );
    }

    #[test]
    fn a_member_held_dead_is_told_once() {
        let mut node = lone_node();
        node.handle_message(&address(3), gossip(3, vec![alive(2, 0), alive(3, 0)]), 1)
            .expect("valid");
        while node.poll_transmit().is_some() {}
        let dead = Member {
            state: MemberState::Dead,
            ..alive(2, 0)
        };
        node.handle_message(&address(3), gossip(3, vec![dead.clone()]), 2)
            .expect("valid");
        let told = node.poll_transmit().expect("member 2 is told");
        assert_eq!(told.to_address, address(2));
        assert_eq!(told.message.updates.first(), Some(&dead));
        assert!(node.poll_transmit().is_none());
        // The verdict arriving again changes nothing and tells nobody.
        node.handle_message(&address(3), gossip(3, vec![dead]), 3)
            .expect("valid");
        assert!(node.poll_transmit().is_none());
    }

    #[test]
    fn ack_carries_own_record_first() {
        let mut node = lone_node();
        node.handle_message(&address(2), gossip(2, vec![alive(2, 0)]), 1)
            .expect("valid");
        let ping = Message {
            sender_id: 2,
            kind: MessageKind::Ping {
                sequence: 5,
                target_id: 1,
            },
            updates: Vec::new(),
        };
        while node.poll_transmit().is_some() {}
        node.handle_message(&address(2), ping, 2).expect("valid");
        let ack = node.poll_transmit().expect("an ack");
        assert_eq!(ack.message.kind, MessageKind::Ack { sequence: 5 });
        assert_eq!(ack.message.updates.first(), Some(node.local()));
    }

    #[test]
    fn relayed_ack_carries_the_targets_record() {
        let mut node = lone_node();
        node.handle_message(&address(2), gossip(2, vec![alive(2, 0), alive(3, 0)]), 1)
            .expect("valid");
        while node.poll_transmit().is_some() {}
        let request = Message {
            sender_id: 2,
            kind: MessageKind::PingReq {
                sequence: 9,
                target_id: 3,
                target_address: address(3),
            },
            updates: Vec::new(),
        };
        node.handle_message(&address(2), request, 2).expect("valid");
        let ping = node.poll_transmit().expect("a ping to the target");
        assert_eq!(ping.to_address, address(3));
        let MessageKind::Ping { sequence, .. } = ping.message.kind else {
            panic!("not a ping: {ping:?}");
        };
        // The target refuted a suspicion the requester cannot tell it about directly.
        let ack = Message {
            sender_id: 3,
            kind: MessageKind::Ack { sequence },
            updates: vec![alive(3, 4)],
        };
        node.handle_message(&address(3), ack, 3).expect("valid");
        let relayed = node.poll_transmit().expect("the relayed ack");
        assert_eq!(relayed.to_address, address(2));
        assert_eq!(relayed.message.kind, MessageKind::Ack { sequence: 9 });
        assert_eq!(relayed.message.updates.first(), Some(&alive(3, 4)));
    }

    #[test]
    fn sender_behind_on_itself_is_told_and_refutes() {
        // Member 2 restarted and reused incarnation 5 with new metadata; we hold its old record.
        let mut node = lone_node();
        let old = Member {
            metadata: b"old".to_vec(),
            ..alive(2, 5)
        };
        node.handle_message(&address(3), gossip(3, vec![alive(3, 0), old.clone()]), 1)
            .expect("valid");
        while node.poll_transmit().is_some() {}
        let new = Member {
            metadata: b"new".to_vec(),
            ..alive(2, 5)
        };
        node.handle_message(&address(2), gossip(2, vec![new.clone()]), 2)
            .expect("valid");
        assert_eq!(
            node.member(2),
            Some(&old),
            "an equal incarnation does not win"
        );
        let told = node.poll_transmit().expect("member 2 is told");
        assert_eq!(told.to_address, address(2));
        assert_eq!(told.message.updates.first(), Some(&old));
        assert!(node.poll_transmit().is_none());
        // Member 2's side: a record of itself at its incarnation with other metadata makes it
        // raise its incarnation, and the new record wins everywhere.
        let mut restarted = Swim::new(SwimConfig::default(), 2, address(2), b"new".to_vec(), 7, 0)
            .expect("valid")
            .with_initial_incarnation(5);
        assert_eq!(restarted.local(), &new);
        restarted
            .handle_message(&address(1), told.message, 3)
            .expect("valid");
        assert_eq!(restarted.local().incarnation, 6);
        let refuted = restarted.local().clone();
        node.handle_message(&address(2), gossip(2, vec![refuted.clone()]), 4)
            .expect("valid");
        assert_eq!(node.member(2), Some(&refuted));
        assert!(node.poll_transmit().is_none(), "nothing more to tell");
    }

    #[test]
    fn ack_corrects_a_prober_behind_on_itself() {
        let mut node = lone_node();
        let old = Member {
            metadata: b"old".to_vec(),
            ..alive(2, 5)
        };
        node.handle_message(&address(3), gossip(3, vec![alive(3, 0), old.clone()]), 1)
            .expect("valid");
        while node.poll_transmit().is_some() {}
        let ping = Message {
            sender_id: 2,
            kind: MessageKind::Ping {
                sequence: 4,
                target_id: 1,
            },
            updates: vec![Member {
                metadata: b"new".to_vec(),
                ..alive(2, 5)
            }],
        };
        node.handle_message(&address(2), ping, 2).expect("valid");
        let ack = node.poll_transmit().expect("an ack");
        assert_eq!(ack.message.kind, MessageKind::Ack { sequence: 4 });
        assert_eq!(ack.message.updates[..2], [node.local().clone(), old]);
        assert!(node.poll_transmit().is_none(), "the ack is the only answer");
    }

    #[test]
    fn initial_incarnation_is_announced() {
        let mut node = lone_node().with_initial_incarnation(1_700_000_000_000);
        assert_eq!(node.local().incarnation, 1_700_000_000_000);
        node.join(&[address(2)]).expect("valid");
        let join = node.poll_transmit().expect("a join");
        assert_eq!(join.message.updates.first(), Some(node.local()));
    }

    #[test]
    fn probe_of_a_member_that_left_ends_at_once() {
        let mut node = lone_node();
        node.handle_message(&address(2), gossip(2, vec![alive(2, 0), alive(3, 0)]), 1)
            .expect("valid");
        while node.poll_transmit().is_some() {}
        let mut target_id = None;
        while target_id.is_none() {
            assert!(node.now_ms < 10_000, "no probe");
            node.handle_tick(node.poll_timeout());
            target_id = std::iter::from_fn(|| node.poll_transmit()).find_map(|transmit| {
                match transmit.message.kind {
                    MessageKind::Ping { target_id, .. } => Some(target_id),
                    _ => None,
                }
            });
        }
        let target_id = target_id.expect("checked above");
        let left = Member {
            state: MemberState::Left,
            incarnation: 1,
            ..alive(target_id, 0)
        };
        let other = 5 - target_id;
        let now_ms = node.now_ms + 10;
        node.handle_message(&address(other), gossip(other, vec![left.clone()]), now_ms)
            .expect("valid");
        // Past the probe timeout and the end of the period: no indirect probe, no suspicion.
        let until_ms = now_ms + SwimConfig::default().probe_interval_ms;
        while node.poll_timeout() <= until_ms {
            node.handle_tick(node.poll_timeout());
            while let Some(transmit) = node.poll_transmit() {
                assert!(
                    !matches!(transmit.message.kind, MessageKind::PingReq { .. }),
                    "{transmit:?}"
                );
                assert_ne!(transmit.to_address, address(target_id), "{transmit:?}");
            }
        }
        // Nor does it relay a probe of it: the requester is told why instead.
        let request = Message {
            sender_id: other,
            kind: MessageKind::PingReq {
                sequence: 3,
                target_id,
                target_address: address(target_id),
            },
            updates: Vec::new(),
        };
        node.handle_message(&address(other), request, until_ms)
            .expect("valid");
        let answer = node.poll_transmit().expect("an answer");
        assert_eq!(answer.to_address, address(other));
        assert_eq!(answer.message.kind, MessageKind::Gossip);
        assert_eq!(answer.message.updates.first(), Some(&left));
        assert!(node.poll_transmit().is_none());
    }

    #[test]
    fn left_overrides_dead_at_the_same_or_a_higher_incarnation() {
        let mut node = lone_node();
        let at = |state, incarnation| Member {
            state,
            incarnation,
            ..alive(2, 0)
        };
        let mut apply = |update: Member| {
            node.handle_message(&address(3), gossip(3, vec![alive(3, 0), update]), 1)
                .expect("valid");
            node.member(2)
                .map(|member| (member.state, member.incarnation))
        };
        apply(at(MemberState::Alive, 4));
        assert_eq!(
            apply(at(MemberState::Dead, 4)),
            Some((MemberState::Dead, 4))
        );
        assert_eq!(
            apply(at(MemberState::Left, 3)),
            Some((MemberState::Dead, 4))
        );
        assert_eq!(
            apply(at(MemberState::Left, 4)),
            Some((MemberState::Left, 4))
        );
        // Left is final: no Dead, Suspect or Left overrides it, only a new life does.
        assert_eq!(
            apply(at(MemberState::Dead, 9)),
            Some((MemberState::Left, 4))
        );
        assert_eq!(
            apply(at(MemberState::Left, 9)),
            Some((MemberState::Left, 4))
        );
        assert_eq!(
            apply(at(MemberState::Alive, 5)),
            Some((MemberState::Alive, 5))
        );
        let events: Vec<MembershipEvent> = std::iter::from_fn(|| node.poll_event())
            .filter(|event| matches!(event, MembershipEvent::MemberLeft(member) if member.id == 2))
            .collect();
        assert_eq!(events.len(), 1, "{events:?}");
    }

    #[test]
    fn unknown_contact_points_keep_being_joined_with_the_table() {
        let mut node = lone_node();
        node.join(&[address(2), address(3)]).expect("valid");
        let joins: Vec<Transmit> = std::iter::from_fn(|| node.poll_transmit()).collect();
        assert_eq!(joins.len(), 2);
        // Member 2 answers; member 3 is not up yet.
        let sync = Message {
            sender_id: 2,
            kind: MessageKind::Sync,
            updates: vec![alive(2, 0), alive(4, 0)],
        };
        node.handle_message(&address(2), sync, 5).expect("valid");
        let config = SwimConfig::default();
        let mut join_times = Vec::new();
        let mut sync_times = Vec::new();
        while node.poll_timeout() <= 40_000 {
            let now_ms = node.poll_timeout();
            if now_ms >= node.next_sync_at_ms {
                sync_times.push(now_ms);
            }
            node.handle_tick(now_ms);
            while let Some(transmit) = node.poll_transmit() {
                if let MessageKind::Ping {
                    sequence,
                    target_id,
                } = transmit.message.kind
                {
                    let ack = Message {
                        sender_id: target_id,
                        kind: MessageKind::Ack { sequence },
                        updates: vec![alive(target_id, 0)],
                    };
                    node.handle_message(&transmit.to_address, ack, now_ms)
                        .expect("valid");
                }
                if transmit.message.kind != MessageKind::Join {
                    continue;
                }
                if transmit.to_address == address(3) {
                    // Push-pull: the table rides along, the own record first.
                    let ids: Vec<MemberId> = transmit
                        .message
                        .updates
                        .iter()
                        .map(|member| member.id)
                        .collect();
                    assert_eq!(ids, vec![1, 2, 4]);
                    join_times.push(now_ms);
                } else {
                    assert_eq!(
                        sync_times.last(),
                        Some(&now_ms),
                        "a known contact point is joined only by anti-entropy"
                    );
                }
            }
        }
        // The retries back off by doubling from the probe interval (the first was scheduled
        // while alone) to the sync interval; anti-entropy may pick member 3 as well.
        let retries = [1_000, 2_000, 4_000, 8_000, 16_000, 26_000, 36_000];
        assert!(
            retries.iter().all(|at| join_times.contains(at)),
            "{join_times:?}"
        );
        assert!(
            join_times
                .iter()
                .all(|at| retries.contains(at) || sync_times.contains(at)),
            "{join_times:?} {sync_times:?}"
        );
        // Once member 3 is known alive, only anti-entropy joins anyone, once per sync interval.
        let now_ms = node.poll_timeout();
        node.handle_message(&address(3), gossip(3, vec![alive(3, 0)]), now_ms)
            .expect("valid");
        let until_ms = now_ms + 3 * config.sync_interval_ms;
        let mut joins = 0;
        while node.poll_timeout() <= until_ms {
            let now_ms = node.poll_timeout();
            node.handle_tick(now_ms);
            while let Some(transmit) = node.poll_transmit() {
                match transmit.message.kind {
                    MessageKind::Ping {
                        sequence,
                        target_id,
                    } => {
                        let ack = Message {
                            sender_id: target_id,
                            kind: MessageKind::Ack { sequence },
                            updates: vec![alive(target_id, 0)],
                        };
                        node.handle_message(&transmit.to_address, ack, now_ms)
                            .expect("valid");
                    }
                    MessageKind::Join => joins += 1,
                    _ => {}
                }
            }
        }
        assert_eq!(joins, 3);
    }

    #[test]
    fn contact_points_are_joined_until_a_sync_arrives() {
        let mut node = lone_node();
        node.join(&[address(2)]).expect("valid");
        assert!(node.poll_transmit().is_some(), "the first join");
        // Member 2 is learnt from its ping alone (its answer to the join was lost).
        let ping = Message {
            sender_id: 2,
            kind: MessageKind::Ping {
                sequence: 1,
                target_id: 1,
            },
            updates: vec![alive(2, 0)],
        };
        node.handle_message(&address(2), ping, 5).expect("valid");
        while node.poll_transmit().is_some() {}
        let joins_until = |node: &mut Swim, until_ms: u64| {
            let mut joins = 0;
            while node.poll_timeout() <= until_ms {
                let now_ms = node.poll_timeout();
                node.handle_tick(now_ms);
                while let Some(transmit) = node.poll_transmit() {
                    match transmit.message.kind {
                        MessageKind::Join => joins += 1,
                        MessageKind::Ping { sequence, .. } => {
                            let ack = Message {
                                sender_id: 2,
                                kind: MessageKind::Ack { sequence },
                                updates: vec![alive(2, 0)],
                            };
                            node.handle_message(&address(2), ack, now_ms)
                                .expect("valid");
                        }
                        _ => {}
                    }
                }
            }
            joins
        };
        assert_eq!(joins_until(&mut node, 1_000), 1, "joined again");
        let sync = Message {
            sender_id: 2,
            kind: MessageKind::Sync,
            updates: vec![alive(2, 0)],
        };
        node.handle_message(&address(2), sync, 1_010)
            .expect("valid");
        assert_eq!(
            joins_until(&mut node, 9_000),
            0,
            "a known contact point is no longer joined once a table arrived"
        );
    }

    #[test]
    fn member_without_contact_points_pulls_a_table() {
        let mut node = lone_node();
        let ping = Message {
            sender_id: 2,
            kind: MessageKind::Ping {
                sequence: 1,
                target_id: 1,
            },
            updates: vec![alive(2, 0)],
        };
        node.handle_message(&address(2), ping, 5).expect("valid");
        while node.poll_transmit().is_some() {}
        let mut joins = Vec::new();
        while node.poll_timeout() <= SwimConfig::default().probe_interval_ms {
            node.handle_tick(node.poll_timeout());
            joins.extend(
                std::iter::from_fn(|| node.poll_transmit())
                    .filter(|transmit| transmit.message.kind == MessageKind::Join)
                    .map(|transmit| transmit.to_address),
            );
        }
        assert_eq!(joins, vec![address(2)], "a table is pulled from member 2");
    }

    #[test]
    fn leaver_answers_requests_with_its_left_record() {
        let mut node = lone_node();
        node.handle_message(&address(2), gossip(2, vec![alive(2, 0), alive(3, 0)]), 1)
            .expect("valid");
        while node.poll_transmit().is_some() {}
        node.leave();
        let left = node.local().clone();
        assert_eq!(left.state, MemberState::Left);
        let announced: Vec<String> = std::iter::from_fn(|| node.poll_transmit())
            .map(|transmit| transmit.to_address)
            .collect();
        assert_eq!(announced, vec![address(2), address(3)]);
        let ping = Message {
            sender_id: 2,
            kind: MessageKind::Ping {
                sequence: 8,
                target_id: 1,
            },
            updates: vec![alive(3, 7)],
        };
        node.handle_message(&address(2), ping, 2).expect("valid");
        let ack = node.poll_transmit().expect("an ack");
        assert_eq!(ack.message.kind, MessageKind::Ack { sequence: 8 });
        assert_eq!(ack.message.updates, vec![left.clone()]);
        assert_eq!(node.member(3), Some(&alive(3, 0)), "nothing is merged");
        node.handle_message(&address(3), gossip(3, Vec::new()), 3)
            .expect("valid");
        assert!(node.poll_transmit().is_none(), "gossip is not answered");
        // The announcement is repeated every gossip interval, then the core falls silent.
        let config = SwimConfig::default();
        let mut rounds = 0;
        while node.poll_timeout() != u64::MAX {
            node.handle_tick(node.poll_timeout());
            let sent: Vec<Transmit> = std::iter::from_fn(|| node.poll_transmit()).collect();
            assert_eq!(sent.len(), 2);
            assert!(
                sent.iter()
                    .all(|transmit| transmit.message.updates == vec![left.clone()])
            );
            rounds += 1;
        }
        assert_eq!(rounds, config.retransmit_multiplier);
    }
}
