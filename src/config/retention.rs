//! The `[retention]` section: how long finished runs are kept (`finished_after`, a duration
//! written `"<n>d"`, `"<n>h"`, `"<n>m"` or `"<n>s"`, default `"7d"`; `"off"` or `"0"` keeps
//! every run), how many are deleted per transaction (`batch_size`) and how long a node waits
//! between purges once there was less than a batch to delete (`interval_ms`).

use std::time::Duration;

use super::error::{ConfigError, Ctx};
use super::keys::Doc;
use super::model::RetentionConfig;
use super::parse::MAX_MS;

/// The longest `finished_after` accepted: ten years.
const MAX_SECS: u64 = 3650 * 86_400;

/// Reads and validates `[retention]`, filling in defaults.
pub(super) fn build(doc: &Doc<'_>, ctx: &Ctx) -> Result<RetentionConfig, ConfigError> {
    let d = RetentionConfig::default();
    let finished_after = match doc.str(&["retention", "finished_after"]) {
        None => d.finished_after,
        Some(text) => parse_age(&text).map_err(|why| {
            let msg = format!(
                "must be a duration like \"7d\", \"12h\", \"30m\" or \"90s\" (at most 3650d), \
                 or \"off\" to keep every run; {why} (got {text:?})"
            );
            ctx.invalid("retention.finished_after", msg)
        })?,
    };
    let int = |key: &str| doc.int(&["retention", key]);
    Ok(RetentionConfig {
        finished_after,
        batch_size: ctx.ranged(
            "retention.batch_size",
            int("batch_size"),
            d.batch_size as i64,
            1,
            100_000,
        )?,
        interval_ms: ctx.ranged(
            "retention.interval_ms",
            int("interval_ms"),
            d.interval_ms as i64,
            1,
            MAX_MS,
        )?,
    })
}

/// `"7d"` to seven days; `"off"` and `"0"` to `None` (retention disabled).
fn parse_age(text: &str) -> Result<Option<Duration>, &'static str> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") || text == "0" {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("the unit is missing")?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err("the number is missing");
    }
    // All digits: a failed parse can only be an overflow.
    let n: u64 = number.parse().map_err(|_| "it is too long")?;
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err("the unit must be one of d, h, m, s"),
    };
    match n.checked_mul(per) {
        Some(0) => Err("zero is written \"off\""),
        Some(secs) if secs <= MAX_SECS => Ok(Some(Duration::from_secs(secs))),
        _ => Err("it is too long"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{db, load, top};
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn finished_after_defaults_to_seven_days_and_reads_every_unit() {
        let c = load(concat!(top!(), db!()), &[]).expect("loads").config;
        assert_eq!(c.retention, RetentionConfig::default());
        assert_eq!(c.retention.finished_after, Some(7 * DAY));
        assert_eq!(
            (c.retention.batch_size, c.retention.interval_ms),
            (1000, 60_000)
        );
        for (text, want) in [
            ("30d", 30 * DAY),
            ("12h", Duration::from_secs(12 * 3600)),
            ("45m", Duration::from_secs(45 * 60)),
            (" 1s ", Duration::from_secs(1)),
            ("3650d", 3650 * DAY),
        ] {
            let file = format!(
                "{}{}[retention]\nfinished_after = \"{text}\"\nbatch_size = 5\ninterval_ms = 250\n",
                top!(),
                db!()
            );
            let r = load(&file, &[]).expect(text).config.retention;
            assert_eq!(
                (r.finished_after, r.batch_size, r.interval_ms),
                (Some(want), 5, 250),
                "{text}"
            );
        }
    }

    #[test]
    fn off_or_zero_disables_retention_from_the_file_or_the_environment() {
        for text in ["off", "OFF", "0"] {
            let file = format!(
                "{}{}[retention]\nfinished_after = \"{text}\"\n",
                top!(),
                db!()
            );
            let c = load(&file, &[]).expect(text).config;
            assert_eq!(c.retention.finished_after, None, "{text}");
        }
        let env = [("SWF_RETENTION__FINISHED_AFTER", "off")];
        let c = load(concat!(top!(), db!()), &env).expect("env").config;
        assert_eq!(c.retention.finished_after, None);
        let env = [("SWF_RETENTION__FINISHED_AFTER", "2h")];
        let c = load(concat!(top!(), db!()), &env).expect("env").config;
        assert_eq!(c.retention.finished_after, Some(Duration::from_secs(7200)));
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        /// A `[retention]` line, the environment, a text the error holds.
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)],
            &'static str,
        );
        let cases: &[Case] = &[
            (
                "finished_after = \"7x\"",
                &[],
                "the unit must be one of d, h, m, s (got \"7x\")",
            ),
            ("finished_after = \"7\"", &[], "the unit is missing"),
            ("finished_after = \"d\"", &[], "the number is missing"),
            ("finished_after = \"-1d\"", &[], "the number is missing"),
            ("finished_after = \"0d\"", &[], "zero is written \"off\""),
            ("finished_after = \"3651d\"", &[], "it is too long"),
            (
                "finished_after = \"99999999999999999999d\"",
                &[],
                "it is too long",
            ),
            (
                "finished_after = 7",
                &[],
                "invalid type: integer `7`, expected a string",
            ),
            (
                "batch_size = 0",
                &[],
                "must be between 1 and 100000 (got 0)",
            ),
            (
                "interval_ms = 0",
                &[],
                "must be between 1 and 86400000 (got 0)",
            ),
            (
                "finished_after = \"7d\"",
                &[("SWF_RETENTION__FINISHED_AFTER", "week")],
                "(set by environment variable SWF_RETENTION__FINISHED_AFTER)",
            ),
        ];
        for (line, env, want) in cases {
            let key = line.split(' ').next().unwrap_or_default();
            let file = format!("{}{}[retention]\n{line}\n", top!(), db!());
            let err = load(&file, env).expect_err(line).to_string();
            assert!(
                err.contains(&format!("key `retention.{key}`")),
                "{line}: {err}"
            );
            assert!(err.contains(want), "{line}: {err}");
        }
    }
}
