//! When the scheduler runs a restore drill (`walg.drill_schedule`): pure decisions from the
//! schedule, the drill's persisted record (`State::drill`) and the time given.
//!
//! Rules (those of the backup schedules where they apply, plan.rs):
//! - A tick at or before `handled_until` is done; a new or changed expression starts at the time
//!   it was configured; a tick missed while the server was down is caught up once at start.
//! - One drill at a time: while one runs, no tick is due (a tick passing meanwhile is handled
//!   by the running drill's end, not queued: drills are long and one proves the latest backup).
//! - No retries: a drill that ran and failed is a finding about the backup (walg_health()'s
//!   `drill_failed`, from the report in storage), not a transient error; a drill that could not
//!   run (refused, a backup running) is recorded with the reason and waits for the next tick.
//! - A drill cut off by the scheduler's shutdown leaves its tick due; a record that says
//!   `running` at start (the server died during a drill) is read as cancelled.
use chrono::{DateTime, TimeZone, Utc};

use super::cron::CronSchedule;
use super::plan::{Outcome, Record, RunResult};

/// Start of `last_error` for a scheduled drill that failed without a report (refused by a
/// check, or the child could not run): `walg_health()` reports those (`scheduled_drill_not_run`);
/// a drill that ran and failed is `drill_failed`, from its report in storage.
pub const NOT_RUN_PREFIX: &str = "not run: ";

/// The drill schedule and the tick being handled.
#[derive(Clone, Debug, Default)]
pub struct DrillPlan {
    schedule: Option<CronSchedule>,
    running: Option<DateTime<Utc>>,
}

impl DrillPlan {
    /// A plan resuming `rec` (from the state file) at start.
    pub fn resume(rec: &mut Record) -> DrillPlan {
        if rec.last_outcome == Some(Outcome::Running) {
            rec.last_outcome = Some(Outcome::Cancelled);
            rec.last_error = Some("interrupted: the server stopped during the drill".into());
        }
        DrillPlan::default()
    }

    pub fn schedule(&self) -> Option<&CronSchedule> {
        self.schedule.as_ref()
    }

    /// A drill started by this plan is running.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Apply (a new) schedule, at start and after each reload: a changed expression starts afresh.
    pub fn configure(&mut self, rec: &mut Record, s: Option<CronSchedule>, now: DateTime<Utc>) {
        let expr = s.as_ref().map(|s| s.expression().to_string()).unwrap_or_default();
        if rec.expression != expr {
            let keep = rec.clone();
            *rec = Record { expression: expr, since: Some(now), handled_until: Some(now), ..Record::default() };
            // The last drill stays on view; only the schedule is new.
            rec.last_run = keep.last_run;
            rec.last_outcome = keep.last_outcome;
            rec.last_error = keep.last_error;
            rec.last_duration_ms = keep.last_duration_ms;
            rec.last_backup = keep.last_backup;
        } else if rec.handled_until.is_none() {
            rec.handled_until = Some(now);
            rec.since.get_or_insert(now);
        }
        self.schedule = s;
    }

    /// The tick to drill for now, if one is due and no drill of this plan is running.
    pub fn due<Tz: TimeZone>(&self, rec: &Record, now: &DateTime<Tz>) -> Option<DateTime<Utc>> {
        if self.running.is_some() {
            return None;
        }
        let t = self.schedule.as_ref()?.latest_at_or_before(now)?;
        rec.handled_until.is_none_or(|d| t > d).then_some(t)
    }

    /// The next tick after `now` (None: off).
    pub fn next_run<Tz: TimeZone>(&self, now: &DateTime<Tz>) -> Option<DateTime<Utc>> {
        self.schedule.as_ref()?.next_after(now)
    }

    /// The drill for `tick` started at `now` on `backup`.
    pub fn started(&mut self, rec: &mut Record, tick: DateTime<Utc>, backup: &str, now: DateTime<Utc>) {
        self.running = Some(tick);
        rec.last_run = Some(now);
        rec.last_outcome = Some(Outcome::Running);
        rec.last_error = None;
        rec.last_duration_ms = None;
        rec.last_backup = Some(backup.to_string());
    }

    /// The tick at `tick` could not start a drill (`Skipped`: a backup or another drill was
    /// running; `Failed`: a check refused it): handled, with the reason.
    pub fn not_started(&mut self, rec: &mut Record, tick: DateTime<Utc>, result: RunResult, now: DateTime<Utc>) {
        self.running = Some(tick);
        rec.last_run = Some(now);
        self.finished(rec, result, now);
    }

    /// The running drill ended with `result` at `now` (`Succeeded`: it passed; `Failed`: it
    /// failed or could not run; `Cancelled`: the shutdown stopped it, so its tick stays due).
    pub fn finished(&mut self, rec: &mut Record, result: RunResult, now: DateTime<Utc>) {
        let Some(tick) = self.running.take() else { return };
        let (outcome, error) = match result {
            RunResult::Succeeded { backup } => {
                rec.last_backup = Some(backup);
                (Outcome::Succeeded, None)
            }
            RunResult::Failed { error } => (Outcome::Failed, Some(error)),
            RunResult::Skipped { reason } => (Outcome::Skipped, Some(reason)),
            RunResult::Cancelled { reason } => (Outcome::Cancelled, Some(reason)),
        };
        rec.last_duration_ms = rec.last_run.map(|s| (now - s).num_milliseconds().max(0));
        rec.last_outcome = Some(outcome);
        rec.last_error = error;
        if outcome != Outcome::Cancelled {
            // Ticks that passed while it ran are handled too: the next drill is at the next tick.
            let latest = self.schedule.as_ref().and_then(|s| s.latest_at_or_before(&now)).unwrap_or(tick);
            rec.handled_until = Some(rec.handled_until.map_or(latest.max(tick), |h| h.max(latest).max(tick)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn cron(e: &str) -> Option<CronSchedule> {
        CronSchedule::parse("walg.drill_schedule", e).unwrap()
    }

    #[test]
    fn a_drill_runs_at_its_ticks_only_one_at_a_time() {
        let now = t("2026-11-29T17:30:00Z");
        let mut rec = Record::default();
        let mut p = DrillPlan::resume(&mut rec);
        p.configure(&mut rec, cron("0 * * * *"), now);
        assert_eq!(p.due(&rec, &now), None, "setting a schedule runs nothing");
        assert_eq!(p.next_run(&now), Some(t("2026-11-29T18:00:00Z")));
        let at = t("2026-11-29T18:00:00Z");
        assert_eq!(p.due(&rec, &at), Some(at));
        p.started(&mut rec, at, "base_1", at);
        assert!(p.is_running());
        assert_eq!((rec.last_outcome, rec.last_backup.as_deref()), (Some(Outcome::Running), Some("base_1")));
        // While it runs nothing is due, not even a later tick.
        assert_eq!(p.due(&rec, &t("2026-11-29T19:00:01Z")), None);
        p.finished(&mut rec, RunResult::Failed { error: "drill failed at amcheck: ...".into() }, t("2026-11-29T19:10:00Z"));
        assert_eq!(rec.last_outcome, Some(Outcome::Failed));
        assert_eq!(rec.last_duration_ms, Some(70 * 60 * 1000));
        // The 19:00 tick passed during the drill: handled by it; no retry either.
        assert_eq!(rec.handled_until, Some(t("2026-11-29T19:00:00Z")));
        assert_eq!(p.due(&rec, &t("2026-11-29T19:10:00Z")), None);
        assert_eq!(p.due(&rec, &t("2026-11-29T20:00:00Z")), Some(t("2026-11-29T20:00:00Z")));
    }

    #[test]
    fn a_tick_that_cannot_start_is_handled_with_its_reason() {
        let now = t("2026-11-29T17:30:00Z");
        let mut rec = Record::default();
        let mut p = DrillPlan::resume(&mut rec);
        p.configure(&mut rec, cron("0 * * * *"), now);
        let at = t("2026-11-29T18:00:00Z");
        let tick = p.due(&rec, &at).unwrap();
        p.not_started(&mut rec, tick, RunResult::Skipped { reason: "a backup is running (process 42)".into() }, at);
        assert!(!p.is_running());
        assert_eq!((rec.last_outcome, rec.last_error.as_deref()), (Some(Outcome::Skipped), Some("a backup is running (process 42)")));
        assert_eq!(p.due(&rec, &at), None);
        assert_eq!(rec.last_backup, None);
    }

    #[test]
    fn shutdown_leaves_the_tick_due_and_a_restart_catches_it_up_once() {
        let now = t("2026-11-29T17:30:00Z");
        let mut rec = Record::default();
        let mut p = DrillPlan::resume(&mut rec);
        p.configure(&mut rec, cron("0 3 * * *"), now);
        let at = t("2026-11-30T03:00:00Z");
        p.started(&mut rec, at, "base_1", at);
        let mut saved = rec.clone(); // the server died with the drill running
        p.finished(&mut rec, RunResult::Cancelled { reason: "shutdown".into() }, at);
        assert_eq!(rec.handled_until, Some(now), "not handled");
        // Restart three days later: the latest missed tick once.
        let start = t("2026-12-03T10:00:00Z");
        let mut p = DrillPlan::resume(&mut saved);
        assert_eq!(saved.last_outcome, Some(Outcome::Cancelled));
        p.configure(&mut saved, cron("0 3 * * *"), start);
        assert_eq!(p.due(&saved, &start), Some(t("2026-12-03T03:00:00Z")));
        p.started(&mut saved, t("2026-12-03T03:00:00Z"), "base_2", start);
        p.finished(&mut saved, RunResult::Succeeded { backup: "base_2".into() }, start);
        assert_eq!(p.due(&saved, &start), None);
        assert_eq!(saved.last_outcome, Some(Outcome::Succeeded));
    }

    #[test]
    fn a_changed_schedule_starts_afresh_but_keeps_the_last_drill_on_view() {
        let now = t("2026-11-29T17:30:00Z");
        let mut rec = Record::default();
        let mut p = DrillPlan::resume(&mut rec);
        p.configure(&mut rec, cron("0 * * * *"), now);
        let at = t("2026-11-29T18:00:00Z");
        p.started(&mut rec, at, "base_1", at);
        p.finished(&mut rec, RunResult::Succeeded { backup: "base_1".into() }, at);
        let reload = t("2026-11-29T18:30:00Z");
        p.configure(&mut rec, cron("0 3 * * *"), reload);
        assert_eq!((rec.expression.as_str(), rec.since, rec.last_backup.as_deref()), ("0 3 * * *", Some(reload), Some("base_1")));
        assert_eq!(p.due(&rec, &t("2026-11-30T02:59:59Z")), None);
        p.configure(&mut rec, None, reload);
        assert_eq!((p.due(&rec, &t("2026-12-30T03:00:00Z")), p.next_run(&reload)), (None, None), "off");
    }
}
