//! The seeded half of the chaos test: the seed and how long to run (from the environment), the
//! command that replays them, and the fault schedule the seed draws.
//!
//! The schedule is a pure function of the seed: [`Schedule::new`] then [`Iterator::next`] gives
//! the same faults in the same order on every machine. Each property of a fault (the healthy
//! gap before it, its broker, its kind, its length) comes from its own [`Rng`] stream, so a new
//! fault kind or range changes one stream and leaves the others' draws alone. What the seed does
//! not fix is the interleaving of those faults with the workload: brokers and clients are real
//! processes and tasks, scheduled by the kernel.

use std::ops::RangeInclusive;
use std::time::Duration;

/// The seed variable; unset, the seed is random.
pub const SEED_VAR: &str = "SLUICE_CHAOS_SEED";
/// Seconds of faults; unset, [`DEFAULT_SECS`].
pub const SECS_VAR: &str = "SLUICE_CHAOS_SECS";
/// Seconds of faults of the default run (the one CI runs).
pub const DEFAULT_SECS: u64 = 60;
/// The longest run the variable may ask for (a day): a bound, not a suggestion.
const SECS_MAX: u64 = 24 * 60 * 60;

/// Healthy time between the end of one fault (its broker serving and caught up) and the next.
pub const GAP: RangeInclusive<Duration> = Duration::from_secs(2)..=Duration::from_secs(6);
/// How long a broker stays dead after `kill -9` before it is started again.
pub const DEAD: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(8);
/// How long a broker stays frozen (SIGSTOP) before SIGCONT.
pub const FROZEN: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(6);

/// What the run was asked for.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Draws the fault schedule.
    pub seed: u64,
    /// How long faults are injected (the whole test runs longer: start-up, drain, checks).
    pub chaos: Duration,
}

impl Settings {
    /// Reads [`SEED_VAR`] and [`SECS_VAR`]; a value that does not parse fails the test.
    #[must_use]
    pub fn from_env() -> Settings {
        let seed = match std::env::var(SEED_VAR) {
            Ok(text) => text.trim().parse::<u64>().unwrap_or_else(|error| {
                panic!("{SEED_VAR}={text:?} is not a decimal u64: {error}")
            }),
            Err(std::env::VarError::NotPresent) => random_seed(),
            Err(error) => panic!("{SEED_VAR}: {error}"),
        };
        let secs = match std::env::var(SECS_VAR) {
            Ok(text) => text.trim().parse::<u64>().unwrap_or_else(|error| {
                panic!("{SECS_VAR}={text:?} is not a whole number of seconds: {error}")
            }),
            Err(std::env::VarError::NotPresent) => DEFAULT_SECS,
            Err(error) => panic!("{SECS_VAR}: {error}"),
        };
        assert!(
            (1..=SECS_MAX).contains(&secs),
            "{SECS_VAR}={secs}: expected 1 to {SECS_MAX} seconds"
        );
        Settings {
            seed,
            chaos: Duration::from_secs(secs),
        }
    }

    /// The command that runs this seed for this long again.
    #[must_use]
    pub fn replay_command(&self) -> String {
        format!(
            "{SEED_VAR}={} {SECS_VAR}={} cargo test --release -p sluice-broker --test \
             chaos_workload -- --nocapture",
            self.seed,
            self.chaos.as_secs()
        )
    }
}

/// 64 bits from the operating system for a seed nobody chose.
fn random_seed() -> u64 {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .expect("reading /dev/urandom for a seed");
    u64::from_le_bytes(bytes)
}

/// The purposes that draw from the seed, one [`Rng`] stream each.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Gap = 1,
    Broker = 2,
    Kind = 3,
    Length = 4,
}

/// splitmix64: a small generator with a full 2^64 period whose outputs pass `BigCrush`; plenty
/// for drawing a fault schedule, and a few lines anyone can check.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    /// The stream of `seed` for `stream`: the seed mixed with the stream's number, so streams
    /// of one seed, and equal streams of nearby seeds, do not overlap in practice.
    fn stream(seed: u64, stream: Stream) -> Rng {
        let mut mixer = Rng {
            state: seed ^ (stream as u64).wrapping_mul(Self::GOLDEN_GAMMA.rotate_left(17)),
        };
        Rng {
            state: mixer.next_u64(),
        }
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::GOLDEN_GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0), by Lemire's multiply-shift; its bias, below
    /// `bound / 2^64`, does not matter here.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "an empty range");
        let wide = u128::from(self.next_u64()) * u128::from(bound);
        u64::try_from(wide >> 64).expect("the high half of a 128-bit product fits")
    }

    /// A duration in `range`, in whole milliseconds.
    pub fn duration_in(&mut self, range: &RangeInclusive<Duration>) -> Duration {
        let low = millis(*range.start());
        let high = millis(*range.end());
        assert!(low <= high, "an empty range {range:?}");
        Duration::from_millis(low + self.below(high - low + 1))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).expect("durations of seconds")
}

/// How a broker is hurt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// `kill -9`, then started again after the fault's length.
    Kill,
    /// SIGSTOP, then SIGCONT after the fault's length.
    Freeze,
}

impl FaultKind {
    /// Its name in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill -9",
            FaultKind::Freeze => "SIGSTOP",
        }
    }
}

/// One drawn fault.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// Healthy time before it.
    pub gap: Duration,
    /// The broker (its position in the cluster).
    pub broker: usize,
    /// What is done to it.
    pub kind: FaultKind,
    /// How long it stays dead or frozen.
    pub length: Duration,
}

/// The endless fault schedule of one seed over `brokers` brokers.
#[derive(Debug, Clone)]
pub struct Schedule {
    gaps: Rng,
    brokers: Rng,
    kinds: Rng,
    lengths: Rng,
    broker_count: u64,
}

impl Schedule {
    /// The schedule `seed` draws for `broker_count` brokers.
    #[must_use]
    pub fn new(seed: u64, broker_count: usize) -> Schedule {
        assert!(broker_count > 0, "a cluster has brokers");
        Schedule {
            gaps: Rng::stream(seed, Stream::Gap),
            brokers: Rng::stream(seed, Stream::Broker),
            kinds: Rng::stream(seed, Stream::Kind),
            lengths: Rng::stream(seed, Stream::Length),
            broker_count: u64::try_from(broker_count).expect("few brokers"),
        }
    }
}

impl Iterator for Schedule {
    type Item = Fault;

    fn next(&mut self) -> Option<Fault> {
        let gap = self.gaps.duration_in(&GAP);
        let broker = usize::try_from(self.brokers.below(self.broker_count)).expect("few brokers");
        let kind = if self.kinds.below(2) == 0 {
            FaultKind::Kill
        } else {
            FaultKind::Freeze
        };
        let length = match kind {
            FaultKind::Kill => self.lengths.duration_in(&DEAD),
            FaultKind::Freeze => self.lengths.duration_in(&FROZEN),
        };
        Some(Fault {
            gap,
            broker,
            kind,
            length,
        })
    }
}

#[test]
fn one_seed_draws_one_schedule() {
    let first: Vec<String> = Schedule::new(7, 3)
        .take(50)
        .map(|fault| format!("{fault:?}"))
        .collect();
    let again: Vec<String> = Schedule::new(7, 3)
        .take(50)
        .map(|fault| format!("{fault:?}"))
        .collect();
    assert_eq!(first, again);
    let other: Vec<String> = Schedule::new(8, 3)
        .take(50)
        .map(|fault| format!("{fault:?}"))
        .collect();
    assert_ne!(first, other);
}

#[test]
fn draws_stay_in_their_ranges_and_cover_them() {
    let faults: Vec<Fault> = Schedule::new(42, 3).take(2_000).collect();
    for fault in &faults {
        assert!(GAP.contains(&fault.gap), "{fault:?}");
        assert!(fault.broker < 3, "{fault:?}");
        let range = match fault.kind {
            FaultKind::Kill => &DEAD,
            FaultKind::Freeze => &FROZEN,
        };
        assert!(range.contains(&fault.length), "{fault:?}");
    }
    for broker in 0..3 {
        assert!(faults.iter().any(|fault| fault.broker == broker));
    }
    for kind in [FaultKind::Kill, FaultKind::Freeze] {
        assert!(faults.iter().any(|fault| fault.kind == kind));
    }
    let near = Duration::from_millis(100);
    assert!(faults.iter().any(|fault| fault.gap < *GAP.start() + near));
    let high = GAP
        .end()
        .checked_sub(near)
        .expect("the gap range is wider than that");
    assert!(faults.iter().any(|fault| fault.gap > high));
}
