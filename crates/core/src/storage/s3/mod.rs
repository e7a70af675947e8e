//! S3 (and S3-compatible) storage with aws-sdk-s3.
//!
//! The `Storage` trait is synchronous; the SDK is async. One small multi-threaded tokio runtime
//! per process, built on first use, runs the requests; callers wait with `wait` (`block_on`).
//! None of its threads ever takes a signal, so PostgreSQL's handlers keep running on the main
//! thread: the runtime is built, and every `block_on` runs (tokio may start a blocking-pool
//! thread from inside it, e.g. for a DNS lookup), with all signals blocked in the calling thread
//! (threads.rs), so each new thread inherits an all-blocked mask; `on_thread_start` blocks them
//! again as a second line of defence. PostgreSQL's handlers only set flags that are looked at
//! between requests, so deferring a signal until `block_on` returns changes nothing.
//!
//! Missing versus unreachable: an object is "not there" only when S3 said so with a
//! `NoSuchKey` error code (retry.rs `Failure::is_not_found`). A 404 without that code (a proxy,
//! a wrong endpoint), `NoSuchBucket`, `AccessDenied`, or a timeout after the retries is an error
//! whose `kind()` is Unreachable.

mod reader;
mod retry;
pub mod settings;
mod writer;

use std::future::Future;
use std::io::{self, Read};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use super::{check_key, ObjectInfo, ObjectWriter, PendingUpload, Storage};
use crate::error::{Error, Result};
pub use retry::{classify, Failure, FailureKind, Verdict};
pub use settings::S3Config;

/// The process's runtime for S3 requests: two workers are plenty for I/O-bound requests, and
/// stay out of PostgreSQL's way.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // tokio starts its worker threads inside build().
        crate::threads::with_signals_blocked(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .max_blocking_threads(2)
                .thread_name("walg-s3")
                .on_thread_start(crate::threads::block_signals)
                .enable_all()
                .build()
                .expect("cannot start the S3 I/O runtime (threads)")
        })
    })
}

/// Run `fut` on the runtime and wait for it, with all signals blocked in the calling thread
/// meanwhile (see the module header).
pub(crate) fn wait<F: Future>(fut: F) -> F::Output {
    let rt = runtime();
    crate::threads::with_signals_blocked(|| rt.block_on(fut))
}

pub struct S3Storage {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    cfg: S3Config,
    /// Built on first use: loading the AWS config may read files or ask instance metadata.
    client: Mutex<Option<Client>>,
}

async fn build_client(cfg: &S3Config) -> std::result::Result<Client, String> {
    let mut trust = TrustStore::default();
    if let Some(path) = &cfg.ca_cert_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("WALG_S3_CA_CERT_FILE {}: {e}", path.display()))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(format!("WALG_S3_CA_CERT_FILE {}: no PEM certificate in the file", path.display()));
        }
        trust = trust.with_pem_certificate(pem);
    }
    let tls_context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls_context)
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(profile) = &cfg.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &cfg.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(c) = &cfg.credentials {
        loader = loader.credentials_provider(Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.0.clone(),
            c.session_token.as_ref().map(|t| t.0.clone()),
            None,
            "walg-config",
        ));
    }
    let sdk = loader.load().await;
    let mut b = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(cfg.force_path_style)
        // One retry policy, ours (retry.rs), so attempts do not multiply.
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(120))
                .build(),
        )
        // Many S3-compatible servers reject the newer default checksum headers.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(endpoint) = &cfg.endpoint {
        b = b.endpoint_url(endpoint.clone());
    }
    if sdk.region().is_none() {
        if cfg.endpoint.is_some() {
            b = b.region(Region::new("us-east-1"));
        } else {
            return Err("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION / a profile region)".into());
        }
    }
    Ok(Client::from_conf(b.build()))
}

impl Inner {
    fn full_key(&self, key: &str) -> String {
        if self.cfg.path.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.cfg.path)
        }
    }

    fn url(&self, full_key: &str) -> String {
        format!("s3://{}/{full_key}", self.cfg.bucket)
    }

    fn client(&self, op: &'static str, key: &str) -> Result<Client> {
        let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let client = wait(build_client(&self.cfg))
            .map_err(|msg| Error::storage(op, key, io::Error::other(format!("{}: {msg}", self.cfg.url()))))?;
        *slot = Some(client.clone());
        Ok(client)
    }

    fn error(&self, op: &'static str, key: &str, (failure, attempts): (Failure, u32)) -> Error {
        let object = self.url(&self.full_key(key));
        // The io kind carries what Error::kind() and is_transient() need: all of these are
        // Unreachable; those worth retrying later (timeouts, connection trouble, 5xx,
        // throttling) are transient.
        let kind = if failure.is_not_found() {
            io::ErrorKind::NotFound
        } else if classify(&failure) == Verdict::Retry {
            if failure.kind == FailureKind::Timeout { io::ErrorKind::TimedOut } else { io::ErrorKind::ConnectionAborted }
        } else {
            io::ErrorKind::Other
        };
        Error::storage(op, key, io::Error::new(kind, failure.explain(&self.cfg, &object, attempts)))
    }

    /// Run one request with retries on the runtime and wait for it.
    fn call<T, F, Fut>(&self, op: &'static str, key: &str, f: F) -> Result<std::result::Result<T, (Failure, u32)>>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let client = self.client(op, key)?;
        let mut f = f;
        let what = format!("{op} {}", self.url(&self.full_key(key)));
        Ok(wait(retry::retrying(self.cfg.max_retries, &what, || f(client.clone()))))
    }

    fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<()> {
        let full = self.full_key(key);
        let md5 = writer::content_md5(&data);
        let data = bytes::Bytes::from(data);
        let r = self.call("put", key, |c| {
            let req = c
                .put_object()
                .bucket(&self.cfg.bucket)
                .key(&full)
                .content_md5(&md5)
                .body(ByteStream::from(data.clone()));
            let req = writer::with_put_options(&self.cfg, req);
            async move { req.send().await.map(|_| ()).map_err(|e| Failure::from_sdk(&e)) }
        })?;
        r.map_err(|f| self.error("put", key, f))
    }
}

impl S3Storage {
    /// Cheap: the client is built on first use.
    pub fn new(cfg: S3Config) -> S3Storage {
        S3Storage { inner: Arc::new(Inner { cfg, client: Mutex::new(None) }) }
    }

    pub fn config(&self) -> &S3Config {
        &self.inner.cfg
    }

}

impl Storage for S3Storage {
    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        check_key("get", key)?;
        reader::open(self.inner.clone(), key)
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key("put", key)?;
        if data.len() as u64 <= self.inner.cfg.part_size {
            return self.inner.put_bytes(key, data.to_vec());
        }
        let mut w = self.writer(key)?;
        io::Write::write_all(&mut w, data).map_err(|e| Error::storage("put", key, e))?;
        w.finish().map(|_| ())
    }

    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        check_key("write", key)?;
        let client = self.inner.client("write", key)?;
        Ok(Box::new(writer::S3Writer::new(self.inner.clone(), client, key)))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let inner = &self.inner;
        let root = inner.full_key("");
        let full_prefix = format!("{root}{prefix}");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let r = inner.call("list", prefix, |c| {
                let req = c
                    .list_objects_v2()
                    .bucket(&inner.cfg.bucket)
                    .prefix(&full_prefix)
                    .set_continuation_token(token.clone());
                async move { req.send().await.map_err(|e| Failure::from_sdk(&e)) }
            })?;
            let page = r.map_err(|f| inner.error("list", prefix, f))?;
            for o in page.contents() {
                let Some(k) = o.key() else { continue };
                let Some(rel) = k.strip_prefix(&root) else { continue };
                let modified = o
                    .last_modified()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                    .unwrap_or(std::time::UNIX_EPOCH);
                out.push(ObjectInfo { key: rel.to_string(), size: o.size().unwrap_or(0).max(0) as u64, modified });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        check_key("stat", key)?;
        let inner = &self.inner;
        let full = inner.full_key(key);
        // A one-byte GET rather than HEAD: HEAD answers have no body, so a missing bucket or a
        // bad key would arrive as a bare 404/403 without the code that says what to fix.
        let r = inner.call("stat", key, |c| {
            let req = c.get_object().bucket(&inner.cfg.bucket).key(&full).range("bytes=0-0");
            async move { req.send().await.map(|_| ()).map_err(|e| Failure::from_sdk(&e)) }
        })?;
        match r {
            Ok(()) => Ok(true),
            Err((f, _)) if f.is_not_found() => Ok(false),
            // An empty object has no byte 0.
            Err((f, _)) if f.status == Some(416) || f.code.as_deref() == Some("InvalidRange") => Ok(true),
            Err(f) => Err(inner.error("stat", key, f)),
        }
    }

    /// One ListObjectsV2 with max-keys 1: a missing bucket or a bad endpoint is an error.
    fn has_dir(&self, dir: &str) -> Result<bool> {
        let inner = &self.inner;
        let full_prefix = inner.full_key(dir);
        let r = inner.call("list", dir, |c| {
            let req = c.list_objects_v2().bucket(&inner.cfg.bucket).prefix(&full_prefix).max_keys(1);
            async move { req.send().await.map_err(|e| Failure::from_sdk(&e)) }
        })?;
        let page = r.map_err(|f| inner.error("list", dir, f))?;
        Ok(!page.contents().is_empty())
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key("delete", key)?;
        let inner = &self.inner;
        let full = inner.full_key(key);
        let r = inner.call("delete", key, |c| {
            let req = c.delete_object().bucket(&inner.cfg.bucket).key(&full);
            async move { req.send().await.map(|_| ()).map_err(|e| Failure::from_sdk(&e)) }
        })?;
        match r {
            Ok(()) => Ok(()),
            Err((f, _)) if f.is_not_found() => Ok(()),
            Err(f) => Err(inner.error("delete", key, f)),
        }
    }

    /// ListMultipartUploads under the prefix (all pages): uploads our writers started and
    /// neither completed nor aborted (a killed process, an abort that could not get through).
    fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        let inner = &self.inner;
        let root = inner.full_key("");
        let full_prefix = format!("{root}{prefix}");
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let r = inner.call("list-uploads", prefix, |c| {
                let req = c
                    .list_multipart_uploads()
                    .bucket(&inner.cfg.bucket)
                    .prefix(&full_prefix)
                    .set_key_marker(key_marker.clone())
                    .set_upload_id_marker(id_marker.clone());
                async move { req.send().await.map_err(|e| Failure::from_sdk(&e)) }
            })?;
            let page = r.map_err(|f| inner.error("list-uploads", prefix, f))?;
            for u in page.uploads() {
                let (Some(k), Some(id)) = (u.key(), u.upload_id()) else { continue };
                let Some(rel) = k.strip_prefix(&root) else { continue };
                let started = u
                    .initiated()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                    .unwrap_or(std::time::UNIX_EPOCH);
                out.push(PendingUpload { key: rel.to_string(), upload_id: id.to_string(), last_activity: started, size: 0 });
            }
            match (page.is_truncated(), page.next_key_marker(), page.next_upload_id_marker()) {
                (Some(true), Some(k), id) => {
                    key_marker = Some(k.to_string());
                    id_marker = id.map(str::to_string);
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| a.upload_id.cmp(&b.upload_id)));
        Ok(out)
    }

    fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        check_key("abort-upload", &upload.key)?;
        let inner = &self.inner;
        let full = inner.full_key(&upload.key);
        let r = inner.call("abort-upload", &upload.key, |c| {
            let req = c.abort_multipart_upload().bucket(&inner.cfg.bucket).key(&full).upload_id(&upload.upload_id);
            async move { req.send().await.map(|_| ()).map_err(|e| Failure::from_sdk(&e)) }
        })?;
        match r {
            Ok(()) => Ok(()),
            // Completed or aborted meanwhile.
            Err((f, _)) if f.code.as_deref() == Some("NoSuchUpload") => Ok(()),
            Err(f) => Err(inner.error("abort-upload", &upload.key, f)),
        }
    }

    fn describe(&self) -> String {
        self.inner.cfg.describe()
    }
}
