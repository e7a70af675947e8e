//! WAL page headers (`XLogPageHeaderData`, `XLogLongPageHeaderData` in xlog_internal.h).

pub const PAGE_MAGIC: u16 = 0xD110;
pub const FIRST_IS_CONTRECORD: u16 = 0x0001;
pub const LONG_HEADER: u16 = 0x0002;
pub const FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const ALL_FLAGS: u16 = 0x000F;
pub const SHORT_HEADER_LEN: usize = 24;
pub const LONG_HEADER_LEN: usize = 40;

pub fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

pub struct PageHeader {
    pub info: u16,
    pub tli: u32,
    pub rem_len: u32,
    pub len: usize,
}

/// Checks the header of the page at `page` (its bytes, at least a short header long) whose
/// address must be `addr`; `long` says whether a long header is expected (segment start).
pub fn read_header(page: &[u8], addr: u64, long: bool) -> Result<PageHeader, String> {
    let magic = u16_at(page, 0);
    if magic != PAGE_MAGIC {
        return Err(format!(
            "page {addr:X}: magic {magic:#06X}, not PostgreSQL 15's {PAGE_MAGIC:#06X}"
        ));
    }
    let info = u16_at(page, 2);
    if info & !ALL_FLAGS != 0 {
        return Err(format!("page {addr:X}: invalid info bits {info:#06X}"));
    }
    let pageaddr = u64_at(page, 8);
    if pageaddr != addr {
        return Err(format!(
            "page {addr:X}: header says address {pageaddr:X} (recycled or foreign page)"
        ));
    }
    if long != (info & LONG_HEADER != 0) {
        return Err(format!(
            "page {addr:X}: long header flag {} where {} expected",
            !long, long
        ));
    }
    Ok(PageHeader {
        info,
        tli: u32_at(page, 4),
        rem_len: u32_at(page, 16),
        len: if long {
            LONG_HEADER_LEN
        } else {
            SHORT_HEADER_LEN
        },
    })
}
