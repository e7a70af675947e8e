//! wal-fetch: restore one WAL file from storage, atomically, for restore_command. Nothing is
//! put in place unless the decoded file passes `WalCheck` (segment size and first page header,
//! history syntax) and every check of the object's own stream (frame/chunk checksums).
//!
//! "Not in storage" (Ok(false), exit 1 for restore_command: PostgreSQL then ends recovery or
//! tries the next source) is said only when the storage was reached and answered so: the
//! object is absent, the prefix is a readable directory (or the S3 bucket answered NoSuchKey)
//! and `wal_005/` exists there. An absent `wal_005/` under a reachable prefix means nothing was
//! ever archived here or the prefix is wrong: an error of kind Unreachable, so recovery stops
//! instead of promoting early.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::check::WalCheck;
use super::{check_file_name, find_object};
use crate::codec::{read_error, Pipeline};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::names::WAL_PREFIX;
use crate::storage::Storage;

pub(crate) fn temp_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".walg-tmp");
    dest.with_file_name(name)
}

/// Restore `wal_005/<file_name>` to `dest` (atomically: temp file, fsync, rename), decoded with
/// `cfg`'s key. Ok(false) only when no object with that name (any extension) exists in a
/// reachable storage whose `wal_005/` exists (see the module header).
pub fn fetch(cfg: &Config, storage: &dyn Storage, file_name: &str, dest: &Path) -> Result<bool> {
    fetch_with(&cfg.pipeline(), storage, file_name, dest)
}

/// `fetch` with an explicit pipeline (only its key matters for reading).
pub fn fetch_with(pipeline: &Pipeline, storage: &dyn Storage, file_name: &str, dest: &Path) -> Result<bool> {
    fetch_observed(pipeline, storage, file_name, dest, &mut |_| {})
}

/// `fetch_with`, handing every decoded chunk to `observe` as it is written (the prefetcher
/// digests the verified bytes this way). `observe` sees exactly the bytes that end up in `dest`.
pub(crate) fn fetch_observed(
    pipeline: &Pipeline,
    storage: &dyn Storage,
    file_name: &str,
    dest: &Path,
    observe: &mut dyn FnMut(&[u8]),
) -> Result<bool> {
    check_file_name(file_name)?;
    let Some(key) = find_object(storage, &format!("{WAL_PREFIX}{file_name}"))? else {
        return confirm_missing(storage);
    };
    // Deleted between the probe and the read: still an answer from storage.
    let Some(mut r) = pipeline.open(storage, &key)? else { return confirm_missing(storage) };
    let tmp = temp_path(dest);
    let mut check = WalCheck::new(file_name, &key);
    // Without a key, an encrypted object may decompress into garbage rather than fail: then the
    // content check is what fails, and it gets the same hint as a decoder error.
    let maybe_encrypted = !pipeline.is_encrypted() && !crate::codec::extension_of(&key).is_empty();
    let hint = |e: Error| match e {
        Error::Corrupt { object, msg } if maybe_encrypted => Error::Corrupt {
            object,
            msg: format!("{msg} (maybe the object is encrypted: {})", crate::codec::crypto::KEY_HINT),
        },
        other => other,
    };
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
            check.feed(&buf[..n]).map_err(hint)?;
            observe(&buf[..n]);
            f.write_all(&buf[..n]).map_err(|e| Error::io(&tmp, e))?;
        }
        check.finish().map_err(hint)?;
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
    result.map(|()| true).map_err(|e| pipeline.explain(e))
}

/// Ok(false) when `wal_005/` is there (so the storage answered "no such file"), else an error
/// saying that this prefix holds no WAL archive at all.
fn confirm_missing(storage: &dyn Storage) -> Result<bool> {
    if storage.has_dir(WAL_PREFIX)? {
        return Ok(false);
    }
    Err(Error::Unreachable(format!(
        "no {WAL_PREFIX} under {}: nothing was ever archived here, or the prefix is wrong \
         (fix WALG_FILE_PREFIX / WALG_S3_PREFIX)",
        storage.describe()
    )))
}
