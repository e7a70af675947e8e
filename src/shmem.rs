//! Shared state: the one backup job slot (a backup is a server-wide, one-at-a-time operation)
//! with its progress, read by callers and the status functions.
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
    name: [u8; 64],
    error: [u8; 1024],
}

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
            name: [0; 64],
            error: [0; 1024],
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
        match self.state {
            1 => JobState::Starting,
            2 => JobState::Running,
            3 => JobState::Succeeded,
            4 => JobState::Failed,
            _ => JobState::Idle,
        }
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
    pub fn error(&self) -> String {
        get_str(&self.error)
    }
    pub fn set_error(&mut self, s: &str) {
        put_str(&mut self.error, s)
    }
    /// A job is active while its worker (or, before the worker starts, its owner) is alive.
    pub fn is_active(&self) -> bool {
        match self.state() {
            JobState::Starting | JobState::Running => {
                let pid = if self.worker_pid != 0 { self.worker_pid } else { self.owner_pid };
                pid != 0 && process_alive(pid)
            }
            _ => false,
        }
    }
}

fn process_alive(pid: i32) -> bool {
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

pub static BACKUP_JOB: PgLwLock<BackupJob> = unsafe { PgLwLock::new(c"walg_ext_backup_job") };

static INITIALIZED: AtomicBool = AtomicBool::new(false);

pub fn init() {
    pg_shmem_init!(BACKUP_JOB);
    INITIALIZED.store(true, Ordering::Relaxed);
}

/// True when the extension was loaded through shared_preload_libraries (so the slot exists).
pub fn available() -> bool {
    INITIALIZED.load(Ordering::Relaxed)
}

pub fn my_pid() -> i32 {
    unsafe { pg_sys::MyProcPid }
}
