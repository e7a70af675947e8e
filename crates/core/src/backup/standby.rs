//! Backups taken on a standby: what makes one unable to finish, decided before anything is
//! written, and the timeline check while it runs.
//!
//! Facts from PostgreSQL 15 (`do_pg_backup_start` / `do_pg_backup_stop` in xlog.c) on a standby:
//! - The start point is the redo point of the last restartpoint, and it must be newer than the
//!   previous backup's start point (`lastBackupStart`; two backups may not share a start point).
//!   A restartpoint can only be made at a checkpoint record the standby has replayed, so a
//!   standby that replays nothing new waits in `pg_backup_start` for ever once one backup has
//!   used its last restartpoint.
//! - The stop point is `minRecoveryPoint`, on the timeline the standby replays
//!   (`minRecoveryPointTLI`); `START TIMELINE` is the last restartpoint's timeline.
//!
//! So a standby backup can never finish when (refused before anything is written,
//! [`refuse_standby_backup`]):
//! - WAL replay is paused or a pause is requested (`pg_get_wal_replay_pause_state()`): nothing is
//!   replayed until someone resumes it, and a backup taken meanwhile would end at the paused
//!   point anyway;
//! - the standby has no WAL source: neither `primary_conninfo` nor `restore_command` is set (it
//!   replays what is in `pg_wal` and then waits for ever).
//!
//! A WAL receiver that is down while `primary_conninfo` is set is not refused: PostgreSQL retries
//! it every `wal_retrieve_retry_interval`, so that wait can end.
//!
//! And a backup whose WAL would span two timelines is stopped ([`check_replay_timeline`]): the
//! worker waits for the segments on the backup's start timeline only (`wal_wait`), and after a
//! switch the later segments exist only on the new timeline, so it would wait for ever.
//!
//! Both errors are `Error::Refused` (SQLSTATE 55000, object not in prerequisite state).

use crate::error::{Error, Result};

/// `pg_get_wal_replay_pause_state()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayPause {
    NotPaused,
    PauseRequested,
    Paused,
}

impl ReplayPause {
    /// From PostgreSQL's text; anything unknown counts as paused (refusing is the safe side:
    /// a wrongly refused backup can be taken again, a hung one waits for ever).
    pub fn parse(text: &str) -> ReplayPause {
        match text.trim() {
            "not paused" => ReplayPause::NotPaused,
            "pause requested" => ReplayPause::PauseRequested,
            _ => ReplayPause::Paused,
        }
    }
}

/// What the worker reads on a server in recovery before it writes anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandbyFacts {
    pub pause: ReplayPause,
    /// `current_setting('primary_conninfo')`.
    pub primary_conninfo: String,
    /// `current_setting('restore_command')`.
    pub restore_command: String,
}

/// Err(Refused) when a backup on this standby could never reach its end (see the module
/// header); Ok when it can.
pub fn refuse_standby_backup(f: &StandbyFacts) -> Result<()> {
    match f.pause {
        ReplayPause::NotPaused => {}
        p => {
            let state = if p == ReplayPause::Paused { "paused" } else { "being paused" };
            return Err(Error::Refused(format!(
                "WAL replay on this standby is {state} (pg_get_wal_replay_pause_state()): a backup here could not \
                 start or end until replay resumes; nothing was written to storage. Resume it with \
                 SELECT pg_wal_replay_resume() and take the backup again"
            )));
        }
    }
    if f.primary_conninfo.trim().is_empty() && f.restore_command.trim().is_empty() {
        return Err(Error::Refused(
            "this standby has no WAL source (primary_conninfo and restore_command are both empty), so it replays \
             nothing new and a backup here could never end; nothing was written to storage. Set primary_conninfo \
             or restore_command and reload"
                .into(),
        ));
    }
    Ok(())
}

/// Err(Refused) when the standby now replays a timeline other than the backup's start timeline
/// (`START TIMELINE`): its WAL would span the switch. `replay_timeline` is the timeline of the
/// last record replayed (`GetXLogReplayRecPtr`); 0 means not known yet and passes.
pub fn check_replay_timeline(start_timeline: u32, replay_timeline: u32) -> Result<()> {
    if replay_timeline == 0 || replay_timeline == start_timeline {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "the standby switched from timeline {start_timeline} to timeline {replay_timeline} during the backup \
         (its upstream was replaced by a promoted server): the WAL this backup needs spans both timelines, so it \
         cannot complete; nothing committed. Take the backup again: it will start on timeline {replay_timeline}"
    )))
}

/// `START TIMELINE` from a backup_label's text, if present.
pub fn label_start_timeline(label: &str) -> Option<u32> {
    label.lines().find_map(|l| l.strip_prefix("START TIMELINE:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn facts(pause: &str, conninfo: &str, restore: &str) -> StandbyFacts {
        StandbyFacts { pause: ReplayPause::parse(pause), primary_conninfo: conninfo.into(), restore_command: restore.into() }
    }

    #[test]
    fn a_streaming_or_archive_standby_replaying_is_accepted() {
        refuse_standby_backup(&facts("not paused", "host=/tmp port=5432 user=postgres", "")).unwrap();
        refuse_standby_backup(&facts("not paused", "", "walg-ext wal-fetch %f %p")).unwrap();
        refuse_standby_backup(&facts("not paused", "host=p", "cp /a/%f %p")).unwrap();
    }

    #[test]
    fn paused_replay_is_refused_naming_the_fix() {
        for (state, word) in [("paused", "is paused"), ("pause requested", "being paused")] {
            let e = refuse_standby_backup(&facts(state, "host=p", "")).unwrap_err();
            assert!(matches!(e, Error::Refused(_)), "{e:?}");
            assert_eq!(e.kind(), ErrorKind::Conflict);
            let m = e.to_string();
            assert!(m.contains(word) && m.contains("pg_wal_replay_resume()") && m.contains("nothing was written"), "{m}");
        }
        // A state this code does not know is treated as paused.
        assert_eq!(ReplayPause::parse("something new"), ReplayPause::Paused);
        assert_eq!(ReplayPause::parse("not paused\n"), ReplayPause::NotPaused);
    }

    #[test]
    fn no_wal_source_is_refused() {
        let e = refuse_standby_backup(&facts("not paused", " ", "")).unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e:?}");
        assert!(e.to_string().contains("no WAL source") && e.to_string().contains("primary_conninfo"), "{e}");
        // Paused is reported first: it is the one a user did on purpose.
        let e = refuse_standby_backup(&facts("paused", "", "")).unwrap_err();
        assert!(e.to_string().contains("paused"), "{e}");
    }

    #[test]
    fn a_timeline_switch_fails_with_both_timelines_named() {
        check_replay_timeline(1, 1).unwrap();
        check_replay_timeline(3, 0).unwrap();
        let e = check_replay_timeline(1, 2).unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e:?}");
        let m = e.to_string();
        assert!(m.contains("switched from timeline 1 to timeline 2 during the backup") && m.contains("nothing committed"), "{m}");
        assert!(m.contains("start on timeline 2"), "{m}");
        // Any difference counts, also a lower number (a standby re-pointed at an older branch).
        assert!(check_replay_timeline(3, 2).is_err());
    }

    #[test]
    fn start_timeline_from_the_label() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n\
                     BACKUP METHOD: streamed\nBACKUP FROM: standby\nSTART TIME: 2026-11-29 23:00:00 UTC\n\
                     LABEL: walg_ext\nSTART TIMELINE: 2\n";
        assert_eq!(label_start_timeline(label), Some(2));
        assert_eq!(label_start_timeline("LABEL: x\n"), None);
    }
}
