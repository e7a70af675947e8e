//! What the scheduler does next: pure decisions from the schedules, the persisted state and the
//! time given (no clock is read here, so every rule is tested with a fake clock).
//!
//! Rules:
//! - A schedule's ticks at or before `handled_until` are done. A new schedule (or a changed
//!   expression, after a reload) starts at the time it was configured: nothing runs just because
//!   a schedule was set. The state survives restarts (state.rs), so ticks missed while the
//!   server was down are caught up ONCE at start: only the latest missed tick is due, and
//!   handling it handles every earlier one.
//! - Both schedules due together make one backup (a full one when the full schedule is due).
//! - One backup at a time: a tick that finds a backup running (started from SQL, say) is skipped
//!   and recorded as such; so is a tick on a standby that may not back up.
//! - A failed backup is retried at most `retries` times, waiting `retry_delay`, then twice as
//!   long each time (at most `MAX_BACKOFF`). A newer tick replaces a pending retry (it is a
//!   fresh attempt with fresh retries). After the last retry the tick is handled, failed.
//! - A backup cancelled by the scheduler's own shutdown leaves its tick unhandled, so the next
//!   start catches it up. A state file that says `running` (the server died during a backup) is
//!   read as cancelled.
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::cron::CronSchedule;
use super::metrics::Counters;

/// The longest wait between two retries.
pub const MAX_BACKOFF: Duration = Duration::hours(6);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    /// walg.backup_schedule: a backup (a delta when deltas exist and allow it; full today).
    Backup,
    /// walg.full_backup_schedule: always a full backup.
    FullBackup,
}

impl Which {
    pub const ALL: [Which; 2] = [Which::Backup, Which::FullBackup];
    pub fn name(self) -> &'static str {
        match self {
            Which::Backup => "backup",
            Which::FullBackup => "full_backup",
        }
    }
    pub fn setting(self) -> &'static str {
        match self {
            Which::Backup => "walg.backup_schedule",
            Which::FullBackup => "walg.full_backup_schedule",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// One schedule's persisted record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The expression this record belongs to ("" = off).
    pub expression: String,
    /// When this expression took effect (ticks before it never count as missed).
    pub since: Option<DateTime<Utc>>,
    /// Ticks at or before this are done.
    pub handled_until: Option<DateTime<Utc>>,
    /// Start of the last attempt.
    pub last_run: Option<DateTime<Utc>>,
    pub last_outcome: Option<Outcome>,
    pub last_error: Option<String>,
    pub last_duration_ms: Option<i64>,
    pub last_backup: Option<String>,
    /// A retry is pending at this time (attempt `attempt`).
    pub retry_at: Option<DateTime<Utc>>,
    pub attempt: u32,
}

/// Retention's persisted record (applied after each successful scheduled backup).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetentionRecord {
    pub policy: String,
    pub last_run: Option<DateTime<Utc>>,
    pub last_outcome: Option<Outcome>,
    pub last_error: Option<String>,
    pub last_duration_ms: Option<i64>,
    /// Objects deleted by the last run (backups' objects and WAL).
    pub last_deleted: u64,
}

/// Everything the scheduler keeps across restarts (state.rs writes it to PGDATA).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub backup: Record,
    pub full_backup: Record,
    pub retention: RetentionRecord,
    #[serde(default)]
    pub counters: Counters,
    /// walg.drill_schedule's record (schedule/drill.rs decides on it).
    #[serde(default)]
    pub drill: Record,
}

impl State {
    pub fn record(&self, w: Which) -> &Record {
        match w {
            Which::Backup => &self.backup,
            Which::FullBackup => &self.full_backup,
        }
    }
    pub fn record_mut(&mut self, w: Which) -> &mut Record {
        match w {
            Which::Backup => &mut self.backup,
            Which::FullBackup => &mut self.full_backup,
        }
    }
}

/// Retries of a failed scheduled backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retries: u32,
    pub delay: Duration,
}

impl RetryPolicy {
    /// Wait before retry number `n` (1-based): delay, 2 x delay, 4 x delay, ... at most MAX_BACKOFF.
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 1i64 << (n.saturating_sub(1)).min(20);
        let secs = self.delay.num_seconds().max(1).saturating_mul(factor);
        Duration::seconds(secs).min(MAX_BACKOFF)
    }
}

/// A tick (or ticks) being handled.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub ticks: Vec<(Which, DateTime<Utc>)>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub not_before: DateTime<Utc>,
}

impl Pending {
    pub fn full(&self) -> bool {
        self.ticks.iter().any(|(w, _)| *w == Which::FullBackup)
    }
}

/// What to do now.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Take a backup now.
    Run { full: bool, attempt: u32, catch_up: bool },
    /// Nothing due; wake up at this time (None: no schedule).
    Wait(Option<DateTime<Utc>>),
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum RunResult {
    Succeeded { backup: String },
    Failed { error: String },
    /// Not attempted (a backup is already running; a standby that may not back up).
    Skipped { reason: String },
    /// Stopped by the scheduler's shutdown: the tick stays due.
    Cancelled { reason: String },
}

pub struct Scheduler {
    schedules: [Option<CronSchedule>; 2],
    pub state: State,
    pending: Option<Pending>,
    policy: RetryPolicy,
    started_at: DateTime<Utc>,
}

impl Scheduler {
    /// A scheduler resuming `state` (from the state file, or default) at `now`.
    pub fn new(mut state: State, policy: RetryPolicy, now: DateTime<Utc>) -> Scheduler {
        for w in Which::ALL {
            let r = state.record_mut(w);
            if r.last_outcome == Some(Outcome::Running) {
                r.last_outcome = Some(Outcome::Cancelled);
                r.last_error = Some("interrupted: the server stopped during the backup".into());
            }
            r.retry_at = None;
        }
        if state.retention.last_outcome == Some(Outcome::Running) {
            state.retention.last_outcome = Some(Outcome::Cancelled);
        }
        Scheduler { schedules: [None, None], state, pending: None, policy, started_at: now }
    }

    pub fn schedule(&self, w: Which) -> Option<&CronSchedule> {
        self.schedules[w.index()].as_ref()
    }

    pub fn pending(&self) -> Option<&Pending> {
        self.pending.as_ref()
    }

    /// Apply (new) schedules and retry policy, at start and after each reload. A changed
    /// expression starts afresh at `now`; an unchanged one keeps its record (so a restart
    /// catches up).
    pub fn configure(&mut self, backup: Option<CronSchedule>, full: Option<CronSchedule>, policy: RetryPolicy, now: DateTime<Utc>) {
        self.policy = policy;
        for (w, s) in [(Which::Backup, backup), (Which::FullBackup, full)] {
            let expr = s.as_ref().map(|s| s.expression().to_string()).unwrap_or_default();
            let r = self.state.record_mut(w);
            if r.expression != expr {
                *r = Record { expression: expr, since: Some(now), handled_until: Some(now), ..Record::default() };
                if let Some(p) = &mut self.pending {
                    p.ticks.retain(|(x, _)| *x != w);
                }
            } else if r.handled_until.is_none() {
                r.handled_until = Some(now);
                r.since.get_or_insert(now);
            }
            self.schedules[w.index()] = s;
        }
        if self.pending.as_ref().is_some_and(|p| p.ticks.is_empty()) {
            self.pending = None;
        }
        self.sync_retry_fields();
    }

    /// Ticks due at `now`: per schedule, its latest tick at or before now, if not handled yet.
    fn due<Tz: TimeZone>(&self, now: &DateTime<Tz>) -> Vec<(Which, DateTime<Utc>)> {
        Which::ALL
            .into_iter()
            .filter_map(|w| {
                let s = self.schedules[w.index()].as_ref()?;
                let t = s.latest_at_or_before(now)?;
                let done = self.state.record(w).handled_until;
                (done.is_none_or(|d| t > d)).then_some((w, t))
            })
            .collect()
    }

    /// The next tick of each schedule after `now`, or its pending retry if sooner.
    pub fn next_run<Tz: TimeZone>(&self, w: Which, now: &DateTime<Tz>) -> Option<DateTime<Utc>> {
        let tick = self.schedules[w.index()].as_ref()?.next_after(now);
        let retry = self.pending.as_ref().filter(|p| p.ticks.iter().any(|(x, _)| *x == w)).map(|p| p.not_before);
        match (tick, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What to do at `now` (in the server's time zone).
    pub fn poll<Tz: TimeZone>(&mut self, now: &DateTime<Tz>) -> Decision {
        let now_utc = now.with_timezone(&Utc);
        let due = self.due(now);
        if !due.is_empty() {
            let same = self.pending.as_ref().is_some_and(|p| due.iter().all(|d| p.ticks.contains(d)));
            if !same {
                // First attempt for these ticks (a newer tick replaces a pending retry).
                self.pending = Some(Pending { ticks: due, attempt: 1, not_before: now_utc });
                self.sync_retry_fields();
            }
        }
        if let Some(p) = &self.pending {
            if p.not_before <= now_utc {
                let catch_up = p.attempt == 1 && p.ticks.iter().all(|(_, t)| *t < self.started_at);
                return Decision::Run { full: p.full(), attempt: p.attempt, catch_up };
            }
        }
        let wake = Which::ALL.into_iter().filter_map(|w| self.next_run(w, now)).min();
        Decision::Wait(wake)
    }

    /// The attempt `poll` asked for starts now.
    pub fn started(&mut self, now: DateTime<Utc>) {
        let Some(p) = &self.pending else { return };
        for (w, _) in p.ticks.clone() {
            let r = self.state.record_mut(w);
            r.last_run = Some(now);
            r.last_outcome = Some(Outcome::Running);
            r.last_duration_ms = None;
            r.retry_at = None;
        }
    }

    /// The attempt ended with `result` at `now`. Returns true when retention should run (a
    /// backup succeeded).
    pub fn finished(&mut self, result: RunResult, now: DateTime<Utc>) -> bool {
        let Some(mut p) = self.pending.take() else { return false };
        let (outcome, error, backup) = match &result {
            RunResult::Succeeded { backup } => (Outcome::Succeeded, None, Some(backup.clone())),
            RunResult::Failed { error } => (Outcome::Failed, Some(error.clone()), None),
            RunResult::Skipped { reason } => (Outcome::Skipped, Some(reason.clone()), None),
            RunResult::Cancelled { reason } => (Outcome::Cancelled, Some(reason.clone()), None),
        };
        let c = &mut self.state.counters;
        match outcome {
            Outcome::Succeeded => c.backups_succeeded += 1,
            Outcome::Failed => c.backups_failed += 1,
            Outcome::Skipped => c.backups_skipped += 1,
            _ => {}
        }
        let retry = outcome == Outcome::Failed && p.attempt <= self.policy.retries;
        let keep_due = retry || outcome == Outcome::Cancelled;
        for (w, tick) in &p.ticks {
            let r = self.state.record_mut(*w);
            if outcome != Outcome::Skipped {
                r.last_duration_ms = r.last_run.map(|s| (now - s).num_milliseconds().max(0));
            } else {
                r.last_run = Some(now);
                r.last_duration_ms = Some(0);
            }
            r.last_outcome = Some(outcome);
            r.last_error = error.clone();
            if backup.is_some() {
                r.last_backup = backup.clone();
            }
            if !keep_due {
                r.handled_until = Some(r.handled_until.map_or(*tick, |h| h.max(*tick)));
            }
        }
        if retry {
            p.not_before = now + self.policy.backoff(p.attempt);
            p.attempt += 1;
            self.pending = Some(p);
        } else if outcome == Outcome::Cancelled {
            // Stays due; the scheduler is stopping, the next start catches it up.
            p.not_before = now;
            self.pending = Some(p);
        }
        self.sync_retry_fields();
        outcome == Outcome::Succeeded
    }

    /// Retention started / ended (`Ok(deleted objects)` or the error).
    pub fn retention_started(&mut self, policy: &str, now: DateTime<Utc>) {
        let r = &mut self.state.retention;
        r.policy = policy.to_string();
        r.last_run = Some(now);
        r.last_outcome = Some(Outcome::Running);
    }

    pub fn retention_finished(&mut self, result: Result<u64, String>, now: DateTime<Utc>) {
        let r = &mut self.state.retention;
        r.last_duration_ms = r.last_run.map(|s| (now - s).num_milliseconds().max(0));
        let c = &mut self.state.counters;
        match result {
            Ok(n) => {
                r.last_outcome = Some(Outcome::Succeeded);
                r.last_error = None;
                r.last_deleted = n;
                c.retention_runs += 1;
                c.deleted_objects += n;
            }
            Err(e) => {
                r.last_outcome = Some(Outcome::Failed);
                r.last_error = Some(e);
                r.last_deleted = 0;
                c.retention_failures += 1;
            }
        }
    }

    fn sync_retry_fields(&mut self) {
        let p = self.pending.clone();
        for w in Which::ALL {
            let r = self.state.record_mut(w);
            match &p {
                Some(p) if p.attempt > 1 && p.ticks.iter().any(|(x, _)| *x == w) => {
                    r.retry_at = Some(p.not_before);
                    r.attempt = p.attempt;
                }
                _ => {
                    r.retry_at = None;
                    r.attempt = 0;
                }
            }
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
        CronSchedule::parse("walg.backup_schedule", e).unwrap()
    }
    const POLICY: RetryPolicy = RetryPolicy { retries: 2, delay: Duration::seconds(60) };

    fn hourly(now: DateTime<Utc>) -> Scheduler {
        let mut s = Scheduler::new(State::default(), POLICY, now);
        s.configure(cron("0 * * * *"), None, POLICY, now);
        s
    }

    #[test]
    fn nothing_runs_when_a_schedule_is_set_only_at_its_ticks() {
        let now = t("2026-11-29T17:30:00Z");
        let mut s = hourly(now);
        assert_eq!(s.poll(&now), Decision::Wait(Some(t("2026-11-29T18:00:00Z"))));
        assert_eq!(s.poll(&t("2026-11-29T17:59:59Z")), Decision::Wait(Some(t("2026-11-29T18:00:00Z"))));
        let at = t("2026-11-29T18:00:00Z");
        assert_eq!(s.poll(&at), Decision::Run { full: false, attempt: 1, catch_up: false });
        // Asking again before it finishes gives the same attempt (not a second one).
        assert_eq!(s.poll(&at), Decision::Run { full: false, attempt: 1, catch_up: false });
        s.started(at);
        assert_eq!(s.state.backup.last_outcome, Some(Outcome::Running));
        assert!(s.finished(RunResult::Succeeded { backup: "base_1".into() }, t("2026-11-29T18:05:00Z")));
        let r = &s.state.backup;
        assert_eq!((r.last_outcome, r.last_duration_ms, r.last_backup.as_deref()), (Some(Outcome::Succeeded), Some(300_000), Some("base_1")));
        assert_eq!(r.handled_until, Some(at));
        assert_eq!(s.poll(&t("2026-11-29T18:05:00Z")), Decision::Wait(Some(t("2026-11-29T19:00:00Z"))));
        assert_eq!(s.state.counters.backups_succeeded, 1);
    }

    #[test]
    fn no_schedule_waits_forever() {
        let now = t("2026-11-29T17:30:00Z");
        let mut s = Scheduler::new(State::default(), POLICY, now);
        s.configure(None, None, POLICY, now);
        assert_eq!(s.poll(&t("2026-12-29T17:30:00Z")), Decision::Wait(None));
    }

    #[test]
    fn missed_ticks_are_caught_up_once_after_a_restart() {
        let now = t("2026-11-29T17:30:00Z");
        let mut s = hourly(now);
        let at = t("2026-11-29T18:00:00Z");
        s.poll(&at);
        s.started(at);
        s.finished(RunResult::Succeeded { backup: "base_1".into() }, at);
        let saved = s.state.clone();
        // Down from 18:10 to 21:20: ticks 19:00, 20:00, 21:00 missed. One run at start.
        let start = t("2026-11-29T21:20:00Z");
        let mut s = Scheduler::new(saved, POLICY, start);
        s.configure(cron("0 * * * *"), None, POLICY, start);
        assert_eq!(s.poll(&start), Decision::Run { full: false, attempt: 1, catch_up: true });
        s.started(start);
        s.finished(RunResult::Succeeded { backup: "base_2".into() }, t("2026-11-29T21:25:00Z"));
        assert_eq!(s.state.backup.handled_until, Some(t("2026-11-29T21:00:00Z")));
        assert_eq!(s.poll(&t("2026-11-29T21:25:00Z")), Decision::Wait(Some(t("2026-11-29T22:00:00Z"))));
        assert_eq!(s.state.counters.backups_succeeded, 2);
    }

    #[test]
    fn a_restart_without_a_missed_tick_runs_nothing() {
        let now = t("2026-11-29T17:30:00Z");
        let s = hourly(now);
        let saved = s.state.clone();
        let start = t("2026-11-29T17:50:00Z");
        let mut s = Scheduler::new(saved, POLICY, start);
        s.configure(cron("0 * * * *"), None, POLICY, start);
        assert_eq!(s.poll(&start), Decision::Wait(Some(t("2026-11-29T18:00:00Z"))));
    }

    #[test]
    fn a_changed_schedule_starts_afresh_and_a_reload_applies_it() {
        let now = t("2026-11-29T17:30:00Z");
        let mut s = hourly(now);
        // Reload at 17:45 to every 5 minutes: next tick 17:50, nothing "missed" before 17:45.
        let reload = t("2026-11-29T17:45:00Z");
        s.configure(cron("*/5 * * * *"), None, POLICY, reload);
        assert_eq!(s.poll(&reload), Decision::Wait(Some(t("2026-11-29T17:50:00Z"))));
        assert_eq!(s.state.backup.expression, "*/5 * * * *");
        assert_eq!(s.state.backup.since, Some(reload));
        // A restart with a different expression than the saved one does not catch up either.
        let saved = s.state.clone();
        let start = t("2026-11-29T23:00:30Z");
        let mut s = Scheduler::new(saved, POLICY, start);
        s.configure(cron("0 3 * * *"), None, POLICY, start);
        assert_eq!(s.poll(&start), Decision::Wait(Some(t("2026-11-30T03:00:00Z"))));
        // Turned off: nothing.
        s.configure(None, None, POLICY, start);
        assert_eq!(s.poll(&t("2026-11-30T03:00:00Z")), Decision::Wait(None));
        assert_eq!(s.state.backup.expression, "");
    }

    #[test]
    fn failures_are_retried_with_backoff_then_given_up() {
        let now = t("2026-11-29T17:30:00Z");
        let mut s = Scheduler::new(State::default(), POLICY, now);
        s.configure(cron("0 3 * * *"), None, POLICY, now);
        let at = t("2026-11-30T03:00:00Z");
        assert_eq!(s.poll(&at), Decision::Run { full: false, attempt: 1, catch_up: false });
        s.started(at);
        assert!(!s.finished(RunResult::Failed { error: "storage unreachable: x".into() }, t("2026-11-30T03:00:10Z")));
        assert_eq!(s.state.backup.last_outcome, Some(Outcome::Failed));
        assert_eq!(s.state.backup.retry_at, Some(t("2026-11-30T03:01:10Z")));
        assert_eq!(s.state.backup.attempt, 2);
        assert_eq!(s.poll(&t("2026-11-30T03:01:00Z")), Decision::Wait(Some(t("2026-11-30T03:01:10Z"))));
        let r2 = t("2026-11-30T03:01:10Z");
        assert_eq!(s.poll(&r2), Decision::Run { full: false, attempt: 2, catch_up: false });
        s.started(r2);
        s.finished(RunResult::Failed { error: "again".into() }, r2);
        // Second retry waits twice as long.
        let r3 = r2 + Duration::seconds(120);
        assert_eq!(s.poll(&(r3 - Duration::seconds(1))), Decision::Wait(Some(r3)));
        assert_eq!(s.poll(&r3), Decision::Run { full: false, attempt: 3, catch_up: false });
        s.started(r3);
        s.finished(RunResult::Failed { error: "still".into() }, r3);
        // Retries (2) used up: the tick is handled, failed; next is tomorrow.
        assert_eq!(s.state.backup.handled_until, Some(at));
        assert_eq!(s.state.backup.retry_at, None);
        assert_eq!(s.state.backup.last_error.as_deref(), Some("still"));
        assert_eq!(s.poll(&r3), Decision::Wait(Some(t("2026-12-01T03:00:00Z"))));
        assert_eq!(s.state.counters.backups_failed, 3);
    }

    #[test]
    fn a_newer_tick_replaces_a_pending_retry() {
        let now = t("2026-11-29T17:30:00Z");
        let policy = RetryPolicy { retries: 5, delay: Duration::seconds(3600) };
        let mut s = Scheduler::new(State::default(), policy, now);
        s.configure(cron("*/10 * * * *"), None, policy, now);
        let at = t("2026-11-29T17:40:00Z");
        s.poll(&at);
        s.started(at);
        s.finished(RunResult::Failed { error: "x".into() }, at);
        // Retry would be at 18:40; the 17:50 tick comes first, as a first attempt.
        assert_eq!(s.poll(&t("2026-11-29T17:45:00Z")), Decision::Wait(Some(t("2026-11-29T17:50:00Z"))));
        assert_eq!(s.poll(&t("2026-11-29T17:50:00Z")), Decision::Run { full: false, attempt: 1, catch_up: false });
    }

    #[test]
    fn skipped_ticks_are_handled_and_cancelled_ones_stay_due() {
        let now = t("2026-11-29T17:30:00Z");
        let mut s = hourly(now);
        let at = t("2026-11-29T18:00:00Z");
        s.poll(&at);
        s.finished(RunResult::Skipped { reason: "a backup is already running (process 42)".into() }, at);
        assert_eq!(s.state.backup.last_outcome, Some(Outcome::Skipped));
        assert_eq!(s.state.backup.handled_until, Some(at));
        assert_eq!(s.state.counters.backups_skipped, 1);
        assert!(matches!(s.poll(&at), Decision::Wait(_)));

        let at = t("2026-11-29T19:00:00Z");
        s.poll(&at);
        s.started(at);
        s.finished(RunResult::Cancelled { reason: "shutdown".into() }, t("2026-11-29T19:01:00Z"));
        assert_eq!(s.state.backup.handled_until, Some(t("2026-11-29T18:00:00Z")), "not handled");
        // The saved state says so; the next start catches it up.
        let mut saved = s.state.clone();
        saved.backup.last_outcome = Some(Outcome::Running); // as if killed before recording
        let start = t("2026-11-29T19:30:00Z");
        let mut s = Scheduler::new(saved, POLICY, start);
        assert_eq!(s.state.backup.last_outcome, Some(Outcome::Cancelled));
        s.configure(cron("0 * * * *"), None, POLICY, start);
        assert_eq!(s.poll(&start), Decision::Run { full: false, attempt: 1, catch_up: true });
    }

    #[test]
    fn both_schedules_due_make_one_full_backup() {
        let now = t("2026-11-29T17:30:00Z");
        let mut s = Scheduler::new(State::default(), POLICY, now);
        s.configure(cron("0 * * * *"), cron("0 3 * * *"), POLICY, now);
        assert_eq!(s.poll(&t("2026-11-29T18:00:00Z")), Decision::Run { full: false, attempt: 1, catch_up: false });
        s.started(t("2026-11-29T18:00:00Z"));
        s.finished(RunResult::Succeeded { backup: "b1".into() }, t("2026-11-29T18:00:01Z"));
        assert_eq!(s.state.full_backup.last_outcome, None, "the full schedule was not due");
        let at = t("2026-11-30T03:00:00Z");
        // Both due (hourly 03:00 and nightly 03:00): one run, full.
        assert_eq!(s.poll(&at), Decision::Run { full: true, attempt: 1, catch_up: false });
        s.started(at);
        s.finished(RunResult::Succeeded { backup: "b2".into() }, at);
        assert_eq!(s.state.backup.handled_until, Some(at));
        assert_eq!(s.state.full_backup.handled_until, Some(at));
        assert_eq!(s.state.full_backup.last_backup.as_deref(), Some("b2"));
        assert_eq!(s.state.counters.backups_succeeded, 2);
        assert_eq!(s.next_run(Which::FullBackup, &at), Some(t("2026-12-01T03:00:00Z")));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy { retries: 30, delay: Duration::seconds(60) };
        assert_eq!(p.backoff(1), Duration::seconds(60));
        assert_eq!(p.backoff(2), Duration::seconds(120));
        assert_eq!(p.backoff(3), Duration::seconds(240));
        assert_eq!(p.backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn retention_outcomes_and_counters() {
        let now = t("2026-11-29T17:30:00Z");
        let mut s = hourly(now);
        s.retention_started("FULL 7", now);
        s.retention_finished(Ok(12), now + Duration::seconds(2));
        assert_eq!(s.state.retention.last_outcome, Some(Outcome::Succeeded));
        assert_eq!(s.state.retention.last_duration_ms, Some(2000));
        s.retention_started("FULL 7", now);
        s.retention_finished(Err("storage unreachable".into()), now);
        assert_eq!(s.state.retention.last_outcome, Some(Outcome::Failed));
        assert_eq!((s.state.counters.retention_runs, s.state.counters.retention_failures, s.state.counters.deleted_objects), (1, 1, 12));
    }
}
