//! Page checksum verification of the relation files a backup reads (WAL-G's
//! `WALG_VERIFY_PAGE_CHECKSUMS`, pgBackRest's default), fed with the bytes as push.rs streams them.
//!
//! The rule for a page whose checksum fails (format/page_checksum.rs): it is read again, once,
//! by offset, after the whole file was read; it is corrupt only if that second read is still an
//! initialised page (pd_upper != 0), written before the backup's start LSN, with a wrong checksum.
//! Why: the server writes pages while the backup reads them, so a read can see half of an 8 KiB
//! write (a torn read). Every page written after the backup started has an LSN at or after its
//! start LSN and a full image in the WAL the restore replays (full-page writes are forced during a
//! backup), so what was stored of it does not matter; a page torn under its old header is
//! complete when read again. PostgreSQL's basebackup (one re-read) and pgBackRest do the same.
//! A page whose LSN field itself is damaged into the future is therefore not detected (as there).
//!
//! Invariant: block numbers reported are the fork's (segment * RELSEG_SIZE + block in file), as
//! PostgreSQL's checksum uses and names them.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::format::increment::{read_page, PAGE_SIZE};
use crate::format::page_checksum::{check_page, relation_segment, PageCheck, RELSEG_SIZE};
use crate::format::sentinel::CorruptBlocks;

/// WAL-G keeps at most this many block numbers per file in `CorruptBlocks` (unless
/// `WALG_STORE_ALL_CORRUPT_BLOCKS`); the count is always whole.
pub const MAX_CORRUPT_BLOCKS_IN_FILE: usize = 10;

/// Checks one relation file's pages as they stream past, in file order.
#[derive(Debug)]
pub struct PageVerifier {
    first_block: u32,
    start_lsn: u64,
    /// The start of a page cut by a chunk boundary.
    partial: Vec<u8>,
    /// Block (in the file) of the next whole page.
    next: u32,
    /// Blocks in the file whose checksum failed on the first read.
    suspects: Vec<u32>,
}

impl PageVerifier {
    /// A verifier for tar entry `entry` of a backup that started at `start_lsn`, or None when the
    /// file is not a relation file (its contents are not pages).
    pub fn for_entry(entry: &str, start_lsn: u64) -> Option<PageVerifier> {
        let seg = relation_segment(entry)?;
        Some(PageVerifier {
            first_block: seg.saturating_mul(RELSEG_SIZE),
            start_lsn,
            partial: Vec::new(),
            next: 0,
            suspects: Vec::new(),
        })
    }

    /// Start over (the file is read again from its first byte).
    pub fn reset(&mut self) {
        self.partial.clear();
        self.next = 0;
        self.suspects.clear();
    }

    fn check(&mut self, page: &[u8]) {
        if let PageCheck::Mismatch { .. } = check_page(page, self.first_block.wrapping_add(self.next), self.start_lsn) {
            self.suspects.push(self.next);
        }
        self.next += 1;
    }

    /// One whole page at block `block` of the file, read out of order (a delta reading only the
    /// pages its WAL maps name).
    pub fn feed_page(&mut self, block: u32, page: &[u8]) {
        self.next = block;
        self.check(page);
    }

    /// The next bytes of the file, in order, cut anywhere. A last partial page is never checked.
    pub fn feed(&mut self, mut data: &[u8]) {
        if !self.partial.is_empty() {
            let take = (PAGE_SIZE - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < PAGE_SIZE {
                return;
            }
            let page = std::mem::take(&mut self.partial);
            self.check(&page);
        }
        let whole = data.len() - data.len() % PAGE_SIZE;
        for page in data[..whole].chunks_exact(PAGE_SIZE) {
            self.check(page);
        }
        self.partial.extend_from_slice(&data[whole..]);
    }

    /// Blocks (of the fork) that failed on the first read and again on a re-read from `path`
    /// (module header). The file is opened only when some page failed; one that has vanished
    /// since holds no corrupt page (the relation was dropped; WAL replay drops it too).
    pub fn finish(self, path: &Path) -> io::Result<Vec<u32>> {
        if self.suspects.is_empty() {
            return Ok(Vec::new());
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut page = vec![0u8; PAGE_SIZE];
        let mut corrupt = Vec::new();
        for b in self.suspects {
            // Zeros past the end (the file was truncated since): new, not corrupt.
            read_page(&file, b, &mut page)?;
            let blkno = self.first_block.wrapping_add(b);
            if let PageCheck::Mismatch { .. } = check_page(&page, blkno, self.start_lsn) {
                corrupt.push(blkno);
            }
        }
        Ok(corrupt)
    }
}

/// WAL-G's `CorruptBlocks` of a file with these corrupt blocks (ascending): the count, and the
/// first ten block numbers, or all with `store_all` (WAL-G's `SetCorruptBlocks`).
pub fn corrupt_blocks_field(blocks: &[u32], store_all: bool) -> Option<CorruptBlocks> {
    if blocks.is_empty() {
        return None;
    }
    let keep = if store_all { blocks.len() } else { blocks.len().min(MAX_CORRUPT_BLOCKS_IN_FILE) };
    Some(CorruptBlocks { corrupt_blocks_count: blocks.len() as u64, some_corrupt_blocks: blocks[..keep].to_vec() })
}

/// "base/5/16384 blocks 3, 7" lines for messages: at most `max_files` files, each with at most
/// 20 block numbers.
pub fn describe_corrupt(files: &[(String, Vec<u32>)], max_files: usize) -> String {
    let mut parts: Vec<String> = files
        .iter()
        .take(max_files)
        .map(|(name, blocks)| {
            let shown: Vec<String> = blocks.iter().take(20).map(|b| b.to_string()).collect();
            let more = if blocks.len() > 20 { format!(" and {} more", blocks.len() - 20) } else { String::new() };
            format!("{} block{} {}{more}", name.trim_start_matches('/'), if blocks.len() == 1 { "" } else { "s" }, shown.join(", "))
        })
        .collect();
    if files.len() > max_files {
        parts.push(format!("and {} more files", files.len() - max_files));
    }
    parts.join("; ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::page_checksum::page_checksum;

    /// An initialised page at `lsn` with a right checksum for `blkno`.
    pub(crate) fn good_page(lsn: u64, seed: u8, blkno: u32) -> Vec<u8> {
        let mut p = crate::format::increment::tests::heap_page(lsn, seed);
        let c = page_checksum(&p, blkno);
        p[8..10].copy_from_slice(&c.to_le_bytes());
        p
    }

    #[test]
    fn torn_read_rule_and_chunking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("16384.1");
        let seg = RELSEG_SIZE;
        let start = 0x5_0000_0000u64;
        // Blocks: 0 good, 1 corrupt (old LSN), 2 new, 3 torn when first read (good on disk),
        // 4 damaged but written after the start, 5 corrupt.
        let mut on_disk = Vec::new();
        for b in 0..6u32 {
            on_disk.push(good_page(0x4_0000_0000 + b as u64, b as u8, seg + b));
        }
        on_disk[1][3000] ^= 0x10;
        on_disk[2] = vec![0u8; PAGE_SIZE];
        on_disk[4] = good_page(start + 8, 4, seg + 4);
        on_disk[4][6000] ^= 1;
        on_disk[5][20] ^= 0x80;
        let file: Vec<u8> = on_disk.concat();
        std::fs::write(&path, &file).unwrap();
        // What the first read saw: block 3 half old, half new.
        let mut seen = file.clone();
        seen[3 * PAGE_SIZE + 5000] ^= 0xFF;
        for chunk in [1usize, 100, 4096, 8192, 8193, 30000, 1 << 20] {
            let mut v = PageVerifier::for_entry("/base/5/16384.1", start).unwrap();
            for c in seen.chunks(chunk) {
                v.feed(c);
            }
            assert_eq!(v.suspects, vec![1, 3, 5], "chunk {chunk}");
            assert_eq!(v.finish(&path).unwrap(), vec![seg + 1, seg + 5], "chunk {chunk}");
        }
        // A file dropped before the re-read has no corrupt page; truncated: the re-read is zeros.
        let mut v = PageVerifier::for_entry("/base/5/16384.1", start).unwrap();
        v.feed(&seen);
        assert_eq!(v.finish(&dir.path().join("gone")).unwrap(), Vec::<u32>::new());
        std::fs::write(&path, &file[..2 * PAGE_SIZE]).unwrap();
        let mut v = PageVerifier::for_entry("/base/5/16384.1", start).unwrap();
        v.feed(&seen);
        assert_eq!(v.finish(&path).unwrap(), vec![seg + 1]);
        // A partial last page is not checked; not a relation file: no verifier.
        let mut v = PageVerifier::for_entry("/base/5/16384", start).unwrap();
        v.feed(&seen[PAGE_SIZE..PAGE_SIZE + 100]);
        assert!(v.suspects.is_empty());
        assert!(PageVerifier::for_entry("/global/pg_control", start).is_none());
        assert!(PageVerifier::for_entry("/pg_xact/0000", start).is_none());
    }

    #[test]
    fn corrupt_blocks_field_is_wal_gs() {
        assert_eq!(corrupt_blocks_field(&[], false), None);
        let blocks: Vec<u32> = (0..15).collect();
        let f = corrupt_blocks_field(&blocks, false).unwrap();
        assert_eq!(f.corrupt_blocks_count, 15);
        assert_eq!(f.some_corrupt_blocks, (0..10).collect::<Vec<u32>>());
        assert_eq!(corrupt_blocks_field(&blocks, true).unwrap().some_corrupt_blocks.len(), 15);
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["CorruptBlocksCount"], 15);
        assert_eq!(json["SomeCorruptBlocks"][9], 9);
        let d = describe_corrupt(&[("/base/5/1".into(), vec![3]), ("/base/5/2.1".into(), vec![131072, 131075])], 1);
        assert_eq!(d, "base/5/1 block 3; and 1 more files");
    }

    /// A small PGDATA of checksummed pages (LSNs below 0x5_0000_0000): base/5/16384 block 2 and
    /// base/5/16384.1 block 0 (fork block 131072) are damaged; pg_control and pg_xact are not
    /// pages and never checked.
    fn pgdata(root: &Path) -> std::path::PathBuf {
        let pg = root.join("pgdata");
        for d in ["base/5", "global", "pg_xact", "pg_wal"] {
            std::fs::create_dir_all(pg.join(d)).unwrap();
        }
        let file = |blocks: std::ops::Range<u32>, first: u32| -> Vec<u8> {
            blocks.map(|b| good_page(0x4_0000_0000 + b as u64, b as u8, first + b)).collect::<Vec<_>>().concat()
        };
        let mut rel = file(0..4, 0);
        rel.extend_from_slice(&[0u8; PAGE_SIZE]); // a new page
        rel[2 * PAGE_SIZE + 7000] ^= 0x04;
        std::fs::write(pg.join("base/5/16384"), &rel).unwrap();
        let mut seg1 = file(0..2, RELSEG_SIZE);
        seg1[300] ^= 0xFF;
        std::fs::write(pg.join("base/5/16384.1"), &seg1).unwrap();
        std::fs::write(pg.join("base/5/16384_fsm"), file(0..3, 0)).unwrap();
        std::fs::write(pg.join("global/1262"), file(0..1, 0)).unwrap();
        std::fs::write(pg.join("base/5/PG_VERSION"), "15\n").unwrap();
        std::fs::write(pg.join("PG_VERSION"), "15\n").unwrap();
        std::fs::write(pg.join("global/pg_control"), vec![0x5Au8; 8192]).unwrap();
        std::fs::write(pg.join("pg_xact/0000"), vec![0x55u8; 8192]).unwrap();
        pg
    }

    fn run(cfg: &crate::config::Config, st: &crate::backup::BackupStart) -> crate::Result<(crate::format::FilesMetadata, crate::format::Sentinel)> {
        use crate::backup::{finish, push_data, tests::stop, Progress};
        use crate::format::names::{files_metadata_key, sentinel_key};
        use crate::storage::get_bytes;
        let storage = cfg.open_storage()?;
        let data = push_data(cfg, &storage, st, &Progress::default(), &mut || Ok(()))?;
        finish(cfg, &storage, st, data, &stop())?;
        let fm = get_bytes(storage.as_ref(), &files_metadata_key(&st.name))?.unwrap();
        let s = get_bytes(storage.as_ref(), &sentinel_key(&st.name))?.unwrap();
        Ok((crate::format::FilesMetadata::from_json(&fm, "fm")?, crate::format::Sentinel::from_json(&s, "s")?))
    }

    #[test]
    fn backups_record_corrupt_pages_in_files_metadata() {
        use crate::backup::tests::{cfg, start};
        use crate::codec::Compression;
        let dir = tempfile::tempdir().unwrap();
        let pg = pgdata(dir.path());
        let cfg = cfg(&dir.path().join("bucket"), Compression::Zstd { level: 1 });
        let mut st = start("base_000000010000000500000000", &pg);
        st.start_lsn = 0x5_0000_0000;
        st.data_checksums = true;

        // Also directly: the data phase names the files and their fork block numbers.
        let storage = cfg.open_storage().unwrap();
        let mut probe = st.clone();
        probe.name = "base_000000010000000400000000".into();
        let data = crate::backup::push_data(&cfg, &storage, &probe, &crate::backup::Progress::default(), &mut || Ok(())).unwrap();
        assert_eq!(
            data.corrupt_pages().unwrap(),
            &[("/base/5/16384".to_string(), vec![2]), ("/base/5/16384.1".to_string(), vec![RELSEG_SIZE])][..]
        );

        let (fm, sentinel) = run(&cfg, &st).unwrap();
        let cb = |f: &str| fm.files[f].corrupt_blocks.clone();
        assert_eq!(cb("/base/5/16384"), Some(CorruptBlocks { corrupt_blocks_count: 1, some_corrupt_blocks: vec![2] }));
        assert_eq!(cb("/base/5/16384.1"), Some(CorruptBlocks { corrupt_blocks_count: 1, some_corrupt_blocks: vec![RELSEG_SIZE] }));
        for f in ["/base/5/16384_fsm", "/global/1262", "/pg_xact/0000", "/PG_VERSION"] {
            assert_eq!(cb(f), None, "{f}");
        }
        assert_eq!(sentinel.walg_ext_corrupt_pages, Some(2));
        // As WAL-G writes the field.
        let json: serde_json::Value = serde_json::to_value(&fm).unwrap();
        assert_eq!(json["Files"]["/base/5/16384.1"]["CorruptBlocks"], serde_json::json!({"CorruptBlocksCount": 1, "SomeCorruptBlocks": [131072]}));

        // Not verified: no data checksums, or verification off. Nothing recorded, no count.
        for (checksums, verify, name) in [(false, true, "base_000000010000000600000000"), (true, false, "base_000000010000000700000000")] {
            let mut c = cfg.clone();
            c.verify_page_checksums = verify;
            let mut s = st.clone();
            s.name = name.into();
            s.data_checksums = checksums;
            let (fm, sentinel) = run(&c, &s).unwrap();
            assert!(fm.files.values().all(|d| d.corrupt_blocks.is_none()), "{name}");
            assert_eq!(sentinel.walg_ext_corrupt_pages, None, "{name}");
        }

        // A clean cluster: verified, zero found.
        std::fs::write(pg.join("base/5/16384"), good_page(0x4_0000_0000, 9, 0)).unwrap();
        std::fs::write(pg.join("base/5/16384.1"), good_page(0x4_0000_0000, 9, RELSEG_SIZE)).unwrap();
        let mut s = st.clone();
        s.name = "base_000000010000000800000000".into();
        let (_, sentinel) = run(&cfg, &s).unwrap();
        assert_eq!(sentinel.walg_ext_corrupt_pages, Some(0));
    }

    #[test]
    fn fail_on_corrupt_pages_stops_the_backup_naming_files_and_blocks() {
        use crate::backup::tests::{cfg, start};
        use crate::codec::Compression;
        let dir = tempfile::tempdir().unwrap();
        let pg = pgdata(dir.path());
        let mut cfg = cfg(&dir.path().join("bucket"), Compression::Lz4);
        cfg.fail_on_corrupt_pages = true;
        let mut st = start("base_000000010000000500000000", &pg);
        st.start_lsn = 0x5_0000_0000;
        st.data_checksums = true;
        let err = run(&cfg, &st).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{msg}");
        assert!(msg.contains("base/5/16384 block 2") && msg.contains("base/5/16384.1 block 131072"), "{msg}");
        assert!(msg.contains("fail_on_corrupt_pages"), "{msg}");
        let storage = cfg.open_storage().unwrap();
        assert!(!storage.exists(&crate::format::names::sentinel_key(&st.name)).unwrap());
        // Pages written after the backup started are left to WAL replay: no failure.
        st.start_lsn = 0x4_0000_0000;
        st.name = "base_000000010000000400000000".into();
        let (fm, sentinel) = run(&cfg, &st).unwrap();
        assert_eq!(sentinel.walg_ext_corrupt_pages, Some(0));
        assert!(fm.files.values().all(|d| d.corrupt_blocks.is_none()));
    }

    #[test]
    fn delta_backups_verify_every_page_they_scan() {
        use crate::backup::delta::DeltaBase;
        use crate::backup::tests::{cfg, start};
        use crate::codec::Compression;
        use crate::format::FileDescription;
        let dir = tempfile::tempdir().unwrap();
        let pg = pgdata(dir.path());
        let cfg = cfg(&dir.path().join("bucket"), Compression::Lz4);
        let old = |_: ()| FileDescription {
            is_incremented: false,
            is_skipped: false,
            mtime: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::UNIX_EPOCH),
            updates_count: 0,
            corrupt_blocks: None,
            size: None,
        };
        let mut files = std::collections::BTreeMap::new();
        files.insert("/base/5/16384".to_string(), old(()));
        let mut st = start("base_000000010000000500000000_D_000000010000000480000000", &pg);
        st.start_lsn = 0x5_0000_0000;
        st.data_checksums = true;
        // The base started after every page was written: the increment holds only the new page,
        // yet the damaged block 2 it scanned is reported.
        st.delta = Some(DeltaBase {
            name: "base_000000010000000480000000".into(),
            full_name: "base_000000010000000480000000".into(),
            count: 1,
            start_lsn: 0x4_8000_0000,
            finish_lsn: 0x4_8000_0100,
            start_time: chrono::Utc::now(),
            system_identifier: st.system_identifier.into(),
            files,
        });
        let (fm, _) = run(&cfg, &st).unwrap();
        let d = &fm.files["/base/5/16384"];
        assert!(d.is_incremented);
        assert_eq!(d.size, Some(crate::format::increment::encoded_len(1)));
        assert_eq!(d.corrupt_blocks, Some(CorruptBlocks { corrupt_blocks_count: 1, some_corrupt_blocks: vec![2] }));
        // Not in the base: copied whole, verified the same way.
        assert_eq!(fm.files["/base/5/16384.1"].corrupt_blocks.as_ref().unwrap().some_corrupt_blocks, vec![RELSEG_SIZE]);
    }
}
