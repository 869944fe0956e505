//! Thermal model: a hotend and a bed whose temperatures move linearly toward
//! their targets (or toward ambient when off), at plausible rates stretched by
//! `heat_time_scale` (0 = instant). Computed lazily from the time passed in,
//! so waits (M109/M190) know exactly when they end. No I/O, no clock.

use std::time::{Duration, Instant};

/// Room temperature: where heaters start and cool back to.
pub(crate) const AMBIENT: f64 = 21.0;

/// Seconds (saturating at a year, NaN as 0) as a Duration.
pub(crate) fn secs(x: f64) -> Duration {
    const YEAR: f64 = 365.0 * 24.0 * 3600.0;
    Duration::try_from_secs_f64(x.clamp(0.0, YEAR)).unwrap_or(Duration::ZERO)
}

#[derive(Debug, Clone)]
pub(crate) struct Heater {
    temp: f64,
    target: f64,
    at: Instant,
    /// °C per second of real heating, before scaling.
    heat_rate: f64,
    cool_rate: f64,
    scale: f64,
}

impl Heater {
    fn new(now: Instant, heat_rate: f64, cool_rate: f64, scale: f64) -> Self {
        Heater {
            temp: AMBIENT,
            target: 0.0,
            at: now,
            heat_rate,
            cool_rate,
            scale,
        }
    }

    /// Where the temperature is heading: the target, never below ambient.
    fn goal(&self) -> f64 {
        self.target.max(AMBIENT)
    }

    fn rate_toward(&self, goal: f64, temp: f64) -> f64 {
        if goal >= temp {
            self.heat_rate
        } else {
            self.cool_rate
        }
    }

    /// The temperature at `now` (no earlier than the last update).
    pub(crate) fn temp_at(&self, now: Instant) -> f64 {
        let goal = self.goal();
        if self.scale <= 0.0 {
            return goal;
        }
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        let step = self.rate_toward(goal, self.temp) * dt / self.scale;
        if self.temp < goal {
            (self.temp + step).min(goal)
        } else {
            (self.temp - step).max(goal)
        }
    }

    fn update(&mut self, now: Instant) {
        self.temp = self.temp_at(now);
        self.at = self.at.max(now);
    }

    pub(crate) fn target(&self) -> f64 {
        self.target
    }

    pub(crate) fn set_target(&mut self, now: Instant, target: f64) {
        self.update(now);
        self.target = if target.is_finite() {
            target.clamp(0.0, 1000.0)
        } else {
            0.0
        };
    }

    /// How long from `now` until the temperature is within `window` of the
    /// target; `None` if it never gets there (a target below ambient).
    pub(crate) fn time_to_window(&self, now: Instant, window: f64) -> Option<Duration> {
        let temp = self.temp_at(now);
        let gap = (self.target - temp).abs();
        if gap <= window {
            return Some(Duration::ZERO);
        }
        let goal = self.goal();
        if (goal - self.target).abs() > window {
            return None;
        }
        if self.scale <= 0.0 {
            return Some(Duration::ZERO);
        }
        let rate = self.rate_toward(goal, temp);
        Some(secs((gap - window) / rate * self.scale))
    }

    /// Heater PWM as Marlin reports it (`@:`): full power while heating up.
    pub(crate) fn power(&self, now: Instant) -> u8 {
        if self.target > 0.0 && self.temp_at(now) < self.target - 0.5 {
            127
        } else {
            0
        }
    }
}

/// Both heaters of the simulated printer.
#[derive(Debug, Clone)]
pub(crate) struct Thermal {
    pub hotend: Heater,
    pub bed: Heater,
}

impl Thermal {
    pub(crate) fn new(now: Instant, scale: f64) -> Self {
        Thermal {
            hotend: Heater::new(now, 2.5, 1.5, scale),
            bed: Heater::new(now, 1.0, 0.3, scale),
        }
    }

    /// Heaters off (reset, kill); the temperatures cool down from where they are.
    pub(crate) fn all_off(&mut self, now: Instant) {
        self.hotend.set_target(now, 0.0);
        self.bed.set_target(now, 0.0);
    }

    /// Marlin's `print_heater_states`: ` T:21.00 /0.00 B:21.00 /0.00 @:0 B@:0`.
    pub(crate) fn report(&self, now: Instant) -> String {
        format!(
            " T:{:.2} /{:.2} B:{:.2} /{:.2} @:{} B@:{}",
            self.hotend.temp_at(now),
            self.hotend.target(),
            self.bed.temp_at(now),
            self.bed.target(),
            self.hotend.power(now),
            self.bed.power(now),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heats_linearly_with_scale_and_instantly_at_zero() {
        let t0 = Instant::now();
        let mut th = Thermal::new(t0, 0.5); // twice as fast as real
        th.hotend.set_target(t0, 210.0);
        let t1 = t0 + Duration::from_secs(10);
        assert!((th.hotend.temp_at(t1) - (21.0 + 50.0)).abs() < 1e-9);
        // 189 °C to go minus the 1 °C window, at 5 °C/s.
        assert_eq!(th.hotend.time_to_window(t0, 1.0), Some(secs(188.0 / 5.0)));
        assert!(th
            .report(t1)
            .starts_with(" T:71.00 /210.00 B:21.00 /0.00 @:127 B@:0"));

        let mut instant = Thermal::new(t0, 0.0);
        instant.bed.set_target(t0, 60.0);
        assert_eq!(instant.report(t0), " T:21.00 /0.00 B:60.00 /60.00 @:0 B@:0");
        instant.bed.set_target(t0, 10.0);
        assert_eq!(instant.bed.time_to_window(t0, 1.0), None);
    }
}
