//! xorshift64: the one small, seeded, reproducible generator the crate uses
//! (back-off jitter, the simulator's faults, property tests). Not for
//! anything secret. No `rand` crate: a few lines, and runs replay by seed.

/// A xorshift64 generator. The state must not be zero.
#[derive(Debug, Clone)]
pub struct Xorshift64(u64);

impl Xorshift64 {
    /// Uses `state` as it is (zero becomes one).
    pub fn from_state(state: u64) -> Self {
        Xorshift64(if state == 0 { 1 } else { state })
    }

    /// Spreads small seeds (0, 1, 2, …) over the state space first.
    pub fn seeded(seed: u64) -> Self {
        Self::from_state(
            seed.wrapping_add(0x9E37_79B9_7F4A_7C15)
                .wrapping_mul(0xBF58_476D_1CE4_E5B9),
        )
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`; `p <= 0` draws nothing, so a run without
    /// faults does not depend on the seed.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in `0..n` (`0..1` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A uniform index into something of length `len`.
    pub fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_zero_is_not_stuck() {
        let (mut a, mut b) = (Xorshift64::seeded(3), Xorshift64::seeded(3));
        assert_eq!((a.next_u64(), a.next_u64()), (b.next_u64(), b.next_u64()));
        let mut z = Xorshift64::from_state(0);
        assert_ne!(z.next_u64(), 0);
    }

    #[test]
    fn below_and_chance_stay_in_range() {
        let mut r = Xorshift64::seeded(9);
        assert!((0..1000).all(|_| r.below(7) < 7 && r.index(3) < 3));
        assert!(!r.chance(0.0));
        let hits = (0..10_000).filter(|_| r.chance(0.25)).count();
        assert!((2_000..3_000).contains(&hits), "{hits}");
    }
}
