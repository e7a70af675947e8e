//! `walg-test-storage <s3|azure|gcs|swift|sftp> <compression>`: starts the tests' server for that
//! backend (the same code the e2e tests use: `walg_e2e::Storage`), prints the path of a WAL-G
//! config file pointing at an empty prefix on it, and keeps it all up until stdin closes.
//!
//! For bench/bench.py, which measures backup and restore on every backend without a second set
//! of server starters. The tests' storages shrink part, block and chunk sizes (so test-sized
//! backups take the multipart paths) and retry little (so outages show fast); here those keys go
//! back to the registry's defaults, so the bench measures what a user gets.

use std::io::Read;

use walg_core::config::registry;
use walg_e2e::{Backend, Storage};

/// The keys the harness sets to test values, per backend: the bench puts them back.
fn tuned_keys(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::S3 => &["WALG_S3_MAX_PART_SIZE", "WALG_S3_MAX_RETRIES"],
        Backend::Azure => &["WALG_AZURE_BUFFER_SIZE", "WALG_AZURE_MAX_RETRIES"],
        Backend::Gcs => &["GCS_MAX_CHUNK_SIZE", "GCS_MAX_RETRIES"],
        Backend::Swift => &["WALG_SWIFT_MAX_RETRIES"],
        Backend::Sftp => &["WALG_SSH_MAX_RETRIES"],
        Backend::File => &[],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (backend, compression) = match args.as_slice() {
        [b, c] => (b.as_str(), c.as_str()),
        _ => usage(),
    };
    let backend = match backend {
        "s3" => Backend::S3,
        "azure" => Backend::Azure,
        "gcs" => Backend::Gcs,
        "swift" => Backend::Swift,
        "sftp" => Backend::Sftp,
        _ => usage(),
    };
    let overrides: Vec<(&str, &str)> = tuned_keys(backend)
        .iter()
        .map(|key| match registry::find(key).map(|s| s.default) {
            Some(registry::Default::Value(v)) => (*key, v),
            other => panic!("{key} has no plain default in the registry: {other:?}"),
        })
        .collect();
    let storage = Storage::with_backend(backend, "bench", compression, &overrides);
    println!("{}", storage.config.display());
    // Until the bench is done with it (or gone): stdin closes either way.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    // Stops moto; the shared servers' watchdogs stop the others once this process has exited.
    drop(storage);
}

fn usage() -> ! {
    eprintln!("usage: walg-test-storage <s3|azure|gcs|swift|sftp> <compression>");
    std::process::exit(2)
}
