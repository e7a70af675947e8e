//! Azure Blob storage (`WALG_AZ_PREFIX`) with Apache OpenDAL's azblob service, over our own
//! reqwest client (rustls with ring, the crypto the S3 client uses: no second TLS provider).
//!
//! Requests run on the process's storage runtime (`s3::wait`: one runtime, signals blocked, see
//! s3/mod.rs). Retries: `storage::open` wraps this storage in the retry decorator (retry.rs) for
//! its single-request operations; the resuming reader retries its range requests through the same
//! loop (reader.rs). The streaming writer's blocks are not retried one by one: a failed block fails
//! the upload (nothing becomes visible) and the caller's push is retried as a whole.
//!
//! Guarantees as for S3: an upload is a block blob whose blocks stay uncommitted (invisible, and
//! dropped by Azure after a week) until the block list is committed in `finish`; an object up to
//! WALG_AZURE_BUFFER_SIZE is one PUT, atomic too. Memory per writer is bounded by
//! buffer size x (max buffers + 1). Listings are paged by the service (5000 per page) and
//! streamed. Missing versus unreachable: "not there" only on Azure's own `BlobNotFound` code; a
//! missing container (`ContainerNotFound`), a 404 without a code (a proxy, a wrong endpoint),
//! denied access or an endpoint that does not answer is an error of kind Unreachable, saying what
//! to fix.

mod reader;
pub mod settings;
mod writer;

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use opendal::{EntryMode, ErrorKind as DalKind, HttpTransporter, Operator};
use opendal_http_transport_reqwest::ReqwestTransport;

use super::retry::RetryPolicy;
use super::s3::wait;
use super::{check_key, ObjectInfo, ObjectWriter, Storage};
use crate::error::{Error, Result};
pub use settings::AzureConfig;

/// An OpenDAL error for the retry loop: transient when OpenDAL marks it temporary or the
/// service throttles; a "not found" answer never is.
pub(crate) struct DalErr(pub opendal::Error);

impl std::fmt::Display for DalErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl super::Transient for DalErr {
    fn is_transient(&self) -> bool {
        !Inner::is_not_found(&self.0) && (self.0.is_temporary() || self.0.kind() == DalKind::RateLimited)
    }
    fn is_throttled(&self) -> bool {
        self.0.kind() == DalKind::RateLimited
    }
}

pub struct AzureStorage {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    cfg: AzureConfig,
    /// Built on first use.
    op: Mutex<Option<Operator>>,
}

/// rustls with ring and the platform's trust store: the TLS the S3 client uses.
pub(crate) fn http_client() -> std::result::Result<reqwest::Client, String> {
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
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

fn build_operator(cfg: &AzureConfig) -> std::result::Result<Operator, String> {
    let mut b = opendal::services::Azblob::default()
        .container(&cfg.container)
        .root(&format!("/{}", cfg.path))
        .endpoint(&cfg.endpoint)
        .account_name(&cfg.account);
    if let Some(k) = &cfg.access_key {
        b = b.account_key(&k.0);
    } else if let Some(t) = &cfg.sas_token {
        b = b.sas_token(&t.0);
    }
    let op = Operator::new(b).map_err(|e| e.to_string())?;
    let transport = HttpTransporter::new(ReqwestTransport::new(http_client()?));
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

    /// Azure answered that the blob does not exist: only its `BlobNotFound` code says so.
    pub(crate) fn is_not_found(e: &opendal::Error) -> bool {
        e.kind() == DalKind::NotFound && e.to_string().contains("BlobNotFound")
    }

    /// An OpenDAL error as ours: the io kind carries what `kind()` and `is_transient()` need,
    /// the message what to fix.
    pub(crate) fn error(&self, op: &'static str, key: &str, e: &opendal::Error) -> Error {
        let object = self.url(key);
        let text = e.to_string();
        let endpoint = &self.cfg.endpoint;
        let (kind, msg) = if text.contains("ContainerNotFound") {
            (io::ErrorKind::Other, format!(
                "container {} does not exist at {endpoint}: create it or fix WALG_AZ_PREFIX", self.cfg.container
            ))
        } else if e.kind() == DalKind::NotFound {
            (io::ErrorKind::Other, format!(
                "{object}: {endpoint} answered 404 without Azure's BlobNotFound code ({text}): \
                 is the endpoint (AZURE_STORAGE_ACCOUNT, AZURE_ENDPOINT_SUFFIX, WALG_AZURE_ENDPOINT) an Azure blob service?"
            ))
        } else if e.kind() == DalKind::PermissionDenied
            || text.contains("AuthenticationFailed")
            || text.contains("AuthorizationFailure")
        {
            (io::ErrorKind::PermissionDenied, format!(
                "access denied to {object} at {endpoint} ({text}): fix AZURE_STORAGE_ACCESS_KEY or AZURE_STORAGE_SAS_TOKEN \
                 (config file or environment), or grant this identity access to container {}",
                self.cfg.container
            ))
        } else if text.contains("InvalidBlockList") {
            (io::ErrorKind::Other, format!(
                "{object}: another upload of the same blob committed first (Azure then drops the other uploads' \
                 staged blocks), so this upload was not stored; the blob holds the other upload whole: upload again if needed"
            ))
        } else if e.kind() == DalKind::ConfigInvalid {
            (io::ErrorKind::Other, format!("{object}: Azure settings: {text}"))
        } else if e.is_temporary() || e.kind() == DalKind::RateLimited {
            let k = if text.to_ascii_lowercase().contains("timed out") { io::ErrorKind::TimedOut } else { io::ErrorKind::ConnectionAborted };
            (k, format!("cannot reach {endpoint} for {object} ({text}): is the Azure blob service up and the endpoint right?"))
        } else {
            (io::ErrorKind::Other, format!("{object}: {text}"))
        };
        Error::storage(op, key, io::Error::new(kind, msg))
    }
}

impl AzureStorage {
    /// Cheap: the client is built on first use.
    pub fn new(cfg: AzureConfig) -> AzureStorage {
        AzureStorage { inner: Arc::new(Inner { cfg, op: Mutex::new(None) }) }
    }

    pub fn config(&self) -> &AzureConfig {
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

impl Storage for AzureStorage {
    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        check_key("get", key)?;
        reader::open(self.inner.clone(), key)
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key("put", key)?;
        if data.len() <= self.inner.cfg.buffer_size {
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
        Ok(Box::new(writer::AzureWriter::new(self.inner.clone(), key)?))
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
        // A recursive listing of "a/b" matches keys starting with "a/b" (like S3's prefix).
        out.retain(|o| o.key.starts_with(prefix));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        check_key("stat", key)?;
        let op = self.inner.op("stat", key)?;
        match wait(op.stat(key)) {
            Ok(_) => Ok(true),
            Err(e) if Inner::is_not_found(&e) => Ok(false),
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
            Err(e) if Inner::is_not_found(&e) => Ok(()),
            Err(e) => Err(self.inner.error("delete", key, &e)),
        }
    }

    fn describe(&self) -> String {
        self.inner.cfg.describe()
    }
}
