//! A hidden knob for benchmarks: `PRINTGATE_TIME_SCALE=60` divides the
//! daemon's periodic intervals (progress reports, idle announcements, queue
//! polls, the store's idle checkpoint, and the farm's progress persistence)
//! by 60, so that `printgate
//! bench sdwear` runs a simulated hour of a farm in a minute with every
//! time-driven write happening as often per simulated hour as at the
//! defaults. Intervals become sub-second, which the config cannot express.
//!
//! Not in the config and not for production: the daemon warns when it is
//! set. Serial time-outs, back-offs and job limits are not scaled (the
//! simulators answer at wire speed; nothing they decide writes to disk).

use std::time::Duration;

/// The environment variable.
pub const ENV: &str = "PRINTGATE_TIME_SCALE";
/// The largest factor accepted (a simulated hour in one second).
pub const MAX: f64 = 3600.0;

/// How much faster than real time the daemon's intervals run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeScale(f64);

impl Default for TimeScale {
    fn default() -> Self {
        TimeScale(1.0)
    }
}

impl TimeScale {
    /// From [`ENV`]: unset is real time; anything but a number from 1 to
    /// [`MAX`] is an error naming the variable.
    pub fn from_env() -> Result<TimeScale, String> {
        match std::env::var(ENV) {
            Err(_) => Ok(TimeScale::default()),
            Ok(text) => TimeScale::parse(&text),
        }
    }

    pub fn parse(text: &str) -> Result<TimeScale, String> {
        match text.trim().parse::<f64>() {
            Ok(f) if (1.0..=MAX).contains(&f) => Ok(TimeScale(f)),
            _ => Err(format!("{ENV}={text}: expected a number from 1 to {MAX}")),
        }
    }

    pub fn factor(self) -> f64 {
        self.0
    }

    pub fn is_real_time(self) -> bool {
        self.0 == 1.0
    }

    /// `d` shortened by the factor (never below a millisecond).
    pub fn apply(self, d: Duration) -> Duration {
        d.div_f64(self.0).max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_sane_factors() {
        assert_eq!(TimeScale::parse("60").map(TimeScale::factor), Ok(60.0));
        for bad in ["0", "0.5", "-3", "1e9", "NaN", "inf", "fast"] {
            let err = TimeScale::parse(bad).err().unwrap_or_default();
            assert!(err.contains(ENV), "{bad}: {err}");
        }
    }

    #[test]
    fn shortens_intervals() {
        let s = TimeScale::parse("60").unwrap_or_default();
        assert_eq!(s.apply(Duration::from_secs(10)).as_millis(), 166);
        assert_eq!(s.apply(Duration::from_secs(300)), Duration::from_secs(5));
        assert_eq!(
            TimeScale::default().apply(Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }
}
