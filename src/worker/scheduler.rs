//! The static background worker "walg_ext scheduler" (registered in `_PG_init` when walg_ext is
//! preloaded). Glue around walg_core::schedule, which decides everything:
//! - scheduled backups: at each tick of `walg.backup_schedule` / `walg.full_backup_schedule`
//!   (in the server's `timezone`) it starts the same backup job `walg_backup_push()` starts
//!   (worker/backup.rs) and waits for it; a tick that finds a backup running is skipped; failures
//!   are retried with backoff (`walg.backup_retries`, `walg.backup_retry_delay`); on a standby
//!   nothing runs unless `walg.backup_on_standby`;
//! - retention after each successful scheduled backup (`walg.retain`, then `delete garbage`),
//!   through catalog/delete.rs, the one delete implementation;
//! - restore drills: at each tick of `walg.drill_schedule` it starts the drill job
//!   `walg_restore_drill()` starts (worker/drill.rs) on the latest backup and goes on with its
//!   loop; the outcome is recorded when the drill worker stops (the drill's report itself is in
//!   storage, where `walg_health()`'s `drill_failed` reads it); a tick that finds a backup or a
//!   drill running, or whose checks refuse it, is recorded with the reason; no retries;
//! - every `walg.health_check_interval`: one storage check (backup list, wal-verify integrity)
//!   cached for `walg_health()`, and the counters saved;
//! - state (records, counters) in `PGDATA/walg_ext.state`, so a tick missed while the server
//!   was down is caught up once at start, and counters survive restarts;
//! - SIGHUP: reload the configuration and apply new schedules; SIGTERM (shutdown): terminate a
//!   running scheduled backup like a cancel (its tick stays due), save, exit.
//!
//! It connects to the database `postgres` (the backup job it starts runs pg_backup_start there).
//! Only the main thread calls PostgreSQL; storage work runs on core's own threads.
use crate::settings;
use crate::shmem::{self, ARCHIVER_STATS, SCHEDULER};
use crate::worker::backup::{self, BackupOptions, StartError, Started};
use crate::worker::drill;
use chrono::{DateTime, Local, Utc};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime, SignalWakeFlags};
use pgrx::prelude::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use walg_core::catalog::delete;
use walg_core::catalog::wal_verify::IntegrityOptions;
use walg_core::schedule::health::{self, StorageCheck};
use walg_core::schedule::drill::{DrillPlan, NOT_RUN_PREFIX};
use walg_core::schedule::{retention, state, CronSchedule, Decision, RetryPolicy, RunResult, Scheduler, Snapshot, State, Which};
use walg_core::{Config, ScheduleConfig};

pub const WORKER_TYPE: &str = "walg_ext scheduler";
/// The database the scheduler (and the backup jobs it starts) connect to.
pub const DATABASE: &str = "postgres";

pub fn register() {
    BackgroundWorkerBuilder::new(WORKER_TYPE)
        .set_type(WORKER_TYPE)
        .set_library("walg_ext")
        .set_function("walg_ext_scheduler_main")
        .enable_spi_access()
        // Also on a consistent standby: it says there that it takes no backups (unless
        // walg.backup_on_standby), and keeps the health cache fresh.
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

struct Ctx {
    scheduler: Scheduler,
    drill_plan: DrillPlan,
    /// The scheduled drill running: its job generation and worker.
    drill_job: Option<(u64, pgrx::bgworkers::DynamicBackgroundWorker)>,
    cfg: Option<Config>,
    sched: ScheduleConfig,
    config_errors: Vec<(String, String)>,
    storage: Option<StorageCheck>,
    next_check: Instant,
    pgdata: PathBuf,
    timezone: String,
}

fn policy(s: &ScheduleConfig) -> RetryPolicy {
    RetryPolicy { retries: s.retries, delay: chrono::Duration::seconds(s.retry_delay_secs as i64) }
}

fn standby() -> bool {
    unsafe { pg_sys::RecoveryInProgress() }
}

/// The server's `timezone` setting; chrono's Local follows TZ, so schedules are read in it.
fn apply_server_timezone() -> String {
    let tz = unsafe {
        let p = pg_sys::GetConfigOption(c"TimeZone".as_ptr(), true, false);
        if p.is_null() { String::new() } else { std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned() }
    };
    if !tz.is_empty() {
        // Only this (main) thread reads the environment here; set before storage threads run.
        std::env::set_var("TZ", &tz);
    }
    tz
}

fn now_local() -> DateTime<Local> {
    Local::now()
}

impl Ctx {
    fn new(mut state: State, pgdata: PathBuf) -> Ctx {
        let defaults = ScheduleConfig::defaults();
        let drill_plan = DrillPlan::resume(&mut state.drill);
        Ctx {
            scheduler: Scheduler::new(state, policy(&defaults), Utc::now()),
            drill_plan,
            drill_job: None,
            cfg: None,
            sched: defaults,
            config_errors: Vec::new(),
            storage: None,
            next_check: Instant::now(),
            pgdata,
            timezone: String::new(),
        }
    }

    /// (Re)read the settings and apply them: at start and after each SIGHUP.
    fn reload(&mut self) {
        self.timezone = apply_server_timezone();
        self.config_errors.clear();
        match settings::load_config() {
            Ok(cfg) => {
                self.sched = cfg.schedule.clone();
                self.cfg = Some(cfg);
            }
            Err(e) => {
                // No usable configuration (no storage set, say): keep the schedules off and
                // say why in walg_health.
                warning!("walg_ext scheduler: configuration not usable: {e}");
                self.config_errors.push(("walg.*".into(), e.to_string()));
                self.sched = ScheduleConfig::defaults();
                self.cfg = None;
            }
        }
        let mut parse = |w: Which, expr: &Option<String>| match CronSchedule::parse(w.setting(), expr.as_deref().unwrap_or("")) {
            Ok(s) => s,
            Err(e) => {
                warning!("walg_ext scheduler: {e}; this schedule is off until it is fixed");
                self.config_errors.push((w.setting().into(), e.to_string()));
                None
            }
        };
        let backup = parse(Which::Backup, &self.sched.backup.clone());
        let full = parse(Which::FullBackup, &self.sched.full_backup.clone());
        let drill = match CronSchedule::parse("walg.drill_schedule", self.sched.drill.as_deref().unwrap_or("")) {
            Ok(s) => s,
            Err(e) => {
                warning!("walg_ext scheduler: {e}; scheduled drills are off until it is fixed");
                self.config_errors.push(("walg.drill_schedule".into(), e.to_string()));
                None
            }
        };
        self.drill_plan.configure(&mut self.scheduler.state.drill, drill, Utc::now());
        if let Err(e) = retention::parse_retain(self.sched.retain.as_deref().unwrap_or(""), Utc::now()) {
            warning!("walg_ext scheduler: {e}; retention is off until it is fixed");
            self.config_errors.push(("walg.retain".into(), e.to_string()));
        }
        let p = policy(&self.sched);
        self.scheduler.configure(backup, full, p, Utc::now());
        log!(
            "walg_ext scheduler: backup_schedule '{}', full_backup_schedule '{}', retain '{}', drill_schedule '{}' (timezone {})",
            self.sched.backup.as_deref().unwrap_or(""),
            self.sched.full_backup.as_deref().unwrap_or(""),
            self.sched.retain.as_deref().unwrap_or(""),
            self.sched.drill.as_deref().unwrap_or(""),
            self.timezone
        );
        self.save();
        self.publish();
    }

    fn check_interval(&self) -> Duration {
        Duration::from_secs(self.sched.health_check_interval_secs.max(1))
    }

    /// The cached storage check for walg_health, refreshed every walg.health_check_interval.
    fn maybe_check_storage(&mut self) {
        if Instant::now() < self.next_check {
            return;
        }
        self.next_check = Instant::now() + self.check_interval();
        let now = Utc::now();
        let check = match &self.cfg {
            None => StorageCheck {
                checked_at: now,
                error: Some("no usable configuration (see walg_health's other rows and the server log)".into()),
                error_kind: Some("bad_input".into()),
                ..Default::default()
            },
            Some(cfg) => match cfg.open_storage() {
                Err(e) => StorageCheck { checked_at: now, error_kind: Some(e.kind().name().into()), error: Some(e.to_string()), ..Default::default() },
                Ok(storage) => {
                    let opt = IntegrityOptions {
                        wal_segment_size: unsafe { pg_sys::wal_segment_size as u64 },
                        max_delayed: 0,
                        uploading: cfg.upload_concurrency,
                    };
                    health::check_storage(storage.as_ref(), &cfg.pipeline(), BackgroundWorker::transaction(crate::pg_lsn::current_segment).ok(), opt, now)
                }
            },
        };
        if let (Some(e), Some(prev)) = (&check.error, &self.storage) {
            if prev.error.is_none() {
                warning!("walg_ext scheduler: storage check failed: {e}");
            }
        }
        self.storage = Some(check);
        self.save();
        self.publish();
    }

    /// Write the state file, with the archiver's counters as they are now.
    fn save(&mut self) {
        {
            let a = ARCHIVER_STATS.share();
            let c = &mut self.scheduler.state.counters;
            c.archived_files = a.archived_files;
            c.archived_bytes = a.archived_bytes;
            c.already_archived_files = a.already_archived_files;
            c.archive_failures = a.failed_count;
        }
        if let Err(e) = state::save(&self.pgdata, &self.scheduler.state) {
            warning!("walg_ext scheduler: could not save its state: {e}");
        }
    }

    fn publish(&mut self) {
        let now = now_local();
        let active: Vec<(Which, CronSchedule)> =
            Which::ALL.into_iter().filter_map(|w| self.scheduler.schedule(w).cloned().map(|s| (w, s))).collect();
        let mut snap = Snapshot {
            published_at: Utc::now(),
            state: self.scheduler.state.clone(),
            next_backup: self.scheduler.next_run(Which::Backup, &now),
            next_full_backup: self.scheduler.next_run(Which::FullBackup, &now),
            next_drill: self.drill_plan.next_run(&now),
            due_by: health::overdue_threshold(&active, Some(&self.scheduler.state), &now),
            storage: self.storage.clone(),
            config_errors: self.config_errors.clone(),
            timezone: self.timezone.clone(),
            standby_idle: self.sched.runs_here(standby()).is_err(),
            check_interval_secs: self.sched.health_check_interval_secs,
        };
        let mut json = serde_json::to_string(&snap).unwrap_or_default();
        if json.len() > shmem::SNAPSHOT_MAX {
            if let Some(s) = &mut snap.storage {
                s.lost_wal.truncate(8);
                s.failed_drills.truncate(8);
            }
            json = serde_json::to_string(&snap).unwrap_or_default();
        }
        let mut sh = SCHEDULER.exclusive();
        sh.worker_pid = shmem::my_pid();
        if !sh.set_snapshot_json(&json) {
            warning!("walg_ext scheduler: snapshot of {} bytes does not fit shared memory", json.len());
        }
    }

    /// One attempt of the due backup. Returns false when the scheduler must stop (shutdown).
    fn run_backup(&mut self, full: bool, attempt: u32, catch_up: bool) -> bool {
        let what = if full { "full backup" } else { "backup" };
        if let Err(reason) = self.sched.runs_here(standby()) {
            let reason = reason.to_string();
            log!("walg_ext scheduler: scheduled {what} skipped: {reason}");
            self.scheduler.finished(RunResult::Skipped { reason }, Utc::now());
            self.save();
            self.publish();
            return true;
        }
        log!(
            "walg_ext scheduler: starting the scheduled {what}{}{}",
            if catch_up { " (catching up a tick missed while the server was down)" } else { "" },
            if attempt > 1 { format!(" (retry {})", attempt - 1) } else { String::new() }
        );
        self.scheduler.started(Utc::now());
        self.save();
        self.publish();
        // `full` only for a tick of walg.full_backup_schedule; otherwise a delta when
        // walg.delta_max_steps allows (the worker applies WAL-G's rules, as for walg_backup_push()).
        let opts = BackupOptions { permanent: false, user_data: None, wait: true, full, delta_from: None, delta_from_user_data: None };
        let result = match backup::start(&opts, unsafe { pg_sys::MyDatabaseId }) {
            Err(StartError::Busy(pid)) => RunResult::Skipped { reason: format!("a backup is already running (process {pid})") },
            Err(StartError::Config(e)) => RunResult::Failed { error: format!("{}: {e}", e.kind().name()) },
            Err(StartError::NoWorker) => RunResult::Failed { error: "could not start the backup worker: raise max_worker_processes".into() },
            Ok(Started { generation, worker }) => {
                loop {
                    match worker.pid() {
                        Err(BackgroundWorkerStatus::Stopped) | Err(BackgroundWorkerStatus::PostmasterDied) => break,
                        _ => {}
                    }
                    if !BackgroundWorker::wait_latch(Some(Duration::from_millis(500))) {
                        // Shutdown: stop the backup as a cancel does (no sentinel is written).
                        log!("walg_ext scheduler: shutting down: cancelling the scheduled {what}");
                        let _ = worker.terminate().wait_for_shutdown();
                        self.scheduler.finished(RunResult::Cancelled { reason: "cancelled: the server shut down during the backup".into() }, Utc::now());
                        self.save();
                        self.publish();
                        return false;
                    }
                    if BackgroundWorker::sighup_received() {
                        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
                        self.reload();
                    }
                }
                match backup::outcome(generation) {
                    Ok(name) => RunResult::Succeeded { backup: name },
                    Err(f) => RunResult::Failed { error: format!("{}: {}", f.kind.name(), f.message) },
                }
            }
        };
        match &result {
            RunResult::Succeeded { backup } => log!("walg_ext scheduler: scheduled {what} {backup} completed"),
            RunResult::Skipped { reason } => log!("walg_ext scheduler: scheduled {what} skipped: {reason}"),
            RunResult::Failed { error } => warning!("walg_ext scheduler: scheduled {what} failed: {error}"),
            RunResult::Cancelled { .. } => {}
        }
        let succeeded = self.scheduler.finished(result, Utc::now());
        if let Some(p) = self.scheduler.pending() {
            log!("walg_ext scheduler: retry {} of the {what} at {}", p.attempt - 1, p.not_before);
        }
        self.save();
        self.publish();
        if succeeded {
            self.retention();
            // The new backup changes what walg_health reports: check now.
            self.next_check = Instant::now();
        }
        true
    }

    /// walg.drill_schedule: record the end of the running scheduled drill, or start one when a
    /// tick is due. Never waits for a drill.
    fn drills(&mut self) {
        if let Some((generation, worker)) = &self.drill_job {
            if !matches!(worker.pid(), Err(BackgroundWorkerStatus::Stopped) | Err(BackgroundWorkerStatus::PostmasterDied)) {
                return;
            }
            let result = match drill::outcome(*generation) {
                Ok(r) if r.passed => RunResult::Succeeded { backup: r.backup.clone() },
                Ok(r) => RunResult::Failed {
                    error: format!("{} failed the drill at {}: {}", r.backup, r.failed_step.as_deref().unwrap_or("?"), r.error.as_deref().unwrap_or("")),
                },
                Err(f) => RunResult::Failed { error: format!("{NOT_RUN_PREFIX}{}: {}", f.kind.name(), f.message) },
            };
            match &result {
                RunResult::Succeeded { backup } => log!("walg_ext scheduler: scheduled restore drill of {backup} passed"),
                RunResult::Failed { error } => warning!("walg_ext scheduler: scheduled restore drill: {error}"),
                _ => {}
            }
            self.drill_plan.finished(&mut self.scheduler.state.drill, result, Utc::now());
            self.drill_job = None;
            // The new report changes what walg_health reports: check now.
            self.next_check = Instant::now();
            self.save();
            self.publish();
            return;
        }
        let Some(tick) = self.drill_plan.due(&self.scheduler.state.drill, &now_local()) else { return };
        let rec = &mut self.scheduler.state.drill;
        if let Err(reason) = self.sched.runs_here(standby()) {
            log!("walg_ext scheduler: scheduled restore drill skipped: {reason}");
            self.drill_plan.not_started(rec, tick, RunResult::Skipped { reason: reason.to_string() }, Utc::now());
        } else {
            match drill::start("LATEST") {
                Ok(drill::Started { generation, worker, backup }) => {
                    log!("walg_ext scheduler: starting the scheduled restore drill of {backup}");
                    self.drill_plan.started(rec, tick, &backup, Utc::now());
                    self.drill_job = Some((generation, worker));
                }
                Err(e) => {
                    let result = match e {
                        drill::StartError::Busy(why) => RunResult::Skipped { reason: why },
                        drill::StartError::Refused(e) => RunResult::Failed { error: format!("{NOT_RUN_PREFIX}{}: {e}", e.kind().name()) },
                        drill::StartError::NoWorker => {
                            RunResult::Failed { error: format!("{NOT_RUN_PREFIX}could not start the drill worker: raise max_worker_processes") }
                        }
                    };
                    match &result {
                        RunResult::Skipped { reason } => log!("walg_ext scheduler: scheduled restore drill skipped: {reason}"),
                        RunResult::Failed { error } => warning!("walg_ext scheduler: scheduled restore drill not started: {error}"),
                        _ => {}
                    }
                    self.drill_plan.not_started(rec, tick, result, Utc::now());
                }
            }
        }
        self.save();
        self.publish();
    }

    /// `walg.retain` (with confirm), then `delete garbage`: after a successful scheduled backup.
    fn retention(&mut self) {
        let text = self.sched.retain.clone().unwrap_or_default();
        let req = match retention::parse_retain(&text, Utc::now()) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(_) => return, // reported by reload (bad_retention)
        };
        let Some(cfg) = self.cfg.clone() else { return };
        self.scheduler.retention_started(&text, Utc::now());
        self.publish();
        let seg = unsafe { pg_sys::wal_segment_size as u64 };
        let result = cfg.open_storage().and_then(|storage| {
            let mut deleted = 0u64;
            for req in [req, retention::garbage()] {
                let plan = delete::run(storage.as_ref(), &req, seg, true)?;
                for n in &plan.notes {
                    log!("walg_ext scheduler: retention: {n}");
                }
                for m in &plan.in_progress {
                    log!("walg_ext scheduler: retention: backup in progress, its objects and WAL are kept: {m}");
                }
                deleted += plan.objects.len() as u64;
            }
            Ok(deleted)
        });
        match &result {
            Ok(n) => log!("walg_ext scheduler: retention '{text}' done: {n} objects deleted"),
            Err(e) => warning!("walg_ext scheduler: retention '{text}' failed: {e}"),
        }
        self.scheduler.retention_finished(result.map_err(|e| format!("{}: {e}", e.kind().name())), Utc::now());
        self.save();
        self.publish();
    }
}

/// Add the saved counters to the archiver's (once per shared-memory life: a restarted
/// scheduler must not add them again).
fn restore_counters(saved: &State) {
    let mut sh = SCHEDULER.exclusive();
    if sh.counters_loaded != 0 {
        return;
    }
    sh.counters_loaded = 1;
    let c = &saved.counters;
    let mut a = ARCHIVER_STATS.exclusive();
    a.archived_files += c.archived_files;
    a.archived_bytes += c.archived_bytes;
    a.already_archived_files += c.already_archived_files;
    a.failed_count += c.archive_failures;
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn walg_ext_scheduler_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some(DATABASE), None);
    let pgdata = settings::data_dir();
    let saved = match state::load(&pgdata) {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            warning!("walg_ext scheduler: {e}; starting with a fresh state");
            State::default()
        }
    };
    restore_counters(&saved);
    let mut ctx = Ctx::new(saved, pgdata);
    ctx.reload();
    loop {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            ctx.reload();
        }
        ctx.maybe_check_storage();
        ctx.drills();
        match ctx.scheduler.poll(&now_local()) {
            Decision::Run { full, attempt, catch_up } => {
                if !ctx.run_backup(full, attempt, catch_up) {
                    break;
                }
            }
            Decision::Wait(until) => {
                ctx.publish();
                let mut timeout = ctx.next_check.saturating_duration_since(Instant::now());
                let drill_next = if ctx.drill_job.is_some() { None } else { ctx.drill_plan.next_run(&now_local()) };
                let until = match (until, drill_next) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if let Some(t) = until {
                    let ms = (t - Utc::now()).num_milliseconds().max(0) as u64;
                    timeout = timeout.min(Duration::from_millis(ms));
                }
                // Wake at least every minute (a clock change, a stale wait).
                let timeout = timeout.clamp(Duration::from_millis(50), Duration::from_secs(60));
                if !BackgroundWorker::wait_latch(Some(timeout)) {
                    break;
                }
            }
        }
    }
    if ctx.drill_job.take().is_some() {
        // The drill worker got the shutdown's SIGTERM too: it stops the copy and removes it.
        ctx.drill_plan.finished(&mut ctx.scheduler.state.drill, RunResult::Cancelled { reason: "cancelled: the server shut down during the drill".into() }, Utc::now());
    }
    ctx.save();
    log!("walg_ext scheduler: stopped");
}
