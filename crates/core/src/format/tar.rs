//! Tar as WAL-G writes it (entry names "/" + path relative to PGDATA, GNU long names) and safe
//! extraction: only regular files and directories, nothing may land outside the target.
//!
//! Extraction requires the end-of-archive marker (two zero blocks): a tar stream that simply
//! stops at an entry boundary (an object cut at a block boundary, or at a compression frame
//! boundary that still decodes) is an error, never a shorter restore. So is an entry whose data
//! ends early.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

use crate::codec::read_error;
use crate::error::{Error, Result};

/// A tar builder that keeps the leading "/" WAL-G puts on entry names.
pub fn builder<W: Write>(w: W) -> Builder<W> {
    let mut b = Builder::new(w);
    b.preserve_absolute(true);
    b
}

/// GNU header of a regular file.
pub fn file_header(size: u64, mode: u32, mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_size(size);
    h.set_mode(mode & 0o7777);
    h.set_mtime(mtime);
    h
}

/// GNU header of a directory.
pub fn dir_header(mode: u32, mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Directory);
    h.set_size(0);
    h.set_mode(mode & 0o7777);
    h.set_mtime(mtime);
    h
}

/// Append an entry named `name` (kept as is, leading "/" included); `data` must yield exactly
/// the header's size.
pub fn append<W: Write, R: Read>(b: &mut Builder<W>, header: &mut Header, name: &str, data: R) -> io::Result<()> {
    b.append_data(header, name, data)
}

/// Write only the header of an entry named `name` (with its GNU long-name entry if needed); the
/// caller then writes exactly the header's size of data to `b.get_mut()`, then `padding(size)`.
/// This lets big files stream through the caller's large buffer rather than the tar crate's
/// 8 KiB copy loop (one memory copy less per byte).
pub fn append_header<W: Write>(b: &mut Builder<W>, header: &mut Header, name: &str) -> io::Result<()> {
    // With no data the builder copies 0 bytes and so adds no padding: only the header(s) go out.
    b.append_data(header, name, io::empty())
}

/// The zeros that end an entry of `size` data bytes on a 512-byte boundary.
pub fn padding(size: u64) -> &'static [u8] {
    static ZEROS: [u8; 512] = [0; 512];
    &ZEROS[..((512 - size % 512) % 512) as usize]
}

/// Bytes a tar entry of `size` data bytes takes (header + data padded to 512), not counting
/// long-name extension entries.
pub fn entry_size(size: u64) -> u64 {
    512 + size.div_ceil(512) * 512
}

/// What an extraction wrote.
#[derive(Debug, Default)]
pub struct ExtractStats {
    /// Entry names as stored in the tar (every entry seen, written or skipped).
    pub names: Vec<String>,
    pub files: u64,
    pub bytes: u64,
    /// Regular files written or patched (entry name, size of the file afterwards).
    pub written: Vec<(String, u64)>,
}

/// What to do with one entry of a tar being extracted (a delta chain's restore takes only the
/// entries a newer backup still needs from an older one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryAction {
    /// Read past it (its bytes still stream through every check).
    Skip,
    /// Write it as it is: a file replaces what is there, a directory is created.
    Whole,
    /// The entry is a "wi1" increment: patch the file already restored (format/increment.rs).
    Increment,
    /// Write an empty file in its place (partial restore, backup/partial.rs); its bytes are read
    /// past as for `Skip`.
    Placeholder,
}

/// Relative path of an entry inside the target: leading "/" and "." ignored, ".." refused.
/// `Ok(None)` for the target itself ("/" or ".").
fn safe_relative(name: &[u8]) -> std::result::Result<Option<PathBuf>, &'static str> {
    let mut out = PathBuf::new();
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err("has a '..' component"),
            c if c.contains(&0) => return Err("contains a NUL byte"),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

pub(crate) fn create_parents(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(|e| Error::io(parent, e))?;
    }
    Ok(())
}

/// Extract `r` into `target` (regular files and directories only), refusing entries that would
/// escape it. Names with or without a leading "/" are relative to `target`. Returns entry names.
pub fn extract_tar(r: impl Read, target: &Path, fsync: bool) -> Result<Vec<String>> {
    extract_tar_from(r, target, fsync, "tar stream").map(|s| s.names)
}

/// Remembers whether the stream below has reported its end: the tar crate takes an end of
/// stream where a header should be as the end of the archive, just as it takes a zero block.
struct EndWatch<R> {
    inner: R,
    ended: bool,
}

impl<R: Read> Read for EndWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ended = true;
        }
        Ok(n)
    }
}

/// After the tar crate stopped: it must have stopped at a zero block (the stream had not ended)
/// and the next block must be zeros too.
fn check_end_marker<R: Read>(w: &mut EndWatch<R>, source: &str) -> Result<()> {
    let cut = || {
        Error::corrupt(
            source,
            "the tar stream ends without its end-of-archive marker (two zero blocks): the object is truncated",
        )
    };
    if w.ended {
        return Err(cut());
    }
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < block.len() {
        match w.read(&mut block[got..]) {
            Ok(0) => return Err(cut()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(source, e)),
        }
    }
    if block.iter().any(|&b| b != 0) {
        return Err(Error::corrupt(source, "a zero block inside the tar stream is followed by data, not by the end-of-archive marker"));
    }
    Ok(())
}

/// `extract_tar` with `source` (e.g. the object key) named in errors, returning counts too.
pub fn extract_tar_from(r: impl Read, target: &Path, fsync: bool, source: &str) -> Result<ExtractStats> {
    extract_tar_with(r, target, fsync, source, &|_, _| EntryAction::Whole)
}

/// `extract_tar_from`, asking `decide(entry name, is a directory)` what to do with each entry.
/// Safety checks (names, entry types, the end marker) apply to every entry, skipped or not.
pub fn extract_tar_with(
    r: impl Read,
    target: &Path,
    fsync: bool,
    source: &str,
    decide: &(dyn Fn(&str, bool) -> EntryAction + Sync),
) -> Result<ExtractStats> {
    let mut archive = tar::Archive::new(EndWatch { inner: r, ended: false });
    let mut stats = ExtractStats::default();
    let entries = archive.entries().map_err(|e| read_error(source, e))?;
    let mut buf = vec![0u8; 256 * 1024];
    for entry in entries {
        let mut entry = entry.map_err(|e| read_error(source, e))?;
        let name_bytes = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&name_bytes).into_owned();
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            continue; // pax global header: metadata only
        }
        let refuse = |why: &str| Error::Format(format!("refusing tar entry {name:?} in {source}: {why}"));
        let rel = safe_relative(&name_bytes).map_err(refuse)?;
        let mode = entry.header().mode().unwrap_or(0o600);
        let action = match kind {
            EntryType::Directory | EntryType::Regular | EntryType::Continuous => decide(&name, kind == EntryType::Directory),
            _ => EntryAction::Whole, // refused below in any case
        };
        match kind {
            _ if action == EntryAction::Skip => {}
            EntryType::Regular | EntryType::Continuous if action == EntryAction::Placeholder => {
                let rel = rel.ok_or_else(|| refuse("a file cannot replace the target directory"))?;
                let path = target.join(rel);
                create_parents(&path)?;
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(mode & 0o7777)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                stats.files += 1;
                stats.written.push((name.clone(), 0));
            }
            EntryType::Directory if action == EntryAction::Increment => {
                return Err(Error::corrupt(source, format!("entry {name:?} is a directory, but recorded as an increment")));
            }
            EntryType::Regular | EntryType::Continuous if action == EntryAction::Increment => {
                let rel = rel.ok_or_else(|| refuse("a file cannot replace the target directory"))?;
                let path = target.join(rel);
                let file = match OpenOptions::new().write(true).open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(Error::corrupt(
                            source,
                            format!("increment {name:?} has no earlier version of its file to patch (the delta chain is inconsistent)"),
                        ))
                    }
                    Err(e) => return Err(Error::io(&path, e)),
                };
                let applied = crate::format::increment::apply(&mut entry, &file, &path, source, &name)?;
                if fsync {
                    file.sync_all().map_err(|e| Error::io(&path, e))?;
                }
                stats.bytes += applied.pages * crate::format::increment::PAGE_SIZE as u64;
                stats.files += 1;
                stats.written.push((name.clone(), applied.file_size));
            }
            EntryType::Directory => {
                let Some(rel) = rel else { continue }; // the target itself
                let path = target.join(rel);
                DirBuilder::new().recursive(true).mode(0o700).create(&path).map_err(|e| Error::io(&path, e))?;
                fs::set_permissions(&path, fs::Permissions::from_mode((mode & 0o7777) | 0o700))
                    .map_err(|e| Error::io(&path, e))?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let rel = rel.ok_or_else(|| refuse("a file cannot replace the target directory"))?;
                let path = target.join(rel);
                create_parents(&path)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                let want = entry.header().size().map_err(|e| read_error(source, e))?;
                let mut written = 0u64;
                loop {
                    let n = match entry.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(read_error(source, e)),
                    };
                    file.write_all(&buf[..n]).map_err(|e| Error::io(&path, e))?;
                    written += n as u64;
                }
                if written != want {
                    return Err(Error::corrupt(
                        source,
                        format!("tar entry {name:?} ends after {written} of its {want} bytes: the object is truncated"),
                    ));
                }
                stats.bytes += written;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(|e| Error::io(&path, e))?;
                if fsync {
                    file.sync_all().map_err(|e| Error::io(&path, e))?;
                }
                stats.files += 1;
                stats.written.push((name.clone(), written));
            }
            EntryType::Symlink => return Err(refuse("symbolic links are not allowed")),
            EntryType::Link => return Err(refuse("hard links are not allowed")),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(refuse("device and fifo entries are not allowed"))
            }
            other => return Err(refuse(&format!("unsupported entry type {other:?}"))),
        }
        stats.names.push(name);
    }
    check_end_marker(&mut archive.into_inner(), source)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar holding one entry with a raw name and type, written without the tar crate's checks.
    fn raw_tar(name: &str, kind: EntryType, data: &[u8]) -> Vec<u8> {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if kind == EntryType::Symlink {
            h.set_link_name("/etc/passwd").unwrap();
        }
        h.set_cksum();
        let mut b = Builder::new(Vec::new());
        b.append(&h, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn write_and_extract_round_trip() {
        let long = format!("/base/{}/1259", "d".repeat(150));
        let mut b = builder(Vec::new());
        append(&mut b, &mut dir_header(0o700, 0), "/base", io::empty()).unwrap();
        append(&mut b, &mut file_header(5, 0o600, 1_700_000_000), "/base/5/1259", &b"hello"[..]).unwrap();
        append(&mut b, &mut file_header(3, 0o640, 0), &long, &b"abc"[..]).unwrap();
        append(&mut b, &mut file_header(0, 0o600, 0), "backup_label", io::empty()).unwrap();
        append(&mut b, &mut dir_header(0o755, 0), "/pg_wal", io::empty()).unwrap();
        let data = b.into_inner().unwrap();
        // The stored name keeps the leading slash, as WAL-G writes it.
        assert!(data.windows(13).any(|w| w == b"/base/5/1259\0"));

        let dir = tempfile::tempdir().unwrap();
        let stats = extract_tar_from(&data[..], dir.path(), true, "part_001.tar").unwrap();
        assert_eq!(stats.names, vec!["/base", "/base/5/1259", long.as_str(), "backup_label", "/pg_wal"]);
        assert_eq!(stats.files, 3);
        assert_eq!(stats.bytes, 8);
        assert_eq!(fs::read(dir.path().join("base/5/1259")).unwrap(), b"hello");
        assert_eq!(fs::read(dir.path().join(&long[1..])).unwrap(), b"abc");
        let mode = fs::metadata(dir.path().join(&long[1..])).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(dir.path().join("pg_wal").is_dir());
        let dmode = fs::metadata(dir.path().join("base/5")).unwrap().permissions().mode() & 0o777;
        assert_eq!(dmode, 0o700);
    }

    #[test]
    fn a_tar_without_its_end_marker_is_truncated() {
        let mut b = builder(Vec::new());
        append(&mut b, &mut file_header(600, 0o600, 0), "/a", &[7u8; 600][..]).unwrap();
        append(&mut b, &mut file_header(8192, 0o600, 0), "/zeros", &[0u8; 8192][..]).unwrap();
        let data = b.into_inner().unwrap();
        let end = data.len() - 1024; // the two zero blocks the builder writes last
        assert!(data[end..].iter().all(|&b| b == 0));
        let dir = tempfile::tempdir().unwrap();
        extract_tar_from(&data[..], &dir.path().join("ok"), false, "whole.tar").unwrap();
        // Cut at every block boundary before the marker (the last file's data ends in zeros,
        // so only the reader's end of stream tells a cut from the marker), and inside blocks.
        let mut cuts: Vec<usize> = (0..=end / 512).map(|i| i * 512).collect();
        cuts.extend([end + 512, 100, 1000, end - 1, end + 700]);
        for cut in cuts {
            let t = dir.path().join(format!("cut{cut}"));
            let err = extract_tar_from(&data[..cut], &t, false, "part_003.tar").unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "cut {cut}: {err}");
            assert!(err.to_string().contains("part_003.tar"), "cut {cut}: {err}");
        }
    }

    #[test]
    fn refuses_escapes_and_links() {
        for (name, kind) in [
            ("../x", EntryType::Regular),
            ("/../../etc/x", EntryType::Regular),
            ("base/../../x", EntryType::Regular),
            ("..", EntryType::Directory),
            ("/base/link", EntryType::Symlink),
            ("/base/hard", EntryType::Link),
            ("/dev/sda", EntryType::Block),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("t");
            fs::create_dir(&target).unwrap();
            let err = extract_tar_from(&raw_tar(name, kind, b"evil")[..], &target, false, "part_007.tar.lz4")
                .unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::Format(_)), "{name}: {msg}");
            assert!(msg.contains(name) && msg.contains("part_007.tar.lz4"), "{msg}");
            assert!(!dir.path().join("x").exists() && !target.join("base/link").exists());
        }
        // An absolute name is taken relative to the target.
        let dir = tempfile::tempdir().unwrap();
        extract_tar(&raw_tar("/etc/x", EntryType::Regular, b"ok")[..], dir.path(), false).unwrap();
        assert_eq!(fs::read(dir.path().join("etc/x")).unwrap(), b"ok");
    }
}
