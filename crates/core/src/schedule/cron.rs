//! A cron expression (croner): 5 fields (minute hour day-of-month month day-of-week), or 6 with
//! a leading seconds field, or one of the `@hourly`/`@daily`/... nicknames. Day of month and day
//! of week combine with OR, as in Vixie cron. Ticks are computed in a given time zone (the
//! server's), so `0 3 * * *` is 03:00 local time; daylight-saving gaps and repeats follow
//! croner's handling (its own tests cover them; not re-tested here).
use chrono::{DateTime, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct CronSchedule {
    expression: String,
    cron: Cron,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
    }
}

impl CronSchedule {
    /// Parse `expression` given to `setting` (named in the error). Empty: None (off).
    pub fn parse(setting: &str, expression: &str) -> Result<Option<CronSchedule>> {
        let e = expression.trim();
        if e.is_empty() {
            return Ok(None);
        }
        let fields = e.split_whitespace().count();
        if !e.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(Error::InvalidArgument(format!(
                "{setting}: {e:?} has {fields} fields; a cron expression has 5 (minute hour day month weekday), \
                 or 6 with seconds first"
            )));
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser
            .parse(e)
            .map_err(|err| Error::InvalidArgument(format!("{setting}: {e:?} is not a valid cron expression: {err}")))?;
        Ok(Some(CronSchedule { expression: e.to_string(), cron }))
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first tick strictly after `t`, in `t`'s time zone.
    pub fn next_after<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(t, false).ok().map(|d| d.with_timezone(&Utc))
    }

    /// The last tick at or before `t`, in `t`'s time zone.
    pub fn latest_at_or_before<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(t, true).ok().map(|d| d.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_fields_and_nicknames() {
        assert!(CronSchedule::parse("walg.backup_schedule", "").unwrap().is_none());
        assert!(CronSchedule::parse("walg.backup_schedule", "  ").unwrap().is_none());
        let s = CronSchedule::parse("walg.backup_schedule", "0 3 * * *").unwrap().unwrap();
        assert_eq!(s.next_after(&utc("2026-11-29T17:00:00Z")), Some(utc("2026-11-30T03:00:00Z")));
        assert_eq!(s.latest_at_or_before(&utc("2026-11-29T17:00:00Z")), Some(utc("2026-11-29T03:00:00Z")));
        assert_eq!(s.latest_at_or_before(&utc("2026-11-29T03:00:00Z")), Some(utc("2026-11-29T03:00:00Z")), "inclusive");
        let s = CronSchedule::parse("x", "*/10 * * * * *").unwrap().unwrap();
        assert_eq!(s.next_after(&utc("2026-11-29T17:00:05Z")), Some(utc("2026-11-29T17:00:10Z")));
        let s = CronSchedule::parse("x", "@hourly").unwrap().unwrap();
        assert_eq!(s.next_after(&utc("2026-11-29T17:00:00Z")), Some(utc("2026-11-29T18:00:00Z")));
        // Day of month OR day of week (Vixie): the 1st, and every Sunday.
        let s = CronSchedule::parse("x", "0 0 1 * 0").unwrap().unwrap();
        assert_eq!(s.next_after(&utc("2026-11-29T00:00:00Z")), Some(utc("2026-12-01T00:00:00Z")));
        assert_eq!(s.next_after(&utc("2026-12-01T00:00:00Z")), Some(utc("2026-12-06T00:00:00Z")));
    }

    #[test]
    fn bad_expressions_name_the_setting() {
        for bad in ["0 3 * *", "0 3 * * * * 2026", "61 * * * *", "0 3 * * funday", "every night"] {
            let err = CronSchedule::parse("walg.backup_schedule", bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::BadInput, "{bad}");
            let msg = err.to_string();
            assert!(msg.contains("walg.backup_schedule") && msg.contains(bad), "{msg}");
        }
    }

    #[test]
    fn ticks_are_in_the_given_zone() {
        let s = CronSchedule::parse("x", "0 3 * * *").unwrap().unwrap();
        let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
        let t = utc("2026-11-29T17:00:00Z").with_timezone(&plus2);
        // 03:00 at +02:00 is 01:00 UTC.
        assert_eq!(s.next_after(&t), Some(utc("2026-11-30T01:00:00Z")));
    }
}
