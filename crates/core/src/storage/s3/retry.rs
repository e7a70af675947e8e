//! Which S3 failures are worth retrying and the message a user reads when we give up. The loop,
//! backoff and log line are storage/retry.rs's (the one implementation); the SDK's own retries are
//! off, because S3's retries must happen per request inside our streams (each part of a multipart
//! upload, each resumed range of a read) and the SDK's would multiply with ours.

use std::error::Error as StdError;
use std::future::Future;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::config::http::HttpResponse;

use super::settings::S3Config;
use crate::storage::retry::{RetryPolicy, Transient};

/// What went wrong, reduced to the facts that decide retrying and the message.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    /// HTTP status when the server answered.
    pub status: Option<u16>,
    /// S3 error code (`NoSuchBucket`, `SlowDown`, ...) when the server sent one.
    pub code: Option<String>,
    /// The whole error chain as text.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FailureKind {
    /// The request could not be built or signed (e.g. no credentials found).
    Construction,
    /// No answer in time.
    Timeout,
    /// The request did not get through: DNS, connect, reset.
    Dispatch,
    /// An answer came but could not be parsed.
    Response,
    /// The server answered with an error.
    Service,
    /// The body broke off while streaming.
    Body,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    Retry,
    Fail,
}

/// Codes that never succeed on retry: configuration or permission problems.
const PERMANENT_CODES: &[&str] = &[
    "NoSuchBucket",
    "AccessDenied",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidBucketName",
    "AuthorizationHeaderMalformed",
    "PermanentRedirect",
    "InvalidToken",
    "ExpiredToken",
    "InvalidArgument",
    "InvalidRequest",
    "InvalidStorageClass",
    "KMS.NotFoundException",
    "EntityTooSmall",
    "EntityTooLarge",
    "MalformedXML",
    "NoSuchUpload",
    "InvalidPart",
    "InvalidPartOrder",
    "MethodNotAllowed",
    "NotImplemented",
    "RequestTimeTooSkewed",
];

/// Codes that mean "later": throttling and server-side trouble.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "ProvisionedThroughputExceededException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
];

/// Throttling codes get a longer minimum delay (WAL-G: 500 ms).
fn is_throttling(f: &Failure) -> bool {
    f.status == Some(429) || f.status == Some(503)
        || f.code.as_deref().is_some_and(|c| {
            c.contains("Throttl") || c == "SlowDown" || c.contains("LimitExceeded") || c == "TooManyRequestsException"
        })
}

/// A DNS failure: the endpoint's host name does not resolve; retrying will not help.
pub fn is_dns(f: &Failure) -> bool {
    let d = f.detail.to_ascii_lowercase();
    f.kind == FailureKind::Dispatch
        && (d.contains("dns error") || d.contains("failed to lookup address") || d.contains("name or service not known"))
}

/// TLS handshake problems (unknown CA, bad certificate) do not go away either.
pub fn is_tls(f: &Failure) -> bool {
    let d = f.detail.to_ascii_lowercase();
    f.kind == FailureKind::Dispatch
        && (d.contains("certificate") || d.contains("invalidcertificate") || d.contains("tls handshake"))
}

pub fn classify(f: &Failure) -> Verdict {
    if let Some(code) = f.code.as_deref() {
        if PERMANENT_CODES.contains(&code) {
            return Verdict::Fail;
        }
        if TRANSIENT_CODES.contains(&code) {
            return Verdict::Retry;
        }
    }
    match f.kind {
        FailureKind::Construction => Verdict::Fail,
        FailureKind::Timeout | FailureKind::Body => Verdict::Retry,
        FailureKind::Dispatch if is_dns(f) || is_tls(f) => Verdict::Fail,
        FailureKind::Dispatch => Verdict::Retry,
        FailureKind::Response | FailureKind::Service => match f.status {
            Some(408 | 429) => Verdict::Retry,
            Some(s) if s >= 500 => Verdict::Retry,
            Some(_) => Verdict::Fail,
            // An unparsable answer without status: most likely a broken connection.
            None => Verdict::Retry,
        },
    }
}

fn chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

impl Failure {
    pub fn from_sdk<E>(e: &SdkError<E, HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        let detail = chain(e);
        match e {
            SdkError::ConstructionFailure(_) => {
                Failure { kind: FailureKind::Construction, status: None, code: None, detail }
            }
            SdkError::TimeoutError(_) => Failure { kind: FailureKind::Timeout, status: None, code: None, detail },
            SdkError::DispatchFailure(d) => Failure {
                kind: if d.is_timeout() { FailureKind::Timeout } else { FailureKind::Dispatch },
                status: None,
                code: None,
                detail,
            },
            SdkError::ResponseError(r) => Failure {
                kind: FailureKind::Response,
                status: Some(r.raw().status().as_u16()),
                code: None,
                detail,
            },
            SdkError::ServiceError(s) => Failure {
                kind: FailureKind::Service,
                status: Some(s.raw().status().as_u16()),
                code: s.err().code().map(str::to_string),
                detail: match (s.err().code(), s.err().message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.to_string(),
                    _ => detail,
                },
            },
            _ => Failure { kind: FailureKind::Response, status: None, code: None, detail },
        }
    }

    pub fn body(e: &dyn StdError) -> Failure {
        Failure { kind: FailureKind::Body, status: None, code: None, detail: chain(e) }
    }

    /// S3 answered that the object does not exist: only its `NoSuchKey` error code says so. A
    /// 404 without it is not an answer about the object: the SDK gives a body-less 404 the code
    /// `NotFound`, and a proxy or a wrong endpoint answers 404 for anything; `NoSuchBucket` is
    /// a wrong setting. Those are failures (kind Unreachable), never "missing". (We never HEAD an
    /// object, where a bare 404 would be S3's normal answer: `exists` GETs one byte.)
    pub fn is_not_found(&self) -> bool {
        self.kind == FailureKind::Service && self.code.as_deref() == Some("NoSuchKey")
    }

    /// What went wrong and what to do about it, for `object` (an `s3://` URL).
    pub fn explain(&self, cfg: &S3Config, object: &str, attempts: u32) -> String {
        let endpoint = cfg.endpoint_name();
        let what = match self.code.as_deref() {
            Some("NoSuchBucket") => format!(
                "bucket {} does not exist at endpoint {endpoint}: create it or fix WALG_S3_PREFIX",
                cfg.bucket
            ),
            Some("InvalidAccessKeyId") => format!(
                "the access key id is not known at endpoint {endpoint}: fix AWS_ACCESS_KEY_ID (config file or environment)"
            ),
            Some("SignatureDoesNotMatch") => format!(
                "the request signature does not match at endpoint {endpoint}: fix AWS_SECRET_ACCESS_KEY (config file or environment)"
            ),
            Some("AccessDenied" | "AllAccessDisabled") => format!(
                "access denied to {object} at endpoint {endpoint}: grant these credentials access to bucket {} or use other credentials",
                cfg.bucket
            ),
            Some("InvalidToken" | "ExpiredToken") => {
                "the session token is invalid or expired: renew AWS_SESSION_TOKEN".to_string()
            }
            Some("PermanentRedirect" | "AuthorizationHeaderMalformed") => format!(
                "bucket {} is in another region: set AWS_REGION to the bucket's region",
                cfg.bucket
            ),
            Some("InvalidStorageClass") => format!(
                "the storage class is not accepted: fix WALG_S3_STORAGE_CLASS ({})",
                cfg.storage_class.as_deref().unwrap_or("unset")
            ),
            Some("RequestTimeTooSkewed") => "the local clock differs too much from the server's: fix the system time".to_string(),
            _ if is_dns(self) => format!("cannot resolve the host of endpoint {endpoint}: fix AWS_ENDPOINT"),
            _ if is_tls(self) => format!(
                "TLS to endpoint {endpoint} failed ({}): check the endpoint's certificate or set WALG_S3_CA_CERT_FILE",
                self.detail
            ),
            _ if self.kind == FailureKind::Construction && self.detail.to_ascii_lowercase().contains("credentials") => format!(
                "no usable AWS credentials ({}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the config file or environment, or AWS_PROFILE",
                self.detail
            ),
            _ if self.kind == FailureKind::Dispatch || self.kind == FailureKind::Timeout => format!(
                "cannot reach endpoint {endpoint} ({}): is the S3 service up and AWS_ENDPOINT right?",
                self.detail
            ),
            _ if self.status == Some(404) => format!(
                "{object}: endpoint {endpoint} answered HTTP 404 without S3's NoSuchKey code ({}): \
                 is AWS_ENDPOINT an S3 service (not a proxy or a web server) and WALG_S3_PREFIX right?",
                self.detail
            ),
            _ => match self.status {
                Some(s) => format!("{object}: HTTP {s}: {}", self.detail),
                None => format!("{object}: {}", self.detail),
            },
        };
        if attempts > 1 {
            format!("{what} (gave up after {attempts} attempts)")
        } else {
            what
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(st) => write!(f, "HTTP {st}: {}", self.detail),
            None => f.write_str(&self.detail),
        }
    }
}

impl Transient for Failure {
    /// A missing object is an answer, not a failure to retry.
    fn is_transient(&self) -> bool {
        !self.is_not_found() && classify(self) == Verdict::Retry
    }
    fn is_throttled(&self) -> bool {
        is_throttling(self)
    }
}

/// Runs `op` until it succeeds, fails permanently, or `max_retries` retries are used up
/// (storage/retry.rs). Returns the last failure and the number of attempts made.
pub async fn retrying<T, F, Fut>(max_retries: u32, what: &str, op: F) -> Result<T, (Failure, u32)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    crate::storage::retry::run_async(&RetryPolicy::new(max_retries), what, op).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str) -> Failure {
        Failure { kind: FailureKind::Service, status: Some(status), code: Some(code.into()), detail: code.into() }
    }

    fn dispatch(detail: &str) -> Failure {
        Failure { kind: FailureKind::Dispatch, status: None, code: None, detail: detail.into() }
    }

    #[test]
    fn permanent_failures_fail_at_once() {
        for (status, code) in [
            (404, "NoSuchBucket"),
            (403, "AccessDenied"),
            (403, "InvalidAccessKeyId"),
            (403, "SignatureDoesNotMatch"),
            (400, "InvalidBucketName"),
            (301, "PermanentRedirect"),
            (400, "InvalidStorageClass"),
            (404, "NoSuchUpload"),
            // A 500 with a permanent code is still permanent.
            (500, "AccessDenied"),
        ] {
            assert_eq!(classify(&service(status, code)), Verdict::Fail, "{status} {code}");
        }
        assert_eq!(classify(&service(400, "SomethingElse")), Verdict::Fail);
        assert_eq!(classify(&service(403, "")), Verdict::Fail);
        assert_eq!(
            classify(&dispatch("dispatch failure: io error: dns error: failed to lookup address information: Name or service not known")),
            Verdict::Fail
        );
        assert_eq!(classify(&dispatch("invalid peer certificate: UnknownIssuer")), Verdict::Fail);
        assert_eq!(
            classify(&Failure { kind: FailureKind::Construction, status: None, code: None, detail: "no credentials".into() }),
            Verdict::Fail
        );
    }

    #[test]
    fn transient_failures_are_retried() {
        for (status, code) in [
            (503, "SlowDown"),
            (400, "RequestTimeout"),
            (500, "InternalError"),
            (503, "ServiceUnavailable"),
            (429, "TooManyRequestsException"),
            (400, "ThrottlingException"),
            (502, "BadGateway"),
            (504, "Whatever"),
            (429, "Unknown"),
        ] {
            assert_eq!(classify(&service(status, code)), Verdict::Retry, "{status} {code}");
        }
        assert_eq!(classify(&dispatch("io error: connection reset by peer (os error 104)")), Verdict::Retry);
        assert_eq!(classify(&dispatch("io error: Connection refused (os error 111)")), Verdict::Retry);
        let timeout = Failure { kind: FailureKind::Timeout, status: None, code: None, detail: "timeout".into() };
        assert_eq!(classify(&timeout), Verdict::Retry);
        let body = Failure { kind: FailureKind::Body, status: None, code: None, detail: "reset".into() };
        assert_eq!(classify(&body), Verdict::Retry);
    }

    #[test]
    fn only_no_such_key_is_an_answer() {
        assert!(service(404, "NoSuchKey").is_not_found());
        let bare = Failure { kind: FailureKind::Service, status: Some(404), code: None, detail: String::new() };
        assert!(!bare.is_not_found(), "a 404 without an S3 code (a proxy, a wrong endpoint) is not an answer");
        assert_eq!(classify(&bare), Verdict::Fail);
        assert!(!service(404, "NotFound").is_not_found(), "the SDK's code for a body-less 404");
        assert!(!service(404, "NoSuchBucket").is_not_found(), "a missing bucket is an error");
        assert!(!service(403, "AccessDenied").is_not_found());
        let unparsable = Failure { kind: FailureKind::Response, status: Some(404), code: None, detail: "html".into() };
        assert!(!unparsable.is_not_found());
    }

    #[test]
    fn messages_say_what_to_fix() {
        let cfg = crate::storage::s3::settings::S3Config::from_settings(&{
            let mut s = crate::config::Settings::new();
            s.set("WALG_S3_PREFIX", "s3://nobucket/x");
            s.set("AWS_ENDPOINT", "http://127.0.0.1:1");
            s
        })
        .unwrap()
        .unwrap();
        let m = service(404, "NoSuchBucket").explain(&cfg, "s3://nobucket/x/k", 1);
        assert_eq!(
            m,
            "bucket nobucket does not exist at endpoint http://127.0.0.1:1: create it or fix WALG_S3_PREFIX"
        );
        assert!(service(403, "InvalidAccessKeyId").explain(&cfg, "o", 1).contains("fix AWS_ACCESS_KEY_ID"));
        assert!(service(403, "SignatureDoesNotMatch").explain(&cfg, "o", 1).contains("fix AWS_SECRET_ACCESS_KEY"));
        assert!(dispatch("dns error: failed to lookup address").explain(&cfg, "o", 1).contains("fix AWS_ENDPOINT"));
        let down = dispatch("Connection refused").explain(&cfg, "o", 4);
        assert!(down.contains("cannot reach endpoint") && down.contains("after 4 attempts"), "{down}");
    }

    #[test]
    fn retrying_stops_on_permanent_and_after_max() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let mut calls = 0;
        let r: Result<(), _> = rt.block_on(retrying(5, "test", || {
            calls += 1;
            async { Err(service(403, "AccessDenied")) }
        }));
        assert_eq!(r.unwrap_err().1, 1);
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r: Result<(), _> = rt.block_on(retrying(2, "test", || {
            calls += 1;
            async { Err(dispatch("connection reset")) }
        }));
        assert_eq!(r.unwrap_err().1, 3);
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r = rt.block_on(retrying(5, "test", || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err(service(500, "InternalError")) } else { Ok(n) } }
        }));
        assert_eq!(r.unwrap(), 3);
    }
}
