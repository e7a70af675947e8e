//! The end-to-end suite as one test binary: one link instead of one per file (each linked
//! binary is hundreds of MB with debug info, which filled the CI disk), and one process whose
//! shared helpers (ports, scratch names) cover every test. Run one file with a filter:
//! `cargo test -p walg-e2e -- --test-threads=1 story::`.

mod archive;
mod archive_faults;
mod backup_commit;
mod backup_errors;
mod backup_kill;
mod delta;
mod delta_maps;
mod drill;
mod drill_sql;
mod harness;
mod manage;
mod outage;
mod page_checksums;
mod partial;
mod pgp;
mod pitr;
mod recovery_unreachable;
mod restore_faults;
mod schedule;
mod s3_faults;
mod settings;
mod story;
mod tablespace;
