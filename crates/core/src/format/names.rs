//! Object keys, backup names, WAL file names and LSN text, exactly as WAL-G spells them.

use crate::error::{Error, Result};

pub const BACKUP_PREFIX: &str = "basebackups_005/";
pub const WAL_PREFIX: &str = "wal_005/";
pub const SENTINEL_SUFFIX: &str = "_backup_stop_sentinel.json";
/// walg_ext's markers of backups in progress (backup/in_progress.rs); not a backup.
pub const IN_PROGRESS_PREFIX: &str = "basebackups_005/walg_ext_in_progress/";
/// PostgreSQL's default WAL segment size.
pub const DEFAULT_WAL_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// PostgreSQL's `X/Y` LSN text, uppercase hex ("0/16B3740").
pub fn lsn_to_string(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

pub fn parse_lsn(s: &str) -> Result<u64> {
    let bad = || Error::Format(format!("invalid LSN {s:?} (expected X/Y in hex)"));
    let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
    let ok = |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok(hi) || !ok(lo) {
        return Err(bad());
    }
    let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
    let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
    Ok((hi << 32) | lo)
}

fn segs_per_xlogid(wal_segment_size: u64) -> u64 {
    0x1_0000_0000 / wal_segment_size
}

/// `%08X%08X%08X` of (timeline, segno / segs_per_xlogid, segno % segs_per_xlogid) for the
/// segment that contains `lsn` (PostgreSQL's `pg_walfile_name`).
pub fn wal_file_name(timeline: u32, lsn: u64, wal_segment_size: u64) -> String {
    wal_file_name_for_segno(timeline, lsn / wal_segment_size, wal_segment_size)
}

pub fn wal_file_name_for_segno(timeline: u32, segno: u64, wal_segment_size: u64) -> String {
    let per = segs_per_xlogid(wal_segment_size);
    format!("{:08X}{:08X}{:08X}", timeline, segno / per, segno % per)
}

fn is_upper_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// (timeline, segno) of a 24-hex WAL segment name, assuming 16 MiB segments.
/// Use `parse_wal_file_name_with` for other segment sizes.
pub fn parse_wal_file_name(name: &str) -> Option<(u32, u64)> {
    parse_wal_file_name_with(name, DEFAULT_WAL_SEGMENT_SIZE)
}

/// (timeline, segno) of a 24-hex WAL segment name for the given segment size.
pub fn parse_wal_file_name_with(name: &str, wal_segment_size: u64) -> Option<(u32, u64)> {
    if name.len() != 24 || !is_upper_hex(name) {
        return None;
    }
    let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    let per = segs_per_xlogid(wal_segment_size);
    if seg >= per {
        return None;
    }
    Some((tli, log * per + seg))
}

/// Full backup name: "base_" + the WAL file name containing the start LSN.
pub fn backup_name(timeline: u32, start_lsn: u64, wal_segment_size: u64) -> String {
    format!("base_{}", wal_file_name(timeline, start_lsn, wal_segment_size))
}

/// `base_[0-9A-F]{24}(_D_[0-9A-F]{24})?(_[0-9A-F]{8})?`
pub fn is_backup_name(s: &str) -> bool {
    let Some(mut rest) = s.strip_prefix("base_") else { return false };
    let hex = |r: &str, n: usize| r.len() >= n && r.is_char_boundary(n) && is_upper_hex(&r[..n]);
    if !hex(rest, 24) {
        return false;
    }
    rest = &rest[24..];
    if let Some(r) = rest.strip_prefix("_D_") {
        if !hex(r, 24) {
            return false;
        }
        rest = &r[24..];
    }
    if let Some(r) = rest.strip_prefix('_') {
        if r.len() != 8 || !hex(r, 8) {
            return false;
        }
        rest = "";
    }
    rest.is_empty()
}

/// The 24-hex start segment in a backup's own name ("" when the name has none).
pub fn backup_wal_file_name(backup: &str) -> &str {
    match backup.strip_prefix("base_") {
        Some(r) if r.len() >= 24 && r.is_char_boundary(24) && is_upper_hex(&r[..24]) => &r[..24],
        _ => "",
    }
}

pub fn sentinel_key(backup: &str) -> String {
    format!("{BACKUP_PREFIX}{backup}{SENTINEL_SUFFIX}")
}

pub fn metadata_key(backup: &str) -> String {
    format!("{BACKUP_PREFIX}{backup}/metadata.json")
}

pub fn files_metadata_key(backup: &str) -> String {
    format!("{BACKUP_PREFIX}{backup}/files_metadata.json")
}

pub fn tar_partitions_prefix(backup: &str) -> String {
    format!("{BACKUP_PREFIX}{backup}/tar_partitions/")
}

/// The backup name of a sentinel key directly under basebackups_005/, if it is one.
pub fn backup_of_sentinel_key(key: &str) -> Option<&str> {
    let name = key.strip_prefix(BACKUP_PREFIX)?.strip_suffix(SENTINEL_SUFFIX)?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// Tar part base name: part_%03d.tar (extension added by the compression).
pub fn part_base_name(n: u32) -> String {
    format!("part_{n:03}.tar")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names_and_lsns() {
        let seg = DEFAULT_WAL_SEGMENT_SIZE;
        assert_eq!(wal_file_name(1, 0x16B3740, seg), "000000010000000000000001");
        assert_eq!(wal_file_name(1, 0, seg), "000000010000000000000000");
        assert_eq!(wal_file_name(2, 0x1_0A00_0028, seg), "00000002000000010000000A");
        // 1 GiB segments: 4 segments per xlogid.
        assert_eq!(wal_file_name(1, 0x1_4000_0000, 1 << 30), "000000010000000100000001");
        assert_eq!(backup_name(1, 0x16B3740, seg), "base_000000010000000000000001");

        assert_eq!(parse_lsn("1/A000028").unwrap(), 0x1_0A00_0028);
        assert_eq!(lsn_to_string(0x1_0A00_0028), "1/A000028");
        assert_eq!(lsn_to_string(0x16B3740), "0/16B3740");
        for s in ["0/0", "1/A000028", "FFFFFFFF/FFFFFFFF", "0/16B3740"] {
            assert_eq!(lsn_to_string(parse_lsn(s).unwrap()), s);
        }
        assert_eq!(parse_lsn("0/16b3740").unwrap(), 0x16B3740);
        for bad in ["", "16B3740", "1/", "/1", "1/2/3", "G/1", "123456789/0"] {
            assert!(parse_lsn(bad).is_err(), "{bad:?} accepted");
        }

        assert_eq!(parse_wal_file_name("0000000200000001000000A0"), Some((2, 0x1A0)));
        assert_eq!(parse_wal_file_name("000000010000000000000100"), None); // seg >= 256
        assert_eq!(parse_wal_file_name("00000001000000000000000"), None);
        assert_eq!(parse_wal_file_name("00000001000000000000000a"), None);
        assert_eq!(parse_wal_file_name_with("000000010000000100000001", 1 << 30), Some((1, 5)));
        let (tli, segno) = parse_wal_file_name("0000000200000001000000A0").unwrap();
        assert_eq!(wal_file_name_for_segno(tli, segno, seg), "0000000200000001000000A0");
    }

    #[test]
    fn backup_names() {
        for ok in [
            "base_000000010000000000000002",
            "base_000000010000000000000004_D_000000010000000000000002",
            "base_000000010000000000000002_00000028",
            "base_000000010000000000000004_D_000000010000000000000002_00000028",
        ] {
            assert!(is_backup_name(ok), "{ok} rejected");
        }
        for bad in [
            "",
            "base_",
            "base_00000001000000000000000",
            "base_00000001000000000000000g",
            "base_000000010000000000000002_",
            "base_000000010000000000000002_D_",
            "base_000000010000000000000002_0000002",
            "base_000000010000000000000002_000000280",
            "xbase_000000010000000000000002",
            "base_000000010000000000000002/x",
            "LATEST",
        ] {
            assert!(!is_backup_name(bad), "{bad} accepted");
        }
        let b = "base_000000010000000000000004_D_000000010000000000000002";
        assert_eq!(backup_wal_file_name(b), "000000010000000000000004");
        assert_eq!(sentinel_key(b), format!("basebackups_005/{b}_backup_stop_sentinel.json"));
        assert_eq!(backup_of_sentinel_key(&sentinel_key(b)), Some(b));
        assert_eq!(backup_of_sentinel_key("basebackups_005/x/y_backup_stop_sentinel.json"), None);
        assert_eq!(metadata_key("b"), "basebackups_005/b/metadata.json");
        assert_eq!(files_metadata_key("b"), "basebackups_005/b/files_metadata.json");
        assert_eq!(tar_partitions_prefix("b"), "basebackups_005/b/tar_partitions/");
        assert_eq!(part_base_name(1), "part_001.tar");
        assert_eq!(part_base_name(1234), "part_1234.tar");
    }
}
