//! `open(&StorageConfig)`: the one place that turns settings into a storage. It picks the
//! backend, puts the retry decorator around remote backends that need it (retry.rs), and caches
//! remote clients per process: a long-lived process (the archiver asks once per segment) reuses
//! one client and its connections instead of building a new one each time. The cache holds the
//! storage opened last; opening another configuration replaces it (a process works with one
//! storage at a time, `copy` with two: each still opens at most twice).

use std::sync::{Arc, Mutex};

use super::retry::{RetryPolicy, Retrying};
use super::{AzureStorage, FsStorage, GcsStorage, S3Storage, SftpStorage, Storage, SwiftStorage};
use crate::config::StorageConfig;
use crate::error::Result;

/// What `open(cfg)?.describe()` says, without opening it.
pub fn describe(cfg: &StorageConfig) -> String {
    match cfg {
        StorageConfig::File { prefix } => FsStorage::new(prefix.clone()).describe(),
        StorageConfig::S3(s3) => s3.describe(),
        StorageConfig::Azure(az) => az.describe(),
        StorageConfig::Swift(sw) => sw.describe(),
        StorageConfig::Sftp(sftp) => sftp.describe(),
        StorageConfig::Gcs(gcs) => gcs.describe(),
    }
}

/// The storage `cfg` names; remote ones from the process's cache when the settings are equal.
pub fn open(cfg: &StorageConfig) -> Result<Arc<dyn Storage>> {
    if let StorageConfig::File { prefix } = cfg {
        // Nothing to cache: no client, no connections.
        return Ok(Arc::new(FsStorage::new(prefix.clone())));
    }
    static CACHE: Mutex<Vec<(StorageConfig, Arc<dyn Storage>)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, s)) = cache.iter().find(|(c, _)| c == cfg) {
        return Ok(s.clone());
    }
    let storage: Arc<dyn Storage> = match cfg {
        StorageConfig::File { .. } => unreachable!(),
        // S3 retries each request itself (s3/retry.rs, through retry::run_async), so it is not
        // wrapped again: attempts would multiply.
        StorageConfig::S3(s3) => Arc::new(S3Storage::new(s3.clone())),
        // Azure's single requests are retried by the decorator; its reader retries its own
        // range requests through the same loop.
        StorageConfig::Azure(az) => {
            Arc::new(Retrying::new(AzureStorage::new(az.clone()), RetryPolicy::new(az.max_retries)))
        }
        // Swift: as Azure (its reader retries its range requests itself).
        StorageConfig::Swift(sw) => {
            Arc::new(Retrying::new(SwiftStorage::new(sw.clone()), RetryPolicy::new(sw.max_retries)))
        }
        // The same for SFTP: single operations through the decorator, the reader's reconnects
        // through the same loop.
        StorageConfig::Sftp(sftp) => {
            Arc::new(Retrying::new(SftpStorage::new(sftp.clone()), RetryPolicy::new(sftp.max_retries)))
        }
        // As Azure: the decorator for single requests, the reader's own loop for its ranges.
        StorageConfig::Gcs(gcs) => {
            Arc::new(Retrying::new(GcsStorage::new(gcs.clone()), RetryPolicy::new(gcs.max_retries)))
        }
    };
    // Two entries: `copy` reads one storage and writes another.
    if cache.len() >= 2 {
        cache.remove(0);
    }
    cache.push((cfg.clone(), storage.clone()));
    Ok(storage)
}
