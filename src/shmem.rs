//! Shared state: the one backup job slot (a backup is a server-wide, one-at-a-time operation)
//! with its options and progress, and the archiver's statistics, read by the status function.
use pgrx::lwlock::PgLwLock;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, pg_sys};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum JobState {
    Idle = 0,
    Starting = 1,
    Running = 2,
    Succeeded = 3,
    Failed = 4,
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BackupJob {
    pub state: u32,
    pub generation: u64,
    /// Backend that asked for the backup, and the worker doing it (0 until it starts).
    pub owner_pid: i32,
    pub worker_pid: i32,
    pub phase: u32,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
    /// Options of the request, for the worker: permanent (0/1) and user data (JSON text).
    pub permanent: u32,
    user_data: [u8; USER_DATA_MAX + 1],
    /// Delta options: full (0/1: WAL-G's --full), the base by name, the base by user data.
    pub full: u32,
    delta_from: [u8; 64],
    delta_from_user_data: [u8; USER_DATA_MAX + 1],
    name: [u8; 64],
    /// How the job failed (state Failed): the message, the error's kind
    /// (walg_core::ErrorKind::name), and the SQLSTATE (PostgreSQL's packed sqlerrcode) and hint
    /// the waiting backend raises, so a failure keeps its kind across the process boundary.
    error: [u8; 1024],
    error_kind: [u8; 16],
    pub error_sqlstate: i32,
    error_hint: [u8; 256],
}

/// Longest user_data JSON text a backup request can carry through shared memory.
pub const USER_DATA_MAX: usize = 4095;

impl Default for BackupJob {
    fn default() -> Self {
        BackupJob {
            state: JobState::Idle as u32,
            generation: 0,
            owner_pid: 0,
            worker_pid: 0,
            phase: 0,
            bytes_done: 0,
            bytes_total: 0,
            files_done: 0,
            files_total: 0,
            permanent: 0,
            user_data: [0; USER_DATA_MAX + 1],
            full: 0,
            delta_from: [0; 64],
            delta_from_user_data: [0; USER_DATA_MAX + 1],
            name: [0; 64],
            error: [0; 1024],
            error_kind: [0; 16],
            error_sqlstate: 0,
            error_hint: [0; 256],
        }
    }
}

unsafe impl PGRXSharedMemory for BackupJob {}

fn put_str(buf: &mut [u8], s: &str) {
    buf.fill(0);
    // keep a NUL at the end and cut on a char boundary
    let mut n = s.len().min(buf.len() - 1);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn get_str(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl BackupJob {
    /// A fresh slot for job `generation`, asked for by backend `owner_pid`.
    pub fn starting(generation: u64, owner_pid: i32) -> Self {
        BackupJob { state: JobState::Starting as u32, generation, owner_pid, ..Default::default() }
    }
    pub fn state(&self) -> JobState {
        job_state(self.state)
    }
    pub fn set_state(&mut self, s: JobState) {
        self.state = s as u32;
    }
    pub fn name(&self) -> String {
        get_str(&self.name)
    }
    pub fn set_name(&mut self, s: &str) {
        put_str(&mut self.name, s)
    }
    pub fn user_data(&self) -> String {
        get_str(&self.user_data)
    }
    /// The caller checks the length (at most USER_DATA_MAX bytes).
    pub fn set_user_data(&mut self, s: &str) {
        put_str(&mut self.user_data, s)
    }
    pub fn delta_from(&self) -> String {
        get_str(&self.delta_from)
    }
    /// The caller checks the length (a backup name: under 64 bytes).
    pub fn set_delta_from(&mut self, s: &str) {
        put_str(&mut self.delta_from, s)
    }
    pub fn delta_from_user_data(&self) -> String {
        get_str(&self.delta_from_user_data)
    }
    /// The caller checks the length (at most USER_DATA_MAX bytes).
    pub fn set_delta_from_user_data(&mut self, s: &str) {
        put_str(&mut self.delta_from_user_data, s)
    }
    pub fn error(&self) -> String {
        get_str(&self.error)
    }
    pub fn set_error(&mut self, s: &str) {
        put_str(&mut self.error, s)
    }
    /// The failed job's error kind; None unless it failed (or from an older layout).
    pub fn error_kind(&self) -> Option<walg_core::ErrorKind> {
        walg_core::ErrorKind::from_name(&get_str(&self.error_kind))
    }
    pub fn set_error_kind(&mut self, k: walg_core::ErrorKind) {
        put_str(&mut self.error_kind, k.name())
    }
    pub fn error_hint(&self) -> String {
        get_str(&self.error_hint)
    }
    pub fn set_error_hint(&mut self, s: &str) {
        put_str(&mut self.error_hint, s)
    }
    /// A job is active while its worker (or, before the worker starts, its owner) is alive.
    pub fn is_active(&self) -> bool {
        job_alive(self.state(), self.worker_pid, self.owner_pid)
    }
}

/// The state stored in a job slot (backup or drill) as a number.
fn job_state(v: u32) -> JobState {
    match v {
        1 => JobState::Starting,
        2 => JobState::Running,
        3 => JobState::Succeeded,
        4 => JobState::Failed,
        _ => JobState::Idle,
    }
}

/// A job (backup or drill) in Starting or Running counts as active while the process that holds
/// it is alive: its worker once started, its owner before that.
fn job_alive(state: JobState, worker_pid: i32, owner_pid: i32) -> bool {
    match state {
        JobState::Starting | JobState::Running => {
            let pid = if worker_pid != 0 { worker_pid } else { owner_pid };
            pid != 0 && process_alive(pid)
        }
        _ => false,
    }
}

fn process_alive(pid: i32) -> bool {
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

pub static BACKUP_JOB: PgLwLock<BackupJob> = unsafe { PgLwLock::new(c"walg_ext_backup_job") };

/// Longest drill report (walg_core::backup::drill::DrillReport as JSON) the drill slot holds.
pub const DRILL_REPORT_MAX: usize = 16 * 1024;

/// The one restore drill slot (worker/drill.rs): one drill at a time, server-wide. The caller
/// fills in the backup and the scratch directory; the worker the child's pid and the outcome:
/// the report (state Succeeded: the drill ran, passed or not) or why it could not run (Failed).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct DrillJob {
    pub state: u32,
    pub generation: u64,
    pub owner_pid: i32,
    pub worker_pid: i32,
    /// The `walg-ext restore-drill` process (0 until started).
    pub child_pid: i32,
    backup: [u8; 64],
    work_dir: [u8; 1024],
    report: [u8; DRILL_REPORT_MAX],
    error: [u8; 1024],
    error_kind: [u8; 16],
}

impl Default for DrillJob {
    fn default() -> Self {
        DrillJob {
            state: JobState::Idle as u32,
            generation: 0,
            owner_pid: 0,
            worker_pid: 0,
            child_pid: 0,
            backup: [0; 64],
            work_dir: [0; 1024],
            report: [0; DRILL_REPORT_MAX],
            error: [0; 1024],
            error_kind: [0; 16],
        }
    }
}

unsafe impl PGRXSharedMemory for DrillJob {}

impl DrillJob {
    pub fn state(&self) -> JobState {
        job_state(self.state)
    }
    pub fn set_state(&mut self, s: JobState) {
        self.state = s as u32;
    }
    pub fn backup(&self) -> String {
        get_str(&self.backup)
    }
    pub fn set_backup(&mut self, s: &str) {
        put_str(&mut self.backup, s)
    }
    pub fn work_dir(&self) -> String {
        get_str(&self.work_dir)
    }
    /// False when the path does not fit.
    pub fn set_work_dir(&mut self, s: &str) -> bool {
        put_str(&mut self.work_dir, s);
        s.len() < self.work_dir.len()
    }
    pub fn report(&self) -> String {
        get_str(&self.report)
    }
    /// False when the text does not fit.
    pub fn set_report(&mut self, s: &str) -> bool {
        put_str(&mut self.report, s);
        s.len() < self.report.len()
    }
    pub fn error(&self) -> String {
        get_str(&self.error)
    }
    pub fn set_error(&mut self, s: &str) {
        put_str(&mut self.error, s)
    }
    pub fn error_kind(&self) -> Option<walg_core::ErrorKind> {
        walg_core::ErrorKind::from_name(&get_str(&self.error_kind))
    }
    pub fn set_error_kind(&mut self, k: walg_core::ErrorKind) {
        put_str(&mut self.error_kind, k.name())
    }
    /// A drill is active while its worker (or, before it starts, its owner) is alive.
    pub fn is_active(&self) -> bool {
        job_alive(self.state(), self.worker_pid, self.owner_pid)
    }
}

pub static DRILL_JOB: PgLwLock<DrillJob> = unsafe { PgLwLock::new(c"walg_ext_drill_job") };

/// What the archive module did since the server started (updated by the archiver process).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct ArchiverStats {
    /// Unix microseconds; 0 = never.
    pub last_archived_at: i64,
    pub last_failed_at: i64,
    pub archived_files: u64,
    pub archived_bytes: u64,
    /// Files that were already in storage with identical content.
    pub already_archived_files: u64,
    pub failed_count: u64,
    /// Start of the current run of failures (Unix microseconds; 0 = the last attempt succeeded).
    pub failing_since: i64,
    last_archived: [u8; 64],
    last_failed: [u8; 64],
    last_error: [u8; 512],
}

impl Default for ArchiverStats {
    fn default() -> Self {
        ArchiverStats {
            last_archived_at: 0,
            last_failed_at: 0,
            archived_files: 0,
            archived_bytes: 0,
            already_archived_files: 0,
            failed_count: 0,
            failing_since: 0,
            last_archived: [0; 64],
            last_failed: [0; 64],
            last_error: [0; 512],
        }
    }
}

unsafe impl PGRXSharedMemory for ArchiverStats {}

impl ArchiverStats {
    pub fn last_archived(&self) -> String {
        get_str(&self.last_archived)
    }
    pub fn last_failed(&self) -> String {
        get_str(&self.last_failed)
    }
    pub fn last_error(&self) -> String {
        get_str(&self.last_error)
    }
    /// A file was archived (`bytes` uploaded; None when it was already there).
    pub fn archived(&mut self, file: &str, bytes: Option<u64>, now_micros: i64) {
        put_str(&mut self.last_archived, file);
        self.last_archived_at = now_micros;
        self.failing_since = 0;
        match bytes {
            Some(b) => {
                self.archived_files += 1;
                self.archived_bytes += b;
            }
            None => self.already_archived_files += 1,
        }
    }
    pub fn failed(&mut self, file: &str, error: &str, now_micros: i64) {
        put_str(&mut self.last_failed, file);
        put_str(&mut self.last_error, error);
        self.last_failed_at = now_micros;
        if self.failing_since == 0 {
            self.failing_since = now_micros;
        }
        self.failed_count += 1;
    }
}

pub static ARCHIVER_STATS: PgLwLock<ArchiverStats> = unsafe { PgLwLock::new(c"walg_ext_archiver_stats") };

/// Longest JSON snapshot the scheduler publishes (walg_core::schedule::Snapshot).
pub const SNAPSHOT_MAX: usize = 32 * 1024;

/// What the scheduler publishes for walg_schedule, walg_health and walg_metrics: a JSON
/// snapshot (walg_core::schedule::Snapshot), rewritten after every change and every storage
/// check, so the SQL functions read memory only.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct SchedulerShared {
    pub worker_pid: i32,
    /// The persisted counters were added into ARCHIVER_STATS (once per shared memory life, so
    /// a restarted scheduler does not add them twice).
    pub counters_loaded: u32,
    len: u32,
    json: [u8; SNAPSHOT_MAX],
}

impl Default for SchedulerShared {
    fn default() -> Self {
        SchedulerShared { worker_pid: 0, counters_loaded: 0, len: 0, json: [0; SNAPSHOT_MAX] }
    }
}

unsafe impl PGRXSharedMemory for SchedulerShared {}

impl SchedulerShared {
    pub fn snapshot_json(&self) -> Option<String> {
        (self.len > 0).then(|| String::from_utf8_lossy(&self.json[..self.len as usize]).into_owned())
    }
    /// False when the text does not fit (the caller trims it and tries again).
    pub fn set_snapshot_json(&mut self, s: &str) -> bool {
        if s.len() > SNAPSHOT_MAX {
            return false;
        }
        self.json[..s.len()].copy_from_slice(s.as_bytes());
        self.len = s.len() as u32;
        true
    }
}

pub static SCHEDULER: PgLwLock<SchedulerShared> = unsafe { PgLwLock::new(c"walg_ext_scheduler") };

static INITIALIZED: AtomicBool = AtomicBool::new(false);

pub fn init() {
    pg_shmem_init!(BACKUP_JOB);
    pg_shmem_init!(ARCHIVER_STATS);
    pg_shmem_init!(SCHEDULER);
    pg_shmem_init!(DRILL_JOB);
    INITIALIZED.store(true, Ordering::Relaxed);
}

/// True when the extension was loaded through shared_preload_libraries (so the slot exists).
pub fn available() -> bool {
    INITIALIZED.load(Ordering::Relaxed)
}

pub fn my_pid() -> i32 {
    unsafe { pg_sys::MyProcPid }
}
