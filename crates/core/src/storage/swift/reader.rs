//! Streaming reads with resume: one GET for the object, and after a broken body a new one from
//! the byte where it broke (`Range`), pinned to the object's ETag (`If-Match`: an object
//! replaced meanwhile is an error, never a mix of two versions). The range requests are retried
//! through retry.rs; when the retries are used up the read fails (kind Unreachable) instead of
//! ending early.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use reqwest::Response;

use super::{header, Inner};
use crate::error::{Error, Result};
use crate::storage::body::{Body, BodyReader};
use crate::storage::retry;
use crate::storage::s3::wait;

pub(crate) struct SwiftReader {
    inner: Arc<Inner>,
    key: String,
    name: String,
    etag: Option<String>,
    resp: Option<Response>,
    /// Where the next request starts (BodyReader's count).
    pos: u64,
    size: u64,
    reconnects_left: u32,
}

pub(crate) fn open(inner: Arc<Inner>, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
    let name = inner.name(key);
    // Not retried here: `storage::open`'s decorator retries the whole `get`.
    let resp = wait(async {
        let r = inner.send("get", key, Some(&name), |c, url| c.get(url)).await?;
        match r.status().as_u16() {
            200 => Ok(Some(r)),
            404 => inner.missing("get", key, r).await.map(|_| None),
            _ => Err(inner.status_error("get", key, r).await),
        }
    })?;
    let Some(resp) = resp else { return Ok(None) };
    let size = header(&resp, "content-length").and_then(|v| v.parse().ok()).ok_or_else(|| {
        Error::storage("get", key.to_string(), io::Error::other(format!("{}: Swift sent no Content-Length", inner.url(key))))
    })?;
    let etag = header(&resp, "etag");
    let reconnects_left = inner.cfg.max_retries;
    Ok(Some(Box::new(BodyReader::new(SwiftReader { inner, key: key.to_string(), name, etag, resp: Some(resp), pos: 0, size, reconnects_left }))))
}

/// A transport failure after the retries: its kind must stay Unreachable (ConnectionAborted),
/// never read as undecodable data.
fn lost(e: Error) -> io::Error {
    match e {
        Error::Storage { source, .. } if source.kind() != io::ErrorKind::InvalidData && source.kind() != io::ErrorKind::UnexpectedEof => source,
        other => io::Error::new(io::ErrorKind::ConnectionAborted, other.to_string()),
    }
}

impl SwiftReader {
    /// Reopen the body from `pos` after `why`.
    fn reconnect(&mut self, why: String) -> io::Result<()> {
        if self.reconnects_left == 0 {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, format!(
                "{}: the download broke off at byte {} of {}: {why}", self.inner.url(&self.key), self.pos, self.size
            )));
        }
        self.reconnects_left -= 1;
        let what = format!("get {} from byte {}", self.inner.url(&self.key), self.pos);
        let (inner, key, name, etag, pos) = (&self.inner, self.key.as_str(), self.name.as_str(), self.etag.clone(), self.pos);
        let r = wait(retry::run_async(&inner.policy(), &what, || {
            let etag = etag.clone();
            async move {
                let r = inner
                    .send("get", key, Some(name), |c, url| {
                        let b = c.get(url).header("Range", format!("bytes={pos}-"));
                        match &etag {
                            Some(t) => b.header("If-Match", t),
                            None => b,
                        }
                    })
                    .await?;
                match r.status().as_u16() {
                    206 => Ok(r),
                    200 if pos == 0 => Ok(r),
                    412 => Err(Error::storage("get", key.to_string(), io::Error::other(format!(
                        "{}: the object was replaced while it was read (ETag changed): read it again",
                        inner.url(key)
                    )))),
                    404 => Err(Error::storage("get", key.to_string(), io::Error::other(format!(
                        "{}: the object was deleted while it was read", inner.url(key)
                    )))),
                    _ => Err(inner.status_error("get", key, r).await),
                }
            }
        }));
        match r {
            Ok(resp) => {
                self.resp = Some(resp);
                Ok(())
            }
            Err((e, _)) => Err(lost(e)),
        }
    }
}

impl Body for SwiftReader {
    fn next_piece(&mut self, pos: u64) -> io::Result<Option<Bytes>> {
        self.pos = pos;
        loop {
            if self.pos >= self.size {
                return Ok(None);
            }
            let why = match self.resp.as_mut() {
                None => "no connection".to_string(),
                Some(resp) => match wait(resp.chunk()) {
                    Ok(Some(b)) => {
                        // Never more than the object: a body longer than announced is damage.
                        if self.pos + (b.len() as u64) > self.size {
                            return Err(io::Error::new(io::ErrorKind::InvalidData, format!(
                                "{}: Swift sent more than the {} bytes it announced", self.inner.url(&self.key), self.size
                            )));
                        }
                        return Ok(Some(b));
                    }
                    Ok(None) => "the body ended early".to_string(),
                    Err(e) => e.to_string(),
                },
            };
            self.resp = None;
            self.reconnect(why)?;
        }
    }
}
