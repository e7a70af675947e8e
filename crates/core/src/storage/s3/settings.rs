//! S3 settings: WAL-G's key names parsed into one validated `S3Config`.

use std::fmt;
use std::path::PathBuf;

use crate::config::registry as r;
use crate::config::Settings;
use crate::error::{Error, Result};

// Defaults and limits below are the registry's (crate::config::registry; a test checks they agree).

/// WALG_S3_MAX_PART_SIZE default (WAL-G's): 20 MiB.
pub const DEFAULT_PART_SIZE: u64 = 20 << 20;
/// S3's smallest allowed part (all but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest allowed part.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// WALG_S3_MAX_RETRIES default (WAL-G's).
pub const DEFAULT_MAX_RETRIES: u32 = 15;
/// Parts of one object uploading at the same time (besides the one being filled).
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 2;

/// A string that is never printed (Debug shows `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Static credentials from the config file or the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// Everything needed to reach one S3 prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// From WALG_S3_PREFIX `s3://bucket/path`.
    pub bucket: String,
    /// Path inside the bucket without leading or trailing `/` ("" for the bucket root).
    pub path: String,
    /// AWS_ENDPOINT, e.g. `http://127.0.0.1:9000`; None = AWS.
    pub endpoint: Option<String>,
    /// AWS_REGION; None = the SDK's chain (AWS_DEFAULT_REGION, profile), or us-east-1 with a
    /// custom endpoint.
    pub region: Option<String>,
    /// AWS_S3_FORCE_PATH_STYLE.
    pub force_path_style: bool,
    /// WALG_S3_STORAGE_CLASS (STANDARD when unset).
    pub storage_class: Option<String>,
    /// WALG_S3_SSE (`AES256`, `aws:kms`).
    pub sse: Option<String>,
    /// WALG_S3_SSE_KMS_ID.
    pub sse_kms_id: Option<String>,
    /// WALG_S3_CA_CERT_FILE: extra trusted CA (PEM) for the endpoint.
    pub ca_cert_file: Option<PathBuf>,
    /// AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN); None = SDK default chain.
    pub credentials: Option<StaticCredentials>,
    /// AWS_PROFILE for the default chain.
    pub profile: Option<String>,
    /// WALG_S3_MAX_PART_SIZE: multipart part size, also the single-PUT limit.
    pub part_size: u64,
    /// WALG_S3_UPLOAD_PARTS_IN_FLIGHT (walg_ext): parts of one object uploading concurrently.
    /// Memory per open writer is part_size x (parts_in_flight + 1).
    pub parts_in_flight: usize,
    /// WALG_S3_MAX_RETRIES: retries of a transient failure before giving up.
    pub max_retries: u32,
}

fn value<'a>(s: &'a Settings, setting: &r::Setting) -> Option<&'a str> {
    s.raw(setting)
}

/// An integer setting with a default in the registry (checked there: in range, never negative).
fn num(s: &Settings, setting: &r::Setting) -> Result<u64> {
    let v = s.int(setting)?.ok_or_else(|| Error::Internal(format!("{} has no default", setting.key)))?;
    u64::try_from(v).map_err(|_| Error::Internal(format!("{}: {v} is negative", setting.key)))
}

/// Split `s3://bucket/path/` into ("bucket", "path").
pub fn parse_prefix(key: &str, raw: &str) -> Result<(String, String)> {
    let rest = raw.strip_prefix("s3://").ok_or_else(|| {
        Error::Config(format!("{key}: {raw:?} must look like s3://bucket/path"))
    })?;
    let (bucket, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == '_')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !valid_bucket {
        return Err(Error::Config(format!(
            "{key}: {bucket:?} in {raw:?} is not a valid bucket name (3-63 lowercase letters, digits, '-', '.')"
        )));
    }
    let path = path.trim_matches('/');
    if path.split('/').any(|c| c.is_empty() && !path.is_empty()) {
        return Err(Error::Config(format!("{key}: {raw:?} has an empty path component ('//')")));
    }
    Ok((bucket.to_string(), path.to_string()))
}

impl S3Config {
    /// `Some` when WALG_S3_PREFIX (or WAL-E's WALE_S3_PREFIX) is set.
    pub fn from_settings(s: &Settings) -> Result<Option<S3Config>> {
        let Some(raw) = value(s, &r::S3_PREFIX) else {
            return Ok(None);
        };
        r::check_values(s)?;
        let (bucket, path) = parse_prefix(s.key_of(&r::S3_PREFIX), raw)?;
        let endpoint = value(s, &r::AWS_ENDPOINT).map(|e| e.trim_end_matches('/').to_string());
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(Error::Config(format!(
                    "AWS_ENDPOINT: {e:?} must start with http:// or https://"
                )));
            }
        }
        let credentials = match (value(s, &r::AWS_ACCESS_KEY_ID), value(s, &r::AWS_SECRET_ACCESS_KEY)) {
            (Some(id), Some(secret)) => Some(StaticCredentials {
                access_key_id: id.to_string(),
                secret_access_key: Secret(secret.to_string()),
                session_token: value(s, &r::AWS_SESSION_TOKEN).map(|t| Secret(t.to_string())),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Config(
                    "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both, or neither to use the AWS default credential chain".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not: set both, or neither to use the AWS default credential chain".into(),
                ))
            }
        };
        // Checked by the registry: AES256, aws:kms or aws:kms:dsse, in that spelling.
        let sse = s.text(&r::S3_SSE)?;
        let sse_kms_id = value(s, &r::S3_SSE_KMS_ID).map(str::to_string);
        if sse_kms_id.is_some() && !sse.as_deref().is_some_and(|v| v.starts_with("aws:kms")) {
            return Err(Error::Config(
                "WALG_S3_SSE_KMS_ID is set but WALG_S3_SSE is not aws:kms: set WALG_S3_SSE=aws:kms".into(),
            ));
        }
        let ca_cert_file = value(s, &r::S3_CA_CERT_FILE).map(PathBuf::from);
        Ok(Some(S3Config {
            bucket,
            path,
            endpoint,
            region: value(s, &r::AWS_REGION).map(str::to_string),
            force_path_style: s.flag(&r::AWS_S3_FORCE_PATH_STYLE)?,
            storage_class: value(s, &r::S3_STORAGE_CLASS).map(str::to_string),
            sse,
            sse_kms_id,
            ca_cert_file,
            credentials,
            profile: value(s, &r::AWS_PROFILE).map(str::to_string),
            part_size: num(s, &r::S3_MAX_PART_SIZE)?,
            parts_in_flight: num(s, &r::S3_UPLOAD_PARTS_IN_FLIGHT)? as usize,
            max_retries: num(s, &r::S3_MAX_RETRIES)? as u32,
        }))
    }

    /// `s3://bucket/path` as configured.
    pub fn url(&self) -> String {
        if self.path.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.path)
        }
    }

    /// The storage as shown to users, and its identity (see `StorageConfig::describe`).
    pub fn describe(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("{} (endpoint {e})", self.url()),
            None => self.url(),
        }
    }

    /// The endpoint for messages.
    pub fn endpoint_name(&self) -> String {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => format!("AWS S3 ({})", self.region.as_deref().unwrap_or("default region")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut s = Settings::new();
        for (k, v) in pairs {
            s.set(*k, *v);
        }
        s
    }

    #[test]
    fn full_s3_config() {
        let s = settings(&[
            ("WALG_S3_PREFIX", "s3://my-bucket/pg/main/"),
            ("AWS_ENDPOINT", "http://127.0.0.1:9000/"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_S3_FORCE_PATH_STYLE", "true"),
            ("WALG_S3_STORAGE_CLASS", "STANDARD_IA"),
            ("WALG_S3_SSE", "aws:kms"),
            ("WALG_S3_SSE_KMS_ID", "key-1"),
            ("WALG_S3_CA_CERT_FILE", "/etc/ca.pem"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
            ("AWS_SESSION_TOKEN", "tok"),
            ("WALG_S3_MAX_PART_SIZE", "8388608"),
            ("WALG_S3_UPLOAD_PARTS_IN_FLIGHT", "3"),
            ("WALG_S3_MAX_RETRIES", "2"),
        ]);
        let c = S3Config::from_settings(&s).unwrap().unwrap();
        assert_eq!(c.bucket, "my-bucket");
        assert_eq!(c.path, "pg/main");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert!(c.force_path_style);
        assert_eq!(c.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(c.sse.as_deref(), Some("aws:kms"));
        assert_eq!(c.sse_kms_id.as_deref(), Some("key-1"));
        assert_eq!(c.ca_cert_file, Some(PathBuf::from("/etc/ca.pem")));
        let cred = c.credentials.clone().unwrap();
        assert_eq!(cred.access_key_id, "AKID");
        assert_eq!(cred.secret_access_key.0, "very-secret");
        assert_eq!(c.part_size, 8 << 20);
        assert_eq!(c.parts_in_flight, 3);
        assert_eq!(c.max_retries, 2);
        assert_eq!(c.url(), "s3://my-bucket/pg/main");
        // Secrets never show in Debug output (which may end up in logs).
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("very-secret") && !dbg.contains("tok\""), "{dbg}");
    }

    #[test]
    fn defaults_and_wale_prefix() {
        assert_eq!(S3Config::from_settings(&Settings::new()).unwrap(), None);
        let c = S3Config::from_settings(&settings(&[("WALE_S3_PREFIX", "s3://bucket")])).unwrap().unwrap();
        assert_eq!((c.bucket.as_str(), c.path.as_str()), ("bucket", ""));
        assert_eq!(c.url(), "s3://bucket");
        assert!(!c.force_path_style);
        assert_eq!(c.credentials, None);
        assert_eq!(c.part_size, DEFAULT_PART_SIZE);
        assert_eq!(c.parts_in_flight, DEFAULT_PARTS_IN_FLIGHT);
        assert_eq!(c.max_retries, DEFAULT_MAX_RETRIES);
    }

    #[test]
    fn constants_agree_with_the_registry() {
        use crate::config::registry::{Default, Kind};
        assert_eq!(r::S3_MAX_PART_SIZE.default, Default::Value("20971520"));
        assert_eq!(DEFAULT_PART_SIZE, 20971520);
        assert!(matches!(r::S3_MAX_PART_SIZE.kind, Kind::Int { min, max, .. }
            if min as u64 == MIN_PART_SIZE && max as u64 == MAX_PART_SIZE));
        assert_eq!(r::S3_MAX_RETRIES.default, Default::Value(&*DEFAULT_MAX_RETRIES.to_string().leak()));
        assert_eq!(r::S3_UPLOAD_PARTS_IN_FLIGHT.default, Default::Value(&*DEFAULT_PARTS_IN_FLIGHT.to_string().leak()));
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("WALG_S3_PREFIX", "bucket/path")], "s3://bucket/path"),
            (&[("WALG_S3_PREFIX", "s3://B/x")], "not a valid bucket name"),
            (&[("WALG_S3_PREFIX", "s3://")], "not a valid bucket name"),
            (&[("WALG_S3_PREFIX", "s3://bkt/a//b")], "empty path component"),
            (&[("WALG_S3_PREFIX", "s3://bkt"), ("AWS_ENDPOINT", "localhost:9000")], "AWS_ENDPOINT"),
            (&[("WALG_S3_PREFIX", "s3://bkt"), ("AWS_S3_FORCE_PATH_STYLE", "maybe")], "AWS_S3_FORCE_PATH_STYLE"),
            (&[("WALG_S3_PREFIX", "s3://bkt"), ("AWS_ACCESS_KEY_ID", "x")], "AWS_SECRET_ACCESS_KEY is not"),
            (&[("WALG_S3_PREFIX", "s3://bkt"), ("AWS_SECRET_ACCESS_KEY", "x")], "AWS_ACCESS_KEY_ID is not"),
            (&[("WALG_S3_PREFIX", "s3://bkt"), ("WALG_S3_SSE", "rot13")], "WALG_S3_SSE"),
            (&[("WALG_S3_PREFIX", "s3://bkt"), ("WALG_S3_SSE_KMS_ID", "k")], "WALG_S3_SSE=aws:kms"),
            (&[("WALG_S3_PREFIX", "s3://bkt"), ("WALG_S3_MAX_PART_SIZE", "1000")], "WALG_S3_MAX_PART_SIZE"),
            (&[("WALG_S3_PREFIX", "s3://bkt"), ("WALG_S3_MAX_RETRIES", "-1")], "WALG_S3_MAX_RETRIES"),
            (&[("WALG_S3_PREFIX", "s3://bkt"), ("WALG_S3_UPLOAD_PARTS_IN_FLIGHT", "0")], "WALG_S3_UPLOAD_PARTS_IN_FLIGHT"),
        ];
        for (pairs, needle) in cases {
            let err = S3Config::from_settings(&settings(pairs)).unwrap_err().to_string();
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
    }
}
