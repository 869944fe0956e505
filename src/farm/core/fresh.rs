//! Whether a robot report or a command may be acted on: never a retained
//! message (the broker replays it at every subscribe), never one whose
//! timestamp is older than the age limit (queued by the broker while the
//! gateway was away) or too far in the future. One rule, used by the farm
//! core and by the MQTT dispatcher before it sends `M112` out of band.
//!
//! Pure function: the caller passes the current wall time.

use crate::mqtt::payload::parse_rfc3339;
use std::time::{Duration, SystemTime};

/// Why a message is not acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    #[error("retained message ignored (a replay, not a fresh order)")]
    Retained,
    #[error("timestamp {0:?} is not an RFC 3339 time")]
    BadTimestamp(String),
    #[error("timestamp {stamp} is {age_s} s old (limit {limit_s} s)")]
    TooOld {
        stamp: String,
        age_s: u64,
        limit_s: u64,
    },
    #[error("timestamp {stamp} is {ahead_s} s in the future (tolerance {skew_s} s)")]
    Future {
        stamp: String,
        ahead_s: u64,
        skew_s: u64,
    },
}

/// The limits of [`check`].
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub max_age: Duration,
    pub skew: Duration,
}

/// `Ok` when the message may be acted on at `now`. A missing timestamp is
/// accepted (commands need not carry one), a present one must be fresh.
pub fn check(
    retained: bool,
    timestamp: Option<&str>,
    now: SystemTime,
    f: Freshness,
) -> Result<(), Stale> {
    if retained {
        return Err(Stale::Retained);
    }
    let Some(stamp) = timestamp else {
        return Ok(());
    };
    let at = parse_rfc3339(stamp).ok_or_else(|| Stale::BadTimestamp(stamp.to_owned()))?;
    match now.duration_since(at) {
        Ok(age) if age > f.max_age.saturating_add(f.skew) => Err(Stale::TooOld {
            stamp: stamp.to_owned(),
            age_s: age.as_secs(),
            limit_s: f.max_age.as_secs(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.duration() > f.skew => Err(Stale::Future {
            stamp: stamp.to_owned(),
            ahead_s: e.duration().as_secs(),
            skew_s: f.skew.as_secs(),
        }),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::payload::rfc3339;

    const F: Freshness = Freshness {
        max_age: Duration::from_secs(120),
        skew: Duration::from_secs(30),
    };

    #[test]
    fn fresh_stale_future_and_retained() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_749_976_200);
        let at = |secs_ago: i64| {
            let t = if secs_ago >= 0 {
                now - Duration::from_secs(secs_ago as u64)
            } else {
                now + Duration::from_secs((-secs_ago) as u64)
            };
            rfc3339(t)
        };
        assert_eq!(check(false, None, now, F), Ok(()));
        assert_eq!(check(false, Some(&at(0)), now, F), Ok(()));
        assert_eq!(check(false, Some(&at(150)), now, F), Ok(()));
        assert!(matches!(
            check(false, Some(&at(151)), now, F),
            Err(Stale::TooOld { age_s: 151, .. })
        ));
        assert_eq!(check(false, Some(&at(-30)), now, F), Ok(()));
        assert!(matches!(
            check(false, Some(&at(-31)), now, F),
            Err(Stale::Future { ahead_s: 31, .. })
        ));
        assert_eq!(check(true, Some(&at(0)), now, F), Err(Stale::Retained));
        assert!(matches!(
            check(false, Some("yesterday"), now, F),
            Err(Stale::BadTimestamp(_))
        ));
    }
}
