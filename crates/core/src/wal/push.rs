//! wal-push: archive one WAL file (segment, history, .backup, .partial) into wal_005/.
//! Streams: memory stays small whatever the file size.
//!
//! When an object with the same name exists (any codec extension):
//! - identical decoded content is a success (`AlreadyArchived`: the archiver retried);
//! - `.history` files are never overwritten: different content is a `Conflict`;
//! - WAL segments and `.backup` files: different content is a `Conflict` (a second cluster
//!   archiving into the same prefix, or a real divergence: a human must look);
//! - `.partial` files are overwritten (`Overwritten`, which the caller logs as a WARNING). Two
//!   promotions out of the same old-timeline segment each archive their own `<seg>.partial`
//!   with the same name and different content; recovery never reads `.partial` files (it
//!   follows the new timeline's history instead), and refusing would make PostgreSQL retry
//!   that file forever while pg_wal fills up. WAL-G overwrites them too. A stored `.partial`
//!   that cannot even be decoded is overwritten as well; one that cannot be read because
//!   storage is unreachable is an error as for any other file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use super::{check_file_name, find_object, PushOutcome};
use crate::codec::{read_error, Pipeline};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::format::names::WAL_PREFIX;
use crate::storage::Storage;

const CHUNK: usize = 1 << 20;

/// Archive `path` as `wal_005/<file_name>.<ext>`. An existing object with the same content is a
/// success; with different content a `Conflict`, except for `.partial` files, which are replaced
/// (see the module header).
pub fn push(cfg: &Config, storage: &dyn Storage, file_name: &str, path: &Path) -> Result<PushOutcome> {
    push_with(&cfg.pipeline(), storage, file_name, path)
}

/// `push` with an explicit pipeline (compression and key).
pub fn push_with(pipeline: &Pipeline, storage: &dyn Storage, file_name: &str, path: &Path) -> Result<PushOutcome> {
    check_file_name(file_name)?;
    let name = format!("{WAL_PREFIX}{file_name}");
    let open_local = || File::open(path).map_err(|e| Error::io(path, e));
    // A fresh file prefix is created here: the probe below must not read it as unreachable.
    storage.prepare_write()?;
    let mut previous = None;
    if let Some(key) = find_object(storage, &name)? {
        if let Some(stored) = pipeline.open(storage, &key)? {
            let same = same_content(stored, &key, open_local()?, path);
            match same {
                Ok(true) => return Ok(PushOutcome::AlreadyArchived { key }),
                Ok(false) if is_partial(file_name) => previous = Some(key),
                Err(e) if is_partial(file_name) && e.kind() == ErrorKind::Corrupt => previous = Some(key),
                Ok(false) => {
                    return Err(Error::Conflict(format!(
                        "{file_name} is already archived with different content as {key} in {}; refusing to overwrite",
                        storage.describe()
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }
    let mut local = open_local()?;
    let (key, mut w) = pipeline.create(storage, &name)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = read_full(&mut local, &mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).map_err(|e| Error::storage("write", key.clone(), e))?;
    }
    let bytes = w.finish()?;
    match previous {
        None => Ok(PushOutcome::Uploaded { key, bytes }),
        Some(previous) => {
            // Written under another codec's extension: the old object must go, or readers
            // probing extensions in order could still find it first.
            if previous != key {
                storage.delete(&previous)?;
            }
            Ok(PushOutcome::Overwritten { key, bytes, previous })
        }
    }
}

/// `<24 hex>.partial`: a partial segment left by a promotion.
fn is_partial(file_name: &str) -> bool {
    file_name.ends_with(".partial")
}

/// Compare a stored object's decoded content with a local file, chunk by chunk.
fn same_content(mut stored: Box<dyn Read + Send>, key: &str, mut local: File, path: &Path) -> Result<bool> {
    let mut a = vec![0u8; CHUNK];
    let mut b = vec![0u8; CHUNK];
    loop {
        let n = read_full(&mut stored, &mut a).map_err(|e| read_error(key, e))?;
        let m = read_full(&mut local, &mut b).map_err(|e| Error::io(path, e))?;
        if n != m || a[..n] != b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Read until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
