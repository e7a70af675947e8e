//! Scheduled backups, retention and health, as pure logic (time in, decisions out): the
//! extension's scheduler worker (src/worker/scheduler.rs) is glue around these.
//!
//! - `cron`: parsing and ticks of `walg.backup_schedule` / `walg.full_backup_schedule`;
//! - `drill`: when `walg.drill_schedule` runs a restore drill;
//! - `plan`: what is due, catch-up once after a restart, retries with backoff, outcomes;
//! - `retention`: `walg.retain` as a request to the one delete implementation;
//! - `state`: the state file in PGDATA (records, counters) that survives restarts;
//! - `health`: the storage check the scheduler caches and the problems `walg_health()` lists;
//! - `metrics`: the Prometheus text of `walg_metrics()`.
pub mod cron;
pub mod drill;
pub mod health;
pub mod metrics;
pub mod plan;
pub mod retention;
pub mod state;

pub use cron::CronSchedule;
pub use plan::{Decision, Outcome, RetryPolicy, RunResult, Scheduler, State, Which};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the scheduler publishes in shared memory after every change and storage check: the
/// SQL functions `walg_schedule`, `walg_health` and `walg_metrics` read only this (and the
/// archiver's counters), never storage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub published_at: DateTime<Utc>,
    pub state: State,
    pub next_backup: Option<DateTime<Utc>>,
    pub next_full_backup: Option<DateTime<Utc>>,
    /// The next tick of walg.drill_schedule.
    #[serde(default)]
    pub next_drill: Option<DateTime<Utc>>,
    /// A backup should have finished after this (health::overdue_threshold, server time zone).
    pub due_by: Option<DateTime<Utc>>,
    pub storage: Option<health::StorageCheck>,
    /// (setting, message) for settings the scheduler cannot use.
    pub config_errors: Vec<(String, String)>,
    /// The server's `timezone` the schedules are read in.
    pub timezone: String,
    /// A standby that takes no backups (walg.backup_on_standby off).
    pub standby_idle: bool,
    pub check_interval_secs: u64,
}

impl Snapshot {
    pub fn next_run(&self, w: Which) -> Option<DateTime<Utc>> {
        match w {
            Which::Backup => self.next_backup,
            Which::FullBackup => self.next_full_backup,
        }
    }
}
