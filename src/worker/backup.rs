//! One base backup in a dynamic background worker.
//!
//! `pg_backup_start` and `pg_backup_stop` run through SPI in the worker's own session; between
//! them walg_core copies PGDATA on its own threads while this process's main thread only polls
//! for interrupts and publishes progress. The caller (a SQL backend) waits on its latch; if it is
//! cancelled it terminates the worker, and a terminated worker never writes the sentinel
//! (PostgreSQL aborts the backup when the worker's session ends).
//!
//! A failure keeps its kind on the way back: the worker records the error's kind, the SQLSTATE
//! and hint `api::sqlstate_for` gives it (or PostgreSQL's own SQLSTATE and hint when PostgreSQL
//! raised the ERROR inside the worker, e.g. pg_backup_start at wal_level minimal) and the
//! message in the job slot; the waiting backend raises exactly that. So a backup into
//! unreachable storage is 58030 with the storage hint, a conflict 23505, a cancel 57014.
use crate::api::{sqlstate_for, sqlstate_for_kind};
use crate::settings;
use crate::shmem::{self, BackupJob, JobState, BACKUP_JOB};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use walg_core::backup::push::{self, BackupStart, BackupStop, Progress};
use walg_core::backup::delta::{check_base_at_start, choose_base, delta_name, BaseChoice, DeltaRequest};
use walg_core::backup::delta_map::{plan_for_backup, read_archived_segment, MapRange, PagePlan};
use walg_core::wal::blocks::stored::get_map;
use walg_core::backup::standby::{check_replay_timeline, label_start_timeline, refuse_standby_backup, ReplayPause, StandbyFacts};
use walg_core::backup::{wait_for_wal, InProgress, WaitTiming, WalRange};
use walg_core::format::names::{backup_name, parse_lsn};
use walg_core::ErrorKind;

/// Why a backup failed, as it crosses from the worker to the waiting backend.
pub struct Failure {
    pub kind: ErrorKind,
    pub code: PgSqlErrorCode,
    pub hint: String,
    pub message: String,
}

impl Failure {
    /// A failure of `kind` found by the worker itself: SQLSTATE and hint by kind.
    fn new(kind: ErrorKind, message: impl Into<String>) -> Failure {
        let (code, hint) = sqlstate_for_kind(kind);
        Failure { kind, code, hint: hint.to_string(), message: message.into() }
    }

    /// An ERROR PostgreSQL raised inside the worker: its own SQLSTATE and hint, and the kind
    /// that SQLSTATE's class stands for.
    fn from_postgres(code: PgSqlErrorCode, message: &str, hint: Option<&str>) -> Failure {
        Failure { kind: kind_of_sqlstate(code), code, hint: hint.unwrap_or("").to_string(), message: message.to_string() }
    }
}

impl From<walg_core::Error> for Failure {
    fn from(e: walg_core::Error) -> Failure {
        let (code, hint) = sqlstate_for(&e);
        Failure { kind: e.kind(), code, hint: hint.to_string(), message: e.to_string() }
    }
}

/// The two class characters of a packed SQLSTATE (PostgreSQL's MAKE_SQLSTATE: six bits per
/// character, first character lowest).
fn sqlstate_class(code: PgSqlErrorCode) -> [u8; 2] {
    let v = code as isize as i64;
    [((v & 0x3F) as u8) + b'0', (((v >> 6) & 0x3F) as u8) + b'0']
}

/// The kind a PostgreSQL error's SQLSTATE class stands for (for walg_status and the job slot;
/// the SQLSTATE itself is raised unchanged).
fn kind_of_sqlstate(code: PgSqlErrorCode) -> ErrorKind {
    if matches!(code, PgSqlErrorCode::ERRCODE_DATA_CORRUPTED | PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED) {
        return ErrorKind::Corrupt;
    }
    match &sqlstate_class(code) {
        b"57" => ErrorKind::Cancelled,
        b"53" | b"58" => ErrorKind::LocalIo,
        b"55" | b"23" | b"40" => ErrorKind::Conflict,
        b"22" | b"42" | b"0A" | b"F0" | b"28" => ErrorKind::BadInput,
        _ => ErrorKind::Internal,
    }
}

pub const WORKER_TYPE: &str = "walg_ext backup";

/// What the caller asks for; travels to the worker through the shared-memory job slot.
pub struct BackupOptions {
    pub permanent: bool,
    /// JSON text, at most shmem::USER_DATA_MAX bytes (checked by the caller).
    pub user_data: Option<String>,
    /// Wait for the backup to finish (and cancel it when the caller is cancelled); if false,
    /// return at once: progress and outcome are in walg_status.
    pub wait: bool,
    /// WAL-G's --full.
    pub full: bool,
    /// WAL-G's --delta-from-name (a backup name, checked by the caller).
    pub delta_from: Option<String>,
    /// WAL-G's --delta-from-user-data (JSON text, at most shmem::USER_DATA_MAX bytes).
    pub delta_from_user_data: Option<String>,
}

/// Why a job could not start.
pub enum StartError {
    /// A backup is already running (this process id).
    Busy(i32),
    /// The configuration or its storage cannot be used.
    Config(walg_core::Error),
    /// No background worker slot (max_worker_processes).
    NoWorker,
}

/// A started job: its generation in the slot and its worker (notifying this process).
pub struct Started {
    pub generation: u64,
    pub worker: pgrx::bgworkers::DynamicBackgroundWorker,
}

/// Claim the job slot and start the backup worker, connected to database `db`. Used by
/// `walg_backup_push()` and by the scheduler: one backup path.
pub fn start(opts: &BackupOptions, db: pg_sys::Oid) -> Result<Started, StartError> {
    // Fail early, in the caller, on a configuration the worker could not use.
    settings::load_config().and_then(|c| c.open_storage().map(|_| ())).map_err(StartError::Config)?;
    let generation = claim_slot(opts).map_err(StartError::Busy)?;
    let worker = BackgroundWorkerBuilder::new(&format!("walg_ext backup job {generation}"))
        .set_type(WORKER_TYPE)
        .set_library("walg_ext")
        .set_function("walg_ext_backup_worker_main")
        .set_argument(Some(pg_sys::Datum::from(db.to_u32())))
        .set_extra(&generation.to_string())
        .enable_spi_access()
        // enable_spi_access() sets "after recovery finished", so on a hot standby the worker
        // never started and walg_backup_push() waited forever; a consistent standby accepts
        // read-only connections, which is all the backup needs (pg_backup_start/stop).
        .set_start_time(pgrx::bgworkers::BgWorkerStartTime::ConsistentState)
        .set_notify_pid(shmem::my_pid())
        .set_restart_time(None)
        .load_dynamic();
    match worker {
        Ok(worker) => Ok(Started { generation, worker }),
        Err(_) => {
            settle(generation, Err(&Failure::new(ErrorKind::Internal, "could not register the backup worker")));
            Err(StartError::NoWorker)
        }
    }
}

/// The outcome of job `generation` once its worker has stopped: the backup name, or why it
/// failed (a worker that ended without recording one was terminated or crashed: 57000).
pub fn outcome(generation: u64) -> Result<String, Failure> {
    let job: BackupJob = *BACKUP_JOB.share();
    if job.generation != generation {
        return Err(Failure::new(ErrorKind::Internal, "the backup job was replaced by another one while waiting"));
    }
    match job.state() {
        JobState::Succeeded => Ok(job.name()),
        JobState::Failed => {
            // The SQLSTATE the worker chose from the error's kind (or PostgreSQL's own); a
            // slot without one can only be a bug.
            let code = match job.error_sqlstate {
                0 => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                c => PgSqlErrorCode::from(c),
            };
            Err(Failure {
                kind: job.error_kind().unwrap_or(ErrorKind::Internal),
                code,
                hint: job.error_hint(),
                message: job.error(),
            })
        }
        _ => {
            // Ended without recording an outcome: killed (pg_terminate_backend at the wrong
            // moment, kill -9, the OOM killer) or crashed. 57000: operator intervention.
            let f = Failure {
                kind: ErrorKind::Cancelled,
                code: PgSqlErrorCode::ERRCODE_OPERATOR_INTERVENTION,
                hint: String::new(),
                message: "the backup worker exited before finishing (terminated or crashed; see the server log)".into(),
            };
            settle(generation, Err(&f));
            Err(f)
        }
    }
}

/// Start a backup job. With `wait`, wait for it and return the backup name (ERROR on failure);
/// without, return None as soon as the worker is registered.
pub fn run(opts: &BackupOptions) -> Option<String> {
    if !shmem::available() {
        error_with(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "walg_ext is not loaded through shared_preload_libraries",
            "Add walg_ext to shared_preload_libraries in postgresql.conf and restart the server.",
        );
    }
    let Started { generation, worker } = match start(opts, unsafe { pg_sys::MyDatabaseId }) {
        Ok(s) => s,
        Err(StartError::Config(e)) => crate::api::raise(e),
        Err(StartError::Busy(pid)) => error_with(
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            &format!("a walg_ext backup is already running (process {pid})"),
            "Wait for it to finish; walg_ext runs one backup at a time.",
        ),
        Err(StartError::NoWorker) => error_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES,
            "could not start the walg_ext backup worker",
            "Raise max_worker_processes.",
        ),
    };

    if !opts.wait {
        return None;
    }
    loop {
        match worker.pid() {
            Err(BackgroundWorkerStatus::Stopped) => break,
            Err(BackgroundWorkerStatus::PostmasterDied) => {
                error!("walg_ext: the postmaster died during the backup")
            }
            _ => {}
        }
        sleep_on_latch(500);
        unsafe {
            if pg_sys::QueryCancelPending != 0 || pg_sys::ProcDiePending != 0 {
                // The caller gives up, so the backup stops too: nothing finishes unobserved.
                let _ = worker.terminate();
                pg_sys::check_for_interrupts!();
                ereport!(
                    PgLogLevel::ERROR,
                    PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                    "walg_ext backup cancelled"
                );
                unreachable!();
            }
        }
    }

    const NOTHING_COMMITTED: &str = "Nothing was committed to storage: the backup has no sentinel and is not listed.";
    match outcome(generation) {
        Ok(name) => Some(name),
        Err(f) => {
            let hint = match f.hint.as_str() {
                "" => NOTHING_COMMITTED.to_string(),
                h => format!("{h} {NOTHING_COMMITTED}"),
            };
            error_with(f.code, &format!("walg_ext backup failed: {}", f.message), &hint)
        }
    }
}

/// Sleep up to `ms` milliseconds or until our latch is set (signals set it); exits with the
/// postmaster.
fn sleep_on_latch(ms: i64) {
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms as _,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
}

fn error_with(code: PgSqlErrorCode, msg: &str, hint: &str) -> ! {
    pgrx::pg_sys::panic::ErrorReport::new(code, msg.to_string(), function_name!()).set_hint(hint).report(PgLogLevel::ERROR);
    unreachable!()
}

/// Take the job slot for a new backup; Err(pid) if one is active.
fn claim_slot(opts: &BackupOptions) -> Result<u64, i32> {
    let mut job = BACKUP_JOB.exclusive();
    if job.is_active() {
        return Err(if job.worker_pid != 0 { job.worker_pid } else { job.owner_pid });
    }
    let generation = job.generation + 1;
    *job = BackupJob::starting(generation, shmem::my_pid());
    job.permanent = opts.permanent as u32;
    job.set_user_data(opts.user_data.as_deref().unwrap_or(""));
    job.full = opts.full as u32;
    job.set_delta_from(opts.delta_from.as_deref().unwrap_or(""));
    job.set_delta_from_user_data(opts.delta_from_user_data.as_deref().unwrap_or(""));
    Ok(generation)
}

/// Record the outcome of job `generation` (ignored if the slot moved on).
fn settle(generation: u64, result: Result<&str, &Failure>) {
    let mut job = BACKUP_JOB.exclusive();
    if job.generation != generation {
        return;
    }
    match result {
        Ok(name) => {
            job.set_name(name);
            job.set_state(JobState::Succeeded);
        }
        Err(f) => {
            job.set_error(&f.message);
            job.set_error_kind(f.kind);
            job.error_sqlstate = f.code as isize as i32;
            job.set_error_hint(&f.hint);
            job.set_state(JobState::Failed);
        }
    }
}

// PostgreSQL's own SIGTERM handler for backends (pgrx only exposes a Rust wrapper of it).
unsafe extern "C-unwind" {
    fn die(postgres_signal_arg: std::ffi::c_int);
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn walg_ext_backup_worker_main(arg: pg_sys::Datum) {
    // SIGTERM (pg_terminate_backend, the caller's cancel, shutdown) sets ProcDiePending; the
    // copy loop sees it within its poll interval, and PostgreSQL aborts the backup on exit.
    unsafe {
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(die));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    let generation: u64 = BackgroundWorker::get_extra().parse().unwrap_or(0);
    let (permanent, user_data, delta_req) = {
        let mut job = BACKUP_JOB.exclusive();
        if job.generation != generation || job.state() != JobState::Starting {
            return; // a stale registration: its caller is gone
        }
        job.worker_pid = shmem::my_pid();
        job.set_state(JobState::Running);
        (job.permanent != 0, job.user_data(), (job.full != 0, job.delta_from(), job.delta_from_user_data()))
    };
    let db = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);

    // An ERROR raised inside PostgreSQL (pg_backup_start refusing, say) must reach the caller
    // with its message and SQLSTATE, not as a worker that silently died. A Rust panic is a bug.
    let result = PgTryBuilder::new(|| take_backup(generation, permanent, &user_data, &delta_req))
        .catch_others(|e| {
            let f = match &e {
                CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => {
                    Failure::from_postgres(r.sql_error_code(), r.message(), r.hint())
                }
                CaughtError::RustPanic { ereport, .. } => {
                    Failure::new(ErrorKind::Internal, format!("panic in the backup worker: {}", ereport.message()))
                }
            };
            unsafe { pg_sys::AbortCurrentTransaction() };
            Err(f)
        })
        .execute();
    match &result {
        Ok(name) => log!("walg_ext: backup {name} completed"),
        Err(f) => log!("walg_ext: backup failed ({}): {}", f.kind.name(), f.message),
    }
    settle(generation, result.as_deref());
    // A pending termination request ends the process here, after the outcome is recorded.
    pg_sys::check_for_interrupts!();
}

struct StartInfo {
    lsn: String,
    timeline: i32,
    system_identifier: i64,
    /// pg_control's data_page_checksum_version (0: no data checksums).
    checksum_version: i32,
    /// pg_tablespace as JSON {oid: name}: recorded so a restore can take a tablespace's name.
    tablespaces: String,
}

fn take_backup(
    generation: u64,
    permanent: bool,
    user_data: &str,
    (full, delta_from, delta_from_user_data): &(bool, String, String),
) -> Result<String, Failure> {
    let json = |what: &str, text: &str| -> Result<Option<serde_json::Value>, Failure> {
        match text {
            "" => Ok(None),
            t => serde_json::from_str(t)
                .map(Some)
                .map_err(|e| Failure::new(ErrorKind::BadInput, format!("{what} is not valid JSON: {e}"))),
        }
    };
    let user_data = json("user_data", user_data)?;
    let delta_req = DeltaRequest {
        full: *full,
        from_name: Some(delta_from.clone()).filter(|s| !s.is_empty()),
        from_user_data: json("delta_from_user_data", delta_from_user_data)?,
    };
    let cfg = settings::load_config()?;
    let storage = cfg.open_storage()?;
    // A standby that could never bring a backup to its end (replay paused, no WAL source) is
    // refused before anything is written (walg_core::backup::standby).
    if unsafe { pg_sys::RecoveryInProgress() } {
        refuse_standby_backup(&standby_facts()?)?;
    }
    // The in-progress marker goes first, before pg_backup_start: from now on no delete, from any
    // server, removes what this backup writes or the WAL it needs (catalog/delete.rs).
    let mut marker = InProgress::begin(storage.clone(), &hostname(), std::process::id())?;
    // Full or delta, and from which base (WAL-G's rules, walg_core::backup::delta).
    let choice = choose_base(&cfg, storage.as_ref(), &delta_req, permanent)?;
    let start_time = chrono::Utc::now();

    let info = BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            let lsn: String = client
                .select("SELECT pg_backup_start('walg_ext', true)::text", None, &[])?
                .first()
                .get_one()?
                .unwrap_or_default();
            let row = client
                .select(
                    "SELECT (SELECT timeline_id FROM pg_control_checkpoint()), \
                            (SELECT system_identifier FROM pg_control_system()), \
                            (SELECT data_page_checksum_version FROM pg_control_init())",
                    None,
                    &[],
                )?
                .first();
            let (timeline, sysid, checksums): (Option<i32>, Option<i64>, Option<i32>) = row.get_three()?;
            let tablespaces: Option<String> = client
                .select("SELECT coalesce(json_object_agg(oid::text, spcname), '{}')::text FROM pg_tablespace", None, &[])?
                .first()
                .get_one()?;
            Ok::<_, pgrx::spi::Error>(StartInfo {
                lsn,
                timeline: timeline.unwrap_or(1),
                system_identifier: sysid.unwrap_or(0),
                checksum_version: checksums.unwrap_or(0),
                tablespaces: tablespaces.unwrap_or_default(),
            })
        })
    })
    .map_err(|e| Failure::new(ErrorKind::Internal, format!("pg_backup_start: {e}")))?;

    let start_lsn = parse_lsn(&info.lsn)?;
    let seg_size = unsafe { pg_sys::wal_segment_size } as u64;
    let own_name = backup_name(info.timeline as u32, start_lsn, seg_size);
    let delta = match choice {
        BaseChoice::Full { reason } => {
            if (!delta_req.full && cfg.delta_max_steps > 0) || delta_req.from_name.is_some() || delta_req.from_user_data.is_some() {
                log!("walg_ext: full backup: {reason}");
            }
            None
        }
        BaseChoice::Delta { base, explicit } => {
            match check_base_at_start(&base, explicit, start_lsn, info.timeline as u32, info.system_identifier as u64)? {
                None => Some(*base),
                Some(reason) => {
                    warning!("walg_ext: full backup instead of a delta: {reason}");
                    None
                }
            }
        }
    };
    let name = match &delta {
        Some(base) => delta_name(&own_name, &base.name),
        None => own_name,
    };
    marker.set_backup(&name, start_lsn, info.timeline as u32, seg_size, delta.as_ref().map(|b| b.name.as_str()))?;
    match &delta {
        Some(b) => log!("walg_ext: backup {name} started at {}: delta {} from {} (chain of {})", info.lsn, b.count, b.name, b.full_name),
        None => log!("walg_ext: backup {name} started at {}", info.lsn),
    }
    {
        // Visible in walg_status while it runs.
        let mut job = BACKUP_JOB.exclusive();
        if job.generation == generation {
            job.set_name(&name);
        }
    }

    // Which pages the delta reads: those the WAL maps name, or every page (delta_map.rs).
    let delta_pages = delta.as_ref().map(|base| {
        let plan = if !cfg.delta_wal_maps {
            PagePlan::FullScan { reason: "walg.delta_wal_maps is off".into() }
        } else {
            let range = MapRange {
                timeline: info.timeline as u32,
                from: base.start_lsn,
                to: start_lsn,
                wal_segment_size: seg_size,
                system_identifier: info.system_identifier as u64,
            };
            let pipeline = cfg.pipeline();
            let pg_wal = settings::data_dir().join("pg_wal");
            plan_for_backup(&range, &pg_wal, &mut |seg| get_map(&pipeline, storage.as_ref(), seg), &mut |seg| {
                read_archived_segment(&pipeline, storage.as_ref(), seg)
            })
        };
        match &plan {
            PagePlan::Maps(m) => log!(
                "walg_ext: delta {name} reads the pages named by the WAL maps of {} segments ({} parsed from pg_wal, {} from archived WAL): {} pages",
                m.segments,
                m.parsed_locally,
                m.parsed_from_archive,
                m.pages()
            ),
            PagePlan::FullScan { reason } => log!("walg_ext: delta {name} reads every page of its changed files: {reason}"),
        }
        plan
    });

    let start = BackupStart {
        name: name.clone(),
        pgdata: settings::data_dir(),
        start_lsn,
        timeline: info.timeline as u32,
        wal_segment_size: seg_size,
        pg_version: pg_sys::PG_VERSION_NUM as i32,
        system_identifier: info.system_identifier as u64,
        start_time,
        hostname: hostname(),
        is_permanent: permanent,
        user_data,
        delta,
        delta_pages,
        delta_map_check: cfg.delta_map_check,
        data_checksums: info.checksum_version != 0,
        // Only the tablespaces the walk finds as pg_tblspc links are kept (push::finish).
        tablespace_names: serde_json::from_str(&info.tablespaces).unwrap_or_default(),
    };
    let progress = Arc::new(Progress::default());
    // SAFETY: reads shared memory state; this is the worker's main thread.
    let started_in_recovery = unsafe { pg_sys::RecoveryInProgress() };
    let start_timeline = start.timeline;
    let mut poll = || -> walg_core::Result<()> {
        publish(&progress);
        marker.heartbeat()?;
        unsafe {
            if pg_sys::ProcDiePending != 0 || libc::getppid() != pg_sys::PostmasterPid {
                return Err(walg_core::Error::Cancelled("the backup worker was asked to stop".into()));
            }
            // PostgreSQL refuses such a backup at pg_backup_stop ("the standby was promoted
            // during online backup"); stop now rather than copy the rest for nothing.
            if started_in_recovery && !pg_sys::RecoveryInProgress() {
                return Err(walg_core::Error::Conflict(
                    "the standby was promoted during the backup, which makes the copy inconsistent: nothing committed; \
                     take a new backup (on the new primary, or on a standby of it)"
                        .into(),
                ));
            }
        }
        if started_in_recovery {
            // Its WAL would span two timelines: the wait below could never end.
            check_replay_timeline(start_timeline, current_timeline())?;
        }
        Ok(())
    };
    let mut data = push::push_data(&cfg, &storage, &start, &progress, &mut poll)?;
    publish(&progress);
    // Recorded in files_metadata.json (CorruptBlocks); the backup goes on unless
    // walg.fail_on_corrupt_pages stopped it above (walg_core::backup::page_verify). One WARNING
    // per file, for the first 100 files; at most 100 block numbers each.
    let corrupt = data.corrupt_pages().unwrap_or_default();
    for (file, blocks) in corrupt.iter().take(100) {
        let more = if blocks.len() > 100 { format!(" and {} more", blocks.len() - 100) } else { String::new() };
        warning!(
            "walg_ext: backup {name}: page checksum verification failed in relation file {}, block{} {}{more}",
            file.trim_start_matches('/'),
            if blocks.len() == 1 { "" } else { "s" },
            blocks.iter().take(100).map(|b| b.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    if corrupt.len() > 100 {
        warning!(
            "walg_ext: backup {name}: page checksum verification failed in {} more relation files (see CorruptBlocks in files_metadata.json)",
            corrupt.len() - 100
        );
    }

    let (stop, databases) = BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            // For partial restore (--restore-only): every database that exists at the end.
            let mut databases = std::collections::BTreeMap::new();
            for row in client.select("SELECT datname::text, oid::bigint FROM pg_database", None, &[])? {
                if let (Some(n), Some(o)) = (row.get::<String>(1)?, row.get::<i64>(2)?) {
                    databases.insert(n, o as u32);
                }
            }
            let row = client
                .select("SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)", None, &[])?
                .first();
            let (lsn, label, map): (Option<String>, Option<String>, Option<String>) = row.get_three()?;
            Ok::<_, pgrx::spi::Error>(((lsn.unwrap_or_default(), label.unwrap_or_default(), map.unwrap_or_default()), databases))
        })
    })
    .map_err(|e| Failure::new(ErrorKind::Internal, format!("pg_backup_stop: {e}")))?;
    data.set_databases(databases);
    let stop = BackupStop {
        finish_lsn: parse_lsn(&stop.0)?,
        backup_label: stop.1,
        tablespace_map: stop.2,
        finish_time: chrono::Utc::now(),
    };
    if started_in_recovery {
        // pg_backup_stop on a standby ends at minRecoveryPoint on the timeline it replays now;
        // the label's START TIMELINE is the one the backup is named and waits for.
        if let Some(label_tli) = label_start_timeline(&stop.backup_label) {
            check_replay_timeline(start.timeline, label_tli)?;
        }
        check_replay_timeline(start.timeline, current_timeline())?;
    }
    wait_for_wal_in_storage(storage.as_ref(), &start, &stop, &progress, &mut marker, started_in_recovery)?;
    marker.ensure_fresh()?;
    if let Some(base) = &start.delta {
        // The base must still be there (the marker kept deletes away; a commit without it would
        // list a backup that cannot be restored). A permanent delta makes its chain permanent,
        // as WAL-G does, before its own sentinel.
        if !storage.exists(&walg_core::format::names::sentinel_key(&base.name))? {
            return Err(walg_core::Error::Conflict(format!(
                "the base {} of this delta backup was deleted while it ran; nothing committed: take the backup again",
                base.name
            ))
            .into());
        }
        if permanent {
            walg_core::catalog::mark::mark(storage.as_ref(), &base.name, true)?;
        }
    }
    push::finish(&cfg, &storage, &start, data, &stop)?;
    let marker_key = marker.key().to_string();
    if let Err(e) = marker.end() {
        // Committed all the same; the marker goes stale and `delete garbage` removes it.
        warning!("walg_ext: backup {name} committed, but its marker {marker_key} could not be removed: {e}");
    }
    Ok(name)
}

/// A backup is committed (sentinel written) only once every WAL segment from its start to its
/// stop is in storage, checked there (walg_core::backup::wal_wait; a standby marks segments
/// `.done` without archiving them). Without archiving there is nothing to wait for, as in
/// pg_backup_stop: the WAL must then reach the restore by other means.
fn wait_for_wal_in_storage(
    storage: &dyn walg_core::Storage,
    start: &BackupStart,
    stop: &BackupStop,
    progress: &Progress,
    marker: &mut InProgress,
    started_in_recovery: bool,
) -> Result<(), Failure> {
    let range = WalRange {
        timeline: start.timeline,
        start_lsn: start.start_lsn,
        finish_lsn: stop.finish_lsn,
        wal_segment_size: start.wal_segment_size,
    };
    if unsafe { pg_sys::XLogArchiveMode } == pg_sys::ArchiveMode::ARCHIVE_MODE_OFF as i32 {
        let last = range.segment_names().pop().unwrap_or_default();
        warning!("walg_ext: archive_mode is off: backup needs WAL up to {last} from elsewhere");
        return Ok(());
    }
    progress.phase.store(push::PHASE_WAITING_WAL, Ordering::Relaxed);
    publish(progress);
    let mut poll = || -> walg_core::Result<()> {
        marker.heartbeat()?;
        if unsafe { pg_sys::ProcDiePending != 0 || libc::getppid() != pg_sys::PostmasterPid } {
            return Err(walg_core::Error::Cancelled("the backup worker was asked to stop while waiting for WAL".into()));
        }
        if started_in_recovery {
            // After a switch the segments past it exist only on the new timeline.
            check_replay_timeline(start.timeline, current_timeline())?;
        }
        Ok(())
    };
    let mut log = |line: &str| warning!("walg_ext: backup {}: {line}", start.name);
    wait_for_wal(storage, &range, WaitTiming::default(), &mut poll, &mut log)?;
    Ok(())
}

/// The timeline this server is on now: the one of the last record replayed while in recovery,
/// the one it writes once promoted (0 when not known yet).
fn current_timeline() -> u32 {
    // SAFETY: both read shared memory under PostgreSQL's own locks; main thread of the worker.
    unsafe {
        if pg_sys::RecoveryInProgress() {
            let mut tli: pg_sys::TimeLineID = 0;
            pg_sys::GetXLogReplayRecPtr(&mut tli);
            tli
        } else {
            pg_sys::GetWALInsertionTimeLine()
        }
    }
}

/// What decides whether a backup on this standby could ever end (read before anything is
/// written).
fn standby_facts() -> Result<StandbyFacts, Failure> {
    BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            let row = client
                .select(
                    "SELECT pg_get_wal_replay_pause_state(), current_setting('primary_conninfo'), \
                            current_setting('restore_command')",
                    None,
                    &[],
                )?
                .first();
            let (pause, conninfo, restore): (Option<String>, Option<String>, Option<String>) = row.get_three()?;
            Ok::<_, pgrx::spi::Error>(StandbyFacts {
                pause: ReplayPause::parse(&pause.unwrap_or_default()),
                primary_conninfo: conninfo.unwrap_or_default(),
                restore_command: restore.unwrap_or_default(),
            })
        })
    })
    .map_err(|e| Failure::new(ErrorKind::Internal, format!("reading the standby's replay state: {e}")))
}

fn publish(p: &Progress) {
    let mut job = BACKUP_JOB.exclusive();
    job.phase = p.phase.load(Ordering::Relaxed);
    job.bytes_done = p.bytes_done.load(Ordering::Relaxed);
    job.bytes_total = p.bytes_total.load(Ordering::Relaxed);
    job.files_done = p.files_done.load(Ordering::Relaxed);
    job.files_total = p.files_total.load(Ordering::Relaxed);
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    if ok { String::from_utf8_lossy(&buf[..end]).into_owned() } else { String::new() }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;

    #[pg_test]
    fn failures_keep_their_kind_and_sqlstate() {
        let f = Failure::from(walg_core::Error::Unreachable("file storage prefix /x does not exist".into()));
        assert_eq!((f.kind, f.code), (ErrorKind::Unreachable, PgSqlErrorCode::ERRCODE_IO_ERROR));
        assert!(f.hint.contains("storage is reachable"), "{}", f.hint);
        let f = Failure::from(walg_core::Error::Conflict("backup base_1 already exists".into()));
        assert_eq!(f.code, PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION);
        let f = Failure::from(walg_core::Error::Cancelled("asked to stop".into()));
        assert_eq!(f.code, PgSqlErrorCode::ERRCODE_QUERY_CANCELED);
        let f = Failure::from(walg_core::Error::corrupt("basebackups_005/x", "bad"));
        assert_eq!(f.code, PgSqlErrorCode::ERRCODE_DATA_CORRUPTED);
        let f = Failure::new(ErrorKind::Cancelled, "the backup worker was asked to stop");
        assert_eq!(f.code, PgSqlErrorCode::ERRCODE_QUERY_CANCELED);

        // PostgreSQL's own errors keep their SQLSTATE; the kind follows its class.
        let f = Failure::from_postgres(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "WAL level not sufficient", Some("wal_level"));
        assert_eq!((f.kind, f.code, f.hint.as_str()), (ErrorKind::Conflict, PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "wal_level"));
        assert_eq!(&sqlstate_class(PgSqlErrorCode::ERRCODE_QUERY_CANCELED), b"57");
        assert_eq!(&sqlstate_class(PgSqlErrorCode::ERRCODE_IO_ERROR), b"58");
        assert_eq!(kind_of_sqlstate(PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN), ErrorKind::Cancelled);
        assert_eq!(kind_of_sqlstate(PgSqlErrorCode::ERRCODE_DISK_FULL), ErrorKind::LocalIo);
        assert_eq!(kind_of_sqlstate(PgSqlErrorCode::ERRCODE_DATA_CORRUPTED), ErrorKind::Corrupt);
        assert_eq!(kind_of_sqlstate(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR), ErrorKind::Internal);
        assert_eq!(kind_of_sqlstate(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE), ErrorKind::BadInput);

        // Through the job slot's representation (packed SQLSTATE, kind name) and back.
        let packed = PgSqlErrorCode::ERRCODE_IO_ERROR as isize as i32;
        assert_eq!(PgSqlErrorCode::from(packed), PgSqlErrorCode::ERRCODE_IO_ERROR);
        let mut job = crate::shmem::BackupJob::default();
        job.set_error_kind(ErrorKind::Unreachable);
        job.set_error_hint("hint");
        assert_eq!((job.error_kind(), job.error_hint().as_str()), (Some(ErrorKind::Unreachable), "hint"));
    }
}
