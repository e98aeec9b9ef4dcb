//! The retry schedule (SPEC §5): how long a failed delivery waits before its next attempt,
//! with jitter, `Retry-After`, a floor for overload signals and SQS's 12-hour cap.
//!
//! `RETRY_SCHEDULE` lists the wait after attempt 1, 2, … in seconds. A schedule of `n` waits
//! allows `n + 1` attempts, so the queue's `maxReceiveCount` is `n + 1`: the one number both
//! the dispatcher and the template derive from the schedule (the template by counting the
//! same list). When the last attempt fails the message is released at once and the queue
//! moves it to the DLQ on its next receive.

use std::fmt;
use std::time::{Duration, SystemTime};

/// SQS's longest visibility timeout.
pub const MAX_DELAY: Duration = Duration::from_secs(12 * 60 * 60);
/// Default waits: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h, 12 h —
/// 11 attempts over 27.7 hours, so a receiver down for a full day still gets its events.
pub const DEFAULT_SCHEDULE: &str = "5,30,120,600,1800,3600,7200,14400,28800,43200";
/// Jitter spreads retries of many messages: each wait is scaled by a factor in [0.8, 1.2].
pub const JITTER: f64 = 0.2;
/// A timeout or a 429 says the receiver is overloaded: wait at least this long.
pub const OVERLOAD_FLOOR: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
    overload_floor: Duration,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule::parse(DEFAULT_SCHEDULE).expect("the default schedule is valid")
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs: Vec<String> = self
            .delays
            .iter()
            .map(|d| d.as_secs().to_string())
            .collect();
        f.write_str(&secs.join(","))
    }
}

/// How the failed attempt failed, as far as the wait is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureSignal {
    /// Any failure with no hint from the receiver.
    Plain,
    /// The receiver is overloaded (429, timeout): wait at least [`OVERLOAD_FLOOR`].
    Overloaded,
}

impl RetrySchedule {
    /// Parses `"5,30,120"` (seconds). Each wait must be 0 to 43200 (SQS's limit).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut delays = Vec::new();
        for (index, part) in text.split(',').enumerate() {
            let part = part.trim();
            let secs: u64 = part.parse().map_err(|_| {
                format!("entry #{} ({part:?}) is not a whole number of seconds; expected e.g. \"{DEFAULT_SCHEDULE}\"", index + 1)
            })?;
            if secs > MAX_DELAY.as_secs() {
                return Err(format!(
                    "entry #{} is {secs} s, over SQS's 12 h (43200 s) visibility limit",
                    index + 1
                ));
            }
            delays.push(Duration::from_secs(secs));
        }
        Ok(RetrySchedule::from_delays(delays))
    }

    /// A schedule from exact durations (tests compress time with sub-second waits; SQS itself
    /// only takes whole seconds).
    pub fn from_delays(delays: Vec<Duration>) -> Self {
        RetrySchedule {
            delays: delays.into_iter().map(|d| d.min(MAX_DELAY)).collect(),
            overload_floor: OVERLOAD_FLOOR,
        }
    }

    /// Replaces the [`OVERLOAD_FLOOR`] (for compressed test schedules).
    pub fn with_overload_floor(mut self, floor: Duration) -> Self {
        self.overload_floor = floor;
        self
    }

    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// Attempts allowed before the DLQ: one more than the waits between them.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The time the schedule spends waiting, first attempt to last.
    pub fn total(&self) -> Duration {
        self.delays.iter().sum()
    }

    /// The wait after failed attempt number `attempt` (1-based), or `None` when it was the
    /// last one. `jitter_unit` is a random number in [0, 1) (injected so tests are exact);
    /// `retry_after` is the receiver's `Retry-After`, a lower bound when present.
    pub fn delay_after(
        &self,
        attempt: u32,
        signal: FailureSignal,
        retry_after: Option<Duration>,
        jitter_unit: f64,
    ) -> Option<Duration> {
        let base = *self.delays.get(attempt.checked_sub(1)? as usize)?;
        let factor = 1.0 - JITTER + 2.0 * JITTER * jitter_unit.clamp(0.0, 1.0);
        let mut delay = base.mul_f64(factor);
        if signal == FailureSignal::Overloaded {
            delay = delay.max(self.overload_floor);
        }
        if let Some(after) = retry_after {
            delay = delay.max(after);
        }
        Some(delay.min(MAX_DELAY))
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date. Garbage gives `None`; a date in
/// the past gives zero; anything beyond SQS's 12 hours is capped there.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        // Digits only: seconds. Huge numbers saturate instead of failing.
        Duration::from_secs(
            value
                .parse::<u64>()
                .unwrap_or(u64::MAX)
                .min(MAX_DELAY.as_secs()),
        )
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn default_schedule_reaches_a_day_and_fits_sqs() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.max_attempts(), 11);
        assert!(schedule.total() >= S(24 * 3600), "{:?}", schedule.total());
        assert!(schedule.delays().iter().all(|d| *d <= MAX_DELAY));
        assert_eq!(schedule.to_string(), DEFAULT_SCHEDULE);
    }

    #[test]
    fn delays_follow_the_schedule_and_stop_after_the_last() {
        let schedule = RetrySchedule::parse("5, 30,120").unwrap();
        let mid = |n| schedule.delay_after(n, FailureSignal::Plain, None, 0.5);
        assert_eq!(mid(1), Some(S(5)));
        assert_eq!(mid(2), Some(S(30)));
        assert_eq!(mid(3), Some(S(120)));
        assert_eq!(mid(4), None, "attempt 4 was the last: on to the DLQ");
        assert_eq!(mid(0), None);
        assert_eq!(schedule.max_attempts(), 4);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let schedule = RetrySchedule::parse("100").unwrap();
        let at = |u| {
            schedule
                .delay_after(1, FailureSignal::Plain, None, u)
                .unwrap()
        };
        assert_eq!(at(0.0), S(80));
        assert_eq!(at(0.5), S(100));
        assert_eq!(
            at(0.999_999),
            Duration::from_secs_f64(100.0 * (0.8 + 0.4 * 0.999_999))
        );
        assert!(at(0.999_999) < S(120));
        assert_eq!(at(7.0), S(120), "out-of-range randomness is clamped");
    }

    #[test]
    fn overload_and_retry_after_raise_the_wait_but_never_past_12_hours() {
        let schedule = RetrySchedule::parse("5,43200").unwrap();
        assert_eq!(
            schedule.delay_after(1, FailureSignal::Overloaded, None, 0.5),
            Some(OVERLOAD_FLOOR)
        );
        assert_eq!(
            schedule.delay_after(1, FailureSignal::Plain, Some(S(90)), 0.5),
            Some(S(90))
        );
        assert_eq!(
            schedule.delay_after(1, FailureSignal::Plain, Some(S(1)), 0.5),
            Some(S(5)),
            "Retry-After is a floor"
        );
        assert_eq!(
            schedule.delay_after(2, FailureSignal::Plain, None, 1.0),
            Some(MAX_DELAY),
            "jitter above 12 h is capped"
        );
        assert_eq!(
            schedule.delay_after(1, FailureSignal::Plain, Some(S(999_999)), 0.5),
            Some(MAX_DELAY)
        );
    }

    #[test]
    fn schedule_errors_name_the_entry() {
        assert!(
            RetrySchedule::parse("5,soon")
                .unwrap_err()
                .contains("entry #2")
        );
        assert!(
            RetrySchedule::parse("5,,6")
                .unwrap_err()
                .contains("entry #2")
        );
        assert!(RetrySchedule::parse("43201").unwrap_err().contains("12 h"));
        assert!(RetrySchedule::parse("-1").is_err());
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 29 Nov 2026 10:00:00 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(S(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(S(0)));
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 10:02:30 GMT", now),
            Some(S(150))
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 09:00:00 GMT", now),
            Some(S(0)),
            "past date: now"
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_DELAY),
            "huge: capped"
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_DELAY)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }
}
