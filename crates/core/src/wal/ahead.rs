//! The archiver's look-ahead, as WAL-G's wal-push does it: while archiving the file PostgreSQL
//! asks for, upload the next `.ready` files in parallel, so that later calls for them return at
//! once. PostgreSQL's archiver is one process calling one file at a time; this is how it keeps
//! up with a busy server.
//!
//! Each thread that archived a WAL segment then stores its changed-block map (segment_map.rs),
//! after the upload and never changing its outcome; what went wrong there is kept in
//! [`Archiver::take_map_notes`] for the caller to log.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use super::segment_map::{maps_enabled, MapMaker, MapNote};
use super::{push_with, PushOutcome};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::threads::{catch_panic, spawn_scoped};

/// Size and modification time of a local WAL file when it was uploaded ahead.
type Stamp = (u64, SystemTime);

fn stamp_of(path: &Path) -> Result<Stamp> {
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    Ok((m.len(), m.modified().map_err(|e| Error::io(path, e))?))
}

/// State kept by one archiver process between calls.
#[derive(Default)]
pub struct Archiver {
    /// Files already uploaded by look-ahead, not yet asked for by PostgreSQL: the local file's
    /// stamp at upload, and the outcome to report when PostgreSQL asks.
    ahead: HashMap<String, (Stamp, PushOutcome)>,
    maps: MapMaker,
    /// Map failures and incomplete maps since the last `take_map_notes`.
    notes: Vec<MapNote>,
}

impl Archiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Archive `file_name` (at `path`), and upload up to `cfg.upload_concurrency - 1` of the next
    /// files that `pg_wal/archive_status` marks `.ready` alongside it. Returns the outcome for
    /// `file_name` only: a look-ahead failure is not an error here (that file is archived, and its
    /// failure reported, when PostgreSQL asks for it).
    pub fn archive(
        &mut self,
        cfg: &Config,
        storage: &dyn Storage,
        file_name: &str,
        path: &Path,
        pg_wal: &Path,
    ) -> Result<PushOutcome> {
        if let Some((stamp, outcome)) = self.ahead.remove(file_name) {
            // Segments do not change once .ready; the stamp guards against anything unusual.
            if stamp_of(path).ok() == Some(stamp) {
                return Ok(outcome);
            }
        }
        let pipeline = cfg.pipeline();
        let maps = maps_enabled(cfg).then_some(&self.maps);
        // Upload, then (with maps on) the map, in the same thread: the map never delays it.
        let archive_one = |f: &str, p: &Path| -> Result<(PushOutcome, Option<MapNote>)> {
            let outcome = push_with(&pipeline, storage, f, p)?;
            let note = maps.and_then(|m| m.after_push(&pipeline, storage, f, p, &outcome));
            Ok((outcome, note))
        };
        let next = self.ready_after(pg_wal, file_name, cfg.upload_concurrency.saturating_sub(1));
        let (own, ahead) = std::thread::scope(|s| {
            let handles: Vec<_> = next
                .iter()
                .map(|f| {
                    let archive_one = &archive_one;
                    spawn_scoped(s, "walg-ahead".into(), move || {
                        catch_panic("WAL look-ahead upload", || {
                            let p = pg_wal.join(f);
                            let stamp = stamp_of(&p)?;
                            archive_one(f, &p).map(|(outcome, note)| (stamp, outcome, note))
                        })
                    })
                })
                .collect();
            let own = archive_one(file_name, path);
            let ahead: Vec<Result<(Stamp, PushOutcome, Option<MapNote>)>> = handles
                .into_iter()
                .map(|h| match h {
                    Ok(h) => h.join().unwrap_or_else(|_| Err(Error::Internal("look-ahead thread died".into()))),
                    Err(e) => Err(Error::io("(starting a look-ahead thread)", e)),
                })
                .collect();
            (own, ahead)
        });
        for (f, r) in next.into_iter().zip(ahead) {
            if let Ok((stamp, outcome, note)) = r {
                self.notes.extend(note);
                self.ahead.insert(f, (stamp, outcome));
            }
        }
        own.map(|(outcome, note)| {
            self.notes.extend(note);
            outcome
        })
    }

    /// What went wrong with changed-block maps since the last call (oldest first): the caller
    /// logs it (the threads that made the maps do not).
    pub fn take_map_notes(&mut self) -> Vec<MapNote> {
        std::mem::take(&mut self.notes)
    }

    /// Up to `n` WAL files marked `.ready` that sort after `current` and are not uploaded yet,
    /// in the order PostgreSQL archives them (by name).
    fn ready_after(&self, pg_wal: &Path, current: &str, n: usize) -> Vec<String> {
        if n == 0 {
            return Vec::new();
        }
        let Ok(dir) = std::fs::read_dir(pg_wal.join("archive_status")) else { return Vec::new() };
        let mut ready: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.strip_suffix(".ready")).map(str::to_string))
            .filter(|f| f.as_str() > current && !self.ahead.contains_key(f))
            .collect();
        ready.sort();
        ready.truncate(n);
        ready
    }

    /// Number of files uploaded ahead and not yet asked for.
    pub fn pending(&self) -> usize {
        self.ahead.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FsStorage;
    use std::fs;

    #[test]
    fn uploads_ready_files_ahead_and_answers_them_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let pg_wal = dir.path().join("pg_wal");
        fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
        let names: Vec<String> = (1..=5).map(|i| format!("0000000100000000000000{i:02X}")).collect();
        for (i, n) in names.iter().enumerate() {
            // Real segments as far as fetch checks them (size and first page header).
            fs::write(pg_wal.join(n), super::super::tests::fake_segment(n, 1 << 20, |_| i as u8)).unwrap();
            fs::write(pg_wal.join("archive_status").join(format!("{n}.ready")), b"").unwrap();
        }
        let storage = FsStorage::new(dir.path().join("bucket"));
        let cfg = Config { upload_concurrency: 3, ..Config::for_file_storage(dir.path().join("bucket")) };
        let mut a = Archiver::new();

        let out = a.archive(&cfg, &storage, &names[0], &pg_wal.join(&names[0]), &pg_wal).unwrap();
        assert!(matches!(out, PushOutcome::Uploaded { .. }), "{out:?}");
        // The next two .ready files went up with it.
        assert_eq!(a.pending(), 2);
        for n in &names[1..3] {
            assert!(storage.exists(&format!("wal_005/{n}.lz4")).unwrap(), "{n} uploaded ahead");
        }
        assert!(!storage.exists(&format!("wal_005/{}.lz4", names[3])).unwrap());
        fs::rename(
            pg_wal.join("archive_status").join(format!("{}.ready", names[0])),
            pg_wal.join("archive_status").join(format!("{}.done", names[0])),
        )
        .unwrap();
        // PostgreSQL marks the first one done and asks for the second: answered from memory,
        // with the outcome of its upload ahead; removing the object proves nothing is re-sent.
        storage.delete(&format!("wal_005/{}.lz4", names[1])).unwrap();
        let out = a.archive(&cfg, &storage, &names[1], &pg_wal.join(&names[1]), &pg_wal).unwrap();
        assert!(matches!(&out, PushOutcome::Uploaded { key, .. } if key.ends_with(&format!("{}.lz4", names[1]))), "{out:?}");
        assert!(!storage.exists(&format!("wal_005/{}.lz4", names[1])).unwrap());
        assert_eq!(a.pending(), 1);
        // A file changed after its upload ahead is archived again (and found identical or not).
        fs::write(pg_wal.join(&names[2]), b"changed").unwrap();
        let err = a.archive(&cfg, &storage, &names[2], &pg_wal.join(&names[2]), &pg_wal).unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        // Every byte that went up ahead is the local file's.
        let fetched = dir.path().join("fetched");
        assert!(super::super::fetch(&cfg, &storage, &names[3], &fetched).unwrap());
        assert_eq!(fs::read(&fetched).unwrap(), fs::read(pg_wal.join(&names[3])).unwrap());
    }
}
