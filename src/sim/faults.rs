//! Fault injection for the simulator: a seeded xorshift generator (no `rand`
//! crate, reproducible from `SimConfig::seed`) and the single-byte line
//! corruption. No I/O, no clock.

/// The simulator's generator, seeded from `SimConfig::seed`.
pub(crate) type Rng = crate::rng::Xorshift64;

/// Flips one random byte of `line` (XOR with a random non-zero mask), never
/// producing a line terminator, as line noise on a UART would.
pub(crate) fn corrupt_line(rng: &mut Rng, line: &mut [u8]) {
    if line.is_empty() {
        return;
    }
    let at = rng.index(line.len());
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
        let mut rng = Rng::seeded(7);
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
            let mut rng = Rng::seeded(seed);
            (0..10_000).filter(|_| rng.chance(0.25)).count()
        };
        assert_eq!(hits(3), hits(3));
        assert!((2200..2800).contains(&hits(3)));
        assert!(!Rng::seeded(0).chance(0.0));
    }
}
