//! What a fetched WAL file must look like before it is put in place (README "What is verified").
//!
//! - A segment (24-hex name) must decode to exactly its segment size. The CLI cannot know the
//!   cluster's `wal_segment_size` for sure, so it is read from the segment itself: the first page
//!   is an XLogLongPageHeaderData whose `xlp_seg_size` gives it. The header must also carry a
//!   WAL page magic, the long-header flag, and the page address of exactly the segment the file
//!   name says (so another segment's object under this name is refused). A stream that ends
//!   early (cut at a frame or block boundary that still decodes) or runs long is refused.
//! - A `.history` file must parse as PostgreSQL writes it: complete lines ending in a newline,
//!   ancestor timelines increasing and below its own, switch points not going back.
//! - `.partial` and `.backup` files (and anything else) are exempt: recovery never asks for a
//!   `.partial` (it is fetched by hand), a `.backup` history file is a short text file, and
//!   other tools write `.partial` files of other lengths.

use crate::catalog::timeline::parse_history;
use crate::error::{Error, Result};
use crate::format::names::parse_wal_file_name_with;

/// XLogLongPageHeaderData: the fields read, little-endian as PostgreSQL writes them on x86 and ARM.
const LONG_HEADER_LEN: usize = 40;
/// XLP_LONG_HEADER in xlp_info.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Every release since 9.4 (0xD07E) has used a magic in this range (15: 0xD110, 17: 0xD116).
const MAGICS: std::ops::RangeInclusive<u16> = 0xD07E..=0xD1FF;
/// A history file larger than this is refused rather than held in memory.
const HISTORY_LIMIT: usize = 16 << 20;

enum Kind {
    Segment { seg_size: Option<u64> },
    History { timeline: u32, text: Vec<u8> },
    Exempt,
}

/// Fed the decoded bytes of `key` (fetched as `file_name`) as they stream; `finish` says
/// whether the whole is acceptable. Errors are Corrupt and name `key`.
pub(crate) struct WalCheck {
    key: String,
    file_name: String,
    kind: Kind,
    head: Vec<u8>,
    total: u64,
}

impl WalCheck {
    pub(crate) fn new(file_name: &str, key: &str) -> WalCheck {
        let kind = if file_name.len() == 24 && file_name.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
            Kind::Segment { seg_size: None }
        } else if let Some(tli) = file_name
            .strip_suffix(".history")
            .filter(|t| t.len() == 8)
            .and_then(|t| u32::from_str_radix(t, 16).ok())
        {
            Kind::History { timeline: tli, text: Vec::new() }
        } else {
            Kind::Exempt
        };
        WalCheck { key: key.to_string(), file_name: file_name.to_string(), kind, head: Vec::new(), total: 0 }
    }

    fn corrupt(&self, msg: String) -> Error {
        Error::corrupt(&self.key, msg)
    }

    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<()> {
        self.total += data.len() as u64;
        match &mut self.kind {
            Kind::Exempt => Ok(()),
            Kind::History { text, .. } => {
                if text.len() + data.len() > HISTORY_LIMIT {
                    return Err(Error::corrupt(&self.key, format!("a timeline history file larger than {HISTORY_LIMIT} bytes")));
                }
                text.extend_from_slice(data);
                Ok(())
            }
            Kind::Segment { seg_size } => {
                if seg_size.is_none() {
                    let want = LONG_HEADER_LEN - self.head.len();
                    self.head.extend_from_slice(&data[..want.min(data.len())]);
                    if self.head.len() == LONG_HEADER_LEN {
                        let size = self.parse_header()?;
                        if let Kind::Segment { seg_size } = &mut self.kind {
                            *seg_size = Some(size);
                        }
                    }
                }
                if let Kind::Segment { seg_size: Some(size) } = self.kind {
                    if self.total > size {
                        return Err(self.corrupt(format!(
                            "decodes to more than the segment size of {size} bytes its first page header gives"
                        )));
                    }
                }
                Ok(())
            }
        }
    }

    /// The segment size from the first page's long header, after checking the header.
    fn parse_header(&self) -> Result<u64> {
        let h = &self.head;
        let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
        let (magic, info, pageaddr, seg_size, blcksz) = (u16_at(0), u16_at(2), u64_at(8), u32_at(32) as u64, u32_at(36));
        let not_wal = |why: String| self.corrupt(format!("not a WAL segment: {why}"));
        if !MAGICS.contains(&magic) {
            return Err(not_wal(format!("page magic {magic:#06X}")));
        }
        if info & XLP_LONG_HEADER == 0 {
            return Err(not_wal("the first page has no long header".into()));
        }
        if !seg_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg_size) {
            return Err(not_wal(format!("segment size {seg_size} in the page header")));
        }
        if !blcksz.is_power_of_two() || !(1024..=65536).contains(&blcksz) {
            return Err(not_wal(format!("block size {blcksz} in the page header")));
        }
        let segno = parse_wal_file_name_with(&self.file_name, seg_size).map(|(_, n)| n);
        if segno.map(|n| n * seg_size) != Some(pageaddr) {
            return Err(self.corrupt(format!(
                "its first page is at WAL address {:X}/{:X}, which is not the start of segment {} \
                 (another segment's object under this name?)",
                pageaddr >> 32,
                pageaddr & 0xFFFF_FFFF,
                self.file_name
            )));
        }
        Ok(seg_size)
    }

    pub(crate) fn finish(&self) -> Result<()> {
        match &self.kind {
            Kind::Exempt => Ok(()),
            Kind::Segment { seg_size: None } => Err(self.corrupt(format!(
                "decodes to only {} bytes, too short for a WAL segment's first page header: truncated",
                self.total
            ))),
            Kind::Segment { seg_size: Some(size) } if self.total != *size => Err(self.corrupt(format!(
                "decodes to {} bytes, but its page header gives a segment size of {size}: truncated",
                self.total
            ))),
            Kind::Segment { .. } => Ok(()),
            Kind::History { timeline, text } => self.check_history(*timeline, text),
        }
    }

    fn check_history(&self, own: u32, text: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(text).map_err(|_| self.corrupt("timeline history is not text".into()))?;
        if text.is_empty() || !text.ends_with('\n') {
            return Err(self.corrupt("timeline history does not end with a complete line: truncated".into()));
        }
        let records = parse_history(text, &self.key).map_err(|e| self.corrupt(e.to_string()))?;
        let mut prev: Option<(u32, u64)> = None;
        for r in &records {
            if r.timeline >= own || prev.is_some_and(|(t, l)| r.timeline <= t || r.switch_lsn < l) {
                return Err(self.corrupt(format!(
                    "timeline history of timeline {own} lists timeline {} out of order",
                    r.timeline
                )));
            }
            prev = Some((r.timeline, r.switch_lsn));
        }
        Ok(())
    }
}

/// A WAL segment's first page header (XLogLongPageHeaderData), for tests and tools.
pub fn long_page_header(magic: u16, timeline: u32, pageaddr: u64, seg_size: u32, sysid: u64) -> [u8; LONG_HEADER_LEN] {
    let mut h = [0u8; LONG_HEADER_LEN];
    h[0..2].copy_from_slice(&magic.to_le_bytes());
    h[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
    h[4..8].copy_from_slice(&timeline.to_le_bytes());
    h[8..16].copy_from_slice(&pageaddr.to_le_bytes());
    h[24..32].copy_from_slice(&sysid.to_le_bytes());
    h[32..36].copy_from_slice(&seg_size.to_le_bytes());
    h[36..40].copy_from_slice(&8192u32.to_le_bytes());
    h
}
