//! Streaming download. The body is read chunk by chunk as the caller reads; if the connection
//! breaks mid-way the rest is requested again with a Range from where we were, pinned to the
//! same object version by its ETag.

use std::io::{self, Read};
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::retry::{retrying, Failure};
use super::{wait, Inner};
use crate::error::Result;
use crate::storage::body::{Body, BodyReader};

pub(super) struct S3Reader {
    inner: Arc<Inner>,
    client: Client,
    key: String,
    full_key: String,
    body: ByteStream,
    /// Where the next request starts (BodyReader's count).
    pos: u64,
    size: Option<u64>,
    etag: Option<String>,
    /// Reconnects left for this object (WALG_S3_MAX_RETRIES).
    reconnects_left: u32,
}

struct Opened {
    body: ByteStream,
    size: Option<u64>,
    etag: Option<String>,
}

async fn get_from(
    client: &Client,
    bucket: &str,
    key: &str,
    from: u64,
    etag: Option<&str>,
) -> std::result::Result<Opened, Failure> {
    let mut req = client.get_object().bucket(bucket).key(key);
    if from > 0 {
        req = req.range(format!("bytes={from}-"));
    }
    if let Some(t) = etag {
        req = req.if_match(t);
    }
    let out = req.send().await.map_err(|e| Failure::from_sdk(&e))?;
    let size = out.content_length().filter(|&l| l >= 0).map(|l| from + l as u64);
    let etag = out.e_tag().map(str::to_string);
    Ok(Opened { body: out.body, size, etag })
}

/// `None` when the object does not exist.
pub(super) fn open(inner: Arc<Inner>, key: &str) -> Result<Option<Box<dyn Read + Send>>> {
    let client = inner.client("get", key)?;
    let full_key = inner.full_key(key);
    let what = format!("get {}", inner.url(&full_key));
    let r = wait(retrying(inner.cfg.max_retries, &what, || get_from(&client, &inner.cfg.bucket, &full_key, 0, None)));
    let opened = match r {
        Ok(o) => o,
        Err((f, _)) if f.is_not_found() => return Ok(None),
        Err(f) => return Err(inner.error("get", key, f)),
    };
    let reconnects_left = inner.cfg.max_retries;
    Ok(Some(Box::new(BodyReader::new(S3Reader {
        inner,
        client,
        key: key.to_string(),
        full_key,
        body: opened.body,
        pos: 0,
        size: opened.size,
        etag: opened.etag,
        reconnects_left,
    }))))
}

/// The download could not be completed (after the retries): a transport failure, so its kind
/// must stay Unreachable. `io::ErrorKind::Other` would read as undecodable data (Corrupt) in
/// `codec::read_error`.
fn lost(e: crate::Error) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string())
}

impl S3Reader {
    /// Ask again for the rest of the object after a broken body.
    fn reconnect(&mut self, why: Failure) -> io::Result<()> {
        if self.reconnects_left == 0 {
            return Err(lost(self.inner.error("get", &self.key, (why, self.inner.cfg.max_retries + 1))));
        }
        self.reconnects_left -= 1;
        let (client, bucket, key, pos, etag) =
            (&self.client, &self.inner.cfg.bucket, &self.full_key, self.pos, self.etag.as_deref());
        let what = format!("resume get {} at byte {pos}", self.inner.url(key));
        let r = wait(retrying(self.inner.cfg.max_retries, &what, || get_from(client, bucket, key, pos, etag)));
        match r {
            Ok(o) => {
                self.body = o.body;
                Ok(())
            }
            Err(f) => Err(lost(self.inner.error("get", &self.key, f))),
        }
    }
}

impl Body for S3Reader {
    fn next_piece(&mut self, pos: u64) -> io::Result<Option<Bytes>> {
        self.pos = pos;
        loop {
            match wait(self.body.next()) {
                Some(Ok(b)) => return Ok(Some(b)),
                Some(Err(e)) => self.reconnect(Failure::body(&e))?,
                None => {
                    if self.size.is_some_and(|s| self.pos < s) {
                        let short = io::Error::new(io::ErrorKind::UnexpectedEof, "body ended early");
                        self.reconnect(Failure::body(&short))?;
                    } else {
                        return Ok(None);
                    }
                }
            }
        }
    }
}
