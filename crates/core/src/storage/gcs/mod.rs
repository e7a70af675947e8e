//! Google Cloud Storage (`WALG_GS_PREFIX`) with Apache OpenDAL's gcs service (JSON API), over our
//! own reqwest client (rustls with ring, as for S3 and Azure: no second TLS provider).
//!
//! Requests run on the process's storage runtime (`s3::wait`). Retries: `storage::open` wraps this
//! storage in the retry decorator (retry.rs) for its single-request operations; the resuming
//! reader retries its own requests through the same loop (reader.rs). A streaming upload's chunks
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

mod reader;
pub mod settings;
mod writer;

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use opendal::{EntryMode, ErrorKind as DalKind, HttpTransporter, Operator};
use opendal_http_transport_reqwest::ReqwestTransport;

use super::retry::RetryPolicy;
use super::s3::wait;
use super::{check_key, ObjectInfo, ObjectWriter, Storage};
use crate::error::{Error, Result};
pub use settings::GcsConfig;

/// An OpenDAL error for the retry loop: transient when OpenDAL marks it temporary (5xx, a broken
/// connection) or GCS throttles (429); a 404 never is.
pub(crate) struct DalErr(pub opendal::Error);

impl std::fmt::Display for DalErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl super::Transient for DalErr {
    fn is_transient(&self) -> bool {
        self.0.kind() != DalKind::NotFound && (self.0.is_temporary() || self.0.kind() == DalKind::RateLimited)
    }
    fn is_throttled(&self) -> bool {
        self.0.kind() == DalKind::RateLimited
    }
}

pub struct GcsStorage {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    cfg: GcsConfig,
    /// Built on first use.
    op: Mutex<Option<Operator>>,
    /// A listing of the bucket succeeded: a JSON 404 for an object means the object is missing.
    bucket_seen: AtomicBool,
}

/// rustls with ring and the platform's trust store (the S3 client's TLS); GCS_CONTEXT_TIMEOUT
/// bounds each request, its body included, as WAL-G's per-operation context does.
fn http_client(timeout: Duration) -> std::result::Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| format!("TLS trust store: {e}"))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        // Many pooled HTTP/1.1 connections beat one HTTP/2 connection for large transfers.
        .http1_only()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120))
        .timeout(timeout)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
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
    let op = Operator::new(b).map_err(|e| e.to_string())?;
    let transport = HttpTransporter::new(ReqwestTransport::new(http_client(Duration::from_secs(cfg.context_timeout))?));
    let ctx = op.base_context().with_http_transport(transport);
    Ok(op.with_context(ctx))
}

impl Inner {
    fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.cfg.url())
    }

    pub(crate) fn policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.cfg.max_retries)
    }

    pub(crate) fn op(&self, op: &'static str, key: &str) -> Result<Operator> {
        let mut slot = self.op.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = slot.as_ref() {
            return Ok(o.clone());
        }
        let o = build_operator(&self.cfg)
            .map_err(|m| Error::storage(op, key, io::Error::other(format!("{}: {m}", self.cfg.describe()))))?;
        *slot = Some(o.clone());
        Ok(o)
    }

    /// The error came with GCS's JSON error body (not a proxy's page or an empty answer).
    fn is_gcs_answer(e: &opendal::Error) -> bool {
        e.to_string().contains("GcsErrorResponse")
    }

    /// Whether a 404 for an object means "no such object": GCS says "No such object"; an
    /// emulator that answers a bare "Not Found" is believed once a listing of the bucket worked
    /// (a missing bucket lists as 404 too).
    pub(crate) fn is_not_found(&self, e: &opendal::Error) -> bool {
        if e.kind() != DalKind::NotFound || !Inner::is_gcs_answer(e) {
            return false;
        }
        if e.to_string().contains("No such object") {
            return true;
        }
        if self.bucket_seen.load(Ordering::Relaxed) {
            return true;
        }
        let Ok(op) = self.op("list", "") else { return false };
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
    pub(crate) fn error(&self, op: &'static str, key: &str, e: &opendal::Error) -> Error {
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
            let k = if text.to_ascii_lowercase().contains("timed out") { io::ErrorKind::TimedOut } else { io::ErrorKind::ConnectionAborted };
            (k, format!("cannot reach {endpoint} for {object} ({text}): is GCS (or the emulator) up and the endpoint right?"))
        } else {
            (io::ErrorKind::Other, format!("{object}: {text}"))
        };
        Error::storage(op, key, io::Error::new(kind, msg))
    }
}

impl GcsStorage {
    /// Cheap: the client is built on first use.
    pub fn new(cfg: GcsConfig) -> GcsStorage {
        GcsStorage { inner: Arc::new(Inner { cfg, op: Mutex::new(None), bucket_seen: AtomicBool::new(false) }) }
    }

    pub fn config(&self) -> &GcsConfig {
        &self.inner.cfg
    }
}

fn modified(m: &opendal::Metadata) -> SystemTime {
    m.last_modified()
        .and_then(|t| {
            let t = t.into_inner();
            let secs = u64::try_from(t.as_second()).ok()?;
            Some(SystemTime::UNIX_EPOCH + Duration::new(secs, t.subsec_nanosecond().max(0) as u32))
        })
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Storage for GcsStorage {
    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        check_key("get", key)?;
        reader::open(self.inner.clone(), key)
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key("put", key)?;
        if data.len() <= self.inner.cfg.max_chunk_size {
            let op = self.inner.op("put", key)?;
            let body = bytes::Bytes::copy_from_slice(data);
            return wait(op.write(key, body)).map(|_| ()).map_err(|e| self.inner.error("put", key, &e));
        }
        let mut w = self.writer(key)?;
        io::Write::write_all(&mut w, data).map_err(|e| Error::storage("put", key, e))?;
        w.finish().map(|_| ())
    }

    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        check_key("write", key)?;
        Ok(Box::new(writer::GcsWriter::new(self.inner.clone(), key)))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let inner = &self.inner;
        let op = inner.op("list", prefix)?;
        let r: std::result::Result<Vec<ObjectInfo>, opendal::Error> = wait(async {
            let mut lister = op.lister_with(prefix).recursive(true).await?;
            let mut out = Vec::new();
            while let Some(entry) = lister.try_next().await? {
                if entry.metadata().mode() != EntryMode::FILE {
                    continue;
                }
                let m = entry.metadata();
                out.push(ObjectInfo { key: entry.path().trim_start_matches('/').to_string(), size: m.content_length(), modified: modified(m) });
            }
            Ok(out)
        });
        let mut out = r.map_err(|e| inner.error("list", prefix, &e))?;
        // A recursive listing of "a/b" matches keys starting with "a/b" (GCS's prefix, as S3's).
        out.retain(|o| o.key.starts_with(prefix));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        check_key("stat", key)?;
        let op = self.inner.op("stat", key)?;
        match wait(op.stat(key)) {
            Ok(_) => Ok(true),
            Err(e) if self.inner.is_not_found(&e) => Ok(false),
            Err(e) => Err(self.inner.error("stat", key, &e)),
        }
    }

    /// One listing page of at most one key.
    fn has_dir(&self, dir: &str) -> Result<bool> {
        let op = self.inner.op("list", dir)?;
        let r: std::result::Result<bool, opendal::Error> = wait(async {
            let mut lister = op.lister_with(dir).recursive(true).limit(1).await?;
            while let Some(e) = lister.try_next().await? {
                if e.metadata().mode() == EntryMode::FILE && e.path().trim_start_matches('/').starts_with(dir) {
                    return Ok(true);
                }
            }
            Ok(false)
        });
        r.map_err(|e| self.inner.error("list", dir, &e))
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key("delete", key)?;
        let op = self.inner.op("delete", key)?;
        match wait(op.delete(key)) {
            Ok(()) => Ok(()),
            Err(e) if self.inner.is_not_found(&e) => Ok(()),
            Err(e) => Err(self.inner.error("delete", key, &e)),
        }
    }

    fn describe(&self) -> String {
        self.inner.cfg.describe()
    }
}
