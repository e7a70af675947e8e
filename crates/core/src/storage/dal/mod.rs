//! What the backends built on Apache OpenDAL (azure, gcs) share: the operator built on first use
//! over our reqwest client, the retry loop's view of an OpenDAL error, listing, `exists`,
//! `has_dir`, `delete`, a one-request `put` and the resuming reader (reader.rs).
//!
//! What stays with each backend (`DalBackend`): how its service says "no such object" (Azure's
//! `BlobNotFound` code; GCS's "No such object", or a 404 in a bucket known to exist), how an
//! error reads (unreachable versus denied, and which settings to fix), and what pins a read to
//! one version of an object. The shared code answers "missing" only when `is_not_found` says the
//! storage said so; every other failure goes through the backend's `error`.

pub(crate) mod reader;

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use opendal::{EntryMode, ErrorKind as DalKind, HttpTransporter, Metadata, Operator};
use opendal_http_transport_reqwest::ReqwestTransport;

use super::retry::RetryPolicy;
use super::s3::wait;
use super::{check_key, ObjectInfo, ObjectWriter, Storage};
use crate::error::{Error, Result};

/// What pins a read to the version of the object that `stat` saw.
pub enum Pin {
    /// `If-Match` (Azure).
    ETag(String),
    /// `ifGenerationMatch` (GCS).
    Version(String),
}

/// What every OpenDAL-backed storage keeps: its operator and what its settings say.
pub struct Base {
    op: LazyOperator,
    /// Builds the operator from the backend's settings (once, on first use).
    build: Box<dyn Fn() -> std::result::Result<Operator, String> + Send + Sync>,
    /// `DalBackend::describe`.
    describe: String,
    /// The storage's URL, objects below it.
    url: String,
    max_retries: u32,
    /// Objects up to this size are one PUT; larger ones go through the backend's writer.
    one_shot_max: usize,
}

impl Base {
    pub(crate) fn new(
        describe: String,
        url: String,
        max_retries: u32,
        one_shot_max: usize,
        build: impl Fn() -> std::result::Result<Operator, String> + Send + Sync + 'static,
    ) -> Base {
        Base { op: LazyOperator::default(), build: Box::new(build), describe, url, max_retries, one_shot_max }
    }
}

/// One OpenDAL-backed service: what differs between them.
pub trait DalBackend: Send + Sync + Sized + 'static {
    fn base(&self) -> &Base;
    /// The service answered that the object does not exist (and nothing else did).
    fn is_not_found(&self, e: &opendal::Error) -> bool;
    /// An OpenDAL error as ours: the io kind carries `kind()` and `is_transient()`, the message
    /// what to fix.
    fn error(&self, op: &'static str, key: &str, e: &opendal::Error) -> Error;
    fn pin(&self, meta: &Metadata) -> Option<Pin>;
    /// When `e` says the pinned object changed under a reader: why, for the message.
    fn replaced(&self, e: &opendal::Error) -> Option<&'static str>;
    /// A streaming upload (objects larger than `Base::one_shot_max`).
    fn writer(self: &Arc<Self>, key: &str) -> Result<Box<dyn ObjectWriter>>;

    fn operator(&self, op: &'static str, key: &str) -> Result<Operator> {
        let base = self.base();
        base.op.get(op, key, || base.describe.clone(), || (base.build)())
    }

    fn max_retries(&self) -> u32 {
        self.base().max_retries
    }

    /// The object's URL, for messages.
    fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.base().url)
    }

    fn policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.max_retries())
    }
}

/// A `Storage` on an OpenDAL backend (`AzureStorage`, `GcsStorage`).
pub struct DalStorage<B> {
    pub(crate) inner: Arc<B>,
}

impl<B: DalBackend> Storage for DalStorage<B> {
    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        check_key("get", key)?;
        reader::open(self.inner.clone(), key)
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key("put", key)?;
        if data.len() <= self.inner.base().one_shot_max {
            let op = self.inner.operator("put", key)?;
            let body = bytes::Bytes::copy_from_slice(data);
            return wait(op.write(key, body)).map(|_| ()).map_err(|e| self.inner.error("put", key, &e));
        }
        let mut w = self.writer(key)?;
        io::Write::write_all(&mut w, data).map_err(|e| Error::storage("put", key, e))?;
        w.finish().map(|_| ())
    }

    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        check_key("write", key)?;
        self.inner.writer(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        list(self.inner.as_ref(), prefix)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        check_key("stat", key)?;
        let (b, op) = (self.inner.as_ref(), self.inner.operator("stat", key)?);
        match wait(op.stat(key)) {
            Ok(_) => Ok(true),
            Err(e) if b.is_not_found(&e) => Ok(false),
            Err(e) => Err(b.error("stat", key, &e)),
        }
    }

    /// One listing page of at most one key.
    fn has_dir(&self, dir: &str) -> Result<bool> {
        let op = self.inner.operator("list", dir)?;
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

    /// Deleting what the service says is not there is done.
    fn delete(&self, key: &str) -> Result<()> {
        check_key("delete", key)?;
        let (b, op) = (self.inner.as_ref(), self.inner.operator("delete", key)?);
        match wait(op.delete(key)) {
            Ok(()) => Ok(()),
            Err(e) if b.is_not_found(&e) => Ok(()),
            Err(e) => Err(b.error("delete", key, &e)),
        }
    }

    fn describe(&self) -> String {
        self.inner.base().describe.clone()
    }
}

/// An OpenDAL error for the retry loop: transient when OpenDAL marks it temporary (5xx, a broken
/// connection) or the service throttles; a 404 never is.
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

/// An operator built on first use (building reads settings and key files: errors belong to the
/// first request, not to opening the storage).
#[derive(Default)]
struct LazyOperator(Mutex<Option<Operator>>);

impl LazyOperator {
    /// The operator, built by `build` the first time; a failure names `describe`d storage.
    fn get(
        &self,
        op: &'static str,
        key: &str,
        describe: impl FnOnce() -> String,
        build: impl FnOnce() -> std::result::Result<Operator, String>,
    ) -> Result<Operator> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = slot.as_ref() {
            return Ok(o.clone());
        }
        let o = build().map_err(|m| Error::storage(op, key, io::Error::other(format!("{}: {m}", describe()))))?;
        *slot = Some(o.clone());
        Ok(o)
    }
}

/// `op` sending over our reqwest client (`http::http_client`).
pub(crate) fn over_our_client(op: Operator, timeout: Option<Duration>) -> std::result::Result<Operator, String> {
    let transport = HttpTransporter::new(ReqwestTransport::new(super::http::http_client(timeout)?));
    let ctx = op.base_context().with_http_transport(transport);
    Ok(op.with_context(ctx))
}

/// The io kind of an error worth retrying: a timeout, or a connection that failed.
pub(crate) fn unreachable_kind(text: &str) -> io::ErrorKind {
    if text.to_ascii_lowercase().contains("timed out") {
        io::ErrorKind::TimedOut
    } else {
        io::ErrorKind::ConnectionAborted
    }
}

fn modified(m: &Metadata) -> SystemTime {
    m.last_modified()
        .and_then(|t| {
            let t = t.into_inner();
            let secs = u64::try_from(t.as_second()).ok()?;
            Some(SystemTime::UNIX_EPOCH + Duration::new(secs, t.subsec_nanosecond().max(0) as u32))
        })
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Every object below `prefix`, sorted by key (the service pages; the pages are streamed).
fn list(b: &impl DalBackend, prefix: &str) -> Result<Vec<ObjectInfo>> {
    let op = b.operator("list", prefix)?;
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
    let mut out = r.map_err(|e| b.error("list", prefix, &e))?;
    // A recursive listing of "a/b" matches keys starting with "a/b" (like S3's prefix).
    out.retain(|o| o.key.starts_with(prefix));
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}
