//! OpenStack Swift settings, with WAL-G's names and meanings (WAL-G hands the OS_* variables to
//! ncw/swift's `ApplyEnvironment`): `WALG_SWIFT_PREFIX=swift://container/path`, `OS_AUTH_URL`,
//! `OS_USERNAME`, `OS_PASSWORD` (config file or environment only), `OS_PROJECT_NAME` /
//! `OS_TENANT_NAME`, `OS_REGION_NAME`, `OS_USER_DOMAIN_NAME`, `OS_PROJECT_DOMAIN_NAME`,
//! `OS_ENDPOINT_TYPE` and `ST_AUTH_VERSION` (0: guessed from the URL, as ncw/swift does).

use crate::config::registry as r;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::storage::s3::settings::Secret;

/// How to get a token and the storage URL.
#[derive(Clone, Debug, PartialEq)]
pub enum Auth {
    /// TempAuth / Swauth: GET the auth URL with X-Auth-User / X-Auth-Key.
    V1,
    /// Keystone v3 password authentication, the storage URL from the service catalog.
    V3 { project: String, user_domain: String, project_domain: String, region: Option<String>, interface: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct SwiftConfig {
    pub container: String,
    /// Path inside the container, without leading or trailing '/'; may be empty.
    pub path: String,
    pub auth_url: String,
    pub user: String,
    pub password: Secret,
    pub auth: Auth,
    pub max_retries: u32,
}

/// Split `swift://container/path/` into ("container", "path").
pub fn parse_prefix(raw: &str) -> Result<(String, String)> {
    let rest = raw
        .strip_prefix("swift://")
        .ok_or_else(|| Error::Config(format!("WALG_SWIFT_PREFIX: {raw:?} must look like swift://container/path")))?;
    let (container, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    // Swift's rule: 1-256 bytes, no '/'.
    if container.is_empty() || container.len() > 256 {
        return Err(Error::Config(format!("WALG_SWIFT_PREFIX: {raw:?} has no valid container name (1-256 bytes)")));
    }
    let path = path.trim_matches('/');
    if path.split('/').any(|c| c.is_empty() && !path.is_empty()) {
        return Err(Error::Config(format!("WALG_SWIFT_PREFIX: {raw:?} has an empty path component ('//')")));
    }
    Ok((container.to_string(), path.to_string()))
}

fn required(s: &Settings, setting: &r::Setting) -> Result<String> {
    s.raw(setting).map(str::to_string).ok_or_else(|| {
        Error::Config(format!("WALG_SWIFT_PREFIX is set but {} is not: set it (config file or environment{})", setting.key,
            setting.guc.map(|g| format!(", or {g}")).unwrap_or_default()))
    })
}

impl SwiftConfig {
    /// `Some` when WALG_SWIFT_PREFIX is set.
    pub fn from_settings(s: &Settings) -> Result<Option<SwiftConfig>> {
        let Some(raw) = s.raw(&r::SWIFT_PREFIX) else { return Ok(None) };
        r::check_values(s)?;
        let (container, path) = parse_prefix(raw)?;
        let auth_url = required(s, &r::OS_AUTH_URL)?.trim_end_matches('/').to_string();
        if !(auth_url.starts_with("http://") || auth_url.starts_with("https://")) {
            return Err(Error::Config(format!("OS_AUTH_URL: {auth_url:?} must start with http:// or https://")));
        }
        let user = required(s, &r::OS_USERNAME)?;
        let password = Secret(required(s, &r::OS_PASSWORD)?);
        let version = match s.text(&r::ST_AUTH_VERSION)?.as_deref() {
            Some("1") => 1,
            Some("3") => 3,
            // ncw/swift's guess: "v3" in the URL means Keystone v3 ("v2" would be Keystone v2,
            // which is not supported: refused below).
            _ if auth_url.contains("v3") => 3,
            _ if auth_url.contains("v2") => 2,
            _ => 1,
        };
        let auth = match version {
            1 => Auth::V1,
            3 => {
                let project = s.raw(&r::OS_PROJECT_NAME).map(str::to_string).ok_or_else(|| {
                    Error::Config("Keystone v3 authentication needs a project: set OS_PROJECT_NAME (or OS_TENANT_NAME)".into())
                })?;
                let user_domain = s.text(&r::OS_USER_DOMAIN_NAME)?.unwrap_or_else(|| "Default".into());
                let project_domain = s.raw(&r::OS_PROJECT_DOMAIN_NAME).map(str::to_string).unwrap_or_else(|| user_domain.clone());
                let region = s.raw(&r::OS_REGION_NAME).map(str::to_string);
                let interface = s.text(&r::OS_ENDPOINT_TYPE)?.unwrap_or_else(|| "public".into());
                Auth::V3 { project, user_domain, project_domain, region, interface }
            }
            _ => {
                return Err(Error::Config(format!(
                    "OS_AUTH_URL {auth_url:?} looks like Keystone v2, which walg_ext does not support: use the Keystone v3 URL (.../v3) or set ST_AUTH_VERSION"
                )))
            }
        };
        let max_retries = s.int(&r::SWIFT_MAX_RETRIES)?.unwrap_or(15).clamp(0, 100) as u32;
        Ok(Some(SwiftConfig { container, path, auth_url, user, password, auth, max_retries }))
    }

    /// `swift://container/path` as configured.
    pub fn url(&self) -> String {
        if self.path.is_empty() {
            format!("swift://{}", self.container)
        } else {
            format!("swift://{}/{}", self.container, self.path)
        }
    }

    /// The storage as shown to users, and its identity.
    pub fn describe(&self) -> String {
        format!("{} (auth {})", self.url(), self.auth_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Settings {
        let mut s = Settings::new();
        s.set("WALG_SWIFT_PREFIX", "swift://backups/pg/main/");
        s.set("OS_AUTH_URL", "http://127.0.0.1:8080/auth/v1.0");
        s.set("OS_USERNAME", "test:tester");
        s.set("OS_PASSWORD", "testing");
        s
    }

    #[test]
    fn prefix_auth_and_defaults() {
        let c = SwiftConfig::from_settings(&base()).unwrap().unwrap();
        assert_eq!((c.container.as_str(), c.path.as_str()), ("backups", "pg/main"));
        assert_eq!(c.auth, Auth::V1);
        assert_eq!(c.max_retries, 15);
        assert_eq!(c.describe(), "swift://backups/pg/main (auth http://127.0.0.1:8080/auth/v1.0)");
        assert!(!format!("{c:?}").contains("testing"), "the password never shows");

        let mut s = base();
        s.set("OS_AUTH_URL", "https://keystone.example.com:5000/v3/");
        s.set("OS_TENANT_NAME", "tenant");
        s.set("OS_REGION_NAME", "RegionTwo");
        let c = SwiftConfig::from_settings(&s).unwrap().unwrap();
        assert_eq!(c.auth_url, "https://keystone.example.com:5000/v3");
        assert_eq!(c.auth, Auth::V3 {
            project: "tenant".into(), user_domain: "Default".into(), project_domain: "Default".into(),
            region: Some("RegionTwo".into()), interface: "public".into(),
        });
        s.set("OS_PROJECT_NAME", "project");
        s.set("OS_USER_DOMAIN_NAME", "users");
        s.set("OS_ENDPOINT_TYPE", "internal");
        let Auth::V3 { project, user_domain, project_domain, interface, .. } = SwiftConfig::from_settings(&s).unwrap().unwrap().auth else { panic!() };
        assert_eq!((project.as_str(), user_domain.as_str(), project_domain.as_str(), interface.as_str()), ("project", "users", "users", "internal"));
        s.set("ST_AUTH_VERSION", "1");
        assert_eq!(SwiftConfig::from_settings(&s).unwrap().unwrap().auth, Auth::V1);
    }

    #[test]
    fn bad_settings_say_what_to_fix() {
        for (drop, needle) in [("OS_AUTH_URL", "OS_AUTH_URL is not"), ("OS_USERNAME", "OS_USERNAME is not"), ("OS_PASSWORD", "OS_PASSWORD is not")] {
            let mut s = base();
            s.set(drop, "");
            let e = SwiftConfig::from_settings(&s).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        for bad in ["s3://backups/x", "swift:///x", "swift://backups/a//b"] {
            let mut s = base();
            s.set("WALG_SWIFT_PREFIX", bad);
            assert!(SwiftConfig::from_settings(&s).is_err(), "{bad}");
        }
        let mut s = base();
        s.set("OS_AUTH_URL", "https://keystone.example.com/v3");
        assert!(SwiftConfig::from_settings(&s).unwrap_err().to_string().contains("OS_PROJECT_NAME"));
        s.set("OS_AUTH_URL", "https://keystone.example.com/v2.0");
        assert!(SwiftConfig::from_settings(&s).unwrap_err().to_string().contains("Keystone v2"));
        s.set("ST_AUTH_VERSION", "2");
        assert!(SwiftConfig::from_settings(&s).is_err(), "2 is not an allowed value");
    }
}
