//! Azure Blob settings, with WAL-G's names and meanings: `WALG_AZ_PREFIX=azure://container/path`,
//! `AZURE_STORAGE_ACCOUNT`, a shared key (`AZURE_STORAGE_ACCESS_KEY`) or a SAS token
//! (`AZURE_STORAGE_SAS_TOKEN`) from the config file or the environment only (the access key wins,
//! as in WAL-G; neither: Azure's default credential chain), the endpoint from
//! `AZURE_ENDPOINT_SUFFIX` or `AZURE_ENVIRONMENT_NAME`, and the upload tuning
//! `WALG_AZURE_BUFFER_SIZE` x `WALG_AZURE_MAX_BUFFERS`. `WALG_AZURE_ENDPOINT` (ours) names the
//! whole service URL, for an emulator such as Azurite.

use crate::config::registry as r;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::storage::s3::settings::Secret;

#[derive(Clone, Debug, PartialEq)]
pub struct AzureConfig {
    pub container: String,
    /// Path inside the container, without leading or trailing '/'; may be empty.
    pub path: String,
    pub account: String,
    pub access_key: Option<Secret>,
    /// Without the leading '?'.
    pub sas_token: Option<Secret>,
    /// `https://<account>.blob.<suffix>` or WALG_AZURE_ENDPOINT, without a trailing '/'.
    pub endpoint: String,
    /// Whether the endpoint was given whole (an emulator): shown in `describe`.
    pub endpoint_given: bool,
    pub buffer_size: usize,
    pub max_buffers: usize,
    pub max_retries: u32,
}

fn suffix_of_environment(name: &str) -> &'static str {
    match name {
        "AzureUSGovernmentCloud" => "core.usgovcloudapi.net",
        "AzureChinaCloud" => "core.chinacloudapi.cn",
        "AzureGermanCloud" => "core.cloudapi.de",
        _ => "core.windows.net",
    }
}

fn num(s: &Settings, setting: &r::Setting) -> Result<u64> {
    let v = s.int(setting)?.ok_or_else(|| Error::Internal(format!("{} has no default", setting.key)))?;
    u64::try_from(v).map_err(|_| Error::Internal(format!("{}: {v} is negative", setting.key)))
}

/// Split `azure://container/path/` into ("container", "path").
pub fn parse_prefix(raw: &str) -> Result<(String, String)> {
    let rest = raw
        .strip_prefix("azure://")
        .ok_or_else(|| Error::Config(format!("WALG_AZ_PREFIX: {raw:?} must look like azure://container/path")))?;
    let (container, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    // Azure's rule: 3-63 lowercase letters, digits and single hyphens, starting and ending with
    // a letter or digit ($root and $web aside).
    let valid = (3..=63).contains(&container.len())
        && container.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !container.starts_with('-')
        && !container.ends_with('-')
        && !container.contains("--");
    if !valid && container != "$root" && container != "$web" {
        return Err(Error::Config(format!(
            "WALG_AZ_PREFIX: {container:?} in {raw:?} is not a valid container name (3-63 lowercase letters, digits, single '-')"
        )));
    }
    let path = path.trim_matches('/');
    if path.split('/').any(|c| c.is_empty() && !path.is_empty()) {
        return Err(Error::Config(format!("WALG_AZ_PREFIX: {raw:?} has an empty path component ('//')")));
    }
    Ok((container.to_string(), path.to_string()))
}

impl AzureConfig {
    /// `Some` when WALG_AZ_PREFIX is set.
    pub fn from_settings(s: &Settings) -> Result<Option<AzureConfig>> {
        let Some(raw) = s.raw(&r::AZ_PREFIX) else { return Ok(None) };
        r::check_values(s)?;
        let (container, path) = parse_prefix(raw)?;
        let account = s.raw(&r::AZURE_STORAGE_ACCOUNT).map(str::to_string).ok_or_else(|| {
            Error::Config("WALG_AZ_PREFIX is set but AZURE_STORAGE_ACCOUNT is not: set the storage account".into())
        })?;
        let (endpoint, endpoint_given) = match s.raw(&r::AZURE_ENDPOINT) {
            Some(e) => {
                let e = e.trim_end_matches('/').to_string();
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(Error::Config(format!("WALG_AZURE_ENDPOINT: {e:?} must start with http:// or https://")));
                }
                (e, true)
            }
            None => {
                let suffix = match s.raw(&r::AZURE_ENDPOINT_SUFFIX) {
                    Some(x) => x.trim_matches('.').to_string(),
                    None => suffix_of_environment(s.raw(&r::AZURE_ENVIRONMENT_NAME).unwrap_or("AzurePublicCloud")).to_string(),
                };
                (format!("https://{account}.blob.{suffix}"), false)
            }
        };
        let access_key = s.raw(&r::AZURE_STORAGE_ACCESS_KEY).map(|k| Secret(k.to_string()));
        let sas_token = s
            .raw(&r::AZURE_STORAGE_SAS_TOKEN)
            .map(|t| Secret(t.trim_start_matches('?').to_string()));
        Ok(Some(AzureConfig {
            container,
            path,
            account,
            access_key,
            sas_token,
            endpoint,
            endpoint_given,
            buffer_size: num(s, &r::AZURE_BUFFER_SIZE)? as usize,
            max_buffers: num(s, &r::AZURE_MAX_BUFFERS)? as usize,
            max_retries: num(s, &r::AZURE_MAX_RETRIES)? as u32,
        }))
    }

    /// `azure://container/path` as configured.
    pub fn url(&self) -> String {
        if self.path.is_empty() {
            format!("azure://{}", self.container)
        } else {
            format!("azure://{}/{}", self.container, self.path)
        }
    }

    /// The storage as shown to users, and its identity.
    pub fn describe(&self) -> String {
        if self.endpoint_given {
            format!("{} (endpoint {})", self.url(), self.endpoint)
        } else {
            format!("{} (account {})", self.url(), self.account)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Settings {
        let mut s = Settings::new();
        s.set("WALG_AZ_PREFIX", "azure://backups/pg/main/");
        s.set("AZURE_STORAGE_ACCOUNT", "acct");
        s
    }

    #[test]
    fn prefix_account_endpoint_and_defaults() {
        let c = AzureConfig::from_settings(&base()).unwrap().unwrap();
        assert_eq!((c.container.as_str(), c.path.as_str()), ("backups", "pg/main"));
        assert_eq!(c.endpoint, "https://acct.blob.core.windows.net");
        assert_eq!((c.buffer_size, c.max_buffers, c.max_retries), (8 << 20, 4, 15));
        assert_eq!(c.describe(), "azure://backups/pg/main (account acct)");
        assert!(c.access_key.is_none() && c.sas_token.is_none());

        let mut s = base();
        s.set("AZURE_ENVIRONMENT_NAME", "AzureChinaCloud");
        assert_eq!(AzureConfig::from_settings(&s).unwrap().unwrap().endpoint, "https://acct.blob.core.chinacloudapi.cn");
        s.set("AZURE_ENDPOINT_SUFFIX", "core.example.net");
        assert_eq!(AzureConfig::from_settings(&s).unwrap().unwrap().endpoint, "https://acct.blob.core.example.net");
        s.set("WALG_AZURE_ENDPOINT", "http://127.0.0.1:10000/devstoreaccount1/");
        let c = AzureConfig::from_settings(&s).unwrap().unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(c.describe(), "azure://backups/pg/main (endpoint http://127.0.0.1:10000/devstoreaccount1)");
        s.set("AZURE_STORAGE_SAS_TOKEN", "?sv=2020&sig=x");
        s.set("WALG_AZURE_BUFFER_SIZE", "1048576");
        s.set("WALG_AZURE_MAX_BUFFERS", "2");
        let c = AzureConfig::from_settings(&s).unwrap().unwrap();
        assert_eq!(c.sas_token.unwrap().0, "sv=2020&sig=x", "the leading ? is dropped");
        assert_eq!((c.buffer_size, c.max_buffers), (1 << 20, 2));
    }

    #[test]
    fn bad_settings_say_what_to_fix() {
        let mut s = Settings::new();
        s.set("WALG_AZ_PREFIX", "azure://backups/x");
        let e = AzureConfig::from_settings(&s).unwrap_err().to_string();
        assert!(e.contains("AZURE_STORAGE_ACCOUNT is not"), "{e}");
        for bad in ["s3://backups/x", "azure://Bad_Name/x", "azure://ab/x", "azure://backups/a//b"] {
            let mut s = base();
            s.set("WALG_AZ_PREFIX", bad);
            assert!(AzureConfig::from_settings(&s).is_err(), "{bad}");
        }
        let mut s = base();
        s.set("WALG_AZURE_ENDPOINT", "127.0.0.1:10000");
        assert!(AzureConfig::from_settings(&s).unwrap_err().to_string().contains("http://"));
        let mut s = base();
        s.set("WALG_AZURE_MAX_BUFFERS", "0");
        assert!(AzureConfig::from_settings(&s).is_err());
        // The key never shows in Debug output.
        let mut s = base();
        s.set("AZURE_STORAGE_ACCESS_KEY", "c2VjcmV0LWtleQ==");
        let c = AzureConfig::from_settings(&s).unwrap().unwrap();
        assert!(!format!("{c:?}").contains("c2VjcmV0LWtleQ=="));
    }
}
