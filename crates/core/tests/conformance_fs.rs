//! The storage conformance suite (conformance/mod.rs) on file storage.

mod conformance;

use std::sync::Mutex;

use walg_core::storage::FsStorage;

#[test]
fn file_storage_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsStorage::new(dir.path().join("prefix"));
    let saved: Mutex<Option<Vec<u8>>> = Mutex::new(None);
    let path = |key: &str| dir.path().join("prefix").join(key);
    // A fault under a local reader: the file is truncated from outside while it is read.
    let cut = |key: &str| {
        let p = path(key);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(bytes.len() as u64 / 2).unwrap();
        *saved.lock().unwrap() = Some(bytes);
    };
    let heal = |key: &str| {
        if let Some(bytes) = saved.lock().unwrap().take() {
            std::fs::write(path(key), bytes).unwrap();
        }
    };
    conformance::run_all(&conformance::Target { storage: &storage, cut: &cut, heal: &heal });
}
