//! Streaming upload: bytes fill one part-sized buffer. An object that fits in it goes up as one
//! PUT at `finish()`; a bigger one becomes a multipart upload with at most `parts_in_flight`
//! parts uploading while the next fills, so memory stays at part_size x (parts_in_flight + 1).
//! A writer dropped (or failed) before `finish()` aborts its multipart upload.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;

use aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass};
use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::task::JoinHandle;

use super::retry::{retrying, Failure};
use super::{runtime, wait, Inner, S3Config};
use crate::error::Result;
use crate::storage::ObjectWriter;

type PartResult = std::result::Result<CompletedPart, (Failure, u32)>;

/// Storage class and server-side encryption, set the same way on a PUT and on a multipart
/// upload's creation (two SDK builder types with no common trait).
macro_rules! with_object_options {
    ($cfg:expr, $req:expr) => {{
        let mut req = $req;
        if let Some(class) = &$cfg.storage_class {
            req = req.storage_class(StorageClass::from(class.as_str()));
        }
        if let Some(sse) = &$cfg.sse {
            req = req.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
        }
        if let Some(kms) = &$cfg.sse_kms_id {
            req = req.ssekms_key_id(kms);
        }
        req
    }};
}

/// Base64 MD5 of a body, for the Content-MD5 header: S3 refuses (BadDigest) a PUT or part whose
/// body does not match it, so a body damaged or cut on the way never becomes an object.
pub(super) fn content_md5(data: &[u8]) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

pub(super) fn with_put_options(cfg: &S3Config, req: PutObjectFluentBuilder) -> PutObjectFluentBuilder {
    with_object_options!(cfg, req)
}

fn with_create_options(cfg: &S3Config, req: CreateMultipartUploadFluentBuilder) -> CreateMultipartUploadFluentBuilder {
    with_object_options!(cfg, req)
}

/// The reason alone: a caller wrapping the io::Error adds "storage write <key>" itself.
fn cause(e: &crate::Error) -> String {
    match e {
        crate::Error::Storage { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

pub(super) struct S3Writer {
    inner: Arc<Inner>,
    client: Client,
    key: String,
    full_key: String,
    buf: Vec<u8>,
    upload_id: Option<String>,
    next_part: i32,
    in_flight: VecDeque<JoinHandle<PartResult>>,
    parts: Vec<CompletedPart>,
    written: u64,
    /// Set after the first failure: every later write fails, and drop aborts.
    failed: Option<String>,
    finished: bool,
}

impl S3Writer {
    pub(super) fn new(inner: Arc<Inner>, client: Client, key: &str) -> S3Writer {
        let full_key = inner.full_key(key);
        S3Writer {
            inner,
            client,
            key: key.to_string(),
            full_key,
            buf: Vec::new(),
            upload_id: None,
            next_part: 1,
            in_flight: VecDeque::new(),
            parts: Vec::new(),
            written: 0,
            failed: None,
            finished: false,
        }
    }

    fn part_size(&self) -> usize {
        self.inner.cfg.part_size as usize
    }

    fn fail(&mut self, op: &'static str, f: (Failure, u32)) -> crate::Error {
        let e = self.inner.error(op, &self.key, f);
        self.failed = Some(cause(&e));
        e
    }

    fn start_upload(&mut self) -> Result<String> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let (cfg, client, full) = (&self.inner.cfg, &self.client, &self.full_key);
        let what = format!("start upload {}", self.inner.url(full));
        let r = wait(retrying(cfg.max_retries, &what, || {
            let req = with_create_options(cfg, client.create_multipart_upload().bucket(&cfg.bucket).key(full));
            async move { req.send().await.map_err(|e| Failure::from_sdk(&e)) }
        }));
        let id = match r {
            Ok(out) => out.upload_id().unwrap_or_default().to_string(),
            Err(f) => return Err(self.fail("write", f)),
        };
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    /// Wait for the oldest part in flight.
    fn wait_oldest(&mut self) -> Result<()> {
        let Some(h) = self.in_flight.pop_front() else { return Ok(()) };
        match wait(h) {
            Ok(Ok(part)) => {
                self.parts.push(part);
                Ok(())
            }
            Ok(Err(f)) => Err(self.fail("write", f)),
            Err(join) => {
                let msg = format!("part upload task failed: {join}");
                self.failed = Some(msg.clone());
                Err(crate::Error::storage("write", self.key.clone(), io::Error::other(msg)))
            }
        }
    }

    /// Send the buffer as the next part (starting the multipart upload if needed).
    fn send_part(&mut self) -> Result<()> {
        let upload_id = self.start_upload()?;
        while self.in_flight.len() >= self.inner.cfg.parts_in_flight {
            self.wait_oldest()?;
        }
        let part_size = self.part_size();
        let data = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(part_size)));
        let number = self.next_part;
        self.next_part += 1;
        let (client, bucket, key) = (self.client.clone(), self.inner.cfg.bucket.clone(), self.full_key.clone());
        let max_retries = self.inner.cfg.max_retries;
        let what = format!("upload part {number} of {}", self.inner.url(&self.full_key));
        self.in_flight.push_back(runtime().spawn(async move {
            let md5 = content_md5(&data);
            retrying(max_retries, &what, || {
                let req = client
                    .upload_part()
                    .bucket(&bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .content_md5(md5.clone())
                    .body(ByteStream::from(data.clone()));
                async move {
                    let out = req.send().await.map_err(|e| Failure::from_sdk(&e))?;
                    Ok(CompletedPart::builder().set_e_tag(out.e_tag().map(str::to_string)).part_number(number).build())
                }
            })
            .await
        }));
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if self.upload_id.is_none() {
            let data = std::mem::take(&mut self.buf);
            return self.inner.put_bytes(&self.key, data).inspect_err(|e| self.failed = Some(cause(e)));
        }
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        self.parts.sort_by_key(|p| p.part_number());
        let upload = CompletedMultipartUpload::builder().set_parts(Some(self.parts.clone())).build();
        let (cfg, client, full) = (&self.inner.cfg, &self.client, &self.full_key);
        let id = self.upload_id.clone().unwrap_or_default();
        let what = format!("complete upload {}", self.inner.url(full));
        let r = wait(retrying(cfg.max_retries, &what, || {
            let req = client
                .complete_multipart_upload()
                .bucket(&cfg.bucket)
                .key(full)
                .upload_id(&id)
                .multipart_upload(upload.clone());
            async move { req.send().await.map(|_| ()).map_err(|e| Failure::from_sdk(&e)) }
        }));
        r.map_err(|f| self.fail("write", f))
    }

    /// Stop uploading parts and abort the multipart upload, so nothing is left behind.
    fn abort(&mut self) {
        for h in &self.in_flight {
            h.abort();
        }
        let in_flight: Vec<_> = self.in_flight.drain(..).collect();
        let Some(id) = self.upload_id.take() else { return };
        let (cfg, client, full) = (&self.inner.cfg, &self.client, &self.full_key);
        wait(async {
            for h in in_flight {
                let _ = h.await;
            }
            // Bounded: an abort that cannot get through leaves the upload to the bucket's
            // lifecycle rules; it never becomes a visible object.
            let _ = retrying(cfg.max_retries.min(3), "abort upload", || {
                let req = client.abort_multipart_upload().bucket(&cfg.bucket).key(full).upload_id(&id);
                async move { req.send().await.map(|_| ()).map_err(|e| Failure::from_sdk(&e)) }
            })
            .await;
        });
    }
}

impl Write for S3Writer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(msg) = &self.failed {
            return Err(io::Error::other(msg.clone()));
        }
        let room = self.part_size() - self.buf.len();
        let n = room.min(data.len());
        let need = self.buf.len() + n;
        if need > self.buf.capacity() {
            // Grow by doubling but never past one part: small objects (most WAL segments
            // compress well) do not reserve a whole part, big ones stay within the bound.
            let target = need.max(self.buf.capacity() * 2).max(64 * 1024).min(self.part_size());
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        if self.buf.len() == self.part_size() {
            self.send_part().map_err(|e| io::Error::other(cause(&e)))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        if let Some(msg) = &self.failed {
            return Err(crate::Error::storage("write", self.key.clone(), io::Error::other(msg.clone())));
        }
        self.commit()?;
        self.finished = true;
        Ok(self.written)
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if !self.finished {
            self.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_md5_is_base64_of_the_digest() {
        // RFC 1321 test vectors, base64 as S3's Content-MD5 header wants them.
        assert_eq!(super::content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
        assert_eq!(super::content_md5(b"abc"), "kAFQmDzST7DWlj99KOF/cg==");
    }
}
