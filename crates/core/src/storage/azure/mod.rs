//! Azure Blob storage (`WALG_AZ_PREFIX`) with Apache OpenDAL's azblob service, over our own
//! reqwest client (rustls with ring, the crypto the S3 client uses: no second TLS provider).
//!
//! Requests run on the process's storage runtime (`s3::wait`: one runtime, signals blocked, see
//! s3/mod.rs). Retries: `storage::open` wraps this storage in the retry decorator (retry.rs) for
//! its single-request operations; the resuming reader retries its range requests through the same
//! loop (dal/reader.rs, shared with gcs: dal/mod.rs). The streaming writer's blocks are not retried one by one: a failed block fails
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

pub mod settings;
mod writer;

use std::io;
use std::sync::Arc;

use opendal::{ErrorKind as DalKind, Metadata, Operator};

use super::dal::{self, Base, DalBackend, DalStorage, Pin};
use super::ObjectWriter;
use crate::error::{Error, Result};
pub use settings::AzureConfig;

/// Azure Blob storage: the shared OpenDAL storage (dal/mod.rs) on this backend.
pub type AzureStorage = DalStorage<Inner>;

/// What is Azure's own in the storage.
pub struct Inner {
    cfg: AzureConfig,
    base: Base,
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
    dal::over_our_client(Operator::new(b).map_err(|e| e.to_string())?, None)
}

impl DalBackend for Inner {
    /// Azure answered that the blob does not exist: only its `BlobNotFound` code says so.
    fn is_not_found(&self, e: &opendal::Error) -> bool {
        e.kind() == DalKind::NotFound && e.to_string().contains("BlobNotFound")
    }

    /// An OpenDAL error as ours: the io kind carries what `kind()` and `is_transient()` need,
    /// the message what to fix.
    fn error(&self, op: &'static str, key: &str, e: &opendal::Error) -> Error {
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
            (dal::unreachable_kind(&text), format!("cannot reach {endpoint} for {object} ({text}): is the Azure blob service up and the endpoint right?"))
        } else {
            (io::ErrorKind::Other, format!("{object}: {text}"))
        };
        Error::storage(op, key, io::Error::new(kind, msg))
    }

    fn base(&self) -> &Base {
        &self.base
    }

    fn writer(self: &Arc<Self>, key: &str) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(writer::AzureWriter::new(self.clone(), key)?))
    }

    fn pin(&self, meta: &Metadata) -> Option<Pin> {
        meta.etag().map(|t| Pin::ETag(t.to_string()))
    }

    fn replaced(&self, e: &opendal::Error) -> Option<&'static str> {
        (e.kind() == DalKind::ConditionNotMatch).then_some("the blob was replaced while it was read (ETag changed)")
    }
}

impl AzureStorage {
    /// Cheap: the client is built on first use.
    pub fn new(cfg: AzureConfig) -> AzureStorage {
        let settings = cfg.clone();
        let base = Base::new(cfg.describe(), cfg.url(), cfg.max_retries, cfg.buffer_size, move || build_operator(&settings));
        DalStorage { inner: Arc::new(Inner { cfg, base }) }
    }

    pub fn config(&self) -> &AzureConfig {
        &self.inner.cfg
    }
}
