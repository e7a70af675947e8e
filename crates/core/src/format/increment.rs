//! WAL-G's "wi1" increment files (FORMAT.md, "Delta increments"): the changed pages of one
//! relation segment file, as a delta backup stores them in place of the whole file.
//!
//! Layout, little-endian: magic `w i 1 0x55`, u64 size of the segment file at backup time,
//! u32 N, N u32 block numbers (strictly ascending here; WAL-G writes them so), then the N page
//! images of 8192 bytes in the same order. Nothing may follow.
//!
//! Invariants of the reader: a damaged increment is an error naming the object and the entry,
//! never a partly patched file that looks whole: a bad magic, a cut header, a block count the
//! recorded size cannot hold, a block outside the recorded size, unordered blocks, a cut page and
//! trailing bytes are all refused (`Error::Corrupt`). Pages are only written after the header
//! and block list passed these checks.
//!
//! Also here: which files may be incremented (WAL-G's `isPagedFile`) and the page header checks
//! WAL-G's full scan applies to choose pages (`pd_lsn` at or after the base's start LSN, or a
//! new page; an invalid header means the whole file is copied).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};

/// PostgreSQL's BLCKSZ as WAL-G assumes it.
pub const PAGE_SIZE: usize = 8192;
/// "wi1" + WAL-G's signature byte.
pub const MAGIC: [u8; 4] = [b'w', b'i', b'1', 0x55];
/// Magic, file size and block count.
pub const FIXED_HEADER: usize = 16;

/// The header of an increment: the segment's size and the blocks that follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncrementHeader {
    pub file_size: u64,
    pub blocks: Vec<u32>,
}

impl IncrementHeader {
    /// Bytes of the whole increment (header, block list, pages).
    pub fn encoded_len(&self) -> u64 {
        encoded_len(self.blocks.len())
    }

    /// The header and block list as stored.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_HEADER + 4 * self.blocks.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.file_size.to_le_bytes());
        out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for b in &self.blocks {
            out.extend_from_slice(&b.to_le_bytes());
        }
        out
    }
}

/// Bytes of an increment holding `pages` pages.
pub fn encoded_len(pages: usize) -> u64 {
    (FIXED_HEADER + 4 * pages) as u64 + (pages * PAGE_SIZE) as u64
}

fn read_exact_or(r: &mut dyn Read, buf: &mut [u8], object: &str, what: &dyn Fn() -> String) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(Error::corrupt(object, format!("{}: cut after {got} of {} bytes", what(), buf.len())));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(crate::codec::read_error(object, e)),
        }
    }
    Ok(())
}

/// Read and check the header and block list of the increment for `entry` in `object`.
pub fn read_header(r: &mut dyn Read, object: &str, entry: &str) -> Result<IncrementHeader> {
    let bad = |msg: String| Error::corrupt(object, format!("increment {entry:?}: {msg}"));
    let mut fixed = [0u8; FIXED_HEADER];
    read_exact_or(r, &mut fixed, object, &|| format!("increment {entry:?}: header"))?;
    if fixed[..4] != MAGIC {
        return Err(bad(format!("bad magic {:02x?} (want \"wi1\" 0x55)", &fixed[..4])));
    }
    let file_size = u64::from_le_bytes(fixed[4..12].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(fixed[12..16].try_into().expect("4 bytes")) as u64;
    if file_size % PAGE_SIZE as u64 != 0 {
        return Err(bad(format!("recorded file size {file_size} is not a multiple of {PAGE_SIZE}")));
    }
    let pages_in_file = file_size / PAGE_SIZE as u64;
    if count > pages_in_file {
        // Checked before the list is allocated: a damaged count must not ask for gigabytes.
        return Err(bad(format!("{count} pages recorded for a file of {pages_in_file} pages")));
    }
    let mut list = vec![0u8; 4 * count as usize];
    read_exact_or(r, &mut list, object, &|| format!("increment {entry:?}: block list"))?;
    let blocks: Vec<u32> = list.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    for (i, &b) in blocks.iter().enumerate() {
        if b as u64 >= pages_in_file {
            return Err(bad(format!("block {b} lies beyond the recorded file size {file_size} ({pages_in_file} pages)")));
        }
        if i > 0 && blocks[i - 1] >= b {
            return Err(bad(format!("block numbers not ascending ({} then {b})", blocks[i - 1])));
        }
    }
    Ok(IncrementHeader { file_size, blocks })
}

/// What `apply` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub file_size: u64,
    pub pages: u64,
}

/// Apply the increment for `entry` read from `r` (the tar entry's data) to `file`, which holds
/// the entry's previous version: cut or extend it to the recorded size, then write each page at
/// `block * 8192`. `r` must end exactly after the last page.
pub fn apply(r: &mut dyn Read, file: &File, path: &std::path::Path, object: &str, entry: &str) -> Result<Applied> {
    let h = read_header(r, object, entry)?;
    file.set_len(h.file_size).map_err(|e| Error::io(path, e))?;
    let mut page = vec![0u8; PAGE_SIZE];
    for &b in &h.blocks {
        read_exact_or(r, &mut page, object, &|| format!("increment {entry:?}: page {b}"))?;
        file.write_all_at(&page, b as u64 * PAGE_SIZE as u64).map_err(|e| Error::io(path, e))?;
    }
    let mut one = [0u8; 1];
    loop {
        match r.read(&mut one) {
            Ok(0) => break,
            Ok(_) => {
                return Err(Error::corrupt(object, format!("increment {entry:?}: data after its {} pages", h.blocks.len())))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(crate::codec::read_error(object, e)),
        }
    }
    Ok(Applied { file_size: h.file_size, pages: h.blocks.len() as u64 })
}

/// WAL-G's `isPagedFile`, on a tar entry name ("/base/5/16384.1"): a numbered relation segment
/// (`^\d+(\.\d+)?$`, main fork only) under base/ or pg_tblspc/, not empty, whole pages long.
pub fn is_paged_file(entry: &str, size: u64) -> bool {
    let rel = entry.trim_start_matches('/');
    if !(rel.starts_with("base/") || rel.starts_with("pg_tblspc/")) || size == 0 || size % PAGE_SIZE as u64 != 0 {
        return false;
    }
    let base = rel.rsplit('/').next().unwrap_or("");
    let (num, seg) = match base.split_once('.') {
        Some((n, s)) => (n, Some(s)),
        None => (base, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(num) && seg.is_none_or(digits)
}

/// The fields of PostgreSQL's PageHeaderData that WAL-G looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    pub lsn: u64,
    pub flags: u16,
    pub lower: u16,
    pub upper: u16,
    pub special: u16,
    pub pagesize_version: u16,
}

impl PageHeader {
    pub fn parse(page: &[u8]) -> PageHeader {
        let u16_at = |o: usize| u16::from_le_bytes([page[o], page[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(page[o..o + 4].try_into().expect("4 bytes"));
        PageHeader {
            lsn: ((u32_at(0) as u64) << 32) | u32_at(4) as u64,
            flags: u16_at(10),
            lower: u16_at(12),
            upper: u16_at(14),
            special: u16_at(16),
            pagesize_version: u16_at(18),
        }
    }

    /// PostgreSQL's PageIsNew: a page never initialised (all zeros, or extended but not written).
    pub fn is_new(&self) -> bool {
        self.upper == 0
    }

    /// WAL-G's header check (flags, pointer order, page size, layout version, a set LSN).
    pub fn is_valid(&self) -> bool {
        const VALID_FLAGS: u16 = 7;
        const HEADER_SIZE: u16 = 24;
        const LAYOUT_VERSION: u16 = 5;
        self.flags & !VALID_FLAGS == 0
            && self.lower >= HEADER_SIZE
            && self.lower <= self.upper
            && self.upper <= self.special
            && self.special as usize <= PAGE_SIZE
            && self.lsn != 0
            && (self.pagesize_version & 0xFF00) as usize == PAGE_SIZE
            && self.pagesize_version & 0xFF <= LAYOUT_VERSION
    }
}

/// What a full scan of one file chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Blocks to put into the increment (new pages and pages changed at or after the LSN).
    Pages(Vec<u32>),
    /// A page with an invalid header (torn, not a relation page): copy the whole file.
    WholeFile { invalid_block: u32 },
}

/// Read `r` (a relation segment of `size` bytes) page by page and choose the pages a delta from
/// a base that started at `base_lsn` must hold. Reads up to `size` bytes; a file that ends early
/// ends the scan (the increment still records `size`; missing pages read back as zeros).
/// `on_data` sees every byte read, in order (page checksum verification).
pub fn scan_pages(r: &mut dyn Read, size: u64, base_lsn: u64, on_data: &mut dyn FnMut(&[u8])) -> io::Result<Selection> {
    let mut blocks = Vec::new();
    let mut invalid = None;
    for_each_page(r, size, on_data, &mut |block, page| {
        let h = PageHeader::parse(page);
        if h.is_new() || (h.is_valid() && h.lsn >= base_lsn) {
            blocks.push(block);
        } else if !h.is_valid() {
            invalid = Some(block);
            return false;
        }
        true
    })?;
    Ok(match invalid {
        Some(invalid_block) => Selection::WholeFile { invalid_block },
        None => Selection::Pages(blocks),
    })
}

/// Read `r` (a relation segment of `size` bytes) in large chunks and call `page(block, bytes)`
/// for each whole page, in order, until it returns false or the file ends (early, if it shrank
/// since `size` was taken). `on_data` sees every byte read.
pub fn for_each_page(
    r: &mut dyn Read,
    size: u64,
    on_data: &mut dyn FnMut(&[u8]),
    page: &mut dyn FnMut(u32, &[u8]) -> bool,
) -> io::Result<()> {
    const CHUNK: usize = 128 * PAGE_SIZE;
    let mut buf = vec![0u8; CHUNK];
    let mut block: u32 = 0;
    let mut left = size;
    while left > 0 {
        let want = (left.min(CHUNK as u64)) as usize;
        let mut got = 0;
        while got < want {
            match r.read(&mut buf[got..want]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        on_data(&buf[..got]);
        for p in buf[..got - got % PAGE_SIZE].chunks_exact(PAGE_SIZE) {
            if !page(block, p) {
                return Ok(());
            }
            block += 1;
        }
        if got < want {
            break; // shorter than at stat time
        }
        left -= got as u64;
    }
    Ok(())
}

/// Read block `b` of `file` into `page`, zeros past its end (the file shrank since the scan;
/// WAL replay restores it, as for any page copied while the server runs).
pub fn read_page(file: &File, b: u32, page: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    let off = b as u64 * PAGE_SIZE as u64;
    while got < page.len() {
        match file.read_at(&mut page[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    page[got..].fill(0);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A real-looking heap page: header with `lsn`, line pointers, tuple data from `seed`.
    pub(crate) fn heap_page(lsn: u64, seed: u8) -> Vec<u8> {
        let mut p = vec![0u8; PAGE_SIZE];
        p[0..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
        p[10..12].copy_from_slice(&0u16.to_le_bytes()); // flags
        p[12..14].copy_from_slice(&40u16.to_le_bytes()); // lower: 4 line pointers
        p[14..16].copy_from_slice(&4096u16.to_le_bytes()); // upper
        p[16..18].copy_from_slice(&8192u16.to_le_bytes()); // special
        p[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes()); // size | layout version 4
        for (i, b) in p[4096..].iter_mut().enumerate() {
            *b = seed.wrapping_add((i % 251) as u8);
        }
        p
    }

    /// The vector written by hand from FORMAT.md's table (not by `encode`).
    fn vector() -> Vec<u8> {
        let mut v = vec![b'w', b'i', b'1', 0x55];
        v.extend_from_slice(&[0x00, 0x80, 0x00, 0x00, 0, 0, 0, 0]); // size 32768 = 4 pages
        v.extend_from_slice(&[2, 0, 0, 0]); // N = 2
        v.extend_from_slice(&[1, 0, 0, 0, 3, 0, 0, 0]); // blocks 1, 3
        v.extend(std::iter::repeat_n(0xA1, PAGE_SIZE));
        v.extend(std::iter::repeat_n(0xB3, PAGE_SIZE));
        v
    }

    #[test]
    fn format_md_vector_encodes_and_applies() {
        let v = vector();
        let h = IncrementHeader { file_size: 32768, blocks: vec![1, 3] };
        assert_eq!(h.encode(), v[..24].to_vec());
        assert_eq!(h.encoded_len(), v.len() as u64);
        assert_eq!(read_header(&mut &v[..], "o", "/base/5/1").unwrap(), h);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("16384");
        // Previous version: 6 pages of 0x11 (the increment cuts it to 4).
        std::fs::write(&path, vec![0x11u8; 6 * PAGE_SIZE]).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let a = apply(&mut &v[..], &f, &path, "part_001.tar", "/base/5/16384").unwrap();
        assert_eq!(a, Applied { file_size: 32768, pages: 2 });
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 4 * PAGE_SIZE);
        for (b, want) in [(0, 0x11), (1, 0xA1), (2, 0x11), (3, 0xB3)] {
            assert!(got[b * PAGE_SIZE..(b + 1) * PAGE_SIZE].iter().all(|&x| x == want), "block {b}");
        }
        // Growing: a shorter previous version is extended (zeros where no page is written).
        std::fs::write(&path, vec![0x22u8; PAGE_SIZE]).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        apply(&mut &v[..], &f, &path, "o", "e").unwrap();
        let got = std::fs::read(&path).unwrap();
        assert!(got[..PAGE_SIZE].iter().all(|&x| x == 0x22));
        assert!(got[2 * PAGE_SIZE..3 * PAGE_SIZE].iter().all(|&x| x == 0));
        // An empty increment (no page changed) of an empty file.
        let empty = IncrementHeader { file_size: 0, blocks: vec![] }.encode();
        assert_eq!(empty, vec![b'w', b'i', b'1', 0x55, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        apply(&mut &empty[..], &f, &path, "o", "e").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn damaged_increments_are_refused_naming_the_object() {
        let v = vector();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
        let mut bad_magic = v.clone();
        bad_magic[3] = 0x56;
        cases.push((bad_magic, "bad magic"));
        let mut wi2 = v.clone();
        wi2[2] = b'2';
        cases.push((wi2, "bad magic"));
        for cut in [0, 3, 15, 20, 24, 24 + 100, v.len() - 1] {
            cases.push((v[..cut].to_vec(), "cut"));
        }
        let mut trailing = v.clone();
        trailing.push(0);
        cases.push((trailing, "data after"));
        let mut beyond = v.clone();
        beyond[20] = 4; // block 4 of a 4-page file
        cases.push((beyond, "beyond"));
        let mut unordered = v.clone();
        unordered[16] = 3;
        cases.push((unordered, "not ascending"));
        let mut huge = v.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        cases.push((huge, "pages recorded"));
        let mut odd = v.clone();
        odd[4] = 1; // size 32769
        cases.push((odd, "multiple"));
        for (data, want) in cases {
            std::fs::write(&path, vec![0x33u8; 2 * PAGE_SIZE]).unwrap();
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let err = apply(&mut &data[..], &f, &path, "basebackups_005/b/tar_partitions/part_002.tar.lz4", "/base/5/16384")
                .unwrap_err();
            let msg = err.to_string();
            assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{want}: {msg}");
            assert!(msg.contains("part_002.tar.lz4") && msg.contains("/base/5/16384") && msg.contains(want), "{want}: {msg}");
        }
    }

    #[test]
    fn paged_files_and_page_headers() {
        for (name, size, want) in [
            ("/base/5/16384", 8192, true),
            ("/base/5/16384.12", 16384, true),
            ("/pg_tblspc/16400/PG_15_202209061/5/16385", 8192, true),
            ("/base/5/16384_fsm", 8192, false),
            ("/base/5/16384_vm", 8192, false),
            ("/base/5/16384_init", 8192, false),
            ("/base/5/16384", 0, false),
            ("/base/5/16384", 8000, false),
            ("/global/1262", 8192, false),
            ("/base/5/PG_VERSION", 8192, false),
            ("/base/5/16384.", 8192, false),
            ("/base/5/pg_filenode.map", 8192, false),
        ] {
            assert_eq!(is_paged_file(name, size), want, "{name} {size}");
        }
        let p = heap_page(0x1_0000_0010, 1);
        let h = PageHeader::parse(&p);
        assert_eq!(h.lsn, 0x1_0000_0010);
        assert!(h.is_valid() && !h.is_new());
        assert!(PageHeader::parse(&[0u8; PAGE_SIZE]).is_new());
        let mut bad = p.clone();
        bad[14] = 0x10; // upper 4112 > ... fine; make lower > upper instead
        bad[12..14].copy_from_slice(&5000u16.to_le_bytes());
        assert!(!PageHeader::parse(&bad).is_valid());
        let mut zero_lsn = p.clone();
        zero_lsn[..8].fill(0);
        assert!(!PageHeader::parse(&zero_lsn).is_valid());
    }

    #[test]
    fn scan_chooses_new_and_changed_pages_or_the_whole_file() {
        let base_lsn = 0x5_0000_0000;
        let mut file = Vec::new();
        for (lsn, seed) in [(0x4_0000_0000, 1), (0x5_0000_0000, 2), (0x3_0000_0000, 3), (0, 0), (0x6_0000_0001, 5)] {
            if lsn == 0 {
                file.extend(std::iter::repeat_n(0u8, PAGE_SIZE)); // a new page
            } else {
                file.extend(heap_page(lsn, seed));
            }
        }
        // Over one read chunk, so the scan crosses chunk boundaries.
        for i in 0..200u64 {
            file.extend(heap_page(if i == 150 { base_lsn + 7 } else { 0x100 }, i as u8));
        }
        let sel = scan_pages(&mut &file[..], file.len() as u64, base_lsn, &mut |_| {}).unwrap();
        assert_eq!(sel, Selection::Pages(vec![1, 3, 4, 155]));
        // A file that shrank after stat: the scan stops at its end.
        let sel = scan_pages(&mut &file[..3 * PAGE_SIZE], file.len() as u64, base_lsn, &mut |_| {}).unwrap();
        assert_eq!(sel, Selection::Pages(vec![1]));
        // A torn or foreign page: the whole file is copied.
        let mut torn = file.clone();
        torn[2 * PAGE_SIZE + 12..2 * PAGE_SIZE + 14].copy_from_slice(&9000u16.to_le_bytes());
        assert_eq!(scan_pages(&mut &torn[..], torn.len() as u64, base_lsn, &mut |_| {}).unwrap(), Selection::WholeFile { invalid_block: 2 });
    }
}
