//! Background workers. `backup`: one dynamic worker per backup job, started from SQL or by the
//! scheduler. `drill`: one dynamic worker per restore drill (walg_restore_drill(),
//! walg.drill_schedule). `scheduler`: the static worker (schedules, retention, the health cache).
pub mod backup;
pub mod drill;
pub mod scheduler;
