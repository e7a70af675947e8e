//! SFTP settings with WAL-G's names and meanings: `WALG_SSH_PREFIX=ssh://host/path`, where the
//! path is absolute on the host (WAL-G takes the URL's path as it is: `ssh://h/srv/walg` is
//! `/srv/walg`), `SSH_PORT` (22), `SSH_USERNAME`, `SSH_PRIVATE_KEY_PATH` and `SSH_PASSWORD` (a
//! secret: config file or environment only). As in WAL-G both the key and the password are
//! offered when both are set, the key first. `WALG_SSH_MAX_RETRIES` (ours) bounds retries.
//!
//! WAL-G's `SSH_JUMP_HOST` is not supported: it is refused here rather than silently connecting
//! straight to the host.

use crate::config::registry as r;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::storage::s3::settings::Secret;

#[derive(Clone, Debug, PartialEq)]
pub struct SftpConfig {
    pub host: String,
    pub port: u16,
    /// Absolute directory on the host, without a trailing '/' ("" is the file system root).
    pub root: String,
    pub user: String,
    pub password: Option<Secret>,
    pub key_path: Option<String>,
    pub max_retries: u32,
}

/// Split `ssh://host/path` into ("host", "/path" without trailing '/').
pub fn parse_prefix(raw: &str) -> Result<(String, String)> {
    let bad = |why: &str| Error::Config(format!("WALG_SSH_PREFIX: {raw:?} {why}"));
    let rest = raw.strip_prefix("ssh://").ok_or_else(|| bad("must look like ssh://host/path"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if host.contains('@') {
        return Err(bad("names a user: set SSH_USERNAME instead (WAL-G ignores a user in the prefix)"));
    }
    // WAL-G appends SSH_PORT to the URL's host, so a port here never worked there either.
    if host.contains(':') && !host.starts_with('[') {
        return Err(bad("names a port: set SSH_PORT instead"));
    }
    let path = path.trim_end_matches('/');
    if path.split('/').skip(1).any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(bad("has an empty, '.' or '..' path component"));
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), path.to_string()))
}

impl SftpConfig {
    /// `Some` when WALG_SSH_PREFIX is set.
    pub fn from_settings(s: &Settings) -> Result<Option<SftpConfig>> {
        let Some(raw) = s.raw(&r::SSH_PREFIX) else { return Ok(None) };
        r::check_values(s)?;
        let (host, root) = parse_prefix(raw)?;
        if s.get("SSH_JUMP_HOST").is_some_and(|v| !v.trim().is_empty()) {
            return Err(Error::Config("SSH_JUMP_HOST is set: walg_ext does not support jump hosts; reach the host directly (or through an SSH tunnel on a local port) and unset it".into()));
        }
        let user = s.raw(&r::SSH_USERNAME).map(str::to_string).ok_or_else(|| {
            Error::Config("WALG_SSH_PREFIX is set but SSH_USERNAME is not: set the user to log in as".into())
        })?;
        // Not trimmed: a password may end in a space.
        let password = s.get(r::SSH_PASSWORD.key).filter(|p| !p.is_empty()).map(|p| Secret(p.to_string()));
        let key_path = s.raw(&r::SSH_PRIVATE_KEY_PATH).map(str::to_string);
        if password.is_none() && key_path.is_none() {
            return Err(Error::Config(
                "WALG_SSH_PREFIX is set but neither SSH_PRIVATE_KEY_PATH nor SSH_PASSWORD is: set one way to log in".into(),
            ));
        }
        let int = |setting: &r::Setting| -> Result<i64> {
            s.int(setting)?.ok_or_else(|| Error::Internal(format!("{} has no default", setting.key)))
        };
        Ok(Some(SftpConfig {
            host,
            port: int(&r::SSH_PORT)? as u16,
            root,
            user,
            password,
            key_path,
            max_retries: int(&r::SSH_MAX_RETRIES)? as u32,
        }))
    }

    /// `ssh://host/path` as configured (the port when it is not 22).
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let port = if self.port == 22 { String::new() } else { format!(":{}", self.port) };
        format!("ssh://{host}{port}{}", self.root)
    }

    /// The storage as shown to users, and its identity.
    pub fn describe(&self) -> String {
        format!("{} (user {})", self.url(), self.user)
    }

    /// `host:port` for connecting.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Settings {
        let mut s = Settings::new();
        s.set("WALG_SSH_PREFIX", "ssh://backup.example.net/srv/walg/main/");
        s.set("SSH_USERNAME", "walg");
        s.set("SSH_PRIVATE_KEY_PATH", "/etc/walg/id_ed25519");
        s
    }

    #[test]
    fn prefix_is_an_absolute_path_and_defaults_apply() {
        let c = SftpConfig::from_settings(&base()).unwrap().unwrap();
        assert_eq!((c.host.as_str(), c.root.as_str(), c.port), ("backup.example.net", "/srv/walg/main", 22));
        assert_eq!((c.user.as_str(), c.key_path.as_deref(), c.max_retries), ("walg", Some("/etc/walg/id_ed25519"), 15));
        assert_eq!(c.describe(), "ssh://backup.example.net/srv/walg/main (user walg)");
        assert_eq!(c.address(), "backup.example.net:22");
        let mut s = base();
        s.set("SSH_PORT", "2222");
        s.set("SSH_PASSWORD", " pw ");
        s.set("WALG_SSH_PREFIX", "ssh://[::1]");
        let c = SftpConfig::from_settings(&s).unwrap().unwrap();
        assert_eq!((c.host.as_str(), c.root.as_str()), ("::1", ""));
        assert_eq!(c.password.as_ref().unwrap().0, " pw ", "a password is taken as it is");
        assert_eq!(c.describe(), "ssh://[::1]:2222 (user walg)");
        assert_eq!(c.address(), "[::1]:2222");
        assert!(!format!("{c:?}").contains(" pw "), "Debug never shows the password");
    }

    #[test]
    fn bad_settings_say_what_to_fix() {
        for (bad, needle) in [
            ("sftp://h/x", "ssh://host/path"),
            ("ssh:///x", "no host"),
            ("ssh://u@h/x", "SSH_USERNAME"),
            ("ssh://h:2222/x", "SSH_PORT"),
            ("ssh://h/a//b", "empty"),
            ("ssh://h/a/../b", "'..'"),
        ] {
            let mut s = base();
            s.set("WALG_SSH_PREFIX", bad);
            let e = SftpConfig::from_settings(&s).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let mut s = base();
        s.set("SSH_USERNAME", "");
        assert!(SftpConfig::from_settings(&s).unwrap_err().to_string().contains("SSH_USERNAME is not"));
        let mut s = base();
        s.set("SSH_PRIVATE_KEY_PATH", "");
        assert!(SftpConfig::from_settings(&s).unwrap_err().to_string().contains("neither SSH_PRIVATE_KEY_PATH nor SSH_PASSWORD"));
        let mut s = base();
        s.set("SSH_PORT", "70000");
        assert!(SftpConfig::from_settings(&s).is_err());
        let mut s = base();
        s.set("SSH_JUMP_HOST", "bastion");
        assert!(SftpConfig::from_settings(&s).unwrap_err().to_string().contains("jump hosts"));
    }
}
