//! Settings (raw WAL-G key/value pairs from a file or the environment) and the validated `Config`.
//!
//! Which keys exist, their types and defaults: `registry` (one entry per setting). A config
//! file with an unknown key is refused (naming the closest known key); every value is checked
//! against its registry type before `Config` is built.

pub mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::crypto::Key;
use crate::codec::{PgpKey, ZstdLayout};
use crate::codec::{zstd_level_from_name, Compression, Pipeline};
use crate::error::{Error, Result};
use crate::storage::{S3Config, Storage};
use registry as r;

/// Where `make install` puts walg-ext: the default of WALG_CLI_PATH (walg.cli_path).
pub const DEFAULT_CLI_PATH: &str = "/usr/local/bin/walg-ext";

/// WAL-G's default tar part size: 1 GiB - 1.
pub const DEFAULT_TAR_SIZE_THRESHOLD: u64 = (1 << 30) - 1;

/// Raw WAL-G settings (key -> string value). Layers are combined with `merge`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

/// Environment variables that are settings although they have no WALG_/WALE_/AWS_ prefix.
/// WAL-G's Azure keys are read by name, not by an `AZURE_` prefix: Azure hosts carry other
/// `AZURE_*` variables (AZURE_CLIENT_ID, ...) that are no walg settings. Its SFTP keys are plain
/// `SSH_*` names; likewise Google's and WAL-G's GCS keys.
const PLAIN_ENV_KEYS: &[&str] = &[
    "PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_TOKEN", "AZURE_ENDPOINT_SUFFIX", "AZURE_ENVIRONMENT_NAME",
    // WAL-G's Swift keys (ncw/swift's names), by name too: OS_* variables of other OpenStack
    // tools (OS_CLOUD, OS_IDENTITY_API_VERSION, ...) are no walg settings.
    "OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD", "OS_PROJECT_NAME", "OS_TENANT_NAME", "OS_REGION_NAME",
    "OS_USER_DOMAIN_NAME", "OS_PROJECT_DOMAIN_NAME", "OS_ENDPOINT_TYPE", "ST_AUTH_VERSION",
    "SSH_PORT", "SSH_USERNAME", "SSH_PASSWORD", "SSH_PRIVATE_KEY_PATH",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "STORAGE_EMULATOR_HOST", "GCS_CONTEXT_TIMEOUT", "GCS_MAX_CHUNK_SIZE", "GCS_MAX_RETRIES", "GCS_ENCRYPTION_KEY",
    "GCS_NORMALIZE_PREFIX",
];
const ENV_PREFIXES: &[&str] = &["WALG_", "WALE_", "AWS_"];

/// Whether environment variable `key` is a walg setting (read by `Settings::from_env`).
pub fn is_env_setting(key: &str) -> bool {
    ENV_PREFIXES.iter().any(|p| key.starts_with(p)) || PLAIN_ENV_KEYS.contains(&key)
}

/// `is_env_setting` without libpq's PG* variables: the settings a `walg-ext wal-fetch` in
/// restore_command needs from the environment it was set up with (storage, codec, key). The
/// connection variables name the server that was backed up, not the one recovering.
pub fn is_storage_env_setting(key: &str) -> bool {
    is_env_setting(key) && !key.starts_with("PG")
}

impl Settings {
    pub fn new() -> Settings {
        Settings::default()
    }

    /// Read a WAL-G config file: a JSON or YAML mapping of keys to scalar values.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Settings> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        Settings::parse(&text)
            .and_then(|s| r::check_keys(&s, r::Origin::File).map(|_| s))
            .map_err(|e| match e {
                Error::Config(msg) => Error::Config(format!("config file {}: {}", path.display(), msg.replace(" in the config file", ""))),
                other => other,
            })
    }

    /// Parse config file text. JSON is tried first when it looks like JSON, because JSON with
    /// tab indentation is not valid YAML.
    pub fn parse(text: &str) -> Result<Settings> {
        let value: serde_yaml::Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| Error::Config(format!("bad JSON: {e}")))?
        } else {
            serde_yaml::from_str(text).map_err(|e| Error::Config(format!("bad YAML: {e}")))?
        };
        let mut settings = Settings::new();
        let map = match value {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => return Ok(settings), // empty file
            _ => return Err(Error::Config("expected a mapping of setting names to values".into())),
        };
        for (k, v) in map {
            // WAL-G (viper) reads keys without regard to case.
            let key = match k {
                serde_yaml::Value::String(s) => s.to_ascii_uppercase(),
                other => return Err(Error::Config(format!("setting name {other:?} is not a string"))),
            };
            let value = match v {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                serde_yaml::Value::Null => continue,
                _ => return Err(Error::Config(format!("{key}: value must be a string, number or boolean"))),
            };
            settings.set(key, value);
        }
        Ok(settings)
    }

    /// Every WALG_*, WALE_*, AWS_* variable plus the libpq/PGDATA ones.
    pub fn from_env() -> Settings {
        let mut settings = Settings::new();
        for (k, v) in std::env::vars_os() {
            let (Some(k), Some(v)) = (k.to_str(), v.to_str()) else { continue };
            if is_env_setting(k) {
                settings.set(k, v);
            }
        }
        settings
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values.insert(key.into(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Overlay `over` on self: its values win.
    pub fn merge(&mut self, over: &Settings) {
        for (k, v) in &over.values {
            self.values.insert(k.clone(), v.clone());
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Non-empty (after trimming) value of `key`.
    pub(crate) fn value(&self, key: &str) -> Option<&str> {
        self.get(key).map(str::trim).filter(|v| !v.is_empty())
    }
}

/// Where backups live.
#[derive(Clone, Debug, PartialEq)]
pub enum StorageConfig {
    /// WALG_FILE_PREFIX: a local (or mounted) directory.
    File { prefix: PathBuf },
    /// WALG_S3_PREFIX s3://bucket/path and the AWS_* / WALG_S3_* settings.
    S3(S3Config),
    /// WALG_AZ_PREFIX azure://container/path and the AZURE_* / WALG_AZURE_* settings.
    Azure(crate::storage::AzureConfig),
    /// WALG_SWIFT_PREFIX swift://container/path and the OS_* settings.
    Swift(crate::storage::SwiftConfig),
    /// WALG_SSH_PREFIX ssh://host/path and the SSH_* settings.
    Sftp(crate::storage::SftpConfig),
    /// WALG_GS_PREFIX gs://bucket/path and GOOGLE_APPLICATION_CREDENTIALS / GCS_* settings.
    Gcs(crate::storage::GcsConfig),
}

/// Validated configuration shared by the extension and the CLI.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub storage: StorageConfig,
    /// WALG_COMPRESSION_METHOD, default lz4, at WALG_COMPRESSION_LEVEL (or WALG_ZSTD_LEVEL).
    pub compression: Compression,
    /// libsodium key from WALG_LIBSODIUM_KEY or WALG_LIBSODIUM_KEY_PATH; None = no libsodium.
    pub encryption: Option<Key>,
    /// OpenPGP key ring from WALG_PGP_KEY or WALG_PGP_KEY_PATH (with WALG_PGP_KEY_PASSPHRASE);
    /// None = no OpenPGP. Never both this and `encryption`.
    pub pgp: Option<PgpKey>,
    /// WALG_ZSTD_LAYOUT: one frame per zstd object (default) or one per chunk.
    pub zstd_layout: ZstdLayout,
    /// WALG_TAR_SIZE_THRESHOLD, default 1 GiB - 1.
    pub tar_size_threshold: u64,
    /// WALG_UPLOAD_CONCURRENCY, default = available cores (min 1).
    pub upload_concurrency: usize,
    /// WALG_DOWNLOAD_CONCURRENCY, default = available cores (min 1).
    pub download_concurrency: usize,
    /// WALG_DISK_RATE_LIMIT bytes/s for backup reads; None (or 0) = unlimited.
    pub disk_rate_limit: Option<u64>,
    /// The scheduler's settings (the extension's static worker).
    pub schedule: ScheduleConfig,
    /// WALG_DELTA_MAX_STEPS: deltas allowed after a full; 0 = full backups only.
    pub delta_max_steps: u32,
    /// WALG_VERIFY_PAGE_CHECKSUMS: verify page checksums (when the cluster has them).
    pub verify_page_checksums: bool,
    /// WALG_STORE_ALL_CORRUPT_BLOCKS: every corrupt block number in `CorruptBlocks`, not 10.
    pub store_all_corrupt_blocks: bool,
    /// WALG_FAIL_ON_CORRUPT_PAGES: a corrupt page fails the backup.
    pub fail_on_corrupt_pages: bool,
    /// WALG_DELTA_ORIGIN: true for LATEST_FULL (deltas from the newest full), false for LATEST.
    pub delta_from_full: bool,
    /// WALG_DELTA_WAL_MAPS: the archiver writes changed-block maps and deltas use them.
    pub delta_wal_maps: bool,
    /// WALG_DELTA_MAP_CHECK: a map-planned delta also runs the full scan and fails on a miss.
    pub delta_map_check: bool,
    /// WALG_PREFETCH_DIR: where wal-fetch prefetches; None = beside restore_command's %p.
    pub prefetch_dir: Option<PathBuf>,
    /// WALG_DRILL_WORK_DIR: where a drill asked of the server makes its scratch copy; None =
    /// the server's temporary directory.
    pub drill_work_dir: Option<PathBuf>,
    /// WALG_CLI_PATH: the walg-ext binary the server runs for drills.
    pub cli_path: PathBuf,
}

/// Settings of the scheduler, as written: the expressions are parsed by the scheduler
/// (crate::schedule), not here, so a typo in a schedule never stops WAL archiving (which loads
/// this Config for every segment); the scheduler and `walg_health()` report it instead.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScheduleConfig {
    /// WALG_BACKUP_SCHEDULE (cron); None = off.
    pub backup: Option<String>,
    /// WALG_FULL_BACKUP_SCHEDULE (cron); None = off.
    pub full_backup: Option<String>,
    /// WALG_RETAIN (`delete retain` arguments); None = off.
    pub retain: Option<String>,
    /// WALG_BACKUP_RETRIES.
    pub retries: u32,
    /// WALG_BACKUP_RETRY_DELAY, seconds.
    pub retry_delay_secs: u64,
    /// WALG_BACKUP_ON_STANDBY.
    pub on_standby: bool,
    /// WALG_BACKUP_ON_PRIMARY.
    pub on_primary: bool,
    /// WALG_HEALTH_CHECK_INTERVAL, seconds.
    pub health_check_interval_secs: u64,
    /// WALG_DRILL_SCHEDULE (cron); None = off.
    pub drill: Option<String>,
}

impl ScheduleConfig {
    fn from_settings(s: &Settings) -> Result<ScheduleConfig> {
        Ok(ScheduleConfig {
            backup: s.text(&r::BACKUP_SCHEDULE)?,
            full_backup: s.text(&r::FULL_BACKUP_SCHEDULE)?,
            retain: s.text(&r::RETAIN)?,
            retries: count(s, &r::BACKUP_RETRIES)? as u32,
            retry_delay_secs: count(s, &r::BACKUP_RETRY_DELAY)?,
            on_standby: s.flag(&r::BACKUP_ON_STANDBY)?,
            on_primary: s.flag(&r::BACKUP_ON_PRIMARY)?,
            health_check_interval_secs: count(s, &r::HEALTH_CHECK_INTERVAL)?,
            drill: s.text(&r::DRILL_SCHEDULE)?,
        })
    }

    /// The defaults (nothing scheduled).
    pub fn defaults() -> ScheduleConfig {
        ScheduleConfig { retries: 2, retry_delay_secs: 60, on_primary: true, health_check_interval_secs: 60, ..Default::default() }
    }

    /// Whether scheduled backups and retention run on this server (a standby or a primary);
    /// Err(why not) when they do not.
    pub fn runs_here(&self, standby: bool) -> std::result::Result<(), &'static str> {
        match (standby, self.on_standby, self.on_primary) {
            (true, false, _) => Err("the server is a standby and walg.backup_on_standby is off"),
            (false, _, false) => Err("the server is a primary and walg.backup_on_primary is off"),
            _ => Ok(()),
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1)
}

/// An integer setting with a default (so never None after `check_values`), as u64.
fn count(s: &Settings, setting: &r::Setting) -> Result<u64> {
    let v = s.int(setting)?.ok_or_else(|| Error::Internal(format!("{} has no default", setting.key)))?;
    u64::try_from(v).map_err(|_| Error::Internal(format!("{}: {v} is negative", setting.key)))
}

/// WALG_COMPRESSION_LEVEL (a number, any method with levels), else WAL-G's WALG_ZSTD_LEVEL
/// (fastest, default, better, best, or a number) for zstd.
fn with_level(s: &Settings, c: Compression) -> Result<Compression> {
    let level = |key: &str, raw: &str| -> Result<i32> {
        raw.parse::<i32>().map_err(|_| Error::Config(format!("{key}: value {raw:?} is not an integer")))
    };
    if let Some(l) = s.int(&r::COMPRESSION_LEVEL)? {
        return c.with_level(l as i32).map_err(|e| Error::Config(format!("WALG_COMPRESSION_LEVEL: {e}")));
    }
    match (c, s.raw(&r::ZSTD_LEVEL)) {
        (Compression::Zstd { .. }, Some(raw)) => {
            let l = match zstd_level_from_name(raw) {
                Some(l) => l,
                None => level("WALG_ZSTD_LEVEL", raw).map_err(|_| {
                    Error::Config(format!(
                        "WALG_ZSTD_LEVEL: value {raw:?} is not fastest, default, better, best or a level 1..22"
                    ))
                })?,
            };
            c.with_level(l).map_err(|e| Error::Config(format!("WALG_ZSTD_LEVEL: {e}")))
        }
        _ => Ok(c),
    }
}

/// WALG_LIBSODIUM_KEY (wins, as in WAL-G) or WALG_LIBSODIUM_KEY_PATH, transformed by
/// WALG_LIBSODIUM_KEY_TRANSFORM. Other WAL-G encryption settings are refused rather than ignored,
/// so nothing is uploaded unencrypted by mistake.
fn encryption_key(s: &Settings) -> Result<Option<Key>> {
    for k in ["WALE_GPG_KEY_ID", "WALG_GPG_KEY_ID", "WALG_CSE_KMS_ID", "WALG_ENVELOPE_PGP_KEY", "WALG_ENVELOPE_PGP_KEY_PATH"] {
        if s.value(k).is_some() {
            return Err(Error::Config(format!(
                "{k} is set, but only libsodium (WALG_LIBSODIUM_KEY / WALG_LIBSODIUM_KEY_PATH) and OpenPGP keys (WALG_PGP_KEY / WALG_PGP_KEY_PATH) are supported"
            )));
        }
    }
    let transform = s.text(&r::LIBSODIUM_KEY_TRANSFORM)?.unwrap_or_else(|| "none".into());
    let transform = transform.as_str();
    // The key itself is not trimmed (WAL-G takes it as is); an empty value means unset.
    if let Some(text) = s.get("WALG_LIBSODIUM_KEY").filter(|v| !v.is_empty()) {
        return Key::from_text(text, transform).map(Some);
    }
    match s.raw(&r::LIBSODIUM_KEY_PATH) {
        Some(path) => Key::from_file(Path::new(path), transform).map(Some),
        None => Ok(None),
    }
}

/// WALG_PGP_KEY (the armored key; wins, as in WAL-G) or WALG_PGP_KEY_PATH, with
/// WALG_PGP_KEY_PASSPHRASE for a protected secret key (checked only when an object is read: a
/// server that only pushes needs neither the secret key nor the passphrase).
fn pgp_key(s: &Settings) -> Result<Option<PgpKey>> {
    let passphrase = s.get(r::PGP_KEY_PASSPHRASE.key).filter(|v| !v.is_empty()).map(str::to_string);
    if let Some(text) = s.get(r::PGP_KEY.key).filter(|v| !v.trim().is_empty()) {
        return PgpKey::from_armored("WALG_PGP_KEY", text, passphrase).map(Some);
    }
    match s.raw(&r::PGP_KEY_PATH) {
        Some(path) => PgpKey::from_file(Path::new(path), passphrase).map(Some),
        None => Ok(None),
    }
}

impl Config {
    /// Validate settings; every bad value gives an error naming the key and the value.
    pub fn from_settings(s: &Settings) -> Result<Config> {
        r::check_values(s)?;
        let s3 = S3Config::from_settings(s)?;
        let az = crate::storage::AzureConfig::from_settings(s)?;
        let swift = crate::storage::SwiftConfig::from_settings(s)?;
        let gcs = crate::storage::GcsConfig::from_settings(s)?;
        let file = s.raw(&r::FILE_PREFIX).map(|p| StorageConfig::File { prefix: PathBuf::from(p) });
        let mut chosen: Vec<(&str, StorageConfig)> = Vec::new();
        if let Some(f) = file {
            chosen.push(("WALG_FILE_PREFIX", f));
        }
        if let Some(s3) = s3 {
            chosen.push(("WALG_S3_PREFIX", StorageConfig::S3(s3)));
        }
        if let Some(az) = az {
            chosen.push(("WALG_AZ_PREFIX", StorageConfig::Azure(az)));
        }
        if let Some(sw) = swift {
            chosen.push(("WALG_SWIFT_PREFIX", StorageConfig::Swift(sw)));
        }
        if let Some(sftp) = crate::storage::SftpConfig::from_settings(s)? {
            chosen.push(("WALG_SSH_PREFIX", StorageConfig::Sftp(sftp)));
        }
        if let Some(gcs) = gcs {
            chosen.push(("WALG_GS_PREFIX", StorageConfig::Gcs(gcs)));
        }
        if chosen.len() > 1 {
            let keys: Vec<&str> = chosen.iter().map(|(k, _)| *k).collect();
            return Err(Error::Config(format!("both {} are set: keep only one storage", keys.join(" and "))));
        }
        let storage = match chosen.pop() {
            Some((_, st)) => st,
            None => {
                return Err(Error::Config(
                    "no storage configured: set WALG_FILE_PREFIX, WALG_S3_PREFIX, WALG_AZ_PREFIX, WALG_GS_PREFIX, WALG_SWIFT_PREFIX or WALG_SSH_PREFIX (walg.file_prefix, walg.s3_prefix, walg.az_prefix, walg.gs_prefix, walg.swift_prefix or walg.ssh_prefix in the server)".into(),
                ));
            }
        };
        let compression = match s.text(&r::COMPRESSION_METHOD)? {
            None => Compression::Lz4,
            Some(m) => Compression::parse(&m)
                .map_err(|e| Error::Config(format!("WALG_COMPRESSION_METHOD: {e}")))?,
        };
        let compression = with_level(s, compression)?;
        let encryption = encryption_key(s)?;
        let pgp = pgp_key(s)?;
        if encryption.is_some() && pgp.is_some() {
            return Err(Error::Config(
                "both a libsodium key (WALG_LIBSODIUM_KEY / WALG_LIBSODIUM_KEY_PATH) and an OpenPGP key (WALG_PGP_KEY / WALG_PGP_KEY_PATH) are set: keep only one encryption".into(),
            ));
        }
        let zstd_layout = match s.text(&r::ZSTD_LAYOUT)?.as_deref() {
            Some("frames") => ZstdLayout::Frames,
            _ => ZstdLayout::SingleFrame,
        };
        let tar_size_threshold = count(s, &r::TAR_SIZE_THRESHOLD)?;
        let upload_concurrency = count(s, &r::UPLOAD_CONCURRENCY)? as usize;
        let download_concurrency = count(s, &r::DOWNLOAD_CONCURRENCY)? as usize;
        let disk_rate_limit = Some(count(s, &r::DISK_RATE_LIMIT)?).filter(|&v| v > 0);
        let schedule = ScheduleConfig::from_settings(s)?;
        let delta_max_steps = count(s, &r::DELTA_MAX_STEPS)? as u32;
        let verify_page_checksums = s.flag(&r::VERIFY_PAGE_CHECKSUMS)?;
        let store_all_corrupt_blocks = s.flag(&r::STORE_ALL_CORRUPT_BLOCKS)?;
        let fail_on_corrupt_pages = s.flag(&r::FAIL_ON_CORRUPT_PAGES)?;
        let delta_from_full = s.text(&r::DELTA_ORIGIN)?.is_some_and(|o| o == "LATEST_FULL");
        let delta_wal_maps = s.flag(&r::DELTA_WAL_MAPS)?;
        let delta_map_check = s.flag(&r::DELTA_MAP_CHECK)?;
        let prefetch_dir = s.text(&r::PREFETCH_DIR)?.filter(|d| !d.trim().is_empty()).map(PathBuf::from);
        let drill_work_dir = s.text(&r::DRILL_WORK_DIR)?.filter(|d| !d.trim().is_empty()).map(PathBuf::from);
        let cli_path = PathBuf::from(s.text(&r::CLI_PATH)?.unwrap_or_else(|| DEFAULT_CLI_PATH.into()));
        Ok(Config {
            storage,
            compression,
            encryption,
            pgp,
            zstd_layout,
            tar_size_threshold,
            upload_concurrency,
            download_concurrency,
            disk_rate_limit,
            schedule,
            delta_max_steps,
            verify_page_checksums,
            store_all_corrupt_blocks,
            fail_on_corrupt_pages,
            delta_from_full,
            delta_wal_maps,
            delta_map_check,
            prefetch_dir,
            drill_work_dir,
            cli_path,
        })
    }

    /// A file-storage config with defaults, handy for tests and tools.
    pub fn for_file_storage(prefix: impl Into<PathBuf>) -> Config {
        Config {
            storage: StorageConfig::File { prefix: prefix.into() },
            compression: Compression::Lz4,
            encryption: None,
            pgp: None,
            zstd_layout: ZstdLayout::SingleFrame,
            tar_size_threshold: DEFAULT_TAR_SIZE_THRESHOLD,
            upload_concurrency: cores(),
            download_concurrency: cores(),
            disk_rate_limit: None,
            schedule: ScheduleConfig::defaults(),
            delta_max_steps: 0,
            verify_page_checksums: true,
            store_all_corrupt_blocks: false,
            fail_on_corrupt_pages: false,
            delta_from_full: false,
            delta_wal_maps: true,
            delta_map_check: false,
            prefetch_dir: None,
            drill_work_dir: None,
            cli_path: PathBuf::from(DEFAULT_CLI_PATH),
        }
    }

    /// How objects are encoded: compression, then encryption.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(self.compression, self.encryption.clone())
            .with_pgp(self.pgp.clone())
            .with_zstd_layout(self.zstd_layout)
    }

    /// What `open_storage()?.describe()` says, without opening it: the storage's identity
    /// (prefetched WAL records where it came from, wal/prefetch.rs).
    pub fn describe_storage(&self) -> String {
        crate::storage::describe(&self.storage)
    }

    /// The storage this config names (storage::open: backend choice, retries, client cache).
    pub fn open_storage(&self) -> Result<Arc<dyn Storage>> {
        crate::storage::open(&self.storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_files_parse_to_strings() {
        let y = Settings::parse("WALG_FILE_PREFIX: /backups\nWALG_UPLOAD_CONCURRENCY: 4\nX: true\n").unwrap();
        assert_eq!(y.get("WALG_FILE_PREFIX"), Some("/backups"));
        assert_eq!(y.get("WALG_UPLOAD_CONCURRENCY"), Some("4"));
        assert_eq!(y.get("X"), Some("true"));
        let lower = Settings::parse("walg_file_prefix: /b\n").unwrap();
        assert_eq!(lower.get("WALG_FILE_PREFIX"), Some("/b"), "keys are case-insensitive, as in WAL-G");
        let j = Settings::parse("{\n\t\"WALG_FILE_PREFIX\": \"/b\",\n\t\"WALG_DISK_RATE_LIMIT\": 1000\n}").unwrap();
        assert_eq!(j.get("WALG_FILE_PREFIX"), Some("/b"));
        assert_eq!(j.get("WALG_DISK_RATE_LIMIT"), Some("1000"));
        assert!(Settings::parse("- a\n- b\n").is_err());
        assert!(Settings::parse("K: [1, 2]\n").is_err());
    }

    #[test]
    fn config_validation_names_key_and_value() {
        let mut s = Settings::new();
        let err = Config::from_settings(&s).unwrap_err().to_string();
        assert!(err.contains("no storage configured"), "{err}");
        let mut both = s.clone();
        both.set("WALG_FILE_PREFIX", "/tmp/x");
        both.set("WALG_S3_PREFIX", "s3://bucket/x");
        assert!(Config::from_settings(&both).unwrap_err().to_string().contains("keep only one"));
        both.set("WALG_FILE_PREFIX", "");
        let c = Config::from_settings(&both).unwrap();
        assert!(matches!(&c.storage, StorageConfig::S3(s3) if s3.bucket == "bucket" && s3.path == "x"));
        // Opening the same S3 config twice gives the same cached storage (one client).
        let (a, b) = (c.open_storage().unwrap(), c.open_storage().unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.describe().starts_with("s3://bucket/x"));
        s.set("WALG_FILE_PREFIX", "/tmp/x");
        s.set("UNKNOWN_KEY", "whatever");
        let c = Config::from_settings(&s).unwrap();
        assert_eq!(c.compression, Compression::Lz4);
        assert_eq!(c.tar_size_threshold, DEFAULT_TAR_SIZE_THRESHOLD);
        assert!(c.upload_concurrency >= 1);
        assert_eq!(c.disk_rate_limit, None);

        let mut bad = s.clone();
        bad.set("WALG_UPLOAD_CONCURRENCY", "many");
        let err = Config::from_settings(&bad).unwrap_err().to_string();
        assert!(err.contains("WALG_UPLOAD_CONCURRENCY") && err.contains("many"), "{err}");
        let mut bad = s.clone();
        bad.set("WALG_DOWNLOAD_CONCURRENCY", "0");
        assert!(Config::from_settings(&bad).unwrap_err().to_string().contains("WALG_DOWNLOAD_CONCURRENCY"));
        let mut bad = s.clone();
        bad.set("WALG_COMPRESSION_METHOD", "gzip");
        let err = Config::from_settings(&bad).unwrap_err().to_string();
        assert!(err.contains("WALG_COMPRESSION_METHOD") && err.contains("gzip"), "{err}");

        let mut over = Settings::new();
        over.set("WALG_COMPRESSION_METHOD", "zstd");
        over.set("WALG_TAR_SIZE_THRESHOLD", "1000");
        over.set("WALG_DISK_RATE_LIMIT", "5000");
        s.merge(&over);
        let c = Config::from_settings(&s).unwrap();
        assert!(matches!(c.compression, Compression::Zstd { .. }));
        assert_eq!(c.tar_size_threshold, 1000);
        assert_eq!(c.disk_rate_limit, Some(5000));
    }

    #[test]
    fn gcs_prefix_picks_gcs_and_its_refused_keys_say_so() {
        let mut s = Settings::new();
        s.set("WALG_GS_PREFIX", "gs://bkt/p");
        let c = Config::from_settings(&s).unwrap();
        assert!(matches!(&c.storage, StorageConfig::Gcs(g) if g.bucket == "bkt" && g.path == "p"));
        assert_eq!(c.describe_storage(), "gs://bkt/p");
        s.set("WALG_S3_PREFIX", "s3://bkt/p");
        let e = Config::from_settings(&s).unwrap_err().to_string();
        assert!(e.contains("WALG_S3_PREFIX and WALG_GS_PREFIX") && e.contains("keep only one"), "{e}");
        // GCS_* and Google's keys are settings in the environment; other GOOGLE_* are not.
        assert!(is_env_setting("GCS_MAX_RETRIES") && is_env_setting("STORAGE_EMULATOR_HOST"));
        assert!(is_env_setting("GOOGLE_APPLICATION_CREDENTIALS") && !is_env_setting("GOOGLE_CLOUD_PROJECT"));
    }

    #[test]
    fn azure_prefix_picks_azure_and_two_storages_are_refused() {
        let mut s = Settings::new();
        s.set("WALG_AZ_PREFIX", "azure://ctr/p");
        s.set("AZURE_STORAGE_ACCOUNT", "acct");
        let c = Config::from_settings(&s).unwrap();
        assert!(matches!(&c.storage, StorageConfig::Azure(a) if a.container == "ctr" && a.path == "p"));
        assert_eq!(c.describe_storage(), "azure://ctr/p (account acct)");
        let (a, b) = (c.open_storage().unwrap(), c.open_storage().unwrap());
        assert!(Arc::ptr_eq(&a, &b), "one cached client per configuration");
        s.set("WALG_FILE_PREFIX", "/tmp/x");
        let e = Config::from_settings(&s).unwrap_err().to_string();
        assert!(e.contains("WALG_FILE_PREFIX and WALG_AZ_PREFIX") && e.contains("keep only one"), "{e}");
    }

    /// Every registry setting changes the Config it is given to (so none is registered but
    /// ignored); a new setting must add its case here.
    #[test]
    fn every_registry_setting_reaches_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        std::fs::write(&key_file, hex).unwrap();
        let key_path = key_file.display().to_string();
        let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
        let pgp_public_path = format!("{testdata}/pgp-test-public.asc");
        let pgp_secret_path = format!("{testdata}/pgp-test-secret.asc");
        let pgp_public = std::fs::read_to_string(&pgp_public_path).unwrap();
        let s3: &[(&str, &str)] = &[("WALG_S3_PREFIX", "s3://bkt/a")];
        let creds: &[(&str, &str)] = &[("WALG_S3_PREFIX", "s3://bkt/a"), ("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")];
        let az: &[(&str, &str)] = &[("WALG_AZ_PREFIX", "azure://ctr/a"), ("AZURE_STORAGE_ACCOUNT", "acct")];
        let sw: &[(&str, &str)] = &[
            ("WALG_SWIFT_PREFIX", "swift://ctr/a"), ("OS_AUTH_URL", "http://127.0.0.1:8080/auth/v1.0"),
            ("OS_USERNAME", "test:tester"), ("OS_PASSWORD", "testing"),
        ];
        let sw3: &[(&str, &str)] = &[
            ("WALG_SWIFT_PREFIX", "swift://ctr/a"), ("OS_AUTH_URL", "https://keystone:5000/v3"),
            ("OS_USERNAME", "u"), ("OS_PASSWORD", "p"), ("OS_PROJECT_NAME", "proj"),
        ];
        let ssh: &[(&str, &str)] = &[("WALG_SSH_PREFIX", "ssh://backup.example.net/srv/a"), ("SSH_USERNAME", "walg"), ("SSH_PASSWORD", "pw0")];
        let ssh_key: &[(&str, &str)] = &[("WALG_SSH_PREFIX", "ssh://h/a"), ("SSH_USERNAME", "walg"), ("SSH_PRIVATE_KEY_PATH", "/k")];
        let gs: &[(&str, &str)] = &[("WALG_GS_PREFIX", "gs://bkt/a")];
        let cases: Vec<(&str, Vec<(&str, &str)>, &str)> = vec![
            ("WALG_FILE_PREFIX", vec![], "/tmp/b"),
            ("WALG_SWIFT_PREFIX", sw.to_vec(), "swift://ctr/b"),
            ("OS_AUTH_URL", sw.to_vec(), "http://127.0.0.1:8081/auth/v1.0"),
            ("OS_USERNAME", sw.to_vec(), "test:other"),
            ("OS_PASSWORD", sw.to_vec(), "other"),
            ("OS_PROJECT_NAME", sw3.to_vec(), "other"),
            ("OS_REGION_NAME", sw3.to_vec(), "RegionTwo"),
            ("OS_USER_DOMAIN_NAME", sw3.to_vec(), "users"),
            ("OS_PROJECT_DOMAIN_NAME", sw3.to_vec(), "projects"),
            ("ST_AUTH_VERSION", sw3.to_vec(), "1"),
            ("OS_ENDPOINT_TYPE", sw3.to_vec(), "internal"),
            ("WALG_SWIFT_MAX_RETRIES", sw.to_vec(), "3"),
            ("WALG_AZ_PREFIX", az.to_vec(), "azure://ctr/b"),
            ("AZURE_STORAGE_ACCOUNT", az.to_vec(), "other"),
            ("AZURE_STORAGE_ACCESS_KEY", az.to_vec(), "a2V5"),
            ("AZURE_STORAGE_SAS_TOKEN", az.to_vec(), "sv=1&sig=x"),
            ("AZURE_ENVIRONMENT_NAME", az.to_vec(), "AzureChinaCloud"),
            ("AZURE_ENDPOINT_SUFFIX", az.to_vec(), "core.example.net"),
            ("WALG_AZURE_ENDPOINT", az.to_vec(), "http://127.0.0.1:10000/devstoreaccount1"),
            ("WALG_AZURE_BUFFER_SIZE", az.to_vec(), "1048576"),
            ("WALG_AZURE_MAX_BUFFERS", az.to_vec(), "2"),
            ("WALG_AZURE_MAX_RETRIES", az.to_vec(), "3"),
            ("WALG_SSH_PREFIX", ssh.to_vec(), "ssh://backup.example.net/srv/b"),
            ("SSH_PORT", ssh.to_vec(), "2222"),
            ("SSH_USERNAME", ssh.to_vec(), "other"),
            ("SSH_PASSWORD", ssh_key.to_vec(), "pw"),
            ("SSH_PRIVATE_KEY_PATH", ssh.to_vec(), "/etc/walg/id_ed25519"),
            ("WALG_SSH_MAX_RETRIES", ssh.to_vec(), "3"),
            ("WALG_GS_PREFIX", gs.to_vec(), "gs://bkt/b"),
            ("GOOGLE_APPLICATION_CREDENTIALS", gs.to_vec(), "/etc/walg/sa.json"),
            ("STORAGE_EMULATOR_HOST", gs.to_vec(), "127.0.0.1:4443"),
            ("GCS_CONTEXT_TIMEOUT", gs.to_vec(), "60"),
            ("GCS_MAX_CHUNK_SIZE", gs.to_vec(), "1048576"),
            ("GCS_MAX_RETRIES", gs.to_vec(), "3"),
            ("WALG_COMPRESSION_METHOD", vec![], "zstd"),
            ("WALG_COMPRESSION_LEVEL", vec![("WALG_COMPRESSION_METHOD", "zstd")], "9"),
            ("WALG_ZSTD_LEVEL", vec![("WALG_COMPRESSION_METHOD", "zstd")], "best"),
            ("WALG_ZSTD_LAYOUT", vec![("WALG_COMPRESSION_METHOD", "zstd")], "frames"),
            ("WALG_LIBSODIUM_KEY_PATH", vec![("WALG_LIBSODIUM_KEY_TRANSFORM", "hex")], &key_path),
            ("WALG_PGP_KEY_PATH", vec![], &pgp_public_path),
            ("WALG_PGP_KEY", vec![], &pgp_public),
            ("WALG_PGP_KEY_PASSPHRASE", vec![("WALG_PGP_KEY_PATH", &pgp_secret_path)], "walg-test"),
            ("WALG_LIBSODIUM_KEY", vec![], "this is my long libsodium secret key"),
            ("WALG_LIBSODIUM_KEY_TRANSFORM", vec![("WALG_LIBSODIUM_KEY", hex)], "hex"),
            ("WALG_S3_PREFIX", s3.to_vec(), "s3://bkt/b"),
            ("AWS_ENDPOINT", s3.to_vec(), "http://127.0.0.1:9000"),
            ("AWS_REGION", s3.to_vec(), "eu-west-1"),
            ("AWS_S3_FORCE_PATH_STYLE", s3.to_vec(), "true"),
            ("WALG_S3_STORAGE_CLASS", s3.to_vec(), "STANDARD_IA"),
            ("WALG_S3_SSE", s3.to_vec(), "AES256"),
            ("WALG_S3_SSE_KMS_ID", [s3, &[("WALG_S3_SSE", "aws:kms")]].concat(), "k1"),
            ("WALG_S3_CA_CERT_FILE", s3.to_vec(), "/etc/ca.pem"),
            ("AWS_ACCESS_KEY_ID", creds.to_vec(), "c"),
            ("AWS_SECRET_ACCESS_KEY", creds.to_vec(), "d"),
            ("AWS_SESSION_TOKEN", creds.to_vec(), "t"),
            ("AWS_PROFILE", s3.to_vec(), "prod"),
            ("WALG_S3_MAX_PART_SIZE", s3.to_vec(), "8388608"),
            ("WALG_S3_UPLOAD_PARTS_IN_FLIGHT", s3.to_vec(), "5"),
            ("WALG_S3_MAX_RETRIES", s3.to_vec(), "3"),
            ("WALG_TAR_SIZE_THRESHOLD", vec![], "1000"),
            ("WALG_UPLOAD_CONCURRENCY", vec![], "1000"),
            ("WALG_DISK_RATE_LIMIT", vec![], "5000"),
            ("WALG_VERIFY_PAGE_CHECKSUMS", vec![], "off"),
            ("WALG_STORE_ALL_CORRUPT_BLOCKS", vec![], "on"),
            ("WALG_FAIL_ON_CORRUPT_PAGES", vec![], "yes"),
            ("WALG_DOWNLOAD_CONCURRENCY", vec![], "1000"),
            ("WALG_BACKUP_SCHEDULE", vec![], "0 3 * * *"),
            ("WALG_FULL_BACKUP_SCHEDULE", vec![], "0 3 * * 0"),
            ("WALG_RETAIN", vec![], "FULL 7"),
            ("WALG_BACKUP_RETRIES", vec![], "5"),
            ("WALG_BACKUP_RETRY_DELAY", vec![], "10"),
            ("WALG_BACKUP_ON_STANDBY", vec![], "true"),
            ("WALG_BACKUP_ON_PRIMARY", vec![], "false"),
            ("WALG_HEALTH_CHECK_INTERVAL", vec![], "5"),
            ("WALG_DELTA_MAX_STEPS", vec![], "6"),
            ("WALG_DELTA_ORIGIN", vec![], "latest_full"),
            ("WALG_DELTA_WAL_MAPS", vec![], "false"),
            ("WALG_DELTA_MAP_CHECK", vec![], "true"),
            ("WALG_PREFETCH_DIR", vec![], "/var/tmp/prefetch"),
            ("WALG_DRILL_SCHEDULE", vec![], "0 4 * * *"),
            ("WALG_DRILL_WORK_DIR", vec![], "/var/tmp"),
            ("WALG_CLI_PATH", vec![], "/opt/walg/bin/walg-ext"),
        ];
        for setting in registry::ALL {
            let Some((key, ctx, value)) = cases.iter().find(|c| c.0 == setting.key) else {
                panic!("{}: add a case to this test", setting.key)
            };
            let mut base = Settings::new();
            if !ctx.iter().any(|(k, _)| k.ends_with("_PREFIX")) {
                base.set("WALG_FILE_PREFIX", "/tmp/a");
            }
            for (k, v) in ctx {
                base.set(*k, *v);
            }
            let before = Config::from_settings(&base).unwrap_or_else(|e| panic!("{key} baseline: {e}"));
            let mut with = base.clone();
            with.set(*key, *value);
            let after = Config::from_settings(&with).unwrap_or_else(|e| panic!("{key}={value}: {e}"));
            assert_ne!(before, after, "{key} = {value} changed nothing in the Config");
        }
        assert_eq!(cases.len(), registry::ALL.len(), "a case for a setting that is not in the registry");
    }

    #[test]
    fn scheduled_backups_run_on_the_roles_configured() {
        let sched = |pairs: &[(&str, &str)]| {
            let mut s = Settings::new();
            for (k, v) in pairs {
                s.set(*k, *v);
            }
            ScheduleConfig::from_settings(&s).unwrap()
        };
        let default = sched(&[]);
        assert_eq!(default, ScheduleConfig::defaults(), "defaults() is what no setting gives");
        assert!(default.runs_here(false).is_ok());
        assert!(default.runs_here(true).unwrap_err().contains("walg.backup_on_standby"));
        let both = sched(&[("WALG_BACKUP_ON_STANDBY", "on")]);
        assert!(both.runs_here(false).is_ok() && both.runs_here(true).is_ok());
        let standby_only = sched(&[("WALG_BACKUP_ON_STANDBY", "on"), ("WALG_BACKUP_ON_PRIMARY", "off")]);
        assert!(standby_only.runs_here(true).is_ok());
        assert!(standby_only.runs_here(false).unwrap_err().contains("walg.backup_on_primary"));
    }

    #[test]
    fn config_files_are_checked_against_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal-g.yaml");
        std::fs::write(&path, "WALG_FILE_PREFIX: /b\nWALG_COMPRESION_METHOD: zstd\n").unwrap();
        let err = Settings::from_file(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("unknown setting WALG_COMPRESION_METHOD") && err.contains("did you mean WALG_COMPRESSION_METHOD?"), "{err}");
        // WAL-G keys walg_ext does not use are no typo: the file loads (the CLI warns).
        std::fs::write(&path, "WALG_FILE_PREFIX: /b\nWALG_USE_WAL_DELTA: true\nPGHOST: /run/postgresql\n").unwrap();
        let s = Settings::from_file(&path).unwrap();
        assert_eq!(registry::check_keys(&s, registry::Origin::File).unwrap().len(), 2);
        Config::from_settings(&s).unwrap();
        // Values: key, value and what is allowed.
        let cases = [
            ("WALG_COMPRESSION_METHOD", "gzip", "lz4, zstd, brotli, lzma, none"),
            ("WALG_LIBSODIUM_KEY_TRANSFORM", "rot13", "none, hex, base64"),
            ("WALG_TAR_SIZE_THRESHOLD", "-5", "out of range 1.."),
            ("WALG_UPLOAD_CONCURRENCY", "2000", "out of range 1..1024"),
            ("WALG_DISK_RATE_LIMIT", "10MB", "not an integer in bytes/s"),
            ("WALG_DELTA_ORIGIN", "OLDEST", "LATEST, LATEST_FULL"),
            ("WALG_DELTA_MAX_STEPS", "-1", "out of range 0.."),
            ("AWS_S3_FORCE_PATH_STYLE", "maybe", "not a boolean"),
        ];
        for (key, value, allowed) in cases {
            let mut bad = s.clone();
            bad.set(key, value);
            let err = Config::from_settings(&bad).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(value) && err.contains(allowed), "{err}");
        }
    }

    #[test]
    fn compression_levels_and_libsodium_key_settings() {
        let mut s = Settings::new();
        s.set("WALG_FILE_PREFIX", "/tmp/x");
        let with = |pairs: &[(&str, &str)]| {
            let mut t = s.clone();
            for (k, v) in pairs {
                t.set(*k, *v);
            }
            Config::from_settings(&t)
        };
        let c = with(&[("WALG_COMPRESSION_METHOD", "zstd"), ("WALG_ZSTD_LEVEL", "best")]).unwrap();
        assert_eq!(c.compression, Compression::Zstd { level: 11 });
        let c = with(&[("WALG_COMPRESSION_METHOD", "zstd"), ("WALG_ZSTD_LEVEL", "fastest"), ("WALG_COMPRESSION_LEVEL", "9")]).unwrap();
        assert_eq!(c.compression, Compression::Zstd { level: 9 }, "WALG_COMPRESSION_LEVEL wins");
        let c = with(&[("WALG_COMPRESSION_METHOD", "brotli"), ("WALG_COMPRESSION_LEVEL", "5")]).unwrap();
        assert_eq!(c.compression, Compression::Brotli { quality: 5 });
        let c = with(&[("WALG_COMPRESSION_METHOD", "lz4"), ("WALG_ZSTD_LEVEL", "best")]).unwrap();
        assert_eq!(c.compression, Compression::Lz4);
        let err = with(&[("WALG_COMPRESSION_METHOD", "lzma"), ("WALG_COMPRESSION_LEVEL", "10")]).unwrap_err().to_string();
        assert!(err.contains("WALG_COMPRESSION_LEVEL") && err.contains("0..=9"), "{err}");
        let err = with(&[("WALG_COMPRESSION_METHOD", "zstd"), ("WALG_ZSTD_LEVEL", "ultra")]).unwrap_err().to_string();
        assert!(err.contains("WALG_ZSTD_LEVEL") && err.contains("ultra"), "{err}");
        assert!(with(&[("WALG_COMPRESSION_LEVEL", "x")]).is_err());

        assert_eq!(with(&[]).unwrap().encryption, None);
        let secret = "this is my long libsodium secret key";
        let c = with(&[("WALG_LIBSODIUM_KEY", secret)]).unwrap();
        assert_eq!(c.encryption, Some(Key::from_text(secret, "none").unwrap()));
        assert!(c.pipeline().is_encrypted());
        assert!(!format!("{c:?}").contains("libsodium secret"), "Debug must not show the key");
        let err = with(&[("WALG_LIBSODIUM_KEY", secret), ("WALG_LIBSODIUM_KEY_TRANSFORM", "hex")]).unwrap_err().to_string();
        assert!(err.contains("hex") && !err.contains(secret), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
        let p = path.display().to_string();
        let c = with(&[("WALG_LIBSODIUM_KEY_PATH", &p), ("WALG_LIBSODIUM_KEY_TRANSFORM", "hex")]).unwrap();
        assert!(c.encryption.is_some());
        // WALG_LIBSODIUM_KEY wins over the path, as in WAL-G.
        let c = with(&[("WALG_LIBSODIUM_KEY_PATH", "/nonexistent"), ("WALG_LIBSODIUM_KEY", secret)]).unwrap();
        assert_eq!(c.encryption, Some(Key::from_text(secret, "none").unwrap()));
        let err = with(&[("WALG_LIBSODIUM_KEY_PATH", "/nonexistent/key")]).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/key"), "{err}");
        let err = with(&[("WALG_GPG_KEY_ID", "ABCD")]).unwrap_err().to_string();
        assert!(err.contains("WALG_GPG_KEY_ID") && err.contains("only libsodium"), "{err}");
        let err = with(&[("WALG_PGP_KEY_PATH", "/nonexistent/k.asc")]).unwrap_err().to_string();
        assert!(err.contains("WALG_PGP_KEY_PATH") && err.contains("/nonexistent/k.asc"), "{err}");
    }
}
