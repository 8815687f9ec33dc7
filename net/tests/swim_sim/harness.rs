//! The simulated cluster: a millisecond clock, a lossy network, the members, their faults, and
//! the safety invariants checked after every single step of every member.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use sluice_net::swim::{
    Member, MemberId, MemberState, MembershipEvent, Message, MessageKind, Swim, SwimConfig,
    Transmit,
};

use crate::rng::Rng;

/// Where member `id` listens, as `cluster.host` + the default Zeebe gossip port would say.
pub fn address(id: MemberId) -> String {
    format!("10.0.0.{id}:26502")
}

fn id_of(address: &str) -> Option<MemberId> {
    address
        .strip_prefix("10.0.0.")?
        .strip_suffix(":26502")?
        .parse()
        .ok()
}

fn as_index(id: MemberId) -> usize {
    usize::try_from(id).expect("member ids are small")
}

fn as_id(index: usize) -> MemberId {
    MemberId::try_from(index).expect("indexes are small")
}

/// What the network does to every message.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Messages dropped, per mille.
    pub loss_per_mille: u32,
    /// Messages delivered twice (each copy with its own delay), per mille.
    pub duplicate_per_mille: u32,
    /// Messages held back by up to `reorder_extra_ms` more, per mille.
    pub reorder_per_mille: u32,
    /// Extra delay of a held-back message.
    pub reorder_extra_ms: u64,
    /// Per-message delay, uniform in `delay_min_ms..=delay_max_ms`; this alone reorders.
    pub delay_min_ms: u64,
    /// See `delay_min_ms`.
    pub delay_max_ms: u64,
}

impl NetConfig {
    /// A working LAN: 1-20 ms, the given loss, a few duplicates.
    pub fn healthy(loss_per_mille: u32) -> Self {
        Self {
            loss_per_mille,
            duplicate_per_mille: 10,
            reorder_per_mille: 0,
            reorder_extra_ms: 0,
            delay_min_ms: 1,
            delay_max_ms: 20,
        }
    }

    /// A bad network: heavy loss, many duplicates, messages held back by up to half a second.
    pub fn stormy(loss_per_mille: u32) -> Self {
        Self {
            loss_per_mille,
            duplicate_per_mille: 50,
            reorder_per_mille: 100,
            reorder_extra_ms: 500,
            delay_min_ms: 1,
            delay_max_ms: 20,
        }
    }
}

#[derive(Debug)]
struct Envelope {
    from: MemberId,
    to: MemberId,
    message: Message,
}

/// One membership event as the simulation saw it.
#[derive(Clone, Debug)]
pub struct EventRecord {
    pub at_ms: u64,
    pub observer: MemberId,
    pub event: MembershipEvent,
}

/// The member an event is about, and the name of the event.
pub fn event_parts(event: &MembershipEvent) -> (&'static str, &Member) {
    match event {
        MembershipEvent::MemberAdded(member) => ("Added", member),
        MembershipEvent::MemberSuspect(member) => ("Suspect", member),
        MembershipEvent::MemberAlive(member) => ("Alive", member),
        MembershipEvent::MemberDead(member) => ("Dead", member),
        MembershipEvent::MemberLeft(member) => ("Left", member),
        MembershipEvent::MetadataChanged(member) => ("MetadataChanged", member),
    }
}

pub fn kind_name(kind: &MessageKind) -> &'static str {
    match kind {
        MessageKind::Join => "Join",
        MessageKind::Sync => "Sync",
        MessageKind::Ping { .. } => "Ping",
        MessageKind::Ack { .. } => "Ack",
        MessageKind::PingReq { .. } => "PingReq",
        MessageKind::Gossip => "Gossip",
    }
}

fn describe(member: &Member) -> String {
    format!(
        "{:?}({}, {:?})",
        member.state,
        member.incarnation,
        String::from_utf8_lossy(&member.metadata)
    )
}

fn state_letter(state: MemberState) -> char {
    match state {
        MemberState::Alive => 'A',
        MemberState::Suspect => 'S',
        MemberState::Dead => 'D',
        MemberState::Left => 'L',
    }
}

/// Counts the messages that concern one member after a point in time.
#[derive(Debug, Default)]
pub struct Watch {
    pub subject: MemberId,
    /// Messages sent to the subject's address, by (kind, sender).
    pub sent_to: BTreeMap<(&'static str, MemberId), u64>,
    /// `PingReq`s asking someone to probe the subject, by sender.
    pub ping_requests_about: BTreeMap<MemberId, u64>,
}

#[derive(Debug)]
struct Node {
    id: MemberId,
    address: String,
    contact_points: Vec<String>,
    /// `None` before boot and while crashed.
    swim: Option<Swim>,
    /// How many times it was booted.
    life: u32,
    left: bool,
    /// The member table as rebuilt from this life's events only.
    shadow: BTreeMap<MemberId, Member>,
    /// The highest incarnation this life has seen of each member, to check monotonicity.
    seen_incarnation: BTreeMap<MemberId, u64>,
    /// Its own incarnation at its last step in this life.
    own_incarnation: u64,
}

/// Network counters, for the curious.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub blocked: u64,
    pub duplicated: u64,
    pub to_down_member: u64,
}

/// A deterministic cluster of SWIM cores. Everything random comes from named streams of one
/// seed: "network" (delay, loss, duplicates), "nodes" (the cores' own seeds), "topology"
/// (contact points); scenarios draw their faults from a "faults" stream of their own.
#[derive(Debug)]
pub struct Sim {
    pub scenario: &'static str,
    pub seed: u64,
    pub config: SwimConfig,
    pub net: NetConfig,
    pub now_ms: u64,
    nodes: Vec<Node>,
    /// The highest incarnation each member ever had itself, over all its lives.
    max_incarnation: Vec<u64>,
    /// Directed links (from, to) that drop everything.
    blocked: BTreeSet<(MemberId, MemberId)>,
    queue: BTreeMap<(u64, u64), Envelope>,
    queued: u64,
    rng_net: Rng,
    rng_nodes: Rng,
    /// Members nobody may declare Dead (in a healthy network a Dead live member is a bug)...
    pub protected: BTreeSet<MemberId>,
    /// ...unless observer and subject are in different groups (split by a partition).
    pub group: Vec<u32>,
    pub events: Vec<EventRecord>,
    pub watch: Option<Watch>,
    pub net_stats: NetStats,
    violation: Option<String>,
    recent: VecDeque<String>,
    trace: bool,
    trace_messages: bool,
    fingerprint: u64,
    steps: u64,
}

const RECENT_MAX: usize = 60;
/// A guard against a core that keeps asking to be ticked at the same instant.
const STEPS_PER_INSTANT_MAX: u64 = 100_000;
/// A guard against message storms: a run takes at most some 20 000 steps.
const STEPS_MAX: u64 = 2_000_000;

impl Sim {
    /// `count` members, none booted yet. Every member gets the address of member 0 as contact
    /// point; in half of the seeds also a random subset of the others' addresses.
    pub fn new(scenario: &'static str, seed: u64, count: usize, net: NetConfig) -> Self {
        let mut topology = Rng::stream(seed, "topology");
        let extra_contacts = topology.chance(500);
        let nodes = (0..count)
            .map(|index| {
                let id = as_id(index);
                let mut contact_points = vec![address(0)];
                if extra_contacts {
                    for other in 1..count {
                        if topology.chance(300) {
                            contact_points.push(address(as_id(other)));
                        }
                    }
                }
                Node {
                    id,
                    address: address(id),
                    contact_points,
                    swim: None,
                    life: 0,
                    left: false,
                    shadow: BTreeMap::new(),
                    seen_incarnation: BTreeMap::new(),
                    own_incarnation: 0,
                }
            })
            .collect();
        Self {
            scenario,
            seed,
            config: SwimConfig::default(),
            net,
            now_ms: 0,
            nodes,
            max_incarnation: vec![0; count],
            blocked: BTreeSet::new(),
            queue: BTreeMap::new(),
            queued: 0,
            rng_net: Rng::stream(seed, "network"),
            rng_nodes: Rng::stream(seed, "nodes"),
            protected: (0..count).map(as_id).collect(),
            group: vec![0; count],
            events: Vec::new(),
            watch: None,
            net_stats: NetStats::default(),
            violation: None,
            recent: VecDeque::new(),
            trace: std::env::var_os("SWIM_TRACE").is_some(),
            trace_messages: std::env::var("SWIM_TRACE").is_ok_and(|level| level == "2"),
            fingerprint: 0xCBF2_9CE4_8422_2325,
            steps: 0,
        }
    }

    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    pub fn ids(&self) -> impl Iterator<Item = MemberId> + use<> {
        (0..self.nodes.len()).map(as_id)
    }

    /// Booted, not crashed, not left.
    pub fn is_live(&self, id: MemberId) -> bool {
        let node = &self.nodes[as_index(id)];
        node.swim.is_some() && !node.left
    }

    pub fn live_ids(&self) -> Vec<MemberId> {
        self.ids().filter(|id| self.is_live(*id)).collect()
    }

    pub fn swim(&self, id: MemberId) -> Option<&Swim> {
        self.nodes[as_index(id)].swim.as_ref()
    }

    /// What `observer` currently believes about `subject`.
    pub fn view(&self, observer: MemberId, subject: MemberId) -> Option<&Member> {
        self.swim(observer)?.member(subject)
    }

    pub fn is_contact_point_of(&self, of: MemberId, subject: MemberId) -> bool {
        self.nodes[as_index(of)]
            .contact_points
            .contains(&address(subject))
    }

    /// Messages delivered plus ticks so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// A digest of every event, to compare runs.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    // ---------------------------------------------------------------- faults and operations

    fn note(&mut self, line: String) {
        if self.trace {
            println!("{line}");
        }
        if self.recent.len() == RECENT_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    /// Starts (or restarts) a member with a fresh core: incarnation 0, the given metadata, a
    /// new seed, then `join` with its contact points, as a broker process would.
    pub fn boot(&mut self, id: MemberId, metadata: Vec<u8>) {
        let seed = self.rng_nodes.next_u64();
        let now_ms = self.now_ms;
        let config = self.config.clone();
        let node = &mut self.nodes[as_index(id)];
        let mut swim = Swim::new(config, id, node.address.clone(), metadata, seed, now_ms)
            .expect("the simulation's config, address and metadata are valid");
        swim.join(&node.contact_points)
            .expect("the simulation's contact points are valid");
        node.swim = Some(swim);
        node.life += 1;
        node.left = false;
        node.shadow.clear();
        node.seen_incarnation.clear();
        node.own_incarnation = 0;
        let life = node.life;
        self.note(format!("{:>7} boot {id} (life {life})", self.now_ms));
        self.after_step(id);
    }

    /// Stops a member at once: its core is dropped, messages to it are lost from now on.
    pub fn crash(&mut self, id: MemberId) {
        self.nodes[as_index(id)].swim = None;
        self.note(format!("{:>7} crash {id}", self.now_ms));
    }

    pub fn leave(&mut self, id: MemberId) {
        self.nodes[as_index(id)]
            .swim
            .as_mut()
            .expect("only a running member leaves")
            .leave();
        self.nodes[as_index(id)].left = true;
        self.note(format!("{:>7} leave {id}", self.now_ms));
        self.after_step(id);
    }

    pub fn update_metadata(&mut self, id: MemberId, metadata: Vec<u8>) {
        self.note(format!("{:>7} metadata {id} {metadata:?}", self.now_ms));
        self.nodes[as_index(id)]
            .swim
            .as_mut()
            .expect("only a running member updates its metadata")
            .update_metadata(metadata)
            .expect("small metadata on a member that did not leave");
        self.after_step(id);
    }

    /// Cuts every link between `side` and the rest, both ways; the sides become groups.
    pub fn partition(&mut self, side: &BTreeSet<MemberId>) {
        for a in self.ids() {
            for b in self.ids() {
                if side.contains(&a) != side.contains(&b) {
                    self.blocked.insert((a, b));
                }
            }
            self.group[as_index(a)] = u32::from(side.contains(&a));
        }
        self.note(format!("{:>7} partition {side:?} | rest", self.now_ms));
    }

    /// Drops everything `from` sends to `to` (and nothing the other way).
    pub fn cut(&mut self, from: MemberId, to: MemberId) {
        self.blocked.insert((from, to));
        self.note(format!("{:>7} cut {from} -> {to}", self.now_ms));
    }

    /// Restores every link (messages lost meanwhile stay lost); groups merge again.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.group.fill(0);
        self.note(format!("{:>7} heal", self.now_ms));
    }

    /// Delivers `message` as if `from` had sent it to `to` (for tests of the checks).
    pub fn inject(&mut self, from: MemberId, to: MemberId, message: Message) {
        self.enqueue(from, to, message, 1);
    }

    pub fn start_watch(&mut self, subject: MemberId) {
        self.watch = Some(Watch {
            subject,
            ..Watch::default()
        });
    }

    // ---------------------------------------------------------------- the event loop

    /// Runs until `done` holds (returns the time) or the clock reaches `deadline_ms` (returns
    /// `None`, as it also does as soon as an invariant is broken: see [`Sim::check`]).
    pub fn run_until(&mut self, deadline_ms: u64, done: impl Fn(&Self) -> bool) -> Option<u64> {
        let mut instant_steps = 0_u64;
        loop {
            if self.violation.is_some() {
                return None;
            }
            if done(self) {
                return Some(self.now_ms);
            }
            let next_message = self.queue.first_key_value().map(|(key, _)| key.0);
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|node| {
                    node.swim
                        .as_ref()
                        .map(|swim| (swim.poll_timeout(), node.id))
                })
                .min();
            let (at, timer) = match (next_message, next_timer) {
                (Some(message_at), Some((timer_at, _))) if message_at <= timer_at => {
                    (message_at, None)
                }
                (_, Some((timer_at, id))) => (timer_at, Some(id)),
                (Some(message_at), None) => (message_at, None),
                (None, None) => (u64::MAX, None),
            };
            if at > deadline_ms {
                self.now_ms = self.now_ms.max(deadline_ms);
                return None;
            }
            let at = at.max(self.now_ms);
            if at == self.now_ms {
                instant_steps += 1;
                if instant_steps > STEPS_PER_INSTANT_MAX {
                    self.fail(&format!(
                        "no progress: {STEPS_PER_INSTANT_MAX} steps at the same instant"
                    ));
                    continue;
                }
            } else {
                instant_steps = 0;
            }
            self.now_ms = at;
            self.steps += 1;
            if self.steps > STEPS_MAX {
                self.fail(&format!(
                    "more than {STEPS_MAX} steps: a message storm ({} messages queued)",
                    self.queue.len()
                ));
                continue;
            }
            match timer {
                Some(id) => self.tick(id),
                None => self.deliver_next(),
            }
        }
    }

    /// Runs for `duration_ms`; stops early with the report of the first broken invariant.
    pub fn run_for(&mut self, duration_ms: u64) -> Result<(), String> {
        let deadline_ms = self.now_ms + duration_ms;
        self.run_until(deadline_ms, |_| false);
        self.check()
    }

    fn tick(&mut self, id: MemberId) {
        let now_ms = self.now_ms;
        let swim = self.nodes[as_index(id)]
            .swim
            .as_mut()
            .expect("only running members have timers");
        swim.handle_tick(now_ms);
        let next = swim.poll_timeout();
        if next <= now_ms {
            self.fail(&format!(
                "member {id}: after handle_tick({now_ms}) poll_timeout is {next}, not later"
            ));
        }
        self.after_step(id);
    }

    fn deliver_next(&mut self) {
        let Some((_, envelope)) = self.queue.pop_first() else {
            return;
        };
        let Envelope { from, to, message } = envelope;
        let now_ms = self.now_ms;
        let Some(swim) = self.nodes[as_index(to)].swim.as_mut() else {
            self.net_stats.to_down_member += 1;
            return;
        };
        self.net_stats.delivered += 1;
        let kind = kind_name(&message.kind);
        if self.trace_messages {
            let updates: Vec<String> = message
                .updates
                .iter()
                .map(|member| {
                    format!(
                        "{}{}{}",
                        member.id,
                        state_letter(member.state),
                        member.incarnation
                    )
                })
                .collect();
            println!(
                "{now_ms:>7}   {from} -> {to} {:?} [{}]",
                message.kind,
                updates.join(" ")
            );
        }
        if let Err(error) = swim.handle_message(&address(from), message, now_ms) {
            self.fail(&format!(
                "member {to} rejected a {kind} from {from}, but every simulated member is \
                 honest: {error:?}"
            ));
        }
        self.after_step(to);
    }

    fn enqueue(&mut self, from: MemberId, to: MemberId, message: Message, copies: u32) {
        for _ in 1..copies {
            self.enqueue_copy(from, to, message.clone());
        }
        self.enqueue_copy(from, to, message);
    }

    fn enqueue_copy(&mut self, from: MemberId, to: MemberId, message: Message) {
        let mut delay_ms = self
            .rng_net
            .range(self.net.delay_min_ms, self.net.delay_max_ms);
        if self.rng_net.chance(self.net.reorder_per_mille) {
            delay_ms += self.rng_net.range(0, self.net.reorder_extra_ms);
        }
        self.queued += 1;
        self.queue.insert(
            (self.now_ms + delay_ms, self.queued),
            Envelope { from, to, message },
        );
    }

    fn send(&mut self, from: MemberId, transmit: Transmit) {
        let Transmit {
            to_address,
            message,
        } = transmit;
        let kind = kind_name(&message.kind);
        let Some(to) = id_of(&to_address).filter(|to| as_index(*to) < self.nodes.len()) else {
            self.fail(&format!(
                "member {from} sends a {kind} to {to_address:?}, which is no member's address"
            ));
            return;
        };
        if to == from {
            self.fail(&format!("member {from} sends a {kind} to itself"));
            return;
        }
        if message.sender_id != from {
            self.fail(&format!(
                "member {from} sends a {kind} signed as member {}",
                message.sender_id
            ));
            return;
        }
        if let Some(watch) = &mut self.watch {
            let mut noted = None;
            if to == watch.subject {
                *watch.sent_to.entry((kind, from)).or_default() += 1;
                noted = Some(format!(
                    "{:>7} {from} sends {kind} to watched {to}",
                    self.now_ms
                ));
            }
            if let MessageKind::PingReq { target_id, .. } = &message.kind
                && *target_id == watch.subject
            {
                *watch.ping_requests_about.entry(from).or_default() += 1;
                noted = Some(format!(
                    "{:>7} {from} sends PingReq about watched {target_id} to {to}",
                    self.now_ms
                ));
            }
            if let Some(line) = noted {
                self.note(line);
            }
        }
        self.net_stats.sent += 1;
        if self.blocked.contains(&(from, to)) {
            self.net_stats.blocked += 1;
            return;
        }
        if self.rng_net.chance(self.net.loss_per_mille) {
            self.net_stats.lost += 1;
            return;
        }
        let copies = if self.rng_net.chance(self.net.duplicate_per_mille) {
            self.net_stats.duplicated += 1;
            2
        } else {
            1
        };
        self.enqueue(from, to, message, copies);
    }

    // ---------------------------------------------------------------- the invariants

    fn fail(&mut self, reason: &str) {
        if self.violation.is_none() {
            let line = format!("{:>7} VIOLATION {reason}", self.now_ms);
            self.note(line);
            self.violation = Some(format!("at {} ms: {reason}", self.now_ms));
        }
    }

    /// Drains what member `id` produced and checks it and the member's state.
    fn after_step(&mut self, id: MemberId) {
        let Some(swim) = self.nodes[as_index(id)].swim.as_mut() else {
            return;
        };
        let transmits: Vec<Transmit> = std::iter::from_fn(|| swim.poll_transmit()).collect();
        let events: Vec<MembershipEvent> = std::iter::from_fn(|| swim.poll_event()).collect();
        for event in events {
            self.check_event(id, event);
        }
        self.check_member(id);
        for transmit in transmits {
            self.send(id, transmit);
        }
    }

    fn check_event(&mut self, observer: MemberId, event: MembershipEvent) {
        let (name, record) = event_parts(&event);
        let subject = record.id;
        let line = format!(
            "{:>7} {observer} sees {subject} {name} (inc {}, {:?})",
            self.now_ms,
            record.incarnation,
            String::from_utf8_lossy(&record.metadata)
        );
        self.fingerprint = line.bytes().fold(self.fingerprint, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3)
        });
        self.note(line);
        let problem = self.event_problem(observer, &event);
        if let Some(problem) = problem {
            self.fail(&format!(
                "member {observer}: {name} event about {subject}: {problem}"
            ));
        }
        let record = record.clone();
        self.nodes[as_index(observer)]
            .shadow
            .insert(subject, record);
        self.events.push(EventRecord {
            at_ms: self.now_ms,
            observer,
            event,
        });
    }

    fn event_problem(&self, observer: MemberId, event: &MembershipEvent) -> Option<String> {
        let (_, record) = event_parts(event);
        let subject = record.id;
        if subject == observer {
            return Some("events about the local member are not allowed".into());
        }
        if as_index(subject) >= self.nodes.len() {
            return Some("no such member exists".into());
        }
        let previous = self.nodes[as_index(observer)].shadow.get(&subject);
        let state_fits = match event {
            MembershipEvent::MemberAdded(_) | MembershipEvent::MetadataChanged(_) => {
                !record.state.is_down()
            }
            MembershipEvent::MemberSuspect(_) => record.state == MemberState::Suspect,
            MembershipEvent::MemberAlive(_) => record.state == MemberState::Alive,
            MembershipEvent::MemberDead(_) => record.state == MemberState::Dead,
            MembershipEvent::MemberLeft(_) => record.state == MemberState::Left,
        };
        if !state_fits {
            return Some(format!("carries state {:?}", record.state));
        }
        match (event, previous) {
            (MembershipEvent::MemberAdded(_), Some(_)) => {
                return Some("the member was already known".into());
            }
            (MembershipEvent::MemberAdded(_), None) => return None,
            (_, None) => return Some("the member was never added".into()),
            (_, Some(previous)) => {
                if record.incarnation < previous.incarnation {
                    return Some(format!(
                        "incarnation went back from {} to {}",
                        previous.incarnation, record.incarnation
                    ));
                }
                let repeated = match event {
                    MembershipEvent::MemberSuspect(_) => previous.state == MemberState::Suspect,
                    MembershipEvent::MemberAlive(_) => previous.state == MemberState::Alive,
                    MembershipEvent::MemberDead(_) => previous.state.is_down(),
                    // Left overrides Dead (the member said so itself), never the reverse.
                    MembershipEvent::MemberLeft(_) => previous.state == MemberState::Left,
                    _ => false,
                };
                if repeated {
                    return Some(format!("the member was already {:?}", previous.state));
                }
            }
        }
        if let MembershipEvent::MemberLeft(_) = event
            && !self.nodes[as_index(subject)].left
        {
            return Some("that member never left".into());
        }
        if let MembershipEvent::MemberDead(_) = event
            && self.protected.contains(&subject)
            && self.group[as_index(observer)] == self.group[as_index(subject)]
            && self.is_live(subject)
        {
            return Some(format!(
                "false Dead: member {subject} is running and reachable (loss {}‰)",
                self.net.loss_per_mille
            ));
        }
        None
    }

    #[allow(clippy::too_many_lines)]
    fn check_member(&mut self, id: MemberId) {
        let index = as_index(id);
        let node = &self.nodes[index];
        let Some(swim) = node.swim.as_ref() else {
            return;
        };
        let mut problems = Vec::new();
        let local = swim.local();
        let expected_state = if node.left {
            MemberState::Left
        } else {
            MemberState::Alive
        };
        if local.id != id || local.address != node.address {
            problems.push(format!("its own record is {}@{}", local.id, local.address));
        }
        if local.state != expected_state {
            problems.push(format!(
                "sees itself {:?}, expected {expected_state:?}",
                local.state
            ));
        }
        if local.incarnation < node.own_incarnation {
            problems.push(format!(
                "its own incarnation went back from {} to {}",
                node.own_incarnation, local.incarnation
            ));
        }
        let own_incarnation = local.incarnation;
        let stats = swim.stats();
        if stats.messages_dropped != 0
            || stats.transmits_dropped != 0
            || stats.events_dropped != 0
            || stats.members_rejected != 0
        {
            problems.push(format!("dropped something: {stats:?}"));
        }
        let mut listed = 0_usize;
        let mut seen = Vec::new();
        for member in swim.members() {
            if member.id == id {
                continue;
            }
            listed += 1;
            let Some(max_incarnation) = self.max_incarnation.get(as_index(member.id)) else {
                problems.push(format!("lists member {}, which does not exist", member.id));
                continue;
            };
            if member.incarnation > *max_incarnation {
                problems.push(format!(
                    "sees member {} at incarnation {}, above any it ever had ({max_incarnation})",
                    member.id, member.incarnation
                ));
            }
            if member.address != address(member.id) {
                problems.push(format!(
                    "sees member {} at address {}",
                    member.id, member.address
                ));
            }
            if let Some(before) = node.seen_incarnation.get(&member.id)
                && member.incarnation < *before
            {
                problems.push(format!(
                    "its view of member {} went back from incarnation {before} to {}",
                    member.id, member.incarnation
                ));
            }
            seen.push((member.id, member.incarnation));
            match node.shadow.get(&member.id) {
                None => problems.push(format!(
                    "lists member {} but never emitted MemberAdded for it",
                    member.id
                )),
                Some(shadow) if shadow.state != member.state => problems.push(format!(
                    "member {} is {:?} but the last event said {:?}",
                    member.id, member.state, shadow.state
                )),
                Some(shadow) if shadow.metadata != member.metadata => problems.push(format!(
                    "member {} has metadata {:?} but the last event said {:?}",
                    member.id, member.metadata, shadow.metadata
                )),
                Some(_) => {}
            }
        }
        if listed != node.shadow.len() {
            problems.push(format!(
                "lists {listed} other members, its events announced {}",
                node.shadow.len()
            ));
        }
        let node = &mut self.nodes[index];
        node.own_incarnation = own_incarnation;
        node.seen_incarnation.extend(seen);
        self.max_incarnation[index] = self.max_incarnation[index].max(own_incarnation);
        if let Some(problem) = problems.into_iter().next() {
            self.fail(&format!("member {id} {problem}"));
        }
    }

    // ---------------------------------------------------------------- checks for scenarios

    /// `Err` with the first broken invariant and the recent history, if any.
    pub fn check(&self) -> Result<(), String> {
        match &self.violation {
            None => Ok(()),
            Some(violation) => Err(self.failure(violation)),
        }
    }

    /// A failure report: what went wrong, the views, and the last events and faults.
    pub fn failure(&self, what: &str) -> String {
        let mut report = format!(
            "[{} seed {} n={} loss={}‰] {what}\n  views (row: observer; A/S/D/L + incarnation, \
             '-' unknown, '*' self, 'x' down):\n{}",
            self.scenario,
            self.seed,
            self.nodes.len(),
            self.net.loss_per_mille,
            self.describe_views()
        );
        let live = self.live_ids();
        let mut mismatches = 0;
        for observer in &live {
            for subject in &live {
                let Some(own) = self.swim(*subject).map(Swim::local) else {
                    continue;
                };
                let view = self.view(*observer, *subject);
                if observer != subject && view != Some(own) && mismatches < 10 {
                    mismatches += 1;
                    let _ = writeln!(
                        report,
                        "  {observer} sees {subject} as {}, its own record is {}",
                        view.map_or_else(|| "unknown".to_owned(), describe),
                        describe(own)
                    );
                }
            }
        }
        report.push_str("  recent:\n");
        for line in &self.recent {
            let _ = writeln!(report, "    {line}");
        }
        report
    }

    pub fn describe_views(&self) -> String {
        let mut text = String::new();
        for observer in self.ids() {
            let _ = write!(text, "    {observer:>2}:");
            let Some(swim) = self.swim(observer) else {
                let _ = writeln!(text, " x (down)");
                continue;
            };
            for subject in self.ids() {
                if subject == observer {
                    let local = swim.local();
                    let _ = write!(
                        text,
                        " *{}{:<3}",
                        state_letter(local.state),
                        local.incarnation
                    );
                    continue;
                }
                match swim.member(subject) {
                    Some(member) => {
                        let _ = write!(
                            text,
                            "  {}{:<3}",
                            state_letter(member.state),
                            member.incarnation
                        );
                    }
                    None => {
                        let _ = write!(text, "  -   ");
                    }
                }
            }
            let _ = writeln!(text);
        }
        text
    }

    /// Every live member sees every other live member Alive.
    pub fn all_alive(&self) -> bool {
        let live = self.live_ids();
        live.iter().all(|observer| {
            live.iter().all(|subject| {
                observer == subject
                    || self
                        .view(*observer, *subject)
                        .is_some_and(|member| member.state == MemberState::Alive)
            })
        })
    }

    /// Every live member's view of every other live member equals that member's own record
    /// (state, incarnation and metadata): full convergence.
    pub fn consistent(&self) -> bool {
        let live = self.live_ids();
        live.iter().all(|observer| {
            live.iter().all(|subject| {
                observer == subject
                    || self
                        .swim(*subject)
                        .is_some_and(|swim| self.view(*observer, *subject) == Some(swim.local()))
            })
        })
    }

    /// Every live member but `subject` sees `subject` in a state `accept` takes.
    pub fn all_see(&self, subject: MemberId, accept: impl Fn(&Member) -> bool) -> bool {
        self.live_ids()
            .into_iter()
            .filter(|observer| *observer != subject)
            .all(|observer| self.view(observer, subject).is_some_and(&accept))
    }

    /// The first event matching `select` seen by `observer` at or after `since_ms`.
    pub fn first_event(
        &self,
        observer: MemberId,
        since_ms: u64,
        select: impl Fn(&MembershipEvent) -> bool,
    ) -> Option<&EventRecord> {
        self.events.iter().find(|record| {
            record.observer == observer && record.at_ms >= since_ms && select(&record.event)
        })
    }
}
