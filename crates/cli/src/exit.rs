//! Exit codes: the one mapping from an error's kind (walg_core::ErrorKind) to the code the CLI
//! exits with. The README's table and `--help` list the same codes.
//!
//! `wal-fetch` is special because PostgreSQL reads its code (restore_command): 1 tells recovery
//! "no such file in the archive" (it ends recovery, or switches to streaming), so 1 is given
//! only when storage was reached and answered so; every other failure is 126, which PostgreSQL
//! treats as fatal and stops recovery instead of promoting early.
use std::process::ExitCode;

use walg_core::ErrorKind;

/// wal-fetch: the file is not in storage (storage answered so). wal-verify: a check is not OK.
pub const NOT_IN_STORAGE: u8 = 1;
/// wal-fetch: any failure other than "not in storage" (above 125: PostgreSQL stops recovery).
pub const WAL_FETCH_FAILED: u8 = 126;

/// Every code below, with its meaning, for `--help` (keep in step with `for_kind`).
pub const HELP: &str = "\
Exit codes:
  0    success
  1    wal-fetch: the file is not in storage (storage was reached and said so);
       wal-verify: a check is not OK
  2    bad input: arguments, configuration, key (also clap's usage errors)
  3    not found: no such backup (or no backup at all) in a reachable storage
  4    conflict: refused, nothing changed (exists with other content, would break a chain)
  5    corrupt: an object in storage is damaged or not in WAL-G's format
  6    storage unreachable: prefix missing or unreadable, wrong bucket or endpoint, network
  7    local I/O error: the target directory, PGDATA, a local file
  8    cancelled
  9    internal error (a bug: please report it)
  126  wal-fetch: any failure other than 1 (PostgreSQL then stops recovery)";

/// The exit code of a command (other than wal-fetch) that failed with an error of `kind`.
pub fn for_kind(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::BadInput => 2,
        ErrorKind::NotFound => 3,
        ErrorKind::Conflict => 4,
        ErrorKind::Corrupt => 5,
        ErrorKind::Unreachable => 6,
        ErrorKind::LocalIo => 7,
        ErrorKind::Cancelled => 8,
        ErrorKind::Internal => 9,
    }
}

/// Print the error (one line on stderr, saying what failed and what to fix) and give its code.
pub fn fail(context: &str, e: &walg_core::Error) -> ExitCode {
    eprintln!("walg-ext: {context}{e}");
    ExitCode::from(for_kind(e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use walg_core::error::ALL_KINDS;

    #[test]
    fn every_kind_has_its_own_code_clear_of_the_reserved_ones() {
        let mut seen = std::collections::BTreeSet::new();
        for k in ALL_KINDS {
            let c = for_kind(k);
            assert!(seen.insert(c), "{k:?} shares code {c}");
            assert!(c != 0 && c != NOT_IN_STORAGE && c < 126, "{k:?}: {c}");
            assert!(HELP.contains(&format!("\n  {c}  ")), "--help lists {c}");
        }
        assert!(HELP.contains("  126  wal-fetch"));
    }
}
