//! Synthetic segments written here by the layout of xlogrecord.h / xlog_internal.h: records across
//! pages and segments, a cut file, a flipped byte, a zeroed tail, a recycled page. (The real
//! server's WAL is checked against pg_waldump in tests/walparse.rs.)

use super::*;

pub(crate) const SEG: usize = 16 << 20;
const PAGE: usize = 8192;
pub(crate) const SEG_LSN: u64 = 3 * SEG as u64;

pub(crate) fn rel(r: u32) -> RelFileNode {
    RelFileNode {
        spc: 1663,
        db: 5,
        rel: r,
    }
}

/// A block for [`record`]: id, relation, fork, block, image (with a hole, compressed or not).
pub(crate) struct B {
    pub(crate) id: u8,
    pub(crate) rel: RelFileNode,
    pub(crate) fork: u8,
    pub(crate) block: u32,
    pub(crate) image: Option<(bool, usize)>, // (compressed, image bytes)
    pub(crate) data: usize,
}

/// A whole record with a correct CRC.
pub(crate) fn record(prev: u64, rmid: u8, info: u8, blocks: &[B], main: &[u8]) -> Vec<u8> {
    let mut hdrs = Vec::new();
    let mut data = Vec::new();
    let mut last = None;
    for b in blocks {
        let mut ff = b.fork;
        if b.image.is_some() {
            ff |= 0x10;
        }
        if b.data > 0 {
            ff |= 0x20;
        }
        if last == Some(b.rel) {
            ff |= 0x80;
        }
        hdrs.push(b.id);
        hdrs.push(ff);
        hdrs.extend((b.data as u16).to_le_bytes());
        if let Some((compressed, len)) = b.image {
            hdrs.extend((len as u16).to_le_bytes());
            hdrs.extend(100u16.to_le_bytes()); // hole offset
            hdrs.push(if compressed { 0x01 | 0x08 } else { 0x01 });
            if compressed {
                hdrs.extend(2000u16.to_le_bytes()); // hole length
            }
            data.extend(std::iter::repeat_n(0xAB, len));
        }
        if last != Some(b.rel) {
            for x in [b.rel.spc, b.rel.db, b.rel.rel] {
                hdrs.extend(x.to_le_bytes());
            }
        }
        last = Some(b.rel);
        hdrs.extend(b.block.to_le_bytes());
        data.extend(std::iter::repeat_n(0xCD, b.data));
    }
    if !main.is_empty() {
        if main.len() < 256 {
            hdrs.push(255);
            hdrs.push(main.len() as u8);
        } else {
            hdrs.push(254);
            hdrs.extend((main.len() as u32).to_le_bytes());
        }
        data.extend_from_slice(main);
    }
    let tot = 24 + hdrs.len() + data.len();
    let mut rec = Vec::with_capacity(tot);
    rec.extend((tot as u32).to_le_bytes());
    rec.extend(7u32.to_le_bytes()); // xid
    rec.extend(prev.to_le_bytes());
    rec.push(info);
    rec.push(rmid);
    rec.extend([0, 0]);
    rec.extend([0; 4]); // crc, below
    rec.extend(hdrs);
    rec.extend(data);
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    d.update(&rec[24..]);
    d.update(&rec[..20]);
    let crc = d.finalize() as u32;
    rec[20..24].copy_from_slice(&crc.to_le_bytes());
    rec
}

/// Writes records into segments the way the server lays them out on pages.
pub(crate) struct Writer {
    pub(crate) segs: Vec<Vec<u8>>,
    pos: usize, // offset in the last segment
    prev: u64,
    pub(crate) lsns: Vec<u64>,
}

impl Writer {
    pub(crate) fn new() -> Writer {
        let mut w = Writer {
            segs: vec![],
            pos: 0,
            prev: 0,
            lsns: vec![],
        };
        w.new_segment(0);
        w
    }
    fn seg_lsn(&self) -> u64 {
        SEG_LSN + ((self.segs.len() - 1) * SEG) as u64
    }
    fn new_segment(&mut self, rem: usize) {
        let mut s = vec![0u8; SEG];
        self.segs.push(Vec::new());
        let lsn = self.seg_lsn();
        Self::page_header(&mut s, 0, lsn, rem, true);
        *self.segs.last_mut().unwrap() = s;
        self.pos = 40;
    }
    fn page_header(s: &mut [u8], off: usize, seg_lsn: u64, rem: usize, long: bool) {
        let mut info = if long { 0x0002u16 } else { 0 };
        if rem > 0 {
            info |= 0x0001;
        }
        s[off..off + 2].copy_from_slice(&0xD110u16.to_le_bytes());
        s[off + 2..off + 4].copy_from_slice(&info.to_le_bytes());
        s[off + 4..off + 8].copy_from_slice(&1u32.to_le_bytes());
        s[off + 8..off + 16].copy_from_slice(&(seg_lsn + off as u64).to_le_bytes());
        s[off + 16..off + 20].copy_from_slice(&(rem as u32).to_le_bytes());
        if long {
            s[24..32].copy_from_slice(&0x1234_5678_9abc_def0u64.to_le_bytes());
            s[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
            s[36..40].copy_from_slice(&(PAGE as u32).to_le_bytes());
        }
    }
    /// Appends the record made by `make(prev)`, crossing pages and segments as needed.
    pub(crate) fn push(&mut self, make: impl FnOnce(u64) -> Vec<u8>) -> u64 {
        let rec = make(self.prev);
        self.enter_page(0);
        let lsn = self.seg_lsn() + self.pos as u64;
        let mut done = 0;
        while done < rec.len() {
            if done > 0 {
                self.enter_page(rec.len() - done);
            }
            let page_end = (self.pos / PAGE + 1) * PAGE;
            let k = (rec.len() - done).min(page_end - self.pos);
            let pos = self.pos;
            self.segs.last_mut().unwrap()[pos..pos + k].copy_from_slice(&rec[done..done + k]);
            self.pos += k;
            done += k;
        }
        self.pos = (self.pos + 7) & !7;
        self.prev = lsn;
        self.lsns.push(lsn);
        lsn
    }
    /// At a page (or segment) boundary, writes the next page's header.
    fn enter_page(&mut self, rem: usize) {
        if self.pos == SEG {
            self.new_segment(rem);
        } else if self.pos.is_multiple_of(PAGE) {
            let (pos, lsn) = (self.pos, self.seg_lsn());
            Self::page_header(self.segs.last_mut().unwrap(), pos, lsn, rem, false);
            self.pos += 24;
        }
    }
}

pub(crate) fn heap(prev: u64, r: u32, block: u32, main_len: usize) -> Vec<u8> {
    let b = B {
        id: 0,
        rel: rel(r),
        fork: 0,
        block,
        image: None,
        data: 30,
    };
    record(prev, 10, 0x00, &[b], &vec![1u8; main_len])
}

fn fpi(prev: u64) -> Vec<u8> {
    let blocks = [
        B {
            id: 0,
            rel: rel(900),
            fork: 0,
            block: 1,
            image: Some((false, 8192 - 2000)),
            data: 0,
        },
        B {
            id: 1,
            rel: rel(900),
            fork: 0,
            block: 2,
            image: Some((true, 700)),
            data: 0,
        },
        B {
            id: 3,
            rel: rel(901),
            fork: 1,
            block: 9,
            image: None,
            data: 12,
        },
    ];
    record(prev, 0, 0xB0, &blocks, &[])
}

pub(crate) fn smgr_create(prev: u64, r: u32) -> Vec<u8> {
    let mut main = Vec::new();
    for x in [1663u32, 5, r, 0] {
        main.extend(x.to_le_bytes());
    }
    record(prev, 2, 0x10, &[], &main)
}

fn collect(seg: &[u8]) -> (Scan, Vec<(u64, Change)>) {
    let mut v = Vec::new();
    let scan = scan_segment(seg, &mut |lsn, c| v.push((lsn, c)));
    (scan, v)
}

fn blocks(v: &[(u64, Change)]) -> Vec<(u64, u8, u32, u8, u32)> {
    v.iter()
        .filter_map(|(lsn, c)| match c {
            Change::Block {
                block_id, block, ..
            } => Some((*lsn, *block_id, block.rel.rel, block.fork, block.block)),
            _ => None,
        })
        .collect()
}

/// A segment of many records, some across pages, then an XLOG_SWITCH.
fn full_segment() -> Writer {
    let mut w = Writer::new();
    w.push(|p| smgr_create(p, 500));
    for i in 0..200 {
        w.push(|p| heap(p, 500, i, if i % 10 == 3 { 9000 } else { 40 }));
        if i % 50 == 0 {
            w.push(fpi);
        }
    }
    w.push(|p| record(p, 0, 0x40, &[], &[]));
    w
}

#[test]
fn reads_records_across_pages_up_to_the_switch() {
    let w = full_segment();
    let (scan, v) = collect(&w.segs[0]);
    assert_eq!(scan.start, Start::AtRecord);
    assert_eq!(
        scan.end,
        End::Switch {
            lsn: *w.lsns.last().unwrap()
        }
    );
    assert_eq!(scan.records as usize, w.lsns.len());
    assert!(scan.is_complete());
    assert_eq!(scan.segment_lsn, SEG_LSN);
    assert_eq!(scan.system_id, 0x1234_5678_9abc_def0);
    let b = blocks(&v);
    assert_eq!(b.len(), 200 + 4 * 3);
    assert_eq!(b[0], (w.lsns[1], 0, 500, 0, 0));
    // The FPI record: SAME_REL for its second block, a compressed image with a hole, a gap in ids.
    assert_eq!(
        &b[1..4],
        &[
            (w.lsns[2], 0, 900, 0, 1),
            (w.lsns[2], 1, 900, 0, 2),
            (w.lsns[2], 3, 901, 1, 9)
        ]
    );
    assert_eq!(
        v[0],
        (
            w.lsns[0],
            Change::File(FileEvent::Create {
                rel: rel(500),
                fork: 0
            })
        )
    );
    let map = SegmentMap::build(&w.segs[0]);
    assert_eq!(map.blocks.len(), 200 + 3);
    assert_eq!(map.events.len(), 1);
}

#[test]
fn zeroed_tail_ends_valid_wal_where_the_records_stop() {
    let mut w = Writer::new();
    for i in 0..50 {
        w.push(|p| heap(p, 600, i, 3000));
    }
    let next = w.seg_lsn() + ((w.pos + 7) & !7) as u64;
    let (scan, v) = collect(&w.segs[0]);
    assert!(
        matches!(&scan.end, End::Invalid { lsn, .. } if *lsn == next),
        "{:?}",
        scan.end
    );
    assert!(!scan.is_complete());
    assert_eq!(
        blocks(&v).len(),
        50,
        "records before the end are still reported"
    );
    // Zeroing from a page boundary inside the records: valid WAL ends at the record cut there.
    let mut seg = w.segs[0].clone();
    seg[5 * PAGE..].fill(0);
    let (scan, v) = collect(&seg);
    let End::Invalid { lsn, .. } = scan.end else {
        panic!("{:?}", scan.end)
    };
    let cut = w
        .lsns
        .iter()
        .position(|&l| l == lsn)
        .expect("ends at a record start");
    assert!(lsn < SEG_LSN + 5 * PAGE as u64);
    assert_eq!(blocks(&v).len(), cut);
}

#[test]
fn flipped_byte_fails_the_crc_and_ends_valid_wal_there() {
    let w = full_segment();
    let k = 40;
    let off = (w.lsns[k] - SEG_LSN) as usize + 30;
    let mut seg = w.segs[0].clone();
    seg[off] ^= 0x01;
    let (scan, v) = collect(&seg);
    assert_eq!(
        scan.end,
        End::Invalid {
            lsn: w.lsns[k],
            reason: "record CRC mismatch".into()
        }
    );
    assert!(!scan.is_complete());
    assert!(v.iter().all(|(lsn, _)| *lsn < w.lsns[k]));
    // A flipped byte in a page header (its address) ends valid WAL at that page's record.
    let mut seg = w.segs[0].clone();
    seg[7 * PAGE + 9] ^= 0x10;
    let (scan, _) = collect(&seg);
    let End::Invalid { lsn, reason } = scan.end else {
        panic!()
    };
    assert!(
        lsn <= SEG_LSN + 7 * PAGE as u64 && reason.contains("address"),
        "{lsn:X} {reason}"
    );
}

#[test]
fn cut_segment_is_not_read_as_empty() {
    let w = full_segment();
    for len in [0, 39, 8192, SEG - 8192] {
        let (scan, v) = collect(&w.segs[0][..len]);
        assert!(
            matches!(scan.end, End::Invalid { .. }),
            "{len}: {:?}",
            scan.end
        );
        assert!(!scan.is_complete());
        assert!(v.is_empty());
    }
}

#[test]
fn records_across_segments_are_joined_from_their_pieces() {
    let mut w = Writer::new();
    let mut i = 0;
    // Fill up to near the end so one large record crosses into the next segment, and one record
    // larger than a whole segment spans a third.
    while w.segs.len() == 1 {
        w.push(|p| heap(p, 700, i, 4000));
        i += 1;
    }
    let crossing = *w.lsns.last().unwrap();
    w.push(|p| {
        record(
            p,
            21,
            0x00,
            &[B {
                id: 0,
                rel: rel(701),
                fork: 0,
                block: 1,
                image: None,
                data: 8,
            }],
            &vec![3u8; SEG + 5000],
        )
    });
    let huge = *w.lsns.last().unwrap();
    w.push(|p| heap(p, 702, 1, 10));
    w.push(|p| record(p, 0, 0x40, &[], &[]));
    assert_eq!(w.segs.len(), 3);
    let scans: Vec<_> = w.segs.iter().map(|s| collect(s)).collect();
    let End::MidRecord {
        lsn,
        tail: Some(t0),
    } = &scans[0].0.end
    else {
        panic!("{:?}", scans[0].0.end)
    };
    assert_eq!(*lsn, crossing);
    let Start::MidRecord(Some(h1)) = &scans[1].0.start else {
        panic!()
    };
    // The record larger than a segment: its piece in segment 1 is over MAX_PIECE, not kept, so
    // that segment's map is incomplete (the next segment, holding only its end, is not).
    assert_eq!(
        scans[1].0.end,
        End::MidRecord {
            lsn: huge,
            tail: None
        }
    );
    assert!(!scans[1].0.is_complete());
    let Start::MidRecord(Some(h2)) = &scans[2].0.start else {
        panic!()
    };
    assert!(scans[0].0.is_complete() && scans[2].0.is_complete());
    let mut got = Vec::new();
    join(t0, &[h1], &mut |lsn, c| got.push((lsn, c))).unwrap();
    assert_eq!(blocks(&got), vec![(crossing, 0, 700, 0, i - 1)]);
    assert_eq!(
        blocks(&scans[2].1),
        vec![(w.lsns[w.lsns.len() - 2], 0, 702, 0, 1)]
    );
    // Wrong neighbours or a damaged piece are refused, never decoded as nothing.
    assert!(join(t0, &[h2], &mut |_, _| {}).is_err());
    assert!(join(t0, &[], &mut |_, _| {}).is_err());
    let mut bad = h1.clone();
    bad.bytes[3] ^= 0xFF;
    assert!(join(t0, &[&bad], &mut |_, _| {}).is_err());
}

#[test]
fn any_damaged_byte_stops_the_scan_never_changes_what_came_before() {
    let w = full_segment();
    let (_, all) = collect(&w.segs[0]);
    let used = (w.lsns.last().unwrap() - SEG_LSN) as usize + 64;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x as usize >> 8) % used;
        let mut seg = w.segs[0].clone();
        seg[off] ^= 1 << (x % 8);
        let (scan, got) = collect(&seg);
        // Whatever the damage, what is reported is a prefix of the undamaged segment's changes,
        // and a segment that lost any record says it is incomplete.
        assert_eq!(&all[..got.len()], &got[..], "flip at {off}");
        if got.len() < all.len() {
            assert!(!scan.is_complete(), "flip at {off}: {:?}", scan.end);
        }
    }
}

#[test]
fn a_record_aborted_by_a_crash_is_skipped_where_the_page_says_so() {
    let mut w = Writer::new();
    for i in 0..3 {
        w.push(|p| heap(p, 800, i, 40));
    }
    // A record cut at the end of page 0 (the server crashed before writing the rest); after
    // recovery the next page starts with XLP_FIRST_IS_OVERWRITE_CONTRECORD and new records.
    let rec = heap(w.prev, 801, 0, 9000);
    let pos = w.pos;
    w.segs[0][pos..PAGE].copy_from_slice(&rec[..PAGE - pos]);
    Writer::page_header(&mut w.segs[0], PAGE, SEG_LSN, 0, false);
    w.segs[0][PAGE + 2] |= 0x08;
    w.pos = PAGE + 24;
    let after = w.push(|p| heap(p, 802, 5, 40));
    w.push(|p| record(p, 0, 0x40, &[], &[]));
    let (scan, v) = collect(&w.segs[0]);
    assert!(scan.is_complete(), "{:?}", scan.end);
    let b = blocks(&v);
    assert_eq!(b.len(), 4);
    assert!(b.iter().all(|x| x.2 != 801));
    assert_eq!(b[3], (after, 0, 802, 0, 5));
    // The same flag on a segment's first page: the previous segment's tail was aborted.
    let mut seg = full_segment().segs.remove(0);
    seg[2] |= 0x08;
    assert_eq!(collect(&seg).0.start, Start::AfterAbortedRecord);
}

/// Three consecutive segments as the server writes them, for other modules' tests (the archiver,
/// stored maps): `(name, bytes)` of 000000010000000000000003..05. The first ends inside a record
/// (a kept tail), the second lies inside a record larger than a segment (incomplete: the piece is
/// over MAX_PIECE), the third starts with that record's end and ends with an XLOG_SWITCH; file
/// events of two kinds (an smgr create in the first, a truncate in the third).
pub(crate) fn sample_segments() -> Vec<(String, Vec<u8>)> {
    let mut w = Writer::new();
    w.push(|p| smgr_create(p, 700));
    let mut i = 0;
    while w.pos < SEG - 6000 {
        w.push(|p| heap(p, 700, i, 4000));
        i += 1;
    }
    w.push(|p| heap(p, 700, i, 9000));
    w.push(|p| {
        let b = B { id: 0, rel: rel(701), fork: 0, block: 1, image: None, data: 8 };
        record(p, 21, 0x00, &[b], &vec![3u8; SEG + 5000])
    });
    w.push(|p| heap(p, 702, 1, 10));
    w.push(|p| {
        let mut main = 7u32.to_le_bytes().to_vec();
        for x in [1663u32, 5, 702, 1] {
            main.extend(x.to_le_bytes());
        }
        record(p, 2, 0x20, &[], &main)
    });
    w.push(|p| record(p, 0, 0x40, &[], &[]));
    assert_eq!(w.segs.len(), 3);
    w.segs.into_iter().enumerate().map(|(k, s)| (format!("0000000100000000000000{:02X}", 3 + k), s)).collect()
}

#[test]
fn sample_segments_are_what_they_say() {
    let maps: Vec<SegmentMap> = sample_segments().iter().map(|(_, s)| SegmentMap::build(s)).collect();
    assert!(matches!(maps[0].scan.end, End::MidRecord { tail: Some(_), .. }), "{:?}", maps[0].scan.end);
    assert!(maps[0].is_complete() && !maps[1].is_complete() && maps[2].is_complete());
    assert!(matches!(maps[2].scan.end, End::Switch { .. }));
    assert!(matches!(maps[0].events[..], [(_, FileEvent::Create { .. })]));
    assert!(matches!(maps[2].events[..], [(_, FileEvent::Truncate { blocks: 7, flags: 1, .. })]));
    assert!(maps[0].blocks.len() > 1000);
}
