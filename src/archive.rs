//! archive_library callbacks. They run in the archiver process and must never raise an ERROR
//! (on PostgreSQL 15 that kills the archiver): every failure becomes a WARNING and `false`, and
//! PostgreSQL keeps the WAL file and retries.
use crate::{settings, shmem};
use pgrx::prelude::*;
use std::ffi::{c_char, CStr};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use walg_core::wal::{Archiver, PushOutcome};

thread_local! {
    /// What this archiver process uploaded ahead of PostgreSQL's requests.
    static ARCHIVER: RefCell<Archiver> = RefCell::new(Archiver::new());
}

#[no_mangle]
#[allow(non_snake_case)]
pub unsafe extern "C-unwind" fn _PG_archive_module_init(cb: *mut pg_sys::ArchiveModuleCallbacks) {
    unsafe {
        (*cb).check_configured_cb = Some(check_configured);
        (*cb).archive_file_cb = Some(archive_file);
        (*cb).shutdown_cb = None;
    }
}

unsafe extern "C-unwind" fn check_configured() -> bool {
    match catch_unwind(settings::load_config) {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            warning!("walg_ext: WAL archiving is not configured: {e}");
            false
        }
        Err(_) => false,
    }
}

unsafe extern "C-unwind" fn archive_file(file: *const c_char, path: *const c_char) -> bool {
    let file = unsafe { CStr::from_ptr(file) }.to_string_lossy().into_owned();
    let path = unsafe { CStr::from_ptr(path) }.to_string_lossy().into_owned();
    let result = catch_unwind(AssertUnwindSafe(|| push(&file, &path)));
    match result {
        Ok(Ok(PushOutcome::Uploaded { key, bytes })) => {
            debug1!("walg_ext: archived {file} as {key} ({bytes} bytes)");
            record(|s, now| s.archived(&file, Some(bytes), now));
            true
        }
        Ok(Ok(PushOutcome::Overwritten { key, bytes, previous })) => {
            warning!(
                "walg_ext: {file} was already archived with different content as {previous}; replaced it with {key} \
                 (a .partial file from another promotion out of the same segment; recovery never reads .partial files)"
            );
            record(|s, now| s.archived(&file, Some(bytes), now));
            true
        }
        Ok(Ok(PushOutcome::AlreadyArchived { key })) => {
            log!("walg_ext: {file} was already archived as {key} with identical content");
            record(|s, now| s.archived(&file, None, now));
            true
        }
        Ok(Err(e)) => {
            warning!("walg_ext: could not archive {file}: {e}");
            record(|s, now| s.failed(&file, &e.to_string(), now));
            false
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            warning!("walg_ext: could not archive {file}: internal error: {msg}");
            record(|s, now| s.failed(&file, &format!("internal error: {msg}"), now));
            false
        }
    }
}

/// Update the archiver statistics in shared memory (only there when preloaded).
fn record(f: impl FnOnce(&mut shmem::ArchiverStats, i64)) {
    if shmem::available() {
        let now = chrono::Utc::now().timestamp_micros();
        f(&mut shmem::ARCHIVER_STATS.exclusive(), now);
    }
}

fn push(file: &str, path: &str) -> walg_core::Result<PushOutcome> {
    let cfg = settings::load_config()?;
    let storage = cfg.open_storage()?;
    let path = Path::new(path);
    // PostgreSQL passes pg_wal/<file>, relative to the data directory (our working directory).
    let pg_wal = path.parent().unwrap_or(Path::new("pg_wal"));
    let (outcome, notes) = ARCHIVER.with(|a| {
        let mut a = a.borrow_mut();
        let outcome = a.archive(&cfg, storage.as_ref(), file, path, pg_wal);
        (outcome, a.take_map_notes())
    });
    // Changed-block maps (made by the archiver's threads, logged here on the main thread): they
    // never change whether the file counts as archived.
    for n in notes {
        if n.is_warning() {
            warning!("{}", n.message());
        } else {
            log!("{}", n.message());
        }
    }
    outcome
}
