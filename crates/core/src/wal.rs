//! WAL archiving: push a segment/history file to wal_005/, fetch it back for restore_command.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::codec::{compress_bytes, decompress_reader, extension_of, read_error, READ_EXTENSIONS};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::names::WAL_PREFIX;
use crate::storage::Storage;

#[derive(Clone, Debug, PartialEq)]
pub enum PushOutcome {
    Uploaded { key: String, bytes: u64 },
    /// An object with identical content was already there (e.g. the archiver retried).
    AlreadyArchived { key: String },
}

fn check_file_name(file_name: &str) -> Result<()> {
    if file_name.is_empty() || file_name.contains('/') || file_name == "." || file_name == ".." {
        return Err(Error::Format(format!("invalid WAL file name {file_name:?}")));
    }
    Ok(())
}

/// The existing object for `prefix_and_name` (e.g. "wal_005/000000010000000000000001"), probing
/// every known compression extension, then the bare name.
pub fn find_object(storage: &dyn Storage, prefix_and_name: &str) -> Result<Option<String>> {
    for ext in READ_EXTENSIONS {
        let key = if ext.is_empty() { prefix_and_name.to_string() } else { format!("{prefix_and_name}.{ext}") };
        if storage.exists(&key)? {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

/// Open an object and decompress it according to its key's extension; `None` if it vanished.
pub fn open_decoded(storage: &dyn Storage, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
    let Some(raw) = storage.get(key)? else { return Ok(None) };
    decompress_reader(extension_of(key), key, raw).map(Some)
}

/// Archive `path` as `wal_005/<file_name>.<ext>`. An existing object with the same content is a
/// success; with different content a `Conflict` (history files are never overwritten).
pub fn push(cfg: &Config, storage: &dyn Storage, file_name: &str, path: &Path) -> Result<PushOutcome> {
    check_file_name(file_name)?;
    // WAL segments are 16 MiB by default: reading them whole is fine.
    let local = fs::read(path).map_err(|e| Error::io(path, e))?;
    let name = format!("{WAL_PREFIX}{file_name}");
    if let Some(key) = find_object(storage, &name)? {
        if let Some(mut r) = open_decoded(storage, &key)? {
            let mut stored = Vec::with_capacity(local.len());
            r.read_to_end(&mut stored).map_err(|e| read_error(&key, e))?;
            if stored == local {
                return Ok(PushOutcome::AlreadyArchived { key });
            }
            return Err(Error::Conflict(format!(
                "{file_name} is already archived with different content as {key} in {}; refusing to overwrite",
                storage.describe()
            )));
        }
    }
    let key = cfg.compression.object_name(&name);
    let packed = compress_bytes(cfg.compression, &local)?;
    storage.put(&key, &packed)?;
    Ok(PushOutcome::Uploaded { key, bytes: packed.len() as u64 })
}

fn temp_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".walg-tmp");
    dest.with_file_name(name)
}

/// Restore `wal_005/<file_name>` to `dest` (atomically: temp file, fsync, rename).
/// Ok(false) only when no object with that name (any extension) exists.
pub fn fetch(storage: &dyn Storage, file_name: &str, dest: &Path) -> Result<bool> {
    check_file_name(file_name)?;
    let Some(key) = find_object(storage, &format!("{WAL_PREFIX}{file_name}"))? else { return Ok(false) };
    let Some(mut r) = open_decoded(storage, &key)? else { return Ok(false) };
    let tmp = temp_path(dest);
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(&key, e)),
            };
            f.write_all(&buf[..n]).map_err(|e| Error::io(&tmp, e))?;
        }
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Compression;
    use crate::storage::FsStorage;

    fn setup() -> (tempfile::TempDir, FsStorage, Config) {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage::new(dir.path().join("bucket"));
        let cfg = Config::for_file_storage(dir.path().join("bucket"));
        (dir, storage, cfg)
    }

    #[test]
    fn push_twice_is_already_archived_and_different_is_conflict() {
        let (dir, s, cfg) = setup();
        let seg = dir.path().join("000000010000000000000001");
        let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&seg, &content).unwrap();
        let out = push(&cfg, &s, "000000010000000000000001", &seg).unwrap();
        assert!(matches!(&out, PushOutcome::Uploaded { key, .. } if key == "wal_005/000000010000000000000001.lz4"));
        assert_eq!(
            push(&cfg, &s, "000000010000000000000001", &seg).unwrap(),
            PushOutcome::AlreadyArchived { key: "wal_005/000000010000000000000001.lz4".into() }
        );
        fs::write(&seg, b"different").unwrap();
        let err = push(&cfg, &s, "000000010000000000000001", &seg).unwrap_err();
        assert!(matches!(err, Error::Conflict(_)));
        assert!(err.to_string().contains("already archived with different content"));

        // History files are never overwritten, whatever the compression of the existing copy.
        let hist = dir.path().join("00000002.history");
        fs::write(&hist, b"1\t0/3000000\tno recovery target specified\n").unwrap();
        let zcfg = Config { compression: Compression::Zstd { level: 3 }, ..cfg.clone() };
        assert!(matches!(push(&zcfg, &s, "00000002.history", &hist).unwrap(), PushOutcome::Uploaded { .. }));
        assert!(matches!(push(&cfg, &s, "00000002.history", &hist).unwrap(), PushOutcome::AlreadyArchived { .. }));
        fs::write(&hist, b"changed").unwrap();
        assert!(matches!(push(&cfg, &s, "00000002.history", &hist), Err(Error::Conflict(_))));
        assert!(s.exists("wal_005/00000002.history.zst").unwrap());
        assert!(!s.exists("wal_005/00000002.history.lz4").unwrap());
    }

    #[test]
    fn fetch_round_trip_missing_and_corrupt() {
        let (dir, s, cfg) = setup();
        let seg = dir.path().join("src");
        let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        fs::write(&seg, &content).unwrap();
        for c in [Compression::Lz4, Compression::Zstd { level: 3 }, Compression::None] {
            let name = format!("0000000100000000000000{:02X}", c.name().len());
            push(&Config { compression: c, ..cfg.clone() }, &s, &name, &seg).unwrap();
            let dest = dir.path().join(format!("restored-{}", c.name()));
            assert!(fetch(&s, &name, &dest).unwrap());
            assert_eq!(fs::read(&dest).unwrap(), content, "{c:?}");
            assert!(!temp_path(&dest).exists());
        }
        let dest = dir.path().join("missing");
        assert!(!fetch(&s, "0000000100000000000000FF", &dest).unwrap());
        assert!(!dest.exists());

        s.put("wal_005/0000000100000000000000EE.lz4", b"not lz4 at all").unwrap();
        let dest = dir.path().join("corrupt");
        let err = fetch(&s, "0000000100000000000000EE", &dest).unwrap_err();
        assert!(err.to_string().contains("0000000100000000000000EE"), "{err}");
        assert!(!dest.exists() && !temp_path(&dest).exists());

        s.put("wal_005/0000000100000000000000DD.br", b"x").unwrap();
        let err = fetch(&s, "0000000100000000000000DD", &dir.path().join("br")).unwrap_err();
        assert!(err.to_string().contains("brotli not supported yet"), "{err}");
        assert!(fetch(&s, "../etc", &dir.path().join("x")).is_err());
    }
}
