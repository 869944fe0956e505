//! Fault injection for the simulator: a seeded xorshift generator (no `rand`
//! crate, reproducible from `SimConfig::seed`) and the single-byte line
//! corruption. No I/O, no clock.

/// xorshift64: small, fast and good enough to pick which line to damage.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // Spread small seeds (0, 1, 2 …) and never start at zero.
        let mixed = seed
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
        Rng(if mixed == 0 { 1 } else { mixed })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// True with probability `p`; `p <= 0` never draws, so a fault-free run
    /// does not depend on the seed.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        let n = n.max(1) as u64;
        usize::try_from(self.next_u64() % n).unwrap_or(0)
    }
}

/// Flips one random byte of `line` (XOR with a random non-zero mask), never
/// producing a line terminator, as line noise on a UART would.
pub(crate) fn corrupt_line(rng: &mut Rng, line: &mut [u8]) {
    if line.is_empty() {
        return;
    }
    let at = rng.below(line.len());
    if let Some(byte) = line.get_mut(at) {
        loop {
            let mask = u8::try_from(rng.below(255) + 1).unwrap_or(1);
            let flipped = *byte ^ mask;
            if flipped != b'\n' && flipped != b'\r' {
                *byte = flipped;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_changes_exactly_one_byte_and_never_adds_a_terminator() {
        let mut rng = Rng::new(7);
        for _ in 0..2000 {
            let original = b"N12 G1 X10 Y20*99".to_vec();
            let mut line = original.clone();
            corrupt_line(&mut rng, &mut line);
            let changed = original.iter().zip(&line).filter(|(a, b)| a != b).count();
            assert_eq!(changed, 1);
            assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
        }
    }

    #[test]
    fn chance_is_roughly_p_and_seeded() {
        let hits = |seed| {
            let mut rng = Rng::new(seed);
            (0..10_000).filter(|_| rng.chance(0.25)).count()
        };
        assert_eq!(hits(3), hits(3));
        assert!((2200..2800).contains(&hits(3)));
        assert!(!Rng::new(0).chance(0.0));
    }
}
