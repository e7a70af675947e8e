//! One whole record (`XLogRecord` header, block headers, block data, main data; xlogrecord.h):
//! CRC check and decoding of the block references, as xlogreader.c's DecodeXLogRecord does.

use super::page::{u16_at, u32_at, u64_at};
use super::{events, BlockRef, Change, RelFileNode};

pub const HEADER_LEN: usize = 24;
const CRC_OFFSET: usize = 20;
const BLCKSZ: usize = 8192;
const MAX_BLOCK_ID: u8 = 32;
const ID_DATA_SHORT: u8 = 255;
const ID_DATA_LONG: u8 = 254;
const ID_ORIGIN: u8 = 253;
const ID_TOPLEVEL_XID: u8 = 252;
const HAS_IMAGE: u8 = 0x10;
const HAS_DATA: u8 = 0x20;
const SAME_REL: u8 = 0x80;
const IMAGE_HAS_HOLE: u8 = 0x01;
const IMAGE_COMPRESSED: u8 = 0x04 | 0x08 | 0x10;
pub const RM_XLOG: u8 = 0;
pub const XLOG_SWITCH: u8 = 0x40;
const RM_MAX_BUILTIN: u8 = 21;
const RM_MIN_CUSTOM: u8 = 128;

pub struct Header {
    pub tot_len: u32,
    pub prev: u64,
    pub info: u8,
    pub rmid: u8,
}

/// The fixed header's checks that do not need the rest of the record (ValidXLogRecordHeader).
pub fn header(h: &[u8]) -> Result<Header, String> {
    let hd = Header {
        tot_len: u32_at(h, 0),
        prev: u64_at(h, 8),
        info: h[16],
        rmid: h[17],
    };
    if (hd.tot_len as usize) < HEADER_LEN {
        return Err(format!(
            "record length {} is below the header's {HEADER_LEN}",
            hd.tot_len
        ));
    }
    if hd.rmid > RM_MAX_BUILTIN && hd.rmid < RM_MIN_CUSTOM {
        return Err(format!("invalid resource manager id {}", hd.rmid));
    }
    Ok(hd)
}

/// CRC-32C of the record as PostgreSQL computes it: the bytes after the header, then the header
/// up to `xl_crc`.
pub fn crc_ok(rec: &[u8]) -> bool {
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    d.update(&rec[HEADER_LEN..]);
    d.update(&rec[..CRC_OFFSET]);
    d.finalize() as u32 == u32_at(rec, CRC_OFFSET)
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<usize, String> {
        if self.b.len() - self.at < n {
            return Err(format!(
                "block headers run past the record's end at byte {}",
                self.at
            ));
        }
        self.at += n;
        Ok(self.at - n)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.b[self.take(1)?])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16_at(self.b, self.take(2)?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32_at(self.b, self.take(4)?))
    }
}

/// Decodes a whole record whose CRC was checked: reports each block reference and each file
/// event to `out`. Any inconsistency in the layout is an error (the caller ends valid WAL there).
pub fn decode(rec: &[u8], out: &mut dyn FnMut(Change)) -> Result<(), String> {
    let hd = header(rec)?;
    let mut c = Cursor {
        b: rec,
        at: HEADER_LEN,
    };
    let mut datatotal: usize = 0;
    let mut main_len: usize = 0;
    let mut next_id: u32 = 0;
    let mut last_rel: Option<RelFileNode> = None;
    // Block references are reported as they are read: a record whose CRC is right but whose
    // layout then proves wrong ends the valid WAL (the map is incomplete from it on), and the
    // blocks it named before the fault only make the map larger, never miss a page. (Buffering
    // them until the layout was checked cost a tenth of the parse.)
    while rec.len() - c.at > datatotal {
        let id = c.u8()?;
        match id {
            ID_DATA_SHORT => {
                main_len = c.u8()? as usize;
                datatotal += main_len;
                break;
            }
            ID_DATA_LONG => {
                main_len = c.u32()? as usize;
                datatotal += main_len;
                break;
            }
            ID_ORIGIN => {
                c.take(2)?;
            }
            ID_TOPLEVEL_XID => {
                c.take(4)?;
            }
            id if id <= MAX_BLOCK_ID => {
                if (id as u32) < next_id {
                    return Err(format!("out-of-order block id {id}"));
                }
                next_id = id as u32 + 1;
                let fork_flags = c.u8()?;
                let data_len = c.u16()? as usize;
                if (fork_flags & HAS_DATA != 0) != (data_len != 0) {
                    return Err(format!(
                        "block {id}: data flag and data length {data_len} disagree"
                    ));
                }
                datatotal += data_len;
                let image = fork_flags & HAS_IMAGE != 0;
                if image {
                    let bimg_len = c.u16()? as usize;
                    let hole_offset = c.u16()? as usize;
                    let bimg_info = c.u8()?;
                    let has_hole = bimg_info & IMAGE_HAS_HOLE != 0;
                    let compressed = bimg_info & IMAGE_COMPRESSED != 0;
                    let hole_len = if has_hole && compressed {
                        c.u16()? as usize
                    } else if has_hole {
                        BLCKSZ.saturating_sub(bimg_len)
                    } else {
                        0
                    };
                    if (has_hole && (hole_offset == 0 || hole_len == 0 || bimg_len == BLCKSZ))
                        || (!has_hole && (hole_offset != 0 || (!compressed && bimg_len != BLCKSZ)))
                        || (compressed && bimg_len == BLCKSZ)
                    {
                        return Err(format!("block {id}: inconsistent image (length {bimg_len}, hole at {hole_offset} of {hole_len}, info {bimg_info:#04X})"));
                    }
                    datatotal += bimg_len;
                }
                let rel = if fork_flags & SAME_REL == 0 {
                    let at = c.take(12)?;
                    let r = RelFileNode {
                        spc: u32_at(rec, at),
                        db: u32_at(rec, at + 4),
                        rel: u32_at(rec, at + 8),
                    };
                    last_rel = Some(r);
                    r
                } else {
                    last_rel
                        .ok_or_else(|| format!("block {id}: SAME_REL with no previous relation"))?
                };
                let block = c.u32()?;
                out(Change::Block {
                    block_id: id,
                    block: BlockRef {
                        rel,
                        fork: fork_flags & 0x0F,
                        block,
                    },
                    image,
                });
            }
            _ => return Err(format!("invalid block id {id}")),
        }
    }
    if rec.len() - c.at != datatotal {
        return Err(format!(
            "record of {} bytes: headers end at {} and announce {datatotal} data bytes",
            rec.len(),
            c.at
        ));
    }
    let main = &rec[rec.len() - main_len..];
    events::decode(hd.rmid, hd.info, main, &mut |ev| out(Change::File(ev)))
}
