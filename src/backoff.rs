//! Exponential back-off with jitter, and "one log line per error streak".
//!
//! Used by every reconnecting or retrying loop (MQTT link, queue manager
//! poller, downloads, serial reopen). No clock and no sleeping here: callers
//! ask for the next delay and sleep themselves, so tests stay deterministic.

use crate::rng::Xorshift64;
use std::time::Duration;

/// Exponential back-off: `initial`, doubling up to `max`, each delay spread by
/// ±`jitter` (a fraction, 0.0–1.0) so that a farm of gateways does not
/// reconnect in lock-step after a broker restart.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    attempt: u32,
    rng: Xorshift64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, jitter: f64, seed: u64) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            jitter: jitter.clamp(0.0, 1.0),
            attempt: 0,
            rng: Xorshift64::from_state(seed | 1),
        }
    }

    /// The delay before the next attempt; each call doubles the base delay.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u64.checked_shl(self.attempt.min(30)).unwrap_or(u64::MAX);
        let base = self
            .initial
            .checked_mul(u32::try_from(factor).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let spread = (self.rng.unit() * 2.0 - 1.0) * self.jitter; // in [-jitter, +jitter]
        base.mul_f64((1.0 + spread).max(0.0))
    }

    /// Attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Call after a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A jitter seed that differs between gateways, printers and boots: the
/// names (gateway id, printer id, …) mixed with the wall clock. A seed from a
/// constant or from the printer id alone (`p1` on every gateway) retries in
/// lock-step across the farm after a shared outage.
pub fn jitter_seed(names: &[&str]) -> u64 {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    mix_seed(clock, names)
}

/// [`jitter_seed`] with the clock given (FNV-1a over the names, seeded with
/// the clock; a separator between names so `("ab","c")` ≠ `("a","bc")`).
pub fn mix_seed(clock: u64, names: &[&str]) -> u64 {
    let mut h = clock ^ 0xcbf2_9ce4_8422_2325;
    for name in names {
        for b in name.bytes().chain(std::iter::once(0xff)) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Remembers whether the current failure streak was already logged, so that a
/// broker that is down for an hour gives one error line, not thousands.
#[derive(Debug, Default, Clone)]
pub struct ErrorStreak {
    failures: u64,
    last_message: Option<String>,
}

impl ErrorStreak {
    /// Records a failure. Returns true when it should be logged: the first of
    /// a streak, or one whose message differs from the previous one.
    pub fn failed(&mut self, message: &str) -> bool {
        self.failures += 1;
        let new = self.last_message.as_deref() != Some(message);
        if new {
            self.last_message = Some(message.to_owned());
        }
        new
    }

    /// Records a success. Returns the number of failures in the streak that
    /// just ended (0 if there was none), so the caller can log a recovery.
    pub fn succeeded(&mut self) -> u64 {
        let n = self.failures;
        self.failures = 0;
        self.last_message = None;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8), 0.0, 7);
        let got: Vec<u64> = (0..6).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 8, 8]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10), 0.2, 42);
        let delays: Vec<Duration> = (0..100).map(|_| b.next_delay()).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_secs(8) && *d <= Duration::from_secs(12)));
        assert!(
            delays.windows(2).any(|w| w[0] != w[1]),
            "jitter never varied"
        );
    }

    /// Issue 12 #14: two gateways with a printer `p1` each, starting in the
    /// same second, draw different retry delays.
    #[test]
    fn seeds_differ_by_gateway_printer_and_clock() {
        let a = mix_seed(1_000, &["gw-a", "p1"]);
        let b = mix_seed(1_000, &["gw-b", "p1"]);
        let later = mix_seed(1_001, &["gw-a", "p1"]);
        let split = mix_seed(1_000, &["gw-a", "p", "1"]);
        assert!(a != b && a != later && a != split);
        let delays = |seed| {
            let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(60), 0.2, seed);
            (0..5).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_ne!(delays(a), delays(b), "two gateways retry in lock-step");
    }

    #[test]
    fn streak_logs_once_until_success_or_new_message() {
        let mut s = ErrorStreak::default();
        assert!(s.failed("connection refused"));
        assert!(!s.failed("connection refused"));
        assert!(s.failed("bad password"));
        assert_eq!(s.succeeded(), 3);
        assert!(s.failed("connection refused"));
    }
}
