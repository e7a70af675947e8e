//! Storage in a local directory. Writes are durable and atomic: temp file in the target
//! directory, fsync, rename, fsync the directory; so a crash never leaves a half object visible.
//!
//! Missing versus unreachable: a read that would answer "not there" (`get` -> None, `exists` ->
//! false, `list` -> fewer keys, `delete` of nothing) first makes sure the root is an existing,
//! readable directory (one `stat` of the root per call); otherwise it is `Error::Unreachable`,
//! saying what to fix. An unmounted share or a typo in the prefix must never read as "no such
//! WAL file" (recovery would end early) or "no backups". Permission errors and a path component
//! that is a file (ENOTDIR) are errors of kind Unreachable too, never "missing".
//!
//! Writes still create a missing root (and every directory below it), as WAL-G does, so that
//! archiving into a fresh prefix works without a setup step. The price: archiving into the mount
//! point of an unmounted share writes to the local disk; reads of such a prefix then see an
//! empty or foreign directory (wal-fetch reports "no wal_005/" as unreachable, see wal/fetch.rs).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::direct::DirectWriter;
use super::{ObjectInfo, ObjectWriter, PendingUpload, Storage};
use crate::error::{Error, Result};

/// Temp files start with this; `list` never shows them, `pending_uploads` lists only them.
/// Full name: `.walg-tmp-<pid>-<n>-<object name>` (the pid is only a hint: storage may be
/// shared by several hosts, so nothing decides from it).
pub const FS_TMP_PREFIX: &str = ".walg-tmp-";
const TMP_PREFIX: &str = FS_TMP_PREFIX;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file read that must deliver the size the file had when opened: objects are replaced by
/// rename (a reader keeps the old inode), so a file that shrinks under a reader was damaged
/// from outside, and ending early would be a silent short read. Reported as UnexpectedEof.
struct SizedRead<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for SizedRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && self.left > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ended {} bytes before its size when opened (truncated while read)", self.left),
            ));
        }
        self.left = self.left.saturating_sub(n as u64);
        Ok(n)
    }
}

pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStorage { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root is an existing directory we can read: the precondition of every "not there".
    fn check_root(&self) -> Result<()> {
        let root = self.root.display();
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::Unreachable(format!(
                    "file storage prefix {root} is not a directory: fix WALG_FILE_PREFIX (walg.file_prefix)"
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::Unreachable(format!(
                    "file storage prefix {root} does not exist (unmounted share? typo?): \
                     create it, mount it or fix WALG_FILE_PREFIX (walg.file_prefix)"
                )))
            }
            Err(e) => {
                return Err(Error::Unreachable(format!(
                    "file storage prefix {root} cannot be used: {e}: fix WALG_FILE_PREFIX (walg.file_prefix) \
                     or the permissions of the path"
                )))
            }
        }
        // Readable and searchable by us (root passes; see tests for how ENOTDIR stands in).
        let c = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Unreachable(format!("file storage prefix {root} contains a NUL byte")))?;
        // SAFETY: access() on a valid NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::X_OK) } != 0 {
            let e = io::Error::last_os_error();
            return Err(Error::Unreachable(format!(
                "file storage prefix {root} is not readable by this user: {e}: fix its permissions or WALG_FILE_PREFIX (walg.file_prefix)"
            )));
        }
        Ok(())
    }

    /// An error of operation `op` on `key`: when the root itself is the trouble (a file, not
    /// there, unreadable), the root's error, which says what to fix.
    fn fail(&self, op: &'static str, key: &str, e: io::Error) -> Error {
        match self.check_root() {
            Err(root) => root,
            Ok(()) => Error::storage(op, key, e),
        }
    }

    /// Map a key to a path, refusing keys that could leave the root.
    fn path(&self, op: &'static str, key: &str) -> Result<PathBuf> {
        let bad = key.is_empty()
            || key.starts_with('/')
            || key.split('/').any(|c| c.is_empty() || c == "." || c == "..");
        if bad {
            return Err(Error::storage(
                op,
                key,
                io::Error::new(io::ErrorKind::InvalidInput, "invalid object key"),
            ));
        }
        Ok(self.root.join(key))
    }
}

impl FsStorage {
    /// Objects (or, with `temps`, only the temp files of unfinished writes) under `prefix`.
    fn walk(&self, prefix: &str, temps: bool) -> Result<Vec<ObjectInfo>> {
        // Start at the deepest directory the prefix names, then filter by the full prefix.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        // Storage must be there before an empty list can mean "nothing here".
        self.check_root()?;
        let start = if dir_part.is_empty() { self.root.clone() } else { self.root.join(dir_part) };
        let mut out = Vec::new();
        let mut stack = vec![(start, dir_part.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::storage("list", rel, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::storage("list", rel.clone(), e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_temp = name.starts_with(TMP_PREFIX);
                let key = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                let meta = match fs::metadata(entry.path()) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // deleted meanwhile
                    Err(e) => return Err(Error::storage("list", key, e)),
                };
                if meta.is_dir() {
                    // Only descend where keys below could still match the prefix.
                    let as_dir = format!("{key}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        stack.push((entry.path(), key));
                    }
                } else if is_temp == temps && key.starts_with(prefix) {
                    let modified = meta.modified().map_err(|e| Error::storage("list", key.clone(), e))?;
                    out.push(ObjectInfo { key, size: meta.len(), modified });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

struct FsWriter {
    key: String,
    tmp: PathBuf,
    dest: PathBuf,
    file: Option<DirectWriter>,
    written: u64,
}

impl Write for FsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("writer used after finish").write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("writer used after finish").flush()
    }
}

impl ObjectWriter for FsWriter {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        let key = self.key.clone();
        let file = self.file.take().expect("finish called twice");
        let commit = || -> io::Result<()> {
            drop(file.finish()?);
            fs::rename(&self.tmp, &self.dest)?;
            fsync_dir(self.dest.parent().unwrap_or(Path::new(".")))
        };
        match commit() {
            Ok(()) => Ok(self.written),
            Err(e) => {
                let _ = fs::remove_file(&self.tmp);
                Err(Error::storage("write", key, e))
            }
        }
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        // Not finished: abort, leaving nothing behind.
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl Storage for FsStorage {
    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        let path = self.path("get", key)?;
        match File::open(&path) {
            Ok(f) => {
                if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
                    self.check_root()?;
                    return Ok(None);
                }
                let size = f.metadata().map(|m| m.len()).map_err(|e| self.fail("get", &key, e))?;
                Ok(Some(Box::new(SizedRead { inner: io::BufReader::with_capacity(256 * 1024, f), left: size })))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.check_root()?;
                Ok(None)
            }
            Err(e) => Err(self.fail("get", &key, e)),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let mut w = self.writer(key)?;
        w.write_all(data).map_err(|e| Error::storage("write", key, e))?;
        w.finish().map(|_| ())
    }

    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        let dest = self.path("write", key)?;
        let dir = dest.parent().expect("key has a parent").to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| self.fail("write", key, e))?;
        let base = dest.file_name().unwrap().to_string_lossy();
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TMP_PREFIX}{}-{n}-{base}", std::process::id()));
        let file = DirectWriter::create_new(&tmp).map_err(|e| Error::storage("write", key, e))?;
        Ok(Box::new(FsWriter {
            key: key.to_string(),
            tmp,
            dest,
            file: Some(file),
            written: 0,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.walk(prefix, false)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path("stat", key)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(true),
            Ok(_) => self.check_root().map(|()| false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.check_root().map(|()| false),
            Err(e) => Err(self.fail("stat", &key, e)),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path("delete", key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            // Nothing to delete, but only if the storage is really there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.check_root(),
            Err(e) => Err(self.fail("delete", &key, e)),
        }
    }

    fn prepare_write(&self) -> Result<()> {
        fs::create_dir_all(&self.root).map_err(|e| self.fail("write", "", e))?;
        self.check_root()
    }

    /// The root is checked first, so `Ok(false)` means the directory is not there.
    fn has_dir(&self, dir: &str) -> Result<bool> {
        self.check_root()?;
        let dir = dir.trim_end_matches('/');
        if dir.is_empty() {
            return Ok(true);
        }
        let path = self.path("stat", dir)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(m.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::storage("stat", dir, e)),
        }
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        Ok(self
            .walk(prefix, true)?
            .into_iter()
            .map(|o| PendingUpload { key: o.key, upload_id: String::new(), last_activity: o.modified, size: o.size })
            .collect())
    }

    fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        // Only ever a temp file: a caller's mistake must not delete an object.
        let name = upload.key.rsplit('/').next().unwrap_or("");
        if !name.starts_with(TMP_PREFIX) {
            return Err(Error::Internal(format!("{} is not an unfinished upload (no {TMP_PREFIX} name)", upload.key)));
        }
        self.delete(&upload.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::storage::get_bytes;

    /// Every read that could answer "not there" fails as unreachable, with `what` in the message.
    fn assert_unreachable(s: &FsStorage, what: &str) {
        let checks: Vec<(&str, Result<()>)> = vec![
            ("get", s.get("wal_005/000000010000000000000001").map(|_| ())),
            ("exists", s.exists("wal_005/000000010000000000000001").map(|_| ())),
            ("list", s.list("").map(|_| ())),
            ("list wal_005/", s.list("wal_005/").map(|_| ())),
            ("has_dir", s.has_dir("wal_005/").map(|_| ())),
            ("delete", s.delete("wal_005/000000010000000000000001")),
        ];
        for (op, r) in checks {
            let e = r.expect_err(op);
            assert_eq!(e.kind(), ErrorKind::Unreachable, "{op}: {e}");
            let msg = e.to_string();
            assert!(msg.contains("storage unreachable") && msg.contains(what), "{op}: {msg}");
            assert!(msg.contains("WALG_FILE_PREFIX"), "says what to fix: {msg}");
        }
    }

    #[test]
    fn missing_root_is_unreachable_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new(dir.path().join("not-mounted"));
        assert_unreachable(&s, "does not exist");
        // Readers never create it.
        assert!(!dir.path().join("not-mounted").exists());
        // A writer does: archiving into a fresh prefix works.
        s.put("wal_005/x", b"1").unwrap();
        assert!(s.exists("wal_005/x").unwrap());
        assert!(!s.exists("wal_005/y").unwrap(), "now storage answers: not there");
    }

    #[test]
    fn root_that_is_a_file_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        fs::write(&file, b"x").unwrap();
        assert_unreachable(&FsStorage::new(&file), "is not a directory");
        // A path under a file (ENOTDIR), the way an unreadable prefix shows up when the tests
        // run as root (root reads any directory whatever its mode, so chmod 000 proves nothing).
        let under = FsStorage::new(file.join("walg"));
        assert_unreachable(&under, "cannot be used");
        assert!(under.put("wal_005/x", b"1").is_err(), "nor can a writer create it");
        assert_eq!(under.prepare_write().unwrap_err().kind(), ErrorKind::Unreachable);
    }

    #[test]
    fn unreadable_root_is_unreachable_for_other_users() {
        // Only meaningful when not root: root passes access() checks on any directory.
        if unsafe { libc::geteuid() } == 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("locked");
        fs::create_dir(&root).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o000)).unwrap();
        assert_unreachable(&FsStorage::new(&root), "not readable");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn a_subdirectory_that_is_a_file_is_an_error_not_missing() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new(dir.path());
        fs::write(dir.path().join("wal_005"), b"x").unwrap();
        let e = s.get("wal_005/000000010000000000000001").map(|_| ()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
        let e = s.exists("wal_005/000000010000000000000001").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
        assert!(!s.has_dir("wal_005/").unwrap(), "a file named wal_005 is no wal_005/ directory");
    }

    #[test]
    fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new(dir.path().join("store"));
        // Not created yet: unreachable for readers; a writer creates it.
        assert_eq!(get_bytes(&s, "a/b.json").unwrap_err().kind(), ErrorKind::Unreachable);
        s.prepare_write().unwrap();
        assert!(get_bytes(&s, "a/b.json").unwrap().is_none());
        assert!(!s.exists("a/b.json").unwrap());
        assert!(!s.has_dir("a/").unwrap());
        s.put("a/b.json", b"hello").unwrap();
        assert!(s.has_dir("a/").unwrap() && s.has_dir("a").unwrap());
        assert!(!s.has_dir("a/b.json").unwrap(), "a file is not a directory");
        s.put("a/c/d", b"x").unwrap();
        s.put("ab", b"y").unwrap();
        s.put("a/b.json", b"hello2").unwrap(); // atomic replace
        assert_eq!(get_bytes(&s, "a/b.json").unwrap().unwrap(), b"hello2");
        assert!(s.exists("a/c/d").unwrap());
        assert!(!s.exists("a/c").unwrap(), "a directory is not an object");
        let keys: Vec<_> = s.list("a/").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, vec!["a/b.json", "a/c/d"]);
        let keys: Vec<_> = s.list("a").unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, vec!["a/b.json", "a/c/d", "ab"]);
        let all = s.list("").unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all.iter().find(|o| o.key == "a/b.json").unwrap().size, 6);
        assert!(s.list("zzz/").unwrap().is_empty());
        s.delete("a/b.json").unwrap();
        s.delete("a/b.json").unwrap(); // missing is Ok
        assert!(!s.exists("a/b.json").unwrap());
        assert!(s.put("../escape", b"no").is_err());
        assert!(s.put("/abs", b"no").is_err());
        assert!(s.describe().starts_with("file://"));
    }

    #[test]
    fn aborted_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new(dir.path());
        let mut w = s.writer("x/part_001.tar.lz4").unwrap();
        w.write_all(&vec![7u8; 100_000]).unwrap();
        // While writing, nothing is visible either.
        assert!(!s.exists("x/part_001.tar.lz4").unwrap());
        assert!(s.list("").unwrap().is_empty());
        drop(w);
        assert!(s.list("").unwrap().is_empty());
        let leftover: Vec<_> = fs::read_dir(dir.path().join("x")).unwrap().collect();
        assert!(leftover.is_empty(), "temp file left behind: {leftover:?}");

        let mut w = s.writer("x/ok").unwrap();
        w.write_all(b"abc").unwrap();
        assert_eq!(w.finish().unwrap(), 3);
        assert_eq!(get_bytes(&s, "x/ok").unwrap().unwrap(), b"abc");
    }
}
