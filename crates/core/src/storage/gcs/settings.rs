//! Google Cloud Storage settings, with WAL-G's names and meanings: `WALG_GS_PREFIX=gs://bucket/path`,
//! credentials from `GOOGLE_APPLICATION_CREDENTIALS` (a service account's JSON key file; unset:
//! Google's default chain, as WAL-G's Go client), and WAL-G's tuning keys `GCS_CONTEXT_TIMEOUT`,
//! `GCS_MAX_CHUNK_SIZE`, `GCS_MAX_RETRIES`. `STORAGE_EMULATOR_HOST` is the convention of Google's
//! own clients (WAL-G's among them) for an emulator: requests go there, without credentials.
//!
//! Refused rather than ignored: `GCS_ENCRYPTION_KEY` (customer-supplied encryption keys: the client
//! library has no support, and ignoring the key would store unencrypted objects, or fail to read
//! encrypted ones with a confusing error) and `GCS_NORMALIZE_PREFIX=false` (WAL-E's odd prefixes:
//! keys with empty path components are refused by every backend here).

use std::path::PathBuf;

use crate::config::registry as r;
use crate::config::Settings;
use crate::error::{Error, Result};

/// Google's public endpoint (JSON API).
pub const GOOGLE_ENDPOINT: &str = "https://storage.googleapis.com";

#[derive(Clone, Debug, PartialEq)]
pub struct GcsConfig {
    pub bucket: String,
    /// Path inside the bucket, without leading or trailing '/'; may be empty.
    pub path: String,
    /// GOOGLE_APPLICATION_CREDENTIALS; None: Google's default chain (or none with an emulator).
    pub credentials: Option<PathBuf>,
    /// Google's endpoint or the emulator's URL, without a trailing '/'.
    pub endpoint: String,
    /// STORAGE_EMULATOR_HOST was set: no credentials are sent; shown in `describe`.
    pub emulator: bool,
    /// GCS_CONTEXT_TIMEOUT in seconds: the longest one request may take.
    pub context_timeout: u64,
    /// GCS_MAX_CHUNK_SIZE: objects up to this size are one request.
    pub max_chunk_size: usize,
    pub max_retries: u32,
}

fn num(s: &Settings, setting: &r::Setting) -> Result<u64> {
    let v = s.int(setting)?.ok_or_else(|| Error::Internal(format!("{} has no default", setting.key)))?;
    u64::try_from(v).map_err(|_| Error::Internal(format!("{}: {v} is negative", setting.key)))
}

/// Split `gs://bucket/path/` into ("bucket", "path"). Empty path components collapse, as WAL-G
/// joins paths (GCS_NORMALIZE_PREFIX's default).
pub fn parse_prefix(raw: &str) -> Result<(String, String)> {
    let rest = raw
        .strip_prefix("gs://")
        .ok_or_else(|| Error::Config(format!("WALG_GS_PREFIX: {raw:?} must look like gs://bucket/path")))?;
    let (bucket, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    // Google's rule: 3-63 characters (up to 222 with dots), lowercase letters, digits, '-', '_'
    // and '.', starting and ending with a letter or digit.
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid = (3..=222).contains(&bucket.len())
        && (bucket.len() <= 63 || bucket.contains('.'))
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        && edge_ok(bucket.chars().next())
        && edge_ok(bucket.chars().last());
    if !valid {
        return Err(Error::Config(format!(
            "WALG_GS_PREFIX: {bucket:?} in {raw:?} is not a valid bucket name (3-63 lowercase letters, digits, '-', '_', '.')"
        )));
    }
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.iter().any(|c| *c == "." || *c == "..") {
        return Err(Error::Config(format!("WALG_GS_PREFIX: {raw:?} has a '.' or '..' path component")));
    }
    Ok((bucket.to_string(), parts.join("/")))
}

impl GcsConfig {
    /// `Some` when WALG_GS_PREFIX is set.
    pub fn from_settings(s: &Settings) -> Result<Option<GcsConfig>> {
        let Some(raw) = s.raw(&r::GS_PREFIX) else { return Ok(None) };
        r::check_values(s)?;
        if s.value("GCS_ENCRYPTION_KEY").is_some() {
            return Err(Error::Config(
                "GCS_ENCRYPTION_KEY (a customer-supplied encryption key) is not supported by walg_ext: \
                 remove it (GCS encrypts at rest with Google's or a Cloud KMS key; WALG_LIBSODIUM_KEY or WALG_PGP_KEY encrypt on the client)"
                    .into(),
            ));
        }
        if let Some(v) = s.value("GCS_NORMALIZE_PREFIX") {
            match r::parse_bool(v) {
                Some(true) => {}
                Some(false) => {
                    return Err(Error::Config(
                        "GCS_NORMALIZE_PREFIX=false (WAL-E's unnormalized prefixes) is not supported by walg_ext: remove it".into(),
                    ))
                }
                None => return Err(Error::Config(format!("GCS_NORMALIZE_PREFIX: value {v:?} is not a boolean (true or false)"))),
            }
        }
        let (bucket, path) = parse_prefix(raw)?;
        let (endpoint, emulator) = match s.raw(&r::STORAGE_EMULATOR_HOST) {
            // Google's clients: "host:port" means plain HTTP; a URL is taken as it is.
            Some(h) if h.contains("://") => {
                if !(h.starts_with("http://") || h.starts_with("https://")) {
                    return Err(Error::Config(format!("STORAGE_EMULATOR_HOST: {h:?} must be host:port or an http(s):// URL")));
                }
                (h.trim_end_matches('/').to_string(), true)
            }
            Some(h) => (format!("http://{}", h.trim_end_matches('/')), true),
            None => (GOOGLE_ENDPOINT.to_string(), false),
        };
        let credentials = s.raw(&r::GOOGLE_APPLICATION_CREDENTIALS).map(PathBuf::from);
        Ok(Some(GcsConfig {
            bucket,
            path,
            credentials,
            endpoint,
            emulator,
            context_timeout: num(s, &r::GCS_CONTEXT_TIMEOUT)?,
            max_chunk_size: num(s, &r::GCS_MAX_CHUNK_SIZE)? as usize,
            max_retries: num(s, &r::GCS_MAX_RETRIES)? as u32,
        }))
    }

    /// `gs://bucket/path` as configured.
    pub fn url(&self) -> String {
        if self.path.is_empty() {
            format!("gs://{}", self.bucket)
        } else {
            format!("gs://{}/{}", self.bucket, self.path)
        }
    }

    /// The storage as shown to users, and its identity.
    pub fn describe(&self) -> String {
        if self.emulator {
            format!("{} (emulator {})", self.url(), self.endpoint)
        } else {
            self.url()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Settings {
        let mut s = Settings::new();
        s.set("WALG_GS_PREFIX", "gs://backups/pg//main/");
        s
    }

    #[test]
    fn prefix_endpoint_and_defaults() {
        let c = GcsConfig::from_settings(&base()).unwrap().unwrap();
        assert_eq!((c.bucket.as_str(), c.path.as_str()), ("backups", "pg/main"));
        assert_eq!((c.endpoint.as_str(), c.emulator), (GOOGLE_ENDPOINT, false));
        assert_eq!((c.context_timeout, c.max_chunk_size, c.max_retries), (3600, 50 << 20, 16));
        assert_eq!(c.describe(), "gs://backups/pg/main");
        assert!(c.credentials.is_none());
        assert_eq!(parse_prefix("gs://my.bucket_1").unwrap(), ("my.bucket_1".into(), "".into()));

        let mut s = base();
        s.set("STORAGE_EMULATOR_HOST", "127.0.0.1:4443");
        s.set("GOOGLE_APPLICATION_CREDENTIALS", "/etc/walg/sa.json");
        s.set("GCS_MAX_CHUNK_SIZE", "1048576");
        s.set("GCS_MAX_RETRIES", "3");
        s.set("GCS_CONTEXT_TIMEOUT", "60");
        s.set("GCS_NORMALIZE_PREFIX", "true");
        let c = GcsConfig::from_settings(&s).unwrap().unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:4443");
        assert_eq!(c.describe(), "gs://backups/pg/main (emulator http://127.0.0.1:4443)");
        assert_eq!(c.credentials.as_deref(), Some(std::path::Path::new("/etc/walg/sa.json")));
        assert_eq!((c.context_timeout, c.max_chunk_size, c.max_retries), (60, 1 << 20, 3));
        s.set("STORAGE_EMULATOR_HOST", "https://gcs.test:9000/");
        assert_eq!(GcsConfig::from_settings(&s).unwrap().unwrap().endpoint, "https://gcs.test:9000");
    }

    #[test]
    fn bad_and_unsupported_settings_say_what_to_fix() {
        for bad in ["s3://backups/x", "gs://Bad/x", "gs://ab/x", "gs://-abc/x", "gs://backups/a/../b"] {
            let mut s = base();
            s.set("WALG_GS_PREFIX", bad);
            assert!(GcsConfig::from_settings(&s).is_err(), "{bad}");
        }
        let mut s = base();
        s.set("GCS_ENCRYPTION_KEY", "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=");
        let e = GcsConfig::from_settings(&s).unwrap_err().to_string();
        assert!(e.contains("GCS_ENCRYPTION_KEY") && e.contains("not supported"), "{e}");
        assert!(!e.contains("MDEy"), "the key is never shown: {e}");
        let mut s = base();
        s.set("GCS_NORMALIZE_PREFIX", "false");
        assert!(GcsConfig::from_settings(&s).unwrap_err().to_string().contains("GCS_NORMALIZE_PREFIX"));
        let mut s = base();
        s.set("STORAGE_EMULATOR_HOST", "ftp://x:1");
        assert!(GcsConfig::from_settings(&s).is_err());
        let mut s = base();
        s.set("GCS_MAX_CHUNK_SIZE", "1000");
        assert!(GcsConfig::from_settings(&s).is_err(), "below 256 KiB");
    }
}
