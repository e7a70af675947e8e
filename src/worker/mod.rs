//! Background workers. `backup`: one dynamic worker per backup job, started from SQL or by the
//! scheduler. `scheduler`: the static worker (schedules, retention, the health cache).
pub mod backup;
pub mod scheduler;
