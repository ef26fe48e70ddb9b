//! Cron schedules: their expressions (5 fields, UTC: minute, hour, day of
//! month, month, day of week) and ticks. Pure; the engine keeps schedules
//! in the database and nodes fire them (`node/scheduler.rs`).

use std::str::FromStr;

use chrono::{DateTime, Timelike, Utc};
use croner::Cron;

/// A parsed 5-field UTC cron expression.
#[derive(Debug, Clone)]
pub struct CronExpr {
    cron: Cron,
    text: String,
}

impl CronExpr {
    /// Parses `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<CronExpr, String> {
        let fields = text.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "`cron` must have 5 fields (minute hour day-of-month month day-of-week, UTC), \
                 e.g. \"*/5 * * * *\"; `{text}` has {fields}"
            ));
        }
        let cron = Cron::from_str(text).map_err(|e| format!("`cron` `{text}` is invalid: {e}"))?;
        // An expression that can never fire (e.g. 30 February).
        if cron.find_next_occurrence(&Utc::now(), false).is_err() {
            return Err(format!("`cron` `{text}` never fires"));
        }
        Ok(CronExpr {
            cron,
            text: text.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first tick strictly after `t` (ticks fall on whole minutes).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&whole_second(t), false)
            .ok()
            .map(whole_second)
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&whole_second(t), true)
            .ok()
            .map(whole_second)
    }
}

/// `t` without its fraction of a second (the search keeps it otherwise).
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// The idempotency key of the run a schedule's tick starts.
pub fn tick_key(name: &str, tick: DateTime<Utc>) -> String {
    format!(
        "schedule:{name}:{}",
        tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn ticks_follow_the_expression_in_utc() {
        let c = CronExpr::parse("*/15 * * * *").unwrap();
        assert_eq!(
            c.next_after(at("2026-12-04T10:07:30Z")),
            Some(at("2026-12-04T10:15:00Z"))
        );
        assert_eq!(
            c.next_after(at("2026-12-04T10:15:00Z")),
            Some(at("2026-12-04T10:30:00Z"))
        );
        assert_eq!(
            c.next_after(at("2026-12-04T10:15:00.748Z")),
            Some(at("2026-12-04T10:30:00Z"))
        );
        assert_eq!(
            c.latest_at_or_before(at("2026-12-04T10:15:00.748Z")),
            Some(at("2026-12-04T10:15:00Z"))
        );
        assert_eq!(
            c.latest_at_or_before(at("2026-12-04T10:15:00Z")),
            Some(at("2026-12-04T10:15:00Z"))
        );
        assert_eq!(
            c.latest_at_or_before(at("2026-12-04T11:59:59Z")),
            Some(at("2026-12-04T11:45:00Z"))
        );
        let daily = CronExpr::parse("30 6 * * 1").unwrap();
        assert_eq!(
            daily.next_after(at("2026-12-04T00:00:00Z")),
            Some(at("2026-12-07T06:30:00Z"))
        );
        assert_eq!(
            tick_key("nightly", at("2026-12-07T06:30:00Z")),
            "schedule:nightly:2026-12-07T06:30:00Z"
        );
    }

    #[test]
    fn bad_expressions_are_refused_with_the_reason() {
        for (text, says) in [
            ("* * * *", "5 fields"),
            ("0 * * * * *", "5 fields"),
            ("61 * * * *", "invalid"),
            ("* * * * funday", "invalid"),
            ("", "5 fields"),
            ("0 0 30 2 *", "never fires"),
        ] {
            let e = CronExpr::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
