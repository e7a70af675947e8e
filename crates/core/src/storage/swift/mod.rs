//! OpenStack Swift (`WALG_SWIFT_PREFIX`), a client of our own on reqwest (rustls with ring, the
//! client Azure uses), not OpenDAL's swift service: that one buffers a whole object in memory
//! before its one PUT, takes a fixed token (no authentication, no renewal) and has no
//! conditional reads; fixing that around it would be most of this client anyway.
//!
//! Requests run on the process's storage runtime (`s3::wait`). Authentication (auth.rs) happens
//! on first use; a 401 drops the token, authenticates again and repeats the request once (a
//! token expires; a streaming upload is the exception: see writer.rs). Retries: `storage::open`
//! wraps this storage in the retry decorator (retry.rs) for single-request operations; the
//! resuming reader retries its range requests through the same loop (reader.rs).
//!
//! Guarantees as for S3: an upload is one PUT (a streaming one is chunked, and Swift's object
//! server stores it only when the last chunk arrived, so a failed or killed upload leaves
//! nothing: no segments, nothing pending). Objects are limited to the cluster's max_file_size
//! (5 GiB by default; WAL-G has the same limit: it too writes one object per PUT). Memory per
//! writer: CHUNK x (QUEUE + 2), 6 MiB. Listings are paged with `marker` and streamed into the result.
//! Missing versus unreachable: "not there" only when Swift (its `X-Trans-Id` on the answer)
//! said 404 and the container exists; a missing container, a 404 from something that is not
//! Swift, denied access or a server that does not answer is an error of kind Unreachable,
//! saying what to fix.

mod auth;
mod reader;
pub mod settings;
mod writer;

use std::io::{self, Read};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use reqwest::{RequestBuilder, Response};
use serde_json::Value;

use super::s3::wait;
use super::{check_key, ObjectInfo, ObjectWriter, Storage};
use crate::error::{Error, Result};
use auth::Session;
pub use settings::SwiftConfig;

/// Objects in one listing page (Swift's default container_listing_limit).
const PAGE: usize = 10_000;

pub struct SwiftStorage {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    cfg: SwiftConfig,
    client: OnceLock<std::result::Result<reqwest::Client, String>>,
    session: Mutex<Option<Arc<Session>>>,
}

/// A transport failure (no answer): transient, kind Unreachable.
pub(crate) fn transport_error(op: &'static str, key: &str, url: &str, e: &reqwest::Error) -> Error {
    let mut text = e.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(&format!(": {s}"));
        src = s.source();
    }
    let kind = if e.is_timeout() { io::ErrorKind::TimedOut } else { io::ErrorKind::ConnectionAborted };
    Error::storage(op, key, io::Error::new(kind, format!("cannot reach {url} ({text}): is the Swift service up and OS_AUTH_URL right?")))
}

/// Percent-encode a path for a URL, keeping '/'.
fn encode(path: &str) -> String {
    percent(path, b"-_.~/")
}

/// Percent-encode a query parameter's value.
fn encode_query(value: &str) -> String {
    percent(value, b"-_.~")
}

fn percent(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Lowercase hex, as Swift writes an ETag.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Seconds since 1970 of a UTC civil date (Howard Hinnant's days_from_civil).
fn unix_seconds(y: i64, m: i64, d: i64, hh: i64, mm: i64, ss: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468) * 86_400 + hh * 3600 + mm * 60 + ss
}

/// A listing's `last_modified` ("2026-12-07T17:24:55.546500", UTC).
fn parse_listing_time(s: &str) -> Option<SystemTime> {
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let secs = unix_seconds(n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    let micros = s.get(20..).and_then(|f| format!("{f:0<6}").get(..6)?.parse::<u32>().ok()).unwrap_or(0);
    Some(SystemTime::UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, micros * 1000))
}

impl Inner {
    pub(crate) fn policy(&self) -> super::RetryPolicy {
        super::RetryPolicy::new(self.cfg.max_retries)
    }

    fn client(&self, op: &'static str, key: &str) -> Result<reqwest::Client> {
        match self.client.get_or_init(|| super::http::http_client(None)) {
            Ok(c) => Ok(c.clone()),
            Err(m) => Err(Error::storage(op, key, io::Error::other(format!("{}: {m}", self.cfg.describe())))),
        }
    }

    /// The object's name in the container.
    fn name(&self, key: &str) -> String {
        if self.cfg.path.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.cfg.path)
        }
    }

    /// `swift://container/path/key`, for messages.
    pub(crate) fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.cfg.url())
    }

    async fn session(&self, op: &'static str, key: &str) -> Result<Arc<Session>> {
        if let Some(s) = self.session.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(s.clone());
        }
        let s = Arc::new(auth::authenticate(&self.client(op, key)?, &self.cfg).await.map_err(|e| with_key(e, op, key))?);
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
        Ok(s)
    }

    /// Forget `used` (a 401 said it expired), unless another request renewed it already.
    fn drop_session(&self, used: &Session) {
        let mut slot = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_deref() == Some(used) {
            *slot = None;
        }
    }

    /// Send one request built by `build(client, object or container URL)` with the token; on
    /// 401, authenticate again and send it once more. `object` None: the container itself.
    pub(crate) async fn send(
        &self,
        op: &'static str,
        key: &str,
        object: Option<&str>,
        build: impl Fn(&reqwest::Client, String) -> RequestBuilder,
    ) -> Result<Response> {
        let client = self.client(op, key)?;
        for attempt in 0..2 {
            let session = self.session(op, key).await?;
            let url = self.target(&session, object);
            let resp = build(&client, url.clone())
                .header("X-Auth-Token", &session.token)
                .send()
                .await
                .map_err(|e| transport_error(op, key, &url, &e))?;
            if resp.status().as_u16() == 401 && attempt == 0 {
                self.drop_session(&session);
                continue;
            }
            return Ok(resp);
        }
        unreachable!("the loop returns")
    }

    pub(crate) fn target(&self, session: &Session, object: Option<&str>) -> String {
        let container = format!("{}/{}", session.storage_url, encode(&self.cfg.container));
        match object {
            Some(name) => format!("{container}/{}", encode(name)),
            None => container,
        }
    }

    /// An answer other than the ones the caller handles, as an error saying what to fix.
    pub(crate) async fn status_error(&self, op: &'static str, key: &str, resp: Response) -> Error {
        let status = resp.status().as_u16();
        let swift = resp.headers().contains_key("x-trans-id");
        let body: String = resp.text().await.unwrap_or_default().chars().take(200).collect();
        let object = self.url(key);
        let (kind, msg) = match status {
            401 | 403 => (io::ErrorKind::PermissionDenied, format!(
                "access denied to {object} ({status}): fix OS_USERNAME / OS_PASSWORD (config file or environment), \
                 or grant this user access to container {}",
                self.cfg.container
            )),
            404 if swift => (io::ErrorKind::Other, format!(
                "container {} does not exist in this Swift account: create it or fix WALG_SWIFT_PREFIX",
                self.cfg.container
            )),
            404 => (io::ErrorKind::Other, format!(
                "{object}: the storage URL answered 404 without Swift's X-Trans-Id ({body}): is the object-store endpoint \
                 (OS_AUTH_URL, OS_REGION_NAME, OS_ENDPOINT_TYPE) a Swift proxy?"
            )),
            413 => (io::ErrorKind::Other, format!(
                "{object}: Swift refused the object as too large (413, its max_file_size, 5 GiB by default): \
                 lower WALG_TAR_SIZE_THRESHOLD"
            )),
            408 | 429 | 498 | 500..=599 => (io::ErrorKind::ConnectionAborted, format!(
                "{object}: Swift answered {status}, try again later ({body})"
            )),
            _ => (io::ErrorKind::Other, format!("{object}: Swift answered {status} ({body})")),
        };
        Error::storage(op, key.to_string(), io::Error::new(kind, msg))
    }

    /// Swift said 404 for `key`: "not there" when it came from Swift and the container exists;
    /// otherwise the error saying why.
    pub(crate) async fn missing(&self, op: &'static str, key: &str, resp: Response) -> Result<()> {
        if !resp.headers().contains_key("x-trans-id") {
            return Err(self.status_error(op, key, resp).await);
        }
        // One more request per miss: a 404 for a missing container looks the same.
        let c = self.send(op, key, None, |c, url| c.head(url)).await?;
        if c.status().is_success() {
            Ok(())
        } else {
            Err(self.status_error(op, key, c).await)
        }
    }

    /// One listing page of names after `marker` starting with `prefix` (full names).
    async fn page(&self, op: &'static str, prefix: &str, marker: &str, limit: usize) -> Result<Vec<ObjectInfo>> {
        // With a path, "" lists "path/": never a sibling "path2/...".
        let full = self.name(prefix);
        let query = format!("?format=json&prefix={}&marker={}&limit={limit}", encode_query(&full), encode_query(marker));
        let resp = self
            .send(op, prefix, None, |c, url| c.get(format!("{url}{query}")))
            .await?;
        match resp.status().as_u16() {
            204 => return Ok(Vec::new()),
            200 => {}
            _ => return Err(self.status_error(op, prefix, resp).await),
        }
        let text = resp.text().await.map_err(|e| transport_error(op, prefix, &self.url(prefix), &e))?;
        let items: Vec<Value> = serde_json::from_str(&text)
            .map_err(|e| Error::storage(op, prefix.to_string(), io::Error::other(format!("{}: the listing is no JSON: {e}", self.cfg.url()))))?;
        let strip = if self.cfg.path.is_empty() { 0 } else { self.cfg.path.len() + 1 };
        Ok(items
            .iter()
            .filter_map(|o| {
                let name = o.get("name")?.as_str()?;
                Some(ObjectInfo {
                    key: name.get(strip..)?.to_string(),
                    size: o.get("bytes").and_then(Value::as_u64).unwrap_or(0),
                    modified: o.get("last_modified").and_then(Value::as_str).and_then(parse_listing_time).unwrap_or(SystemTime::UNIX_EPOCH),
                })
            })
            .collect())
    }
}

/// An auth error carries no key; give it the operation's.
fn with_key(e: Error, op: &'static str, key: &str) -> Error {
    match e {
        Error::Storage { source, .. } => Error::storage(op, key, source),
        other => other,
    }
}

impl SwiftStorage {
    /// Cheap: the client is built and authenticated on first use.
    pub fn new(cfg: SwiftConfig) -> SwiftStorage {
        SwiftStorage { inner: Arc::new(Inner { cfg, client: OnceLock::new(), session: Mutex::new(None) }) }
    }

    pub fn config(&self) -> &SwiftConfig {
        &self.inner.cfg
    }
}

impl Storage for SwiftStorage {
    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
        check_key("get", key)?;
        reader::open(self.inner.clone(), key)
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key("put", key)?;
        let inner = &self.inner;
        let name = inner.name(key);
        let body = bytes::Bytes::copy_from_slice(data);
        // Swift checks the body against the ETag we send (422 when they differ).
        let md5 = hex(&<md5::Md5 as md5::Digest>::digest(data));
        // Said even when 0: Swift refuses a PUT without a length (411) and hyper sends none for
        // an empty body.
        let len = data.len();
        wait(async {
            let resp = inner
                .send("put", key, Some(&name), |c, url| c.put(url).header("ETag", &md5).header("Content-Length", len).body(body.clone()))
                .await?;
            if resp.status().as_u16() == 201 {
                Ok(())
            } else {
                Err(inner.status_error("put", key, resp).await)
            }
        })
    }

    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        check_key("write", key)?;
        Ok(Box::new(writer::SwiftWriter::new(self.inner.clone(), key)?))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let inner = &self.inner;
        wait(async {
            let mut out: Vec<ObjectInfo> = Vec::new();
            let mut marker = String::new();
            loop {
                let page = inner.page("list", prefix, &marker, PAGE).await?;
                let Some(last) = page.last() else { break };
                marker = inner.name(&last.key);
                out.extend(page);
            }
            // Swift lists in byte order already; sorted again so the invariant does not hang
            // on a server setting.
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
    }

    fn exists(&self, key: &str) -> Result<bool> {
        check_key("stat", key)?;
        let inner = &self.inner;
        let name = inner.name(key);
        wait(async {
            let resp = inner.send("stat", key, Some(&name), |c, url| c.head(url)).await?;
            match resp.status().as_u16() {
                200..=299 => Ok(true),
                404 => inner.missing("stat", key, resp).await.map(|_| false),
                _ => Err(inner.status_error("stat", key, resp).await),
            }
        })
    }

    /// One listing page of at most one key.
    fn has_dir(&self, dir: &str) -> Result<bool> {
        wait(async { Ok(!self.inner.page("list", dir, "", 1).await?.is_empty()) })
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key("delete", key)?;
        let inner = &self.inner;
        let name = inner.name(key);
        wait(async {
            let resp = inner.send("delete", key, Some(&name), |c, url| c.delete(url)).await?;
            match resp.status().as_u16() {
                200..=299 => Ok(()),
                404 => inner.missing("delete", key, resp).await,
                _ => Err(inner.status_error("delete", key, resp).await),
            }
        })
    }

    fn describe(&self) -> String {
        self.inner.cfg.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_and_times_parsed() {
        assert_eq!(encode("wal_005/0000000100.lz4"), "wal_005/0000000100.lz4");
        assert_eq!(encode("a b/c%d?e"), "a%20b/c%25d%3Fe");
        assert_eq!(encode_query("p/wal_005/a&b"), "p%2Fwal_005%2Fa%26b");
        let t = parse_listing_time("2026-12-07T17:24:55.546500").unwrap();
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_796_664_295);
        assert_eq!(d.subsec_micros(), 546_500);
        assert_eq!(parse_listing_time("1970-01-01T00:00:01").unwrap(), SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        assert!(parse_listing_time("garbage").is_none());
    }
}
