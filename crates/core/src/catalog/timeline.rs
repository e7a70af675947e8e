//! Timeline history files (`wal_005/<tli>.history.<ext>`): each line names an ancestor timeline
//! and the LSN where it was left ("1\t0/3000000\tno recovery target specified").

use std::collections::BTreeMap;
use std::io::Read;

use crate::codec::read_error;
use crate::error::{Error, Result};
use crate::format::names::parse_lsn;
use crate::storage::Storage;
use crate::codec::Pipeline;

use super::walfiles::{WalKind, WalObject};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRecord {
    /// The ancestor timeline.
    pub timeline: u32,
    /// Where it was switched away from: the first LSN of the next timeline.
    pub switch_lsn: u64,
}

/// Parse a history file's text. Comments and blank lines are skipped, as PostgreSQL does.
pub fn parse_history(text: &str, what: &str) -> Result<Vec<HistoryRecord>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        let bad = || Error::Format(format!("bad timeline history {what}: line {line:?}"));
        let timeline = f.next().and_then(|t| t.parse::<u32>().ok()).ok_or_else(bad)?;
        let switch_lsn = f.next().ok_or_else(bad).and_then(|l| parse_lsn(l).map_err(|_| bad()))?;
        out.push(HistoryRecord { timeline, switch_lsn });
    }
    Ok(out)
}

/// Timeline -> its history (ancestors, oldest first), for every history file in `wal`.
pub fn load_histories(storage: &dyn Storage, pipeline: &Pipeline, wal: &[WalObject]) -> Result<BTreeMap<u32, Vec<HistoryRecord>>> {
    let mut out = BTreeMap::new();
    for o in wal.iter().filter(|o| o.kind == WalKind::History) {
        if out.contains_key(&o.timeline) {
            continue; // same file under two extensions
        }
        let Some(mut r) = pipeline.open(storage, &o.key)? else { continue };
        let mut text = String::new();
        r.read_to_string(&mut text).map_err(|e| read_error(&o.key, e))?;
        out.insert(o.timeline, parse_history(&text, &o.key)?);
    }
    Ok(out)
}

/// The timeline that holds segment position `position` when following `history` (the history
/// of the newest timeline `current`): the segment that contains a switch point belongs to the
/// newer timeline.
pub fn timeline_at(current: u32, history: &[HistoryRecord], position: u64, switch_position: impl Fn(u64) -> u64) -> u32 {
    for r in history {
        if position < switch_position(r.switch_lsn) {
            return r.timeline;
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_history() {
        let h = parse_history("1\t0/3000000\tno recovery target specified\n\n# c\n2\t0/50000A0\tbefore 2020\n", "x").unwrap();
        assert_eq!(h, vec![
            HistoryRecord { timeline: 1, switch_lsn: 0x300_0000 },
            HistoryRecord { timeline: 2, switch_lsn: 0x500_00A0 },
        ]);
        assert!(parse_history("one\t0/1\n", "x").is_err());
        let pos = |lsn: u64| lsn >> 24; // 16 MiB segments, below 4 GiB
        assert_eq!(timeline_at(3, &h, 2, pos), 1);
        assert_eq!(timeline_at(3, &h, 3, pos), 2);
        assert_eq!(timeline_at(3, &h, 5, pos), 3);
    }
}
