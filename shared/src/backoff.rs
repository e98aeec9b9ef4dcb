//! The retry schedule: how long a failed delivery waits before its next attempt, with jitter,
//! `Retry-After`, a floor for overload signals and SQS's 12-hour cap (docs/contract.md,
//! Retries).
//!
//! `RETRY_SCHEDULE` lists the wait after attempt 1, 2, … in seconds. A schedule of `n` waits
//! allows `n + 1` attempts. Attempts are real deliveries, counted by the dispatcher in its
//! attempts ledger (not SQS receives); when the last one fails, the dispatcher moves the
//! message to the DLQ itself. The queue's `maxReceiveCount` is only a high safety net.
//!
//! Besides the schedule, the [`RetryPolicy`] holds the receiver answers that no retry can fix
//! (`DEAD_LETTER_STATUSES`: straight to the DLQ) and how long a `qr` event is worth delivering
//! (`QR_TTL_SECONDS`).

use crate::queue::MAX_VISIBILITY;
use std::fmt;
use std::time::{Duration, SystemTime};

/// Default waits: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h, 12 h, 12 h —
/// 12 attempts over 39.7 hours. The second 12 h step is what keeps the promise "a receiver
/// down for a full day still gets its events" with every wait jittered to its shortest (0.8×)
/// and the last ones trimmed to what SQS's visibility limit leaves: 31.7 h at the least.
pub const DEFAULT_SCHEDULE: &str = "5,30,120,600,1800,3600,7200,14400,28800,43200,43200";
/// The most waits a schedule may have: 20 × 12 h (the longest a wait can be, `Retry-After`
/// included) is 10 days, inside the queue's 14-day retention, so no message expires from the
/// queue while it is still being retried.
pub const MAX_WAITS: usize = 20;
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
    /// Parses `"5,30,120"` (seconds). Each wait must be 0 to 43200 (SQS's limit), and there
    /// are at most [`MAX_WAITS`] of them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut delays = Vec::new();
        for (index, part) in text.split(',').enumerate() {
            if index == MAX_WAITS {
                return Err(format!(
                    "more than {MAX_WAITS} waits: at 12 h each they would outlast the queue's 14-day retention"
                ));
            }
            let part = part.trim();
            let secs: u64 = part.parse().map_err(|_| {
                format!("entry #{} ({part:?}) is not a whole number of seconds; expected e.g. \"{DEFAULT_SCHEDULE}\"", index + 1)
            })?;
            if secs > MAX_VISIBILITY.as_secs() {
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
            delays: delays.into_iter().map(|d| d.min(MAX_VISIBILITY)).collect(),
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

    /// The shortest time this schedule can retry for: every wait jittered to its lowest and
    /// capped at `longest_wait` (what SQS's visibility limit leaves), no `Retry-After`.
    pub fn shortest_horizon(&self, longest_wait: Duration) -> Duration {
        self.delays
            .iter()
            .map(|d| d.mul_f64(1.0 - JITTER).min(longest_wait))
            .sum()
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
        // `clamp` passes NaN through, and `mul_f64` panics on it: an injected randomness that
        // is not a number means no jitter (the midpoint).
        let unit = if jitter_unit.is_nan() {
            0.5
        } else {
            jitter_unit.clamp(0.0, 1.0)
        };
        let factor = 1.0 - JITTER + 2.0 * JITTER * unit;
        let mut delay = base.mul_f64(factor);
        if signal == FailureSignal::Overloaded {
            delay = delay.max(self.overload_floor);
        }
        if let Some(after) = retry_after {
            delay = delay.max(after);
        }
        Some(delay.min(MAX_VISIBILITY))
    }
}

/// Receiver statuses that send an event straight to the DLQ: retrying the same body cannot
/// change the answer, and waiting a day on it would block its chat for a day.
///
/// Default `410 413 422`: Gone (the route was removed on purpose), Content Too Large (the app
/// will never take this body) and Unprocessable Content (the app understood the event and
/// refuses it). Not 400, 401, 403 or 404: those are as often a deploy or a secret rotation in
/// progress, which a retry outlives; a DLQ'd event needs a person to redrive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterStatuses(Vec<u16>);

pub const DEFAULT_DEAD_LETTER_STATUSES: &str = "410 413 422";

impl Default for DeadLetterStatuses {
    fn default() -> Self {
        DeadLetterStatuses::parse(DEFAULT_DEAD_LETTER_STATUSES).expect("the default is valid")
    }
}

impl DeadLetterStatuses {
    /// Parses statuses separated by spaces or commas; an empty text means none. 2xx codes are
    /// refused (they are deliveries), and so is anything outside 100–599.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut statuses = Vec::new();
        for part in text.split([',', ' ']).filter(|p| !p.trim().is_empty()) {
            let part = part.trim();
            match part.parse::<u16>() {
                Ok(status) if (300..600).contains(&status) || (100..200).contains(&status) => {
                    statuses.push(status)
                }
                Ok(status) if (200..300).contains(&status) => {
                    return Err(format!(
                        "{status} is a success, not a failure; expected e.g. \"{DEFAULT_DEAD_LETTER_STATUSES}\""
                    ));
                }
                _ => {
                    return Err(format!(
                        "{part:?} is not an HTTP status (100-599); expected e.g. \"{DEFAULT_DEAD_LETTER_STATUSES}\""
                    ));
                }
            }
        }
        Ok(DeadLetterStatuses(statuses))
    }

    pub fn contains(&self, status: u16) -> bool {
        self.0.contains(&status)
    }
}

impl fmt::Display for DeadLetterStatuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codes: Vec<String> = self.0.iter().map(u16::to_string).collect();
        f.write_str(&codes.join(" "))
    }
}

/// A `qr` event is a login code that whatsapp-web.js replaces about every 20 s: past this age
/// it is not delivered (nor pushed live), and not dead-lettered either.
pub const DEFAULT_QR_TTL: Duration = Duration::from_secs(60);

/// Everything that decides what happens after an attempt fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub schedule: RetrySchedule,
    pub dead_letter_statuses: DeadLetterStatuses,
    pub qr_ttl: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetrySchedule::default().into()
    }
}

/// A schedule with the default dead-letter statuses and QR lifetime.
impl From<RetrySchedule> for RetryPolicy {
    fn from(schedule: RetrySchedule) -> Self {
        RetryPolicy {
            schedule,
            dead_letter_statuses: DeadLetterStatuses::default(),
            qr_ttl: DEFAULT_QR_TTL,
        }
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
                .min(MAX_VISIBILITY.as_secs()),
        )
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_VISIBILITY))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn default_schedule_reaches_a_day_and_fits_sqs() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.max_attempts(), 12);
        assert!(schedule.total() >= S(24 * 3600), "{:?}", schedule.total());
        // The longest wait the dispatcher can ask for is what SQS leaves after its margin.
        let longest = MAX_VISIBILITY - crate::dispatch::RECEIVE_MARGIN;
        assert!(
            schedule.shortest_horizon(longest) >= S(24 * 3600),
            "with the lowest jitter everywhere: {:?}",
            schedule.shortest_horizon(longest)
        );
        assert!(schedule.delays().iter().all(|d| *d <= MAX_VISIBILITY));
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
        assert_eq!(at(-1.0), S(80));
        assert_eq!(at(f64::INFINITY), S(120));
        assert_eq!(at(f64::NAN), S(100), "NaN is no jitter, not a panic");
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
            Some(MAX_VISIBILITY),
            "jitter above 12 h is capped"
        );
        assert_eq!(
            schedule.delay_after(1, FailureSignal::Plain, Some(S(999_999)), 0.5),
            Some(MAX_VISIBILITY)
        );
    }

    #[test]
    fn dead_letter_statuses_parse_spaces_and_commas_and_refuse_successes() {
        let statuses = DeadLetterStatuses::parse("410, 413 422").unwrap();
        assert!(statuses.contains(410) && statuses.contains(413) && statuses.contains(422));
        assert!(!statuses.contains(500));
        assert_eq!(statuses, DeadLetterStatuses::default());
        assert_eq!(statuses.to_string(), "410 413 422");
        assert_eq!(DeadLetterStatuses::parse("").unwrap().to_string(), "");
        assert!(
            DeadLetterStatuses::parse("204")
                .unwrap_err()
                .contains("success")
        );
        assert!(
            DeadLetterStatuses::parse("41O")
                .unwrap_err()
                .contains("\"41O\"")
        );
        assert!(DeadLetterStatuses::parse("600").is_err());
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
        assert!(RetrySchedule::parse(&["1"; MAX_WAITS].join(",")).is_ok());
        assert!(
            RetrySchedule::parse(&["1"; MAX_WAITS + 1].join(","))
                .unwrap_err()
                .contains("14-day")
        );
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
            Some(MAX_VISIBILITY),
            "huge: capped"
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_VISIBILITY)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }
}
