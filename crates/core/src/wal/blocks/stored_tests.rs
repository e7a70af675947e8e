use super::*;
use crate::codec::crypto::Key;
use crate::codec::Compression;
use crate::error::ErrorKind;
use crate::storage::FsStorage;

fn rel(spc: u32, db: u32, r: u32) -> RelFileNode {
    RelFileNode { spc, db, rel: r }
}

/// Every kind of file event, with values at the ends of their ranges.
fn all_events() -> Vec<(u64, FileEvent)> {
    let r = rel(1663, 5, 16384);
    vec![
        (0x1_0000_0028, FileEvent::Create { rel: r, fork: 3 }),
        (0x1_0000_0100, FileEvent::Truncate { rel: rel(u32::MAX, 0, 1), blocks: u32::MAX, flags: 7 }),
        (0x1_0000_0200, FileEvent::CreateDatabaseCopy { db: 16400, spc: 1663, src_db: 1, src_spc: 1663 }),
        (0x1_0000_0300, FileEvent::CreateDatabaseWalLog { db: 16401, spc: 16500 }),
        (0x1_0000_0400, FileEvent::DropDatabase { db: 16400, spcs: vec![1663, 16500, u32::MAX] }),
        (0x1_0000_0480, FileEvent::DropDatabase { db: 16402, spcs: vec![] }),
        (0x1_0000_0500, FileEvent::CreateTablespace { spc: 16500 }),
        (0x1_0000_0600, FileEvent::DropTablespace { spc: 16500 }),
        (0x1_0000_0700, FileEvent::RelMapUpdate { db: 0, spc: 1664 }),
        (0x1_0000_0800, FileEvent::Drop { rel: r, commit: true }),
        (0x1_0000_0900, FileEvent::Drop { rel: r, commit: false }),
        (0x1_0000_0A00, FileEvent::WalLevel { level: 0 }),
        (u64::MAX, FileEvent::LogicalRewriteMapping),
    ]
}

/// Sorted, distinct blocks over several relations and forks: runs, gaps, block 0 and u32::MAX.
fn many_blocks() -> Vec<BlockRef> {
    let mut v = Vec::new();
    for (i, r) in [rel(1663, 1, 1259), rel(1663, 5, 16384), rel(16500, 5, 16384), rel(u32::MAX, u32::MAX, u32::MAX)]
        .into_iter()
        .enumerate()
    {
        for fork in 0..4u8 {
            for b in (0..2000u32).filter(|b| !(b * 7 + i as u32 + fork as u32).is_multiple_of(5)) {
                v.push(BlockRef { rel: r, fork, block: b * (1 + fork as u32 * 1000) });
            }
            v.push(BlockRef { rel: r, fork, block: u32::MAX });
        }
    }
    v.sort();
    v.dedup();
    v
}

fn map(start: Start, end: End) -> SegmentMap {
    SegmentMap {
        scan: Scan { segment_lsn: 0x1_0000_0000, system_id: 0xFEDC_BA98_7654_3210, timeline: 7, start, end, records: 12345 },
        blocks: many_blocks(),
        events: all_events(),
    }
}

fn every_variant() -> Vec<SegmentMap> {
    let head = Head { segment_lsn: 0x1_0000_0000, segment_end: 0x1_0100_0000, rem_len: 70000, bytes: vec![9; 300] };
    let tail = Tail { lsn: 0x1_00FF_FF00, segment_end: 0x1_0100_0000, tot_len: 5000, bytes: (0..=255).collect() };
    let starts = [Start::AtRecord, Start::AfterAbortedRecord, Start::MidRecord(None), Start::MidRecord(Some(head))];
    let ends = [
        End::SegmentEnd,
        End::Switch { lsn: 0x1_0000_1000 },
        End::MidRecord { lsn: 0x1_00FF_FF00, tail: None },
        End::MidRecord { lsn: 0x1_00FF_FF00, tail: Some(tail) },
        End::InsideRecord,
        End::Invalid { lsn: 0x1_0000_2000, reason: "record CRC mismatch at é".into() },
    ];
    let mut out = Vec::new();
    for s in &starts {
        for e in &ends {
            out.push(map(s.clone(), e.clone()));
        }
    }
    // And the smallest: nothing at all.
    let mut empty = map(Start::AtRecord, End::SegmentEnd);
    empty.blocks.clear();
    empty.events.clear();
    empty.scan = Scan { segment_lsn: 0, system_id: 0, timeline: 0, start: Start::AtRecord, end: End::SegmentEnd, records: 0 };
    out.push(empty);
    out
}

#[test]
fn every_start_end_event_and_block_roundtrips() {
    for m in every_variant() {
        let bytes = encode(&m);
        assert_eq!(decode(&bytes, "x").unwrap(), m, "{:?} {:?}", m.scan.start, m.scan.end);
    }
    // Compact: the blocks take well under 4 bytes each (a BlockRef is 16 in memory).
    let m = map(Start::AtRecord, End::SegmentEnd);
    assert!(encode(&m).len() < m.blocks.len() * 2 + 1000, "{} bytes for {} blocks", encode(&m).len(), m.blocks.len());
}

#[test]
fn maps_of_parsed_segments_roundtrip() {
    for (_, seg) in crate::wal::blocks::tests::sample_segments() {
        let m = SegmentMap::build(&seg);
        assert_eq!(decode(&encode(&m), "x").unwrap(), m);
    }
}

fn assert_corrupt(bytes: &[u8], what: &str) {
    match decode(bytes, "walg_ext_blockmaps_005/X.lz4") {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{what}: {e}");
            assert!(e.to_string().contains("walg_ext_blockmaps_005/X.lz4"), "{what}: {e}");
        }
        Ok(m) => panic!("{what}: decoded {m:?}"),
    }
}

/// Re-seal a body with a correct CRC, so the checks behind the CRC are reached too.
fn sealed(body: &[u8]) -> Vec<u8> {
    let mut v = body.to_vec();
    v.extend(crc32c(body).to_le_bytes());
    v
}

#[test]
fn truncated_garbled_or_extended_maps_are_corrupt_never_a_panic() {
    let mut small = map(Start::MidRecord(Some(Head { segment_lsn: 1, segment_end: 2, rem_len: 3, bytes: vec![4; 5] })), End::Invalid { lsn: 9, reason: "why".into() });
    small.blocks.truncate(40);
    small.blocks.extend(many_blocks().into_iter().rev().take(3).rev());
    let good = encode(&small);
    let body = &good[..good.len() - 4];
    for len in 0..good.len() {
        assert_corrupt(&good[..len], &format!("cut at {len}"));
        // Cut bodies with a valid CRC: the parser itself must notice.
        if len >= 7 && len < body.len() {
            assert_corrupt(&sealed(&body[..len]), &format!("sealed cut at {len}"));
        }
    }
    let mut longer = good.clone();
    longer.push(0);
    assert_corrupt(&longer, "one byte more");
    let mut extra = body.to_vec();
    extra.push(0);
    assert_corrupt(&sealed(&extra), "sealed trailing byte");
    // Every bit flipped somewhere: the CRC catches it.
    for i in 0..good.len() {
        for bit in [0, 3, 7] {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            assert_corrupt(&bad, &format!("bit {bit} of byte {i}"));
        }
    }
    // Behind a valid CRC: every single byte replaced by every value decodes to something or is
    // Corrupt, never panics, never allocates wildly.
    for i in 7..body.len() {
        for v in [0u8, 1, 2, 5, 0x7F, 0x80, 0xFF] {
            let mut b = body.to_vec();
            b[i] = v;
            let _ = decode(&sealed(&b), "x");
        }
    }
    let mut magic = good.clone();
    magic[0] = b'X';
    assert_corrupt(&magic, "magic");
    let mut version = body.to_vec();
    version[6] = 2;
    let e = decode(&sealed(&version), "k").unwrap_err().to_string();
    assert!(e.contains("version 2"), "{e}");
}

/// Hand-made bodies behind a valid CRC, each wrong in one way the encoder never writes.
#[test]
fn malformed_fields_are_corrupt() {
    let prefix = |start: u8, end: u8| {
        let mut v = b"WXBMAP\x01".to_vec();
        v.push(0); // segment_lsn
        v.extend([0; 8]); // system id
        v.extend([1, 0]); // timeline, records
        v.push(start);
        v.push(end);
        v
    };
    let ok = |mut v: Vec<u8>, tail: &[u8]| {
        v.extend(tail);
        sealed(&v)
    };
    // The minimal valid one, so each case below differs from a map that decodes in one field.
    assert!(decode(&ok(prefix(0, 0), &[0, 0]), "k").is_ok());
    assert_corrupt(&ok(prefix(4, 0), &[0, 0]), "start tag");
    assert_corrupt(&ok(prefix(0, 6), &[0, 0]), "end tag");
    assert_corrupt(&ok(prefix(0, 0), &[1, 0, 11, 0, 0]), "event tag");
    assert_corrupt(&ok(prefix(0, 0), &[1, 0, 8, 1, 1, 1, 2, 0]), "commit flag 2");
    assert_corrupt(&ok(prefix(0, 0), &[1, 0, 9, 0x80, 0x80, 0x80, 0x80, 0x10, 0]), "wal_level over u32");
    assert_corrupt(&ok(prefix(0, 0), &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0]), "event count over the bytes left");
    let big = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
    assert_corrupt(&ok(prefix(0, 0), &big), "varint over u64");
    let end5 = |len: u8, text: &[u8]| {
        let mut t = vec![9, len];
        t.extend(text);
        t.extend([0, 0]);
        ok(prefix(0, 5), &t)
    };
    assert!(decode(&end5(2, b"ok"), "k").is_ok());
    assert_corrupt(&end5(2, &[0xC3, 0x28]), "reason not UTF-8");
    // Blocks: one group rel (1,1,1) fork 0 with blocks 5, 6.
    let group = |rel: u8, fork: u8, blocks: &[u8]| {
        let mut g = vec![1, 1, rel, fork];
        g.extend(blocks);
        g
    };
    let blocks = |groups: &[Vec<u8>]| {
        let mut t = vec![0, groups.len() as u8];
        for g in groups {
            t.extend(g);
        }
        ok(prefix(0, 0), &t)
    };
    let m = decode(&blocks(&[group(1, 0, &[2, 5, 1]), group(1, 1, &[1, 0])]), "k").unwrap();
    assert_eq!(m.blocks.iter().map(|b| (b.fork, b.block)).collect::<Vec<_>>(), vec![(0, 5), (0, 6), (1, 0)]);
    assert_corrupt(&blocks(&[group(1, 0, &[2, 5, 0])]), "duplicate block (gap 0)");
    assert_corrupt(&blocks(&[group(1, 0, &[0])]), "empty group");
    assert_corrupt(&blocks(&[group(1, 1, &[1, 5]), group(1, 0, &[1, 5])]), "groups out of order");
    assert_corrupt(&blocks(&[group(1, 0, &[1, 5]), group(1, 0, &[1, 9])]), "same group twice");
    assert_corrupt(&blocks(&[group(1, 0, &[2, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 1])]), "block past u32::MAX");
}

fn setup() -> (tempfile::TempDir, FsStorage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::new(dir.path().join("bucket"));
    storage.prepare_write().unwrap();
    (dir, storage)
}

const SEGMENT: &str = "0000000700000001000000A3";

#[test]
fn put_and_get_through_plain_and_encrypted_pipelines() {
    let (_dir, s) = setup();
    let key = Key::from_text("a key for the changed-block map tests", "none").unwrap();
    let m = map(Start::AtRecord, End::Switch { lsn: 0x1_0000_1000 });
    for (i, p) in [
        Pipeline::new(Compression::Lz4, None),
        Pipeline::new(Compression::None, None),
        Pipeline::new(Compression::Brotli { quality: 3 }, Some(key.clone())),
    ]
    .into_iter()
    .enumerate()
    {
        let seg = format!("00000007000000010000000{i}");
        assert_eq!(get_map(&p, &s, &seg).unwrap(), None, "none stored yet");
        let k = put_map(&p, &s, &seg, &m).unwrap();
        assert_eq!(k, p.object_name(&format!("{MAP_PREFIX}{seg}")));
        assert_eq!(get_map(&p, &s, &seg).unwrap().as_ref(), Some(&m));
        if p.is_encrypted() {
            // Not readable without the key, and what is stored is not the plain encoding.
            let raw = crate::storage::get_bytes(&s, &k).unwrap().unwrap();
            assert_ne!(raw, crate::codec::compress_bytes(p.compression, &encode(&m)).unwrap());
            let e = get_map(&Pipeline::new(p.compression, None), &s, &seg).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
            let e = get_map(&Pipeline::new(p.compression, Some(Key::from_bytes([1; 32]))), &s, &seg).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        }
    }
    // Found under another compression's extension, as WAL is.
    let lz4 = Pipeline::new(Compression::Lz4, None);
    let zstd = Pipeline::new(Compression::Zstd { level: 1 }, None);
    put_map(&lz4, &s, SEGMENT, &m).unwrap();
    assert_eq!(get_map(&zstd, &s, SEGMENT).unwrap().as_ref(), Some(&m));
    // Not under wal_005/: WAL listings never see maps.
    assert!(s.list("wal_005/").unwrap().is_empty());
    // Names that are not segments are refused, never stored.
    for bad in ["00000007.history", "0000000700000001000000a3", "../x", ""] {
        assert_eq!(put_map(&lz4, &s, bad, &m).unwrap_err().kind(), ErrorKind::BadInput, "{bad}");
        assert!(get_map(&lz4, &s, bad).is_err());
    }
}

#[test]
fn damaged_map_is_corrupt_and_missing_storage_is_unreachable() {
    let (dir, s) = setup();
    let p = Pipeline::new(Compression::Lz4, None);
    let m = map(Start::AtRecord, End::SegmentEnd);
    let key = put_map(&p, &s, SEGMENT, &m).unwrap();
    // A stored object whose decoded bytes are not a map.
    s.put(&key, &p.encode_bytes(b"WXBMAP\x01 not really").unwrap()).unwrap();
    let e = get_map(&p, &s, SEGMENT).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains(&key), "{e}");
    // A damaged compressed stream.
    s.put(&key, b"garbage").unwrap();
    assert_eq!(get_map(&p, &s, SEGMENT).unwrap_err().kind(), ErrorKind::Corrupt);
    // Storage that is not there: an error, never "no map".
    let gone = FsStorage::new(dir.path().join("no-such-prefix"));
    let e = get_map(&p, &gone, SEGMENT).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    assert_eq!(get_map(&p, &FsStorage::new(&file), SEGMENT).unwrap_err().kind(), ErrorKind::Unreachable);
    assert!(put_map(&p, &FsStorage::new(file.join("sub")), SEGMENT, &m).is_err());
}
