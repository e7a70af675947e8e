//! Google Cloud Storage (`WALG_GS_PREFIX`) with Apache OpenDAL's gcs service (JSON API), over our
//! own reqwest client (rustls with ring, as for S3 and Azure: no second TLS provider).
//!
//! Requests run on the process's storage runtime (`s3::wait`). Retries: `storage::open` wraps this
//! storage in the retry decorator (retry.rs) for its single-request operations; the resuming
//! reader retries its own requests through the same loop (dal/reader.rs, shared with azure: dal/mod.rs). A streaming upload's chunks
//! are not retried one by one: a failed chunk fails the upload (nothing becomes visible) and the
//! caller's push is retried as a whole.
//!
//! Guarantees as for S3 and Azure: an object up to GCS_MAX_CHUNK_SIZE is one request (atomic); a
//! larger one is a resumable upload, which GCS makes visible only when its last chunk arrives
//! (writer.rs says why resumable and not OpenDAL's XML multipart upload). Listings are paged by
//! the service and streamed. Missing versus unreachable: "not there" only when GCS answered 404
//! for the object in a bucket that exists (its "No such object" answer, or, from an emulator that
//! does not say so, a 404 after a listing of the bucket succeeded); a missing bucket, a 404
//! without GCS's JSON error (a proxy, a wrong endpoint), denied access or an endpoint that does
//! not answer is an error of kind Unreachable, saying what to fix.

pub mod settings;
mod writer;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use opendal::{ErrorKind as DalKind, Metadata, Operator};

use super::dal::{self, Base, DalBackend, DalStorage, Pin};
use super::s3::wait;
use super::ObjectWriter;
use crate::error::{Error, Result};
pub use settings::GcsConfig;

/// Google Cloud Storage: the shared OpenDAL storage (dal/mod.rs) on this backend.
pub type GcsStorage = DalStorage<Inner>;

/// What is GCS's own in the storage.
pub struct Inner {
    cfg: GcsConfig,
    base: Base,
    /// A listing of the bucket succeeded: a JSON 404 for an object means the object is missing.
    bucket_seen: AtomicBool,
}

fn build_operator(cfg: &GcsConfig) -> std::result::Result<Operator, String> {
    let mut b = opendal::services::Gcs::default()
        .bucket(&cfg.bucket)
        .root(&format!("/{}", cfg.path))
        .endpoint(&cfg.endpoint);
    if cfg.emulator {
        // Google's convention for STORAGE_EMULATOR_HOST: no credentials, none looked for.
        b = b.skip_signature().disable_config_load().disable_vm_metadata();
    } else if let Some(path) = &cfg.credentials {
        // Read here so a wrong path or permission is one clear line, not a signing failure.
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "GOOGLE_APPLICATION_CREDENTIALS: cannot read {}: {e}: fix the path, or let the server's user read the file",
                path.display()
            )
        })?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            format!("GOOGLE_APPLICATION_CREDENTIALS: {} is not a JSON key file: {e}", path.display())
        })?;
        if json.get("type").and_then(|t| t.as_str()).is_none() {
            return Err(format!(
                "GOOGLE_APPLICATION_CREDENTIALS: {} has no \"type\": not a service account key file",
                path.display()
            ));
        }
        b = b.credential_path(&path.to_string_lossy());
    }
    // GCS_CONTEXT_TIMEOUT bounds each request, its body included, as WAL-G's per-operation
    // context does.
    dal::over_our_client(Operator::new(b).map_err(|e| e.to_string())?, Some(Duration::from_secs(cfg.context_timeout)))
}

impl Inner {
    /// The error came with GCS's JSON error body (not a proxy's page or an empty answer).
    fn is_gcs_answer(e: &opendal::Error) -> bool {
        e.to_string().contains("GcsErrorResponse")
    }
}

impl DalBackend for Inner {
    /// Whether a 404 for an object means "no such object": GCS says "No such object"; an
    /// emulator that answers a bare "Not Found" is believed once a listing of the bucket worked
    /// (a missing bucket lists as 404 too).
    fn is_not_found(&self, e: &opendal::Error) -> bool {
        if e.kind() != DalKind::NotFound || !Inner::is_gcs_answer(e) {
            return false;
        }
        if e.to_string().contains("No such object") {
            return true;
        }
        if self.bucket_seen.load(Ordering::Relaxed) {
            return true;
        }
        let Ok(op) = self.operator("list", "") else { return false };
        let probe: std::result::Result<(), opendal::Error> = wait(async {
            let mut lister = op.lister_with("/").limit(1).await?;
            lister.try_next().await?;
            Ok(())
        });
        let seen = probe.is_ok();
        self.bucket_seen.store(seen, Ordering::Relaxed);
        seen
    }

    /// An OpenDAL error as ours: the io kind carries what `kind()` and `is_transient()` need,
    /// the message what to fix.
    fn error(&self, op: &'static str, key: &str, e: &opendal::Error) -> Error {
        let object = self.url(key);
        let text = e.to_string();
        let endpoint = &self.cfg.endpoint;
        let denied = e.kind() == DalKind::PermissionDenied || text.contains("status: 401");
        let (kind, msg) = if e.kind() == DalKind::NotFound && Inner::is_gcs_answer(e) {
            (io::ErrorKind::Other, format!(
                "bucket {} does not exist at {endpoint} (GCS answered 404 for {object}): create it or fix WALG_GS_PREFIX",
                self.cfg.bucket
            ))
        } else if e.kind() == DalKind::NotFound {
            (io::ErrorKind::Other, format!(
                "{object}: {endpoint} answered 404 without GCS's JSON error ({text}): is the endpoint \
                 (STORAGE_EMULATOR_HOST, a proxy) a Google Cloud Storage service?"
            ))
        } else if denied {
            (io::ErrorKind::PermissionDenied, format!(
                "access denied to {object} at {endpoint} ({text}): fix GOOGLE_APPLICATION_CREDENTIALS (a service account's \
                 key file), or grant that account access to bucket {} (e.g. roles/storage.objectAdmin)",
                self.cfg.bucket
            ))
        } else if e.kind() == DalKind::ConditionNotMatch {
            (io::ErrorKind::Other, format!(
                "{object}: another upload of the same object committed first, so this upload was not stored; \
                 the object holds the other upload whole: upload again if needed"
            ))
        } else if e.kind() == DalKind::ConfigInvalid || text.to_ascii_lowercase().contains("credential") {
            (io::ErrorKind::Other, format!(
                "{object}: GCS credentials or settings: {text}: set GOOGLE_APPLICATION_CREDENTIALS to a service account's key file"
            ))
        } else if e.is_temporary() || e.kind() == DalKind::RateLimited {
            (dal::unreachable_kind(&text), format!("cannot reach {endpoint} for {object} ({text}): is GCS (or the emulator) up and the endpoint right?"))
        } else {
            (io::ErrorKind::Other, format!("{object}: {text}"))
        };
        Error::storage(op, key, io::Error::new(kind, msg))
    }

    fn base(&self) -> &Base {
        &self.base
    }

    fn writer(self: &Arc<Self>, key: &str) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(writer::GcsWriter::new(self.clone(), key)))
    }

    fn pin(&self, meta: &Metadata) -> Option<Pin> {
        meta.version().map(|g| Pin::Version(g.to_string()))
    }

    /// Another generation (412), or none left (404: replaced or deleted, and GCS keeps no old
    /// generations without versioning).
    fn replaced(&self, e: &opendal::Error) -> Option<&'static str> {
        (e.kind() == DalKind::ConditionNotMatch || self.is_not_found(e))
            .then_some("the object was replaced or deleted while it was read (its generation changed)")
    }
}

impl GcsStorage {
    /// Cheap: the client is built on first use.
    pub fn new(cfg: GcsConfig) -> GcsStorage {
        let settings = cfg.clone();
        let base = Base::new(cfg.describe(), cfg.url(), cfg.max_retries, cfg.max_chunk_size, move || build_operator(&settings));
        DalStorage { inner: Arc::new(Inner { cfg, base, bucket_seen: AtomicBool::new(false) }) }
    }

    pub fn config(&self) -> &GcsConfig {
        &self.inner.cfg
    }
}
