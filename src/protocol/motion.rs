//! How long the printer may legitimately take over a command, estimated from
//! the command alone: moves from distance and feed rate, dwells from their
//! argument, `M400` from the moves queued ahead of it. The lost-`ok`
//! deadline never fires before the printer can have finished what it was
//! given. No I/O, no clock; allocation-free (this runs for every line).
//!
//! The estimate ignores acceleration, so it is short for short moves; the
//! deadline adds the learned round trip and a margin on top of it.

/// What a command costs in printer time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cost {
    /// Done as soon as it is read (settings, fans, temperatures without wait).
    Instant,
    /// A move of this many microseconds (its `ok` comes once it is planned).
    Move(u32),
    /// Waits for all planned moves, then this many microseconds more
    /// (`M400` is `Sync(0)`, `G4 P500` is `Sync(500_000)`).
    Sync(u32),
    /// May take minutes and nobody can say how long (homing, heating, waits
    /// for a person): the long time-out applies.
    Long,
}

/// Commands with no estimate (OctoPrint's list plus user waits).
const LONG: [&str; 16] = [
    "G28", "G29", "G30", "G32", "G33", "G34", "G35", "M0", "M1", "M109", "M190", "M191", "M226",
    "M303", "M600", "M48",
];

/// Position and modes, as far as the host has sent them.
#[derive(Debug, Clone)]
pub(crate) struct MotionModel {
    pos: [f32; 4],
    relative: bool,
    e_relative: bool,
    /// mm/min; Marlin's default until the file sets one.
    feedrate: f32,
}

impl Default for MotionModel {
    fn default() -> Self {
        MotionModel {
            pos: [0.0; 4],
            relative: false,
            e_relative: false,
            feedrate: 1500.0,
        }
    }
}

impl MotionModel {
    /// The cost of `cmd` (prepared: no comment, trimmed), updating position
    /// and modes as the printer will.
    pub(crate) fn cost(&mut self, cmd: &str) -> Cost {
        let mut words = cmd.split_ascii_whitespace();
        let Some(word) = words.next() else {
            return Cost::Instant;
        };
        if LONG.iter().any(|l| l.eq_ignore_ascii_case(word)) {
            if word.eq_ignore_ascii_case("G28") {
                self.home(cmd);
            }
            return Cost::Long;
        }
        let upper = |w: &str, s: &str| w.eq_ignore_ascii_case(s);
        match word {
            w if ["G0", "G1", "G2", "G3"].iter().any(|g| upper(w, g)) => {
                Cost::Move(self.plan(words))
            }
            w if upper(w, "G4") => {
                let mut secs = 0.0f32;
                for (key, value) in params(words) {
                    match key {
                        b'P' => secs = value / 1000.0,
                        b'S' => secs = value,
                        _ => {}
                    }
                }
                Cost::Sync(micros(secs))
            }
            w if upper(w, "M400") => Cost::Sync(0),
            w if upper(w, "G90") => {
                self.relative = false;
                self.e_relative = false;
                Cost::Instant
            }
            w if upper(w, "G91") => {
                self.relative = true;
                self.e_relative = true;
                Cost::Instant
            }
            w if upper(w, "M82") => {
                self.e_relative = false;
                Cost::Instant
            }
            w if upper(w, "M83") => {
                self.e_relative = true;
                Cost::Instant
            }
            w if upper(w, "G92") => {
                let mut any = false;
                for (key, value) in params(words) {
                    if let Some(i) = axis(key) {
                        any = true;
                        self.set(i, value);
                    }
                }
                if !any {
                    self.pos = [0.0; 4];
                }
                Cost::Instant
            }
            _ => Cost::Instant,
        }
    }

    fn plan<'a>(&mut self, words: impl Iterator<Item = &'a str> + 'a) -> u32 {
        let mut delta = [0.0f32; 4];
        for (key, value) in params(words) {
            if key == b'F' {
                if value > 0.0 {
                    self.feedrate = value;
                }
                continue;
            }
            let Some(i) = axis(key) else { continue };
            let relative = if i == 3 {
                self.e_relative
            } else {
                self.relative
            };
            let old = self.pos.get(i).copied().unwrap_or(0.0);
            let new = if relative { old + value } else { value };
            self.set(i, new);
            if let Some(d) = delta.get_mut(i) {
                *d = new - old;
            }
        }
        let [dx, dy, dz, de] = delta;
        let mut distance = (dx * dx + dy * dy + dz * dz).sqrt();
        if distance == 0.0 {
            distance = de.abs();
        }
        micros(distance / (self.feedrate / 60.0))
    }

    fn home(&mut self, cmd: &str) {
        let named: Vec<usize> = params(cmd.split_ascii_whitespace().skip(1))
            .filter_map(|(k, _)| axis(k).filter(|i| *i < 3))
            .collect();
        for i in 0..3 {
            if named.is_empty() || named.contains(&i) {
                self.set(i, 0.0);
            }
        }
    }

    fn set(&mut self, i: usize, value: f32) {
        if let Some(p) = self.pos.get_mut(i) {
            *p = value;
        }
    }
}

fn axis(key: u8) -> Option<usize> {
    match key {
        b'X' => Some(0),
        b'Y' => Some(1),
        b'Z' => Some(2),
        b'E' => Some(3),
        _ => None,
    }
}

/// `X10.5` → (`X`, 10.5); words that are not a letter and a finite number
/// are skipped.
fn params<'a>(words: impl Iterator<Item = &'a str> + 'a) -> impl Iterator<Item = (u8, f32)> + 'a {
    words.filter_map(|w| {
        let (key, value) = w.split_at_checked(1)?;
        let key = key.bytes().next()?.to_ascii_uppercase();
        let value: f32 = value.parse().ok()?;
        value.is_finite().then_some((key, value))
    })
}

/// Seconds as microseconds, saturating (a bogus `F0.0001` must not overflow).
fn micros(secs: f32) -> u32 {
    if secs.is_nan() || secs <= 0.0 {
        return 0;
    }
    let us = f64::from(secs) * 1e6;
    if us >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        us as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_cost_distance_over_feedrate() {
        let mut m = MotionModel::default();
        // 30 mm at 3000 mm/min: 0.6 s.
        assert_eq!(m.cost("G1 X30 F3000"), Cost::Move(600_000));
        // Sticky feed rate, relative mode.
        assert_eq!(m.cost("G91"), Cost::Instant);
        assert_eq!(m.cost("G1 Y-30"), Cost::Move(600_000));
        // Extrusion only.
        assert_eq!(m.cost("G1 E5 F600"), Cost::Move(500_000));
        assert_eq!(m.cost("g0 x0"), Cost::Move(0), "relative X0 does not move");
        assert_eq!(m.cost("G1 F0.000001 X1e30"), Cost::Move(u32::MAX));
    }

    #[test]
    fn waits_and_long_commands() {
        let mut m = MotionModel::default();
        assert_eq!(m.cost("G4 P250"), Cost::Sync(250_000));
        assert_eq!(m.cost("G4 S2"), Cost::Sync(2_000_000));
        assert_eq!(m.cost("M400"), Cost::Sync(0));
        assert_eq!(m.cost("G28 X"), Cost::Long);
        assert_eq!(m.cost("m109 S210"), Cost::Long);
        assert_eq!(m.cost("G280"), Cost::Instant);
        assert_eq!(m.cost("M104 S200"), Cost::Instant);
    }

    #[test]
    fn g92_and_homing_reset_the_position() {
        let mut m = MotionModel::default();
        let _ = m.cost("G1 X100 F6000");
        let _ = m.cost("G92 X0");
        assert_eq!(m.cost("G1 X10"), Cost::Move(100_000));
        let _ = m.cost("G28");
        assert_eq!(m.cost("G1 X10"), Cost::Move(100_000));
    }
}
