//! Background workers. `backup`: one dynamic worker per backup job, started from SQL.
//! (The static scheduler for schedules and retention comes with those features.)
pub mod backup;
