//! The objects under wal_005/, classified by name: segments, timeline history files, backup
//! history files, partial segments.

use std::time::SystemTime;

use crate::codec::READ_EXTENSIONS;
use crate::error::Result;
use crate::format::names::WAL_PREFIX;
use crate::storage::Storage;
use crate::wal::blocks::stored::MAP_PREFIX;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalKind {
    /// `<24 hex>`: a WAL segment.
    Segment,
    /// `<8 hex>.history`.
    History,
    /// `<24 hex>.<8 hex>.backup`.
    BackupHistory,
    /// `<24 hex>.partial`.
    Partial,
    /// Anything else (left alone by every operation but `delete everything`).
    Other,
}

#[derive(Clone, Debug)]
pub struct WalObject {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
    /// File name without the compression extension, e.g. `000000010000000000000004`.
    pub name: String,
    pub kind: WalKind,
    /// Timeline (0 for `Other`).
    pub timeline: u32,
    /// Position of the segment ignoring the timeline: (log << 32) | seg of the 24-hex name.
    /// Ordered like the segment number whatever the segment size. 0 for history/other.
    pub position: u64,
}

fn hex(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// Strip a known compression extension (the bare name is a valid object too).
pub fn strip_extension(file: &str) -> &str {
    for ext in READ_EXTENSIONS.iter().filter(|e| !e.is_empty()) {
        if let Some(base) = file.strip_suffix(&format!(".{ext}")[..]) {
            return base;
        }
    }
    file
}

/// Position of a 24-hex segment name: (log << 32) | seg.
pub fn position_of(name24: &str) -> Option<u64> {
    if name24.len() != 24 {
        return None;
    }
    Some((hex(&name24[8..16])? << 32) | hex(&name24[16..24])?)
}

/// Classify one WAL file name (without extension).
pub fn classify(name: &str) -> (WalKind, u32, u64) {
    let seg = |n: &str| -> Option<(u32, u64)> { Some((hex(n.get(..8)?)? as u32, position_of(n)?)) };
    if name.len() == 24 {
        if let Some((t, p)) = seg(name) {
            return (WalKind::Segment, t, p);
        }
    }
    if let Some(t) = name.strip_suffix(".history").filter(|t| t.len() == 8).and_then(hex) {
        return (WalKind::History, t as u32, 0);
    }
    if let Some(n) = name.strip_suffix(".partial") {
        if let Some((t, p)) = seg(n) {
            return (WalKind::Partial, t, p);
        }
    }
    if let Some(n) = name.strip_suffix(".backup") {
        if n.len() == 33 && n.as_bytes()[24] == b'.' && hex(&n[25..]).is_some() {
            if let Some((t, p)) = seg(&n[..24]) {
                return (WalKind::BackupHistory, t, p);
            }
        }
    }
    (WalKind::Other, 0, 0)
}

/// Every object under wal_005/, classified, sorted by key.
pub fn list_wal(storage: &dyn Storage) -> Result<Vec<WalObject>> {
    list_classified(storage, WAL_PREFIX)
}

/// Every changed-block map (wal/blocks/stored.rs: one per segment, named like it), classified
/// like WAL, sorted by key.
pub fn list_maps(storage: &dyn Storage) -> Result<Vec<WalObject>> {
    list_classified(storage, MAP_PREFIX)
}

fn list_classified(storage: &dyn Storage, prefix: &str) -> Result<Vec<WalObject>> {
    Ok(storage
        .list(prefix)?
        .into_iter()
        .map(|o| {
            let file = o.key.strip_prefix(prefix).unwrap_or(&o.key);
            let name = strip_extension(file).to_string();
            let (kind, timeline, position) = classify(&name);
            WalObject { key: o.key, size: o.size, modified: o.modified, name, kind, timeline, position }
        })
        .collect())
}

/// Position of the segment that contains `lsn`.
pub fn position_of_lsn(lsn: u64, wal_segment_size: u64) -> u64 {
    ((lsn >> 32) << 32) | ((lsn & 0xFFFF_FFFF) / wal_segment_size)
}

/// The 24-hex name of a position on a timeline.
pub fn name_of_position(timeline: u32, position: u64) -> String {
    format!("{timeline:08X}{:08X}{:08X}", position >> 32, position & 0xFFFF_FFFF)
}

/// The position after `position` (the next segment), for a segment size.
pub fn next_position(position: u64, wal_segment_size: u64) -> u64 {
    let per = 0x1_0000_0000 / wal_segment_size;
    if (position & 0xFFFF_FFFF) + 1 >= per {
        ((position >> 32) + 1) << 32
    } else {
        position + 1
    }
}

/// The position before `position` (None at the very first segment).
pub fn prev_position(position: u64, wal_segment_size: u64) -> Option<u64> {
    let per = 0x1_0000_0000 / wal_segment_size;
    match (position >> 32, position & 0xFFFF_FFFF) {
        (0, 0) => None,
        (log, 0) => Some(((log - 1) << 32) | (per - 1)),
        _ => Some(position - 1),
    }
}

/// Segment number of a position for a segment size.
pub fn segno_of_position(position: u64, wal_segment_size: u64) -> u64 {
    let per = 0x1_0000_0000 / wal_segment_size;
    (position >> 32) * per + (position & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_wal_names() {
        assert_eq!(classify("00000002000000010000000A"), (WalKind::Segment, 2, (1 << 32) | 10));
        assert_eq!(classify("00000002.history"), (WalKind::History, 2, 0));
        assert_eq!(classify("000000010000000000000002.00000028.backup"), (WalKind::BackupHistory, 1, 2));
        assert_eq!(classify("000000010000000000000003.partial"), (WalKind::Partial, 1, 3));
        assert_eq!(classify("junk").0, WalKind::Other);
        assert_eq!(classify("0000000100000000000000zz").0, WalKind::Other);
        assert_eq!(strip_extension("000000010000000000000003.lz4"), "000000010000000000000003");
        assert_eq!(strip_extension("00000002.history.zst"), "00000002.history");
        assert_eq!(strip_extension("00000002.history"), "00000002.history");
        assert_eq!(segno_of_position((1 << 32) | 10, 16 << 20), 256 + 10);
        let seg = 16 << 20;
        assert_eq!(position_of_lsn(0x1_0A00_0028, seg), (1 << 32) | 10);
        assert_eq!(next_position(0xFF, seg), 1 << 32);
        assert_eq!(prev_position(1 << 32, seg), Some(0xFF));
        assert_eq!(prev_position(0, seg), None);
        assert_eq!(name_of_position(2, (1 << 32) | 10), "00000002000000010000000A");
    }
}
