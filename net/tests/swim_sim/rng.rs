//! The simulation's only randomness: `SplitMix64`, split into independent named streams so that
//! one seed reproduces a run exactly and a change in one purpose (say, the network) does not
//! shift the random choices of another (say, the faults).

/// `SplitMix64` (Steele, Lea, Flood 2014): tiny, fast, and good enough for a simulation.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

/// FNV-1a, to turn a stream's purpose into a number.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3)
    })
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The stream of `purpose` for the run `seed`: independent of every other purpose.
    pub fn stream(seed: u64, purpose: &str) -> Self {
        let mut mixer = Self::new(seed ^ fnv1a(purpose));
        Self::new(mixer.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (multiply-shift; the bias is below 2^-60 for our bounds).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0) has no value to return");
        let wide = u128::from(self.next_u64()) * u128::from(bound);
        u64::try_from(wide >> 64).expect("the high half of a u128 product fits u64")
    }

    /// A value in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range {low}..={high}");
        low + self.below(high - low + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    /// An index into a slice of `len` elements.
    pub fn index(&mut self, len: usize) -> usize {
        let len = u64::try_from(len).expect("usize fits u64");
        usize::try_from(self.below(len)).expect("an index below a usize fits usize")
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }
}

#[test]
fn splitmix64_matches_the_reference_and_streams_differ() {
    let mut rng = Rng::new(0);
    assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    let network = Rng::stream(7, "network").next_u64();
    assert_ne!(network, Rng::stream(7, "faults").next_u64());
    assert_ne!(network, Rng::stream(8, "network").next_u64());
    assert_eq!(network, Rng::stream(7, "network").next_u64());
}
