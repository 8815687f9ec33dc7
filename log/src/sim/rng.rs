//! Seeded pseudo-random numbers for the simulator: `xoshiro256**` seeded through `splitmix64`.
//!
//! A run has one seed. [`Streams`] derives one independent [`Rng`] per purpose from it by hashing
//! (seed, purpose), never by drawing from a shared generator, so adding draws to one stream (a
//! new fault kind, a new message) leaves every other stream's sequence as it was and old seeds
//! keep reproducing the same workload and the same disk behavior.

/// The `splitmix64` increment: the odd integer closest to 2^64 divided by the golden ratio.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Draws [`Rng::below`] makes before accepting a slightly biased value. Each draw is rejected
/// with probability below one half, so the fallback is reached with probability under 2^-64.
const BELOW_ATTEMPTS_MAX: u32 = 64;

/// The denominator of every `per_mille` probability.
pub const PER_MILLE: u32 = 1000;

/// The `splitmix64` output function: a bijection on `u64` with good avalanche.
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a offset basis (64 bit).
const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
/// FNV-1a prime (64 bit).
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// Continues an FNV-1a hash over `bytes`; stable across platforms and Rust versions, unlike
/// `std::hash`.
const fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

/// A deterministic pseudo-random generator (`xoshiro256**`). Not cryptographic; only for
/// reproducible simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    /// A generator whose whole sequence is determined by `seed`. The four state words come from
    /// `splitmix64`, which never yields an all-zero state.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let mut counter = seed;
        let mut state = [0; 4];
        for word in &mut state {
            counter = counter.wrapping_add(GOLDEN_GAMMA);
            *word = mix64(counter);
        }
        Self::from_state(state)
    }

    fn from_state(state: [u64; 4]) -> Self {
        // All zero is the one fixed point of xoshiro: it would output zeros forever.
        assert!(state != [0; 4], "xoshiro256** state must not be all zero");
        Self { state }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform value in `0..n`. Panics if `n` is zero.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no value to return");
        // 2^64 mod n: rejecting draws below it leaves a count of values divisible by n.
        let threshold = n.wrapping_neg() % n;
        let mut x = self.next_u64();
        let mut attempts = 1;
        while x < threshold && attempts < BELOW_ATTEMPTS_MAX {
            x = self.next_u64();
            attempts += 1;
        }
        x % n
    }

    /// A uniform value in `lo..=hi`, both ends included. Panics if `lo > hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "range({lo}, {hi}) is empty");
        let span = hi - lo;
        if span == u64::MAX {
            self.next_u64()
        } else {
            lo + self.below(span + 1)
        }
    }

    /// True with probability `per_mille / 1000`. Draws the same way whatever `per_mille` is,
    /// even 0 or 1000, so changing a probability does not shift the rest of the stream.
    /// Panics above 1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        assert!(
            per_mille <= PER_MILLE,
            "chance({per_mille}) is above {PER_MILLE} per mille"
        );
        self.below(u64::from(PER_MILLE)) < u64::from(per_mille)
    }

    /// Shuffles `items` in place (Fisher-Yates); every permutation is equally likely.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let bound = u64::try_from(i + 1).expect("slice lengths fit in u64");
            let j = usize::try_from(self.below(bound)).expect("a value <= i fits in usize");
            items.swap(i, j);
        }
    }
}

/// The independent generators of one simulation run, all derived from its seed.
///
/// Each method returns a fresh generator at the start of its stream: call it once per run and
/// keep the [`Rng`]. Calling it again replays the same sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streams {
    seed: u64,
}

impl Streams {
    /// The streams of the run with this seed.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// The seed of the run, to print with any failure so it can be replayed.
    #[must_use]
    pub const fn seed(self) -> u64 {
        self.seed
    }

    /// Message loss, duplication and delay.
    #[must_use]
    pub fn network(self) -> Rng {
        self.named("network")
    }

    /// Which unsynced writes a crash drops, applies or tears.
    #[must_use]
    pub fn disk(self) -> Rng {
        self.named("disk")
    }

    /// What clients propose and when.
    #[must_use]
    pub fn workload(self) -> Rng {
        self.named("workload")
    }

    /// Which faults are injected and when: crashes, restarts, partitions.
    #[must_use]
    pub fn faults(self) -> Rng {
        self.named("faults")
    }

    /// How late a completed flush's report reaches Raft, racing the driver's truncations.
    #[must_use]
    pub fn flushes(self) -> Rng {
        self.named("flushes")
    }

    /// The private stream of one node, for example its election timeouts.
    #[must_use]
    pub fn node(self, id: u64) -> Rng {
        self.derive(fnv1a(fnv1a(FNV_OFFSET, b"node#"), &id.to_le_bytes()))
    }

    /// A stream for any other purpose; distinct names give independent streams.
    #[must_use]
    pub fn named(self, purpose: &str) -> Rng {
        self.derive(fnv1a(fnv1a(FNV_OFFSET, b"name:"), purpose.as_bytes()))
    }

    fn derive(self, purpose_hash: u64) -> Rng {
        Rng::new(self.seed ^ mix64(purpose_hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(rng: &mut Rng, count: usize) -> Vec<u64> {
        (0..count).map(|_| rng.next_u64()).collect()
    }

    #[test]
    fn matches_the_xoshiro256starstar_reference_outputs() {
        // Outputs of the reference C implementation from the state {1, 2, 3, 4}.
        let mut rng = Rng::from_state([1, 2, 3, 4]);
        assert_eq!(
            draws(&mut rng, 4),
            vec![11520, 0, 1_509_978_240, 1_215_971_899_390_074_240]
        );
    }

    #[test]
    fn same_seed_same_sequence_other_seed_other_sequence() {
        let a = draws(&mut Rng::new(42), 64);
        assert_eq!(a, draws(&mut Rng::new(42), 64));
        assert_ne!(a, draws(&mut Rng::new(43), 64));
        // Seed zero is a valid seed, not a degenerate state.
        assert!(draws(&mut Rng::new(0), 8).iter().any(|&x| x != 0));
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let streams = Streams::new(7);
        let mut all = vec![
            draws(&mut streams.network(), 16),
            draws(&mut streams.disk(), 16),
            draws(&mut streams.workload(), 16),
            draws(&mut streams.faults(), 16),
            draws(&mut streams.flushes(), 16),
            draws(&mut streams.node(0), 16),
            draws(&mut streams.node(1), 16),
            draws(&mut streams.node(2), 16),
            draws(&mut streams.named("clock-skew"), 16),
        ];
        assert_eq!(all[0], draws(&mut Streams::new(7).network(), 16));
        assert_eq!(all[6], draws(&mut Streams::new(7).node(1), 16));
        assert_ne!(all[0], draws(&mut Streams::new(8).network(), 16));
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count, "two purposes share a stream");
    }

    #[test]
    fn drawing_from_one_stream_leaves_the_others_alone() {
        let streams = Streams::new(99);
        let expected_disk = draws(&mut streams.disk(), 32);
        let expected_node = draws(&mut streams.node(3), 32);

        // A run that draws a lot from the network, and creates the streams in another order.
        let mut node = streams.node(3);
        let mut network = streams.network();
        let _ = draws(&mut network, 1000);
        let mut disk = streams.disk();
        let _ = draws(&mut network, 1000);
        assert_eq!(draws(&mut disk, 32), expected_disk);
        assert_eq!(draws(&mut node, 32), expected_node);
    }

    #[test]
    fn below_and_range_stay_in_bounds_and_reach_both_ends() {
        let mut rng = Rng::new(1);
        let mut counts = [0_u32; 7];
        for _ in 0..7000 {
            let x = rng.below(7);
            counts[usize::try_from(x).expect("fits")] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );

        let (mut saw_lo, mut saw_hi) = (false, false);
        for _ in 0..1000 {
            let x = rng.range(10, 13);
            assert!((10..=13).contains(&x));
            saw_lo |= x == 10;
            saw_hi |= x == 13;
        }
        assert!(saw_lo && saw_hi);
        assert_eq!(rng.range(5, 5), 5);
        let _ = rng.range(0, u64::MAX);
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn chance_follows_per_mille() {
        let mut rng = Rng::new(2);
        assert!((0..1000).all(|_| !rng.chance(0)));
        assert!((0..1000).all(|_| rng.chance(1000)));
        let hits = (0..10_000).filter(|_| rng.chance(250)).count();
        assert!((2200..2800).contains(&hits), "{hits}");
    }

    #[test]
    #[should_panic(expected = "per mille")]
    fn chance_above_one_thousand_panics() {
        let _ = Rng::new(3).chance(1001);
    }

    #[test]
    fn shuffle_permutes_deterministically() {
        let original: Vec<u32> = (0..50).collect();
        let mut a = original.clone();
        let mut b = original.clone();
        Rng::new(5).shuffle(&mut a);
        Rng::new(5).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, original);
        a.sort_unstable();
        assert_eq!(a, original);

        let mut empty: [u8; 0] = [];
        Rng::new(5).shuffle(&mut empty);
        let mut one = [1];
        Rng::new(5).shuffle(&mut one);
        assert_eq!(one, [1]);
    }
}
