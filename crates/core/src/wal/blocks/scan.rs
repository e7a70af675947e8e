//! Walking one segment: page headers, records across pages, the pieces of records crossing the
//! segment's ends, and where valid WAL stops (xlogreader.c's rules for PostgreSQL 15).

use super::page::{self, read_header, u32_at, u64_at};
use super::record::{self, HEADER_LEN, RM_XLOG, XLOG_SWITCH};
use super::{Change, End, Head, Start, Tail, MAX_PIECE};

/// What [`scan_segment`] learnt about the segment besides the changes it reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// The segment's first LSN, from its long page header (0 if that was unreadable).
    pub segment_lsn: u64,
    pub system_id: u64,
    /// The first page's timeline.
    pub timeline: u32,
    pub start: Start,
    pub end: End,
    /// Records decoded whole in this segment.
    pub records: u32,
}

impl Scan {
    pub fn is_complete(&self) -> bool {
        let start = !matches!(self.start, Start::MidRecord(None));
        let end = match &self.end {
            End::SegmentEnd | End::Switch { .. } | End::InsideRecord => true,
            End::MidRecord { tail, .. } => tail.is_some(),
            End::Invalid { .. } => false,
        };
        start && end
    }
}

/// Why gathering the bytes of a record across pages stopped early.
enum Cut {
    /// The segment ended: these are the bytes gathered.
    SegmentEnd,
    /// The next page says the record was never completed (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`);
    /// records resume at this offset.
    Aborted(usize),
    Invalid(String),
}

struct Walker<'a> {
    seg: &'a [u8],
    lsn: u64,
    blcksz: usize,
    tli: u32,
}

impl Walker<'_> {
    /// The header of the (not first) page at `off`.
    fn page(&mut self, off: usize) -> Result<page::PageHeader, String> {
        let hdr = read_header(&self.seg[off..], self.lsn + off as u64, false)?;
        if hdr.tli < self.tli {
            return Err(format!(
                "page {:X}: timeline {} after {}",
                self.lsn + off as u64,
                hdr.tli,
                self.tli
            ));
        }
        self.tli = hdr.tli;
        Ok(hdr)
    }

    /// Appends to `buf` the `n` record bytes starting at `pos`, crossing pages; each next page must
    /// say it continues a record with exactly the bytes still missing. Returns the offset after.
    fn gather(&mut self, mut pos: usize, n: usize, buf: &mut Vec<u8>) -> Result<usize, Cut> {
        let mut missing = n;
        loop {
            let page_end = (pos / self.blcksz + 1) * self.blcksz;
            let k = missing.min(page_end - pos);
            buf.extend_from_slice(&self.seg[pos..pos + k]);
            missing -= k;
            pos += k;
            if missing == 0 {
                return Ok(pos);
            }
            if pos == self.seg.len() {
                return Err(Cut::SegmentEnd);
            }
            let hdr = self.page(pos).map_err(Cut::Invalid)?;
            if hdr.info & page::FIRST_IS_CONTRECORD == 0 {
                if hdr.info & page::FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                    return Err(Cut::Aborted(pos + hdr.len));
                }
                return Err(Cut::Invalid(format!(
                    "page {:X} does not continue the record",
                    self.lsn + pos as u64
                )));
            }
            if hdr.rem_len as usize != missing {
                return Err(Cut::Invalid(format!(
                    "page {:X}: xlp_rem_len {} where {missing} bytes of the record are missing",
                    self.lsn + pos as u64,
                    hdr.rem_len
                )));
            }
            pos += hdr.len;
        }
    }
}

fn align8(x: usize) -> usize {
    (x + 7) & !7
}

/// Walks one whole segment file (`segment` is all its bytes), reporting every change of every
/// record that is whole in it, with the record's LSN, to `out`, in WAL order.
pub fn scan_segment(segment: &[u8], out: &mut dyn FnMut(u64, Change)) -> Scan {
    let mut scan = Scan {
        segment_lsn: 0,
        system_id: 0,
        timeline: 0,
        start: Start::AtRecord,
        end: End::SegmentEnd,
        records: 0,
    };
    let invalid = |lsn, reason: String| End::Invalid { lsn, reason };
    if segment.len() < page::LONG_HEADER_LEN {
        scan.end = invalid(0, format!("{} bytes are not a WAL segment", segment.len()));
        return scan;
    }
    let seg_lsn = u64_at(segment, 8);
    scan.segment_lsn = seg_lsn;
    let first = match read_header(segment, seg_lsn, true) {
        Ok(h) => h,
        Err(e) => {
            scan.end = invalid(seg_lsn, e);
            return scan;
        }
    };
    scan.system_id = u64_at(segment, 24);
    scan.timeline = first.tli;
    let seg_size = u32_at(segment, 32) as usize;
    let blcksz = u32_at(segment, 36) as usize;
    if seg_size != segment.len()
        || !blcksz.is_power_of_two()
        || !(1024..=65536).contains(&blcksz)
        || !seg_size.is_multiple_of(blcksz)
        || !seg_lsn.is_multiple_of(seg_size as u64)
    {
        scan.end = invalid(
            seg_lsn,
            format!("long header: segment size {seg_size} and page size {blcksz} for a file of {} bytes at {seg_lsn:X}", segment.len()),
        );
        return scan;
    }
    let mut w = Walker {
        seg: segment,
        lsn: seg_lsn,
        blcksz,
        tli: first.tli,
    };
    let seg_end = seg_lsn + seg_size as u64;
    let mut pos = first.len;
    let mut buf = Vec::new();

    if first.info & page::FIRST_IS_CONTRECORD != 0 {
        let rem = first.rem_len as usize;
        match w.gather(pos, rem, &mut buf) {
            Ok(p) => {
                let bytes = std::mem::take(&mut buf);
                scan.start = Start::MidRecord(piece(&bytes).then_some(Head {
                    segment_lsn: seg_lsn,
                    segment_end: seg_end,
                    rem_len: first.rem_len,
                    bytes,
                }));
                pos = align8(p);
            }
            Err(Cut::SegmentEnd) => {
                scan.start = Start::MidRecord(piece(&buf).then_some(Head {
                    segment_lsn: seg_lsn,
                    segment_end: seg_end,
                    rem_len: first.rem_len,
                    bytes: buf,
                }));
                scan.end = End::InsideRecord;
                return scan;
            }
            Err(Cut::Aborted(p)) => {
                scan.start = Start::AfterAbortedRecord;
                pos = p;
            }
            Err(Cut::Invalid(e)) => {
                scan.start = Start::MidRecord(None);
                scan.end = invalid(seg_lsn, e);
                return scan;
            }
        }
        buf.clear();
    } else if first.info & page::FIRST_IS_OVERWRITE_CONTRECORD != 0 {
        scan.start = Start::AfterAbortedRecord;
    }

    let mut prev: Option<u64> = None;
    loop {
        if pos == segment.len() {
            scan.end = End::SegmentEnd;
            return scan;
        }
        if pos % blcksz == 0 {
            match w.page(pos) {
                Ok(h) if h.info & page::FIRST_IS_CONTRECORD != 0 => {
                    scan.end = invalid(
                        seg_lsn + pos as u64,
                        "page continues a record where a new one starts".into(),
                    );
                    return scan;
                }
                Ok(h) => pos += h.len,
                Err(e) => {
                    scan.end = invalid(seg_lsn + pos as u64, e);
                    return scan;
                }
            }
        }
        let lsn = seg_lsn + pos as u64;
        let tot_len = u32_at(segment, pos) as usize;
        if tot_len == 0 {
            scan.end = invalid(lsn, "no record here (zero length): end of WAL".into());
            return scan;
        }
        if tot_len < HEADER_LEN {
            scan.end = invalid(
                lsn,
                format!("record length {tot_len} is below the header's {HEADER_LEN}"),
            );
            return scan;
        }
        let page_end = (pos / blcksz + 1) * blcksz;
        if page_end - pos >= HEADER_LEN {
            if let Err(e) = check_header(&segment[pos..pos + HEADER_LEN], prev) {
                scan.end = invalid(lsn, e);
                return scan;
            }
        }
        let (rec, next): (&[u8], usize) = if tot_len <= page_end - pos {
            (&segment[pos..pos + tot_len], pos + tot_len)
        } else {
            buf.clear();
            match w.gather(pos, tot_len, &mut buf) {
                Ok(p) => (&buf[..], p),
                Err(Cut::SegmentEnd) => {
                    if buf.len() >= HEADER_LEN {
                        if let Err(e) = check_header(&buf[..HEADER_LEN], prev) {
                            scan.end = invalid(lsn, e);
                            return scan;
                        }
                    }
                    let tail = piece(&buf).then(|| Tail {
                        lsn,
                        segment_end: seg_end,
                        tot_len: tot_len as u32,
                        bytes: std::mem::take(&mut buf),
                    });
                    scan.end = End::MidRecord { lsn, tail };
                    return scan;
                }
                Err(Cut::Aborted(p)) => {
                    pos = p;
                    prev = None;
                    continue;
                }
                Err(Cut::Invalid(e)) => {
                    scan.end = invalid(lsn, e);
                    return scan;
                }
            }
        };
        if let Err(e) = check_header(rec, prev).and_then(|hd| whole(rec, lsn, out).map(|()| hd)) {
            scan.end = invalid(lsn, e);
            return scan;
        }
        scan.records += 1;
        prev = Some(lsn);
        if rec[17] == RM_XLOG && rec[16] & 0xF0 == XLOG_SWITCH {
            scan.end = End::Switch { lsn };
            return scan;
        }
        pos = align8(next);
    }
}

fn piece(bytes: &[u8]) -> bool {
    bytes.len() <= MAX_PIECE
}

fn check_header(h: &[u8], prev: Option<u64>) -> Result<record::Header, String> {
    let hd = record::header(h)?;
    if let Some(p) = prev {
        if hd.prev != p {
            return Err(format!(
                "xl_prev {:X} where the previous record is at {p:X}",
                hd.prev
            ));
        }
    }
    Ok(hd)
}

/// CRC check, then decoding, of a whole record.
fn whole(rec: &[u8], lsn: u64, out: &mut dyn FnMut(u64, Change)) -> Result<(), String> {
    if !record::crc_ok(rec) {
        return Err("record CRC mismatch".into());
    }
    record::decode(rec, &mut |c| out(lsn, c))
}

/// Decodes the record that begins with `tail` (the end of one segment) and continues in `heads`
/// (the starts of the following segments, in order), reporting its changes with its LSN. Fails if
/// the pieces do not fit together (not adjacent, lengths that disagree) or the CRC is wrong.
pub fn join(tail: &Tail, heads: &[&Head], out: &mut dyn FnMut(u64, Change)) -> Result<(), String> {
    let tot = tail.tot_len as usize;
    let mut rec = tail.bytes.clone();
    let mut at = tail.segment_end;
    for h in heads {
        if h.segment_lsn != at {
            return Err(format!("piece at {:X} where {at:X} follows", h.segment_lsn));
        }
        if rec.len() > tot || h.rem_len as usize != tot - rec.len() {
            return Err(format!(
                "piece at {:X} continues {} bytes, {} are missing",
                at,
                h.rem_len,
                tot - rec.len()
            ));
        }
        let take = h.bytes.len().min(tot - rec.len());
        rec.extend_from_slice(&h.bytes[..take]);
        at = h.segment_end;
    }
    if rec.len() != tot || tot < HEADER_LEN {
        return Err(format!(
            "pieces hold {} of the record's {tot} bytes",
            rec.len()
        ));
    }
    check_header(&rec, None)?;
    whole(&rec, tail.lsn, out)
}
