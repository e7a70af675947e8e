//! PostgreSQL's data page checksum (`pg_checksum_page`, storage/checksum_impl.h), written from
//! its description, and which files hold checksummed pages.
//!
//! The algorithm: the 8 KiB page, with its 16-bit `pd_checksum` (bytes 8..10) taken as zero, is
//! read as 2048 native-endian u32 words in 64 rows of 32 lanes. Each lane starts from a fixed
//! offset and mixes in its word of every row with an FNV-1a-like step
//! (`t = sum ^ word; sum = t * 16777619 ^ (t >> 17)`), then two rounds of zero words; the lanes
//! are XORed together, the block number is XORed in, and the result is reduced to 1..=65535
//! (`% 65535 + 1`, so a valid checksum is never 0). The block number is the block's number in the
//! relation fork: segment number * RELSEG_SIZE + block within the segment file.
//!
//! Invariants: pages whose `pd_upper` is 0 are "new" (never initialised; PostgreSQL computes no
//! checksum for them) and are never reported; only relation files (`is_relation_file`) are
//! checked, as pgBackRest does. This assumes a little-endian server built with BLCKSZ 8192 and
//! RELSEG_SIZE 131072 (PostgreSQL's defaults, the only layout WAL-G handles).

use super::increment::{PageHeader, PAGE_SIZE};

/// Blocks per relation segment file (RELSEG_SIZE: 1 GiB of 8 KiB pages).
pub const RELSEG_SIZE: u32 = 131072;

const LANES: usize = 32;
const FNV_PRIME: u32 = 16777619;
/// The lanes' starting values (checksumBaseOffsets).
const BASE_OFFSETS: [u32; LANES] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

#[inline(always)]
fn mix(sum: u32, word: u32) -> u32 {
    let t = sum ^ word;
    t.wrapping_mul(FNV_PRIME) ^ (t >> 17)
}

/// The checksum PostgreSQL stores in `pd_checksum` for `page` (8192 bytes) at block `blkno`.
pub fn page_checksum(page: &[u8], blkno: u32) -> u16 {
    assert_eq!(page.len(), PAGE_SIZE, "a page is {PAGE_SIZE} bytes");
    let mut sums = BASE_OFFSETS;
    // One row of 32 lanes is 128 bytes; the lanes are independent, so this vectorises.
    for (r, row) in page.chunks_exact(4 * LANES).enumerate() {
        let mut words = [0u32; LANES];
        for (w, c) in words.iter_mut().zip(row.chunks_exact(4)) {
            *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        if r == 0 {
            // pd_checksum (bytes 8..10) counts as zero: the low half of word 2 on little-endian.
            words[2] &= 0xFFFF_0000;
        }
        for (s, w) in sums.iter_mut().zip(words) {
            *s = mix(*s, w);
        }
    }
    for _ in 0..2 {
        for s in sums.iter_mut() {
            *s = mix(*s, 0);
        }
    }
    let folded = sums.iter().fold(0u32, |a, s| a ^ s) ^ blkno;
    (folded % 65535 + 1) as u16
}

/// The checksum stored in the page header.
pub fn stored_checksum(page: &[u8]) -> u16 {
    u16::from_le_bytes([page[8], page[9]])
}

/// What checking one page found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageCheck {
    /// The stored checksum is right.
    Valid,
    /// `pd_upper` is 0: never initialised, no checksum to check (PostgreSQL's PageIsNew).
    New,
    /// Written at or after `start_lsn`: it may be read half-written, and WAL replay from the
    /// backup's start rewrites it whole (full-page writes are forced during a backup), so it is
    /// not checked (PostgreSQL's basebackup and pgBackRest do the same).
    AfterStart,
    /// The checksum does not match.
    Mismatch { stored: u16, computed: u16 },
}

/// Check `page`, block `blkno` of its relation fork, for a backup that started at `start_lsn`.
pub fn check_page(page: &[u8], blkno: u32, start_lsn: u64) -> PageCheck {
    let h = PageHeader::parse(page);
    if h.is_new() {
        return PageCheck::New;
    }
    if h.lsn >= start_lsn {
        return PageCheck::AfterStart;
    }
    let computed = page_checksum(page, blkno);
    let stored = stored_checksum(page);
    if computed == stored {
        PageCheck::Valid
    } else {
        PageCheck::Mismatch { stored, computed }
    }
}

/// If tar entry `entry` ("/base/5/16384_fsm.2") is a relation file whose pages carry checksums:
/// under base/, global/ or pg_tblspc/, named digits, an optional `_fsm`, `_vm` or `_init` fork
/// suffix and an optional `.N` segment number. Returns the segment number.
pub fn relation_segment(entry: &str) -> Option<u32> {
    let rel = entry.trim_start_matches('/');
    if !(rel.starts_with("base/") || rel.starts_with("global/") || rel.starts_with("pg_tblspc/")) {
        return None;
    }
    let base = rel.rsplit('/').next().unwrap_or("");
    let (stem, seg) = match base.split_once('.') {
        Some((s, n)) => (s, Some(n)),
        None => (base, None),
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit());
    let node = ["_fsm", "_vm", "_init"].iter().find_map(|f| stem.strip_suffix(f)).unwrap_or(stem);
    if !digits(node) {
        return None;
    }
    match seg {
        None => Some(0),
        Some(n) if digits(n) => n.parse().ok(),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages written by a real PostgreSQL 15 (`initdb -k`, the template1 database): blocks 0..2 of
    /// pg_class (1259), 0..1 of its OID index (2662) and 0..2 of its free space map (1259_fsm).
    /// Block numbers are the page's position in the file (all in segment 0).
    const FIXTURES: &[(&str, &[u8])] = &[
        ("pg_class heap", include_bytes!("../../testdata/page_checksums/pg_class_heap_blocks_0-2")),
        ("pg_class_oid_index", include_bytes!("../../testdata/page_checksums/pg_class_oid_index_blocks_0-1")),
        ("pg_class fsm", include_bytes!("../../testdata/page_checksums/pg_class_fsm_blocks_0-2")),
    ];

    #[test]
    fn real_postgresql_pages_verify() {
        let mut n = 0;
        for (what, data) in FIXTURES {
            assert_eq!(data.len() % PAGE_SIZE, 0);
            for (b, page) in data.chunks_exact(PAGE_SIZE).enumerate() {
                assert!(!PageHeader::parse(page).is_new(), "{what} block {b}");
                assert_eq!(page_checksum(page, b as u32), stored_checksum(page), "{what} block {b}");
                assert_eq!(check_page(page, b as u32, u64::MAX), PageCheck::Valid, "{what} block {b}");
                // The block number is part of the checksum: the same page elsewhere fails.
                assert_ne!(page_checksum(page, b as u32 + 1), stored_checksum(page), "{what} block {b}");
                assert_ne!(page_checksum(page, b as u32 + RELSEG_SIZE), stored_checksum(page), "{what} block {b}");
                n += 1;
            }
        }
        assert_eq!(n, 8);
        // Known values (from the fixtures' headers) pin the algorithm, not just self-consistency.
        let heap = FIXTURES[0].1;
        assert_eq!(page_checksum(&heap[..PAGE_SIZE], 0), 33306);
        assert_eq!(page_checksum(&heap[2 * PAGE_SIZE..3 * PAGE_SIZE], 2), 64263);
    }

    #[test]
    fn damage_is_detected_and_new_or_recent_pages_are_skipped() {
        let heap = FIXTURES[0].1;
        let page = &heap[PAGE_SIZE..2 * PAGE_SIZE];
        // Any single flipped bit outside pd_checksum changes the checksum (tuple data, header).
        for off in [0usize, 10, 12, 100, 4000, 8191] {
            let mut bad = page.to_vec();
            bad[off] ^= 0x01;
            match check_page(&bad, 1, u64::MAX) {
                PageCheck::Mismatch { stored, computed } => {
                    assert_eq!(stored, stored_checksum(page));
                    assert_ne!(computed, stored);
                }
                other => panic!("byte {off}: {other:?}"),
            }
        }
        // The stored checksum itself damaged.
        let mut bad = page.to_vec();
        bad[8] ^= 0x40;
        assert!(matches!(check_page(&bad, 1, u64::MAX), PageCheck::Mismatch { .. }));
        // All zeros, or pd_upper 0 with garbage elsewhere: new, not checked (as PostgreSQL).
        assert_eq!(check_page(&[0u8; PAGE_SIZE], 7, u64::MAX), PageCheck::New);
        let mut new = vec![0xAAu8; PAGE_SIZE];
        new[14] = 0;
        new[15] = 0;
        assert_eq!(check_page(&new, 7, u64::MAX), PageCheck::New);
        // A damaged page written at or after the backup's start is left to WAL replay.
        let mut bad = page.to_vec();
        bad[5000] ^= 0xFF;
        let lsn = PageHeader::parse(page).lsn;
        assert_eq!(check_page(&bad, 1, lsn), PageCheck::AfterStart);
        assert!(matches!(check_page(&bad, 1, lsn + 1), PageCheck::Mismatch { .. }));
    }

    #[test]
    fn relation_files() {
        for (name, want) in [
            ("/base/5/16384", Some(0)),
            ("/base/5/16384.12", Some(12)),
            ("/base/5/16384_fsm", Some(0)),
            ("/base/5/16384_vm.1", Some(1)),
            ("/base/5/16384_init", Some(0)),
            ("/global/1262", Some(0)),
            ("/pg_tblspc/16400/PG_15_202209061/5/16385.3", Some(3)),
            ("/global/pg_control", None),
            ("/global/pg_filenode.map", None),
            ("/base/5/PG_VERSION", None),
            ("/base/5/pg_internal.init", None),
            ("/base/5/t3_16384", None),
            ("/base/5/16384.", None),
            ("/base/5/16384_xx", None),
            ("/base/5/_fsm", None),
            ("/pg_xact/0000", None),
            ("/pg_multixact/offsets/0000", None),
            ("/base/5/16384.99999999999", None),
        ] {
            assert_eq!(relation_segment(name), want, "{name}");
        }
    }
}
