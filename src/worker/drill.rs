//! A restore drill asked of the server, in a dynamic background worker: `walg_restore_drill()`
//! and the scheduler's `walg.drill_schedule` both call [`start`], so there is one path.
//!
//! The drill itself is the one implementation there is, the CLI's `walg-ext restore-drill`: the
//! worker runs it as a child process (`walg.cli_path`) with `--json`, the server's own binaries
//! (`--pg-bin`, the server's bindir), `--work-dir` (`walg.drill_work_dir`), and the server's
//! configuration: `--config <walg.config_file>` and the walg.* settings that are set as WAL-G
//! variables in its environment (walg_core::backup::drill_request; secrets never on a command
//! line). A second implementation inside the server would redo the throwaway server's start,
//! recovery wait, checks and clean-up; a child process also keeps the restore's threads, memory
//! and any crash out of the PostgreSQL process, and a cancel is a kill.
//!
//! Invariants:
//! - Checked before anything starts, in the caller, each with its own error: a backup or another
//!   drill running; the server's binaries of the backup's major version and amcheck; the
//!   walg-ext binary; free space for one copy in the scratch directory; no secret only in the
//!   server's environment. A refusal starts nothing and records nothing.
//! - One drill at a time (the slot), and none starts while a backup runs. A backup may start
//!   while a drill runs: the drill only reads a committed backup and its archived WAL and writes
//!   its own report object, so the two share I/O, not data.
//! - Cancelled (the caller's cancel, pg_terminate_backend, shutdown): the child is killed, the
//!   throwaway server it may have started (its own session: pg_ctl detaches it) is stopped
//!   immediately, and its scratch directory removed. No report is written then.
use crate::settings;
use crate::shmem::{self, DrillJob, JobState, BACKUP_JOB, DRILL_JOB};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder};
use pgrx::prelude::*;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use walg_core::backup::drill::DrillReport;
use walg_core::backup::drill_request::{self as req, ChildResult};
use walg_core::{catalog, Error, ErrorKind};

pub const WORKER_TYPE: &str = "walg_ext drill";

/// Why a drill did not start.
pub enum StartError {
    /// Another drill or a backup is running (the message says which).
    Busy(String),
    /// A check refused it, or the configuration or storage cannot be used.
    Refused(Error),
    /// No background worker slot (max_worker_processes).
    NoWorker,
}

impl From<Error> for StartError {
    fn from(e: Error) -> Self {
        StartError::Refused(e)
    }
}

pub struct Started {
    pub generation: u64,
    pub worker: pgrx::bgworkers::DynamicBackgroundWorker,
    /// The backup being drilled (LATEST resolved).
    pub backup: String,
}

/// Why a drill that started did not run to a report.
pub struct NotRun {
    pub kind: ErrorKind,
    pub message: String,
}

/// The directory of this server's own binaries.
fn bindir() -> PathBuf {
    let exe = unsafe { std::ffi::CStr::from_ptr(std::ptr::addr_of!(pg_sys::my_exec_path).cast::<std::ffi::c_char>()) }.to_string_lossy().into_owned();
    Path::new(&exe).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// This server's share directory (extensions' control files are under it).
fn sharedir() -> PathBuf {
    let mut buf = vec![0 as std::ffi::c_char; pg_sys::MAXPGPATH as usize];
    unsafe {
        pg_sys::get_share_path(std::ptr::addr_of!(pg_sys::my_exec_path).cast::<std::ffi::c_char>(), buf.as_mut_ptr());
        std::ffi::CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned().into()
    }
}

fn busy_reason() -> Option<String> {
    let b = *BACKUP_JOB.share();
    if b.is_active() {
        let pid = if b.worker_pid != 0 { b.worker_pid } else { b.owner_pid };
        return Some(format!("a backup is running (process {pid}): a restore drill never starts during a backup"));
    }
    let d = DRILL_JOB.share();
    if d.is_active() {
        let pid = if d.worker_pid != 0 { d.worker_pid } else { d.owner_pid };
        return Some(format!("a restore drill of {} is already running (process {pid}): one drill at a time", d.backup()));
    }
    None
}

/// Check everything, claim the drill slot and start the drill worker for `requested` (a backup
/// name or LATEST).
pub fn start(requested: &str) -> Result<Started, StartError> {
    if let Some(why) = busy_reason() {
        return Err(StartError::Busy(why));
    }
    let cfg = settings::load_config()?;
    let storage = cfg.open_storage()?;
    // (vars_os: std::env::vars panics on a variable that is not UTF-8.)
    let env: Vec<(String, String)> =
        std::env::vars_os().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())).collect();
    req::check_env_secrets(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    req::check_cli(&cfg.cli_path)?;
    let backup = walg_core::backup::fetch::resolve_backup_name(storage.as_ref(), requested)?;
    let all = catalog::list_backups(storage.as_ref())?;
    let info = catalog::list::find(&all, &backup)?;
    let server_major = (pg_sys::PG_VERSION_NUM / 10000) as u32;
    let backup_major = (info.sentinel.pg_version / 10000) as u32;
    req::check_pg_bin(&bindir(), &sharedir(), server_major, backup_major, &backup)?;
    let work_dir = cfg.drill_work_dir.clone().unwrap_or_else(std::env::temp_dir);
    if !work_dir.is_absolute() {
        return Err(Error::Refused(format!("walg.drill_work_dir {} is not an absolute path", work_dir.display())).into());
    }
    let free = req::free_space(&work_dir).map_err(|e| Error::Refused(format!("the drill's scratch directory (walg.drill_work_dir): {e}")))?;
    req::check_space(&work_dir, &backup, req::space_needed(&all, &backup)?, free)?;

    let generation = {
        let mut job = DRILL_JOB.exclusive();
        if job.is_active() {
            return Err(StartError::Busy(format!("a restore drill of {} is already running: one drill at a time", job.backup())));
        }
        let generation = job.generation + 1;
        *job = DrillJob::default();
        job.set_state(JobState::Starting);
        job.generation = generation;
        job.owner_pid = shmem::my_pid();
        job.set_backup(&backup);
        if !job.set_work_dir(&work_dir.display().to_string()) {
            job.set_state(JobState::Idle);
            return Err(Error::Refused(format!("walg.drill_work_dir {} is too long", work_dir.display())).into());
        }
        generation
    };
    let worker = BackgroundWorkerBuilder::new(&format!("walg_ext drill {generation}"))
        .set_type(WORKER_TYPE)
        .set_library("walg_ext")
        .set_function("walg_ext_drill_worker_main")
        .set_extra(&generation.to_string())
        .enable_shmem_access(None)
        .set_start_time(pgrx::bgworkers::BgWorkerStartTime::ConsistentState)
        .set_notify_pid(shmem::my_pid())
        .set_restart_time(None)
        .load_dynamic();
    match worker {
        Ok(worker) => Ok(Started { generation, worker, backup }),
        Err(_) => {
            settle(generation, Err(NotRun { kind: ErrorKind::Internal, message: "could not register the drill worker".into() }));
            Err(StartError::NoWorker)
        }
    }
}

/// The outcome of drill `generation` once its worker stopped: the report, or why it did not run.
pub fn outcome(generation: u64) -> Result<DrillReport, NotRun> {
    let job = DRILL_JOB.share();
    if job.generation != generation {
        return Err(NotRun { kind: ErrorKind::Internal, message: "the drill slot was taken by another drill while waiting".into() });
    }
    match job.state() {
        JobState::Succeeded => serde_json::from_str(&job.report())
            .map_err(|e| NotRun { kind: ErrorKind::Internal, message: format!("the drill's report did not survive shared memory: {e}") }),
        JobState::Failed => Err(NotRun { kind: job.error_kind().unwrap_or(ErrorKind::Internal), message: job.error() }),
        _ => Err(NotRun {
            kind: ErrorKind::Cancelled,
            message: "the drill worker exited before finishing (terminated or crashed; see the server log)".into(),
        }),
    }
}

fn settle(generation: u64, result: Result<&DrillReport, NotRun>) {
    let mut job = DRILL_JOB.exclusive();
    if job.generation != generation {
        return;
    }
    match result {
        Ok(report) => {
            let mut r = report.clone();
            let mut text = serde_json::to_string(&r).unwrap_or_default();
            if text.len() >= shmem::DRILL_REPORT_MAX {
                // The full report is in storage; the slot keeps what the outcome shows.
                for s in &mut r.steps {
                    s.detail = None;
                }
                if let Some(e) = &mut r.error {
                    let mut n = e.len().min(4000);
                    while !e.is_char_boundary(n) {
                        n -= 1;
                    }
                    e.truncate(n);
                }
                text = serde_json::to_string(&r).unwrap_or_default();
            }
            job.set_report(&text);
            job.set_state(JobState::Succeeded);
        }
        Err(f) => {
            job.set_error(&f.message);
            job.set_error_kind(f.kind);
            job.set_state(JobState::Failed);
        }
    }
}

unsafe extern "C-unwind" {
    fn die(postgres_signal_arg: std::ffi::c_int);
}

fn stop_requested() -> bool {
    unsafe { pg_sys::ProcDiePending != 0 || libc::getppid() != pg_sys::PostmasterPid }
}

/// Run `walg-ext restore-drill` for the slot's backup and wait for it.
fn run_child(generation: u64, backup: &str, work_dir: &Path) -> Result<DrillReport, NotRun> {
    let not_run = |e: Error| NotRun { kind: e.kind(), message: e.to_string() };
    let cfg = settings::load_config().map_err(not_run)?;
    let bin = bindir();
    let cmd = req::command(&cfg.cli_path, settings::config_file().as_deref(), backup, &bin, work_dir, &settings::guc_settings());
    let mut c = Command::new(&cmd.program);
    c.args(&cmd.args).current_dir(work_dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    for (k, _) in std::env::vars_os() {
        if walg_core::config::is_env_setting(&k.to_string_lossy()) {
            c.env_remove(&k);
        }
    }
    c.envs(cmd.env.iter().map(|(k, v)| (k, v)));
    let mut child = c.spawn().map_err(|e| NotRun { kind: ErrorKind::LocalIo, message: format!("cannot run {}: {e}", cmd.program.display()) })?;
    let pid = child.id() as i32;
    {
        let mut job = DRILL_JOB.exclusive();
        if job.generation == generation {
            job.child_pid = pid;
        }
    }
    log!("walg_ext: restore drill of {backup} started: {} {} (process {pid})", cmd.program.display(), cmd.args.join(" "));
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    // Read both pipes on their own threads (neither may fill up and stall the child); they
    // never call PostgreSQL.
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => return Err(NotRun { kind: ErrorKind::Internal, message: format!("waiting for the drill: {e}") }),
        }
        // Not BackgroundWorker::wait_latch: it runs CHECK_FOR_INTERRUPTS, which would end this
        // process on SIGTERM before the child and its copy are cleaned up.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_POSTMASTER_DEATH) as i32,
                500,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        if stop_requested() {
            log!("walg_ext: restore drill of {backup} cancelled: stopping it and removing its copy");
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
            clean_up_after_kill(&bin, &work_dir.join(format!("walg-drill-{pid}")));
            return Err(NotRun { kind: ErrorKind::Cancelled, message: format!("the restore drill of {backup} was cancelled; no report was written") });
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        log!("walg_ext drill: {line}");
    }
    match req::child_result(status.code(), &stdout, &stderr) {
        ChildResult::Ran(r) => Ok(r),
        ChildResult::NotRun(kind, message) => Err(NotRun { kind, message }),
    }
}

/// After killing the child: stop the copy it may have started (pg_ctl gave it its own session,
/// so the kill did not reach it) and remove the scratch directory.
fn clean_up_after_kill(bin: &Path, scratch: &Path) {
    let data = scratch.join("data");
    if data.join("postmaster.pid").exists() {
        let _ = Command::new(bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-w", "-t", "60", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if scratch.exists() {
        if let Err(e) = std::fs::remove_dir_all(scratch) {
            warning!("walg_ext: could not remove the cancelled drill's copy {}: {e}", scratch.display());
        }
    }
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn walg_ext_drill_worker_main(_arg: pg_sys::Datum) {
    // SIGTERM (the caller's cancel, pg_terminate_backend, shutdown) only sets ProcDiePending:
    // run_child's loop sees it, stops the child and cleans up before this process exits.
    unsafe {
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(die));
        pg_sys::BackgroundWorkerUnblockSignals();
        // HOLD_INTERRUPTS for the whole life of the worker: every ereport below WARNING ends in
        // CHECK_FOR_INTERRUPTS, which on a pending SIGTERM would exit before the child is killed
        // and its copy removed. This loop polls ProcDiePending itself; main's return exits.
        pg_sys::InterruptHoldoffCount += 1;
    }
    let generation: u64 = BackgroundWorker::get_extra().parse().unwrap_or(0);
    let (backup, work_dir) = {
        let mut job = DRILL_JOB.exclusive();
        if job.generation != generation || job.state() != JobState::Starting {
            return; // a stale registration: its caller is gone
        }
        job.worker_pid = shmem::my_pid();
        job.set_state(JobState::Running);
        (job.backup(), PathBuf::from(job.work_dir()))
    };
    let result = run_child(generation, &backup, &work_dir);
    match &result {
        Ok(r) => log!("walg_ext: restore drill of {backup}: {}", r.summary()),
        Err(f) => log!("walg_ext: restore drill of {backup} did not run ({}): {}", f.kind.name(), f.message),
    }
    settle(generation, result.as_ref().map_err(|f| NotRun { kind: f.kind, message: f.message.clone() }));
}
