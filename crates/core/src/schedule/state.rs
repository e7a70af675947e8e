//! The scheduler's state file: `walg_ext.state` in PGDATA, JSON, written atomically (temporary
//! file, fsync, rename). It holds each schedule's record (so a restart catches up a missed tick
//! once), retention's, and the counters that `walg_metrics()` reports across restarts. The file
//! is left out of base backups (backup/walk.rs), so a restored copy does not inherit it.
use std::io::Write;
use std::path::{Path, PathBuf};

use super::plan::State;
use crate::error::{Error, Result};

pub const STATE_FILE: &str = "walg_ext.state";
pub const STATE_TEMP_FILE: &str = "walg_ext.state.tmp";

pub fn path_in(pgdata: &Path) -> PathBuf {
    pgdata.join(STATE_FILE)
}

/// The saved state; None when there is no file. A damaged file is an error (the caller logs
/// it and starts afresh: the cost is one missed catch-up and counters from zero).
pub fn load(pgdata: &Path) -> Result<Option<State>> {
    let path = path_in(pgdata);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| Error::corrupt(path.display().to_string(), format!("not a walg_ext state file: {e}")))
}

pub fn save(pgdata: &Path, state: &State) -> Result<()> {
    let tmp = pgdata.join(STATE_TEMP_FILE);
    let text = serde_json::to_vec_pretty(state).map_err(|e| Error::Internal(format!("state to JSON: {e}")))?;
    let io = |e: std::io::Error| Error::io(&tmp, e);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&text).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path_in(pgdata)).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let mut s = State::default();
        s.backup.expression = "0 3 * * *".into();
        s.counters.archived_files = 7;
        save(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(s));
        assert!(!dir.path().join(STATE_TEMP_FILE).exists());
        std::fs::write(path_in(dir.path()), "{not json").unwrap();
        assert_eq!(load(dir.path()).unwrap_err().kind(), crate::ErrorKind::Corrupt);
    }
}
