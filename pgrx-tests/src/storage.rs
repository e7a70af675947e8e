//! A storage prefix (file system, S3, Azure Blob, Google Cloud Storage, Swift or SFTP) plus the walg-ext config file that points at it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cmd::{as_postgres, run, write_as_postgres, Outcome};
use crate::azurite::Azurite;
use crate::gcs_emulator::GcsEmulator;
use crate::s3server::{Relay, S3Server};
use crate::swift_server::SwiftServer;
use crate::sshd::Sshd;
use crate::scratch::ScratchDir;

/// Extensions a stored object may carry, per FORMAT.md; "" is `none`.
pub const KNOWN_EXTENSIONS: &[&str] = &["lz4", "zst", "br", "lzma", ""];

/// The walg-ext binary: `$WALG_EXT_BIN`, default /usr/local/bin/walg-ext.
pub fn walg_ext_bin() -> String {
    std::env::var("WALG_EXT_BIN").unwrap_or_else(|_| "/usr/local/bin/walg-ext".to_string())
}

/// Runs `walg-ext <args>` as postgres with extra environment `env`, at most 10 minutes.
/// Never panics on a non-zero exit: look at the returned `Outcome`.
pub fn walg_ext(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut cmd = as_postgres(walg_ext_bin());
    cmd.args(args);
    // The working directory must be readable by postgres.
    cmd.current_dir("/tmp");
    // Never inherit a storage prefix from the developer's shell.
    for (var, _) in std::env::vars_os() {
        let v = var.to_string_lossy();
        if walg_core::config::is_storage_env_setting(&v) || v.starts_with("AZURE_") {
            cmd.env_remove(&var);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, None, Duration::from_secs(600))
}

/// File extension for a compression method name.
pub fn extension_for(method: &str) -> &'static str {
    match method {
        "lz4" => "lz4",
        "zstd" => "zst",
        "brotli" => "br",
        "lzma" => "lzma",
        "none" => "",
        other => panic!("unknown compression method {other:?}"),
    }
}

/// Which storage backend a test runs against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    /// WALG_FILE_PREFIX: a directory.
    File,
    /// WALG_S3_PREFIX on a real S3-compatible server (moto) started for this storage.
    S3,
    /// WALG_AZ_PREFIX on Azurite (shared by the test process), container `walg-e2e`.
    Azure,
    /// WALG_SWIFT_PREFIX on an all-in-one OpenStack Swift (shared by the test process),
    /// container `walg-e2e`.
    Swift,
    /// WALG_SSH_PREFIX on OpenSSH's sshd (shared by the test process), a directory per storage.
    Sftp,
    /// WALG_GS_PREFIX on fake-gcs-server (shared by the test process), bucket `walg-e2e`.
    Gcs,
}

/// Bucket the S3 storages live in.
pub const E2E_BUCKET: &str = "walg-e2e";

/// postgresql.conf lines that preload walg_ext and make it the archive library.
const ARCHIVE_THROUGH_WALG: &str = "shared_preload_libraries = 'walg_ext'\narchive_mode = on\narchive_library = 'walg_ext'\n";

/// A storage prefix plus the WAL-G config file (`walg-ext --config`, `walg.config_file`) that
/// points at it. Objects are inspected through walg-core's own `Storage`, so every check reads
/// the same way for every backend.
pub struct Storage {
    dir: ScratchDir,
    pub backend: Backend,
    /// A WAL-G style YAML config file: storage, compression and, for S3, the credentials.
    pub config: PathBuf,
    /// Compression method the cluster and the CLI are configured with.
    pub compression: String,
    /// The WAL-G settings in the config file (also the CLI's environment in `walg_ext_env`).
    settings: Vec<(String, String)>,
    s3: Option<S3Server>,
    /// This storage's own relay to a shared server (Azure, GCS, Swift, SFTP): stopping it is an
    /// outage for this storage only.
    relay: Option<Relay>,
    inspect: Arc<dyn walg_core::Storage>,
    /// Compression level (walg.compression_level / WALG_COMPRESSION_LEVEL), if set.
    pub level: Option<i32>,
    /// libsodium key file (hex), when this storage is encrypted.
    pub key_path: Option<PathBuf>,
}

/// The hex key of encrypted test storages (32 bytes).
pub const TEST_KEY_HEX: &str = "6b9f3d2c1a0e4f5d8c7b6a5948372615f4e3d2c1b0a998877665544332211000";

impl Storage {
    /// A new empty file-system storage prefix, with `compression` (`lz4`, `zstd`, `none`, ...).
    pub fn new(label: &str, compression: &str) -> Storage {
        Storage::with_backend(Backend::File, label, compression, &[])
    }

    /// A new S3 storage: its own moto server, bucket `walg-e2e`, prefix `s3://walg-e2e/<label>`.
    pub fn s3(label: &str, compression: &str) -> Storage {
        Storage::with_backend(Backend::S3, label, compression, &[])
    }

    /// `backend` storage whose config file gets `overrides` (WAL-G keys) on top of the
    /// defaults, e.g. a wrong secret key. Inspection always uses the correct settings.
    pub fn with_backend(backend: Backend, label: &str, compression: &str, overrides: &[(&str, &str)]) -> Storage {
        Storage::with_options(backend, label, compression, None, false, overrides)
    }

    /// Like `with_backend`, with a compression `level` and, if `encrypted`, libsodium encryption
    /// with `TEST_KEY_HEX` from a key file (WALG_LIBSODIUM_KEY_PATH, transform hex).
    pub fn with_options(
        backend: Backend,
        label: &str,
        compression: &str,
        level: Option<i32>,
        encrypted: bool,
        overrides: &[(&str, &str)],
    ) -> Storage {
        let dir = ScratchDir::new(&format!("{label}-storage"));
        let config = dir.path().join("walg.yaml");
        let (s3, relay, mut settings) = match backend {
            Backend::File => {
                let prefix = dir.subdir("bucket");
                (None, None, vec![("WALG_FILE_PREFIX".to_string(), prefix.display().to_string())])
            }
            Backend::S3 => {
                let server = S3Server::start();
                server.create_bucket(E2E_BUCKET);
                let label: String =
                    label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
                let settings = vec![
                    ("WALG_S3_PREFIX".to_string(), format!("s3://{E2E_BUCKET}/{label}")),
                    ("AWS_ENDPOINT".to_string(), server.endpoint()),
                    ("AWS_REGION".to_string(), crate::s3server::REGION.to_string()),
                    ("AWS_S3_FORCE_PATH_STYLE".to_string(), "true".to_string()),
                    ("AWS_ACCESS_KEY_ID".to_string(), server.access_key_id.clone()),
                    ("AWS_SECRET_ACCESS_KEY".to_string(), server.secret_access_key.clone()),
                    // Small parts keep multipart uploads in play with test-sized backups, and
                    // few retries make outages show quickly.
                    ("WALG_S3_MAX_PART_SIZE".to_string(), (5u64 << 20).to_string()),
                    ("WALG_S3_MAX_RETRIES".to_string(), "2".to_string()),
                ];
                (Some(server), None, settings)
            }
            Backend::Azure => {
                let server = Azurite::shared();
                server.create_container(E2E_BUCKET);
                let relay = server.relay();
                // Unique per storage: tests in one process share the container.
                let label: String = format!("{label}-{}", dir.path().file_name().unwrap().to_string_lossy())
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
                    .collect();
                let settings = vec![
                    ("WALG_AZ_PREFIX".to_string(), format!("azure://{E2E_BUCKET}/{label}")),
                    ("AZURE_STORAGE_ACCOUNT".to_string(), crate::azurite::ACCOUNT.to_string()),
                    ("AZURE_STORAGE_ACCESS_KEY".to_string(), crate::azurite::KEY.to_string()),
                    ("WALG_AZURE_ENDPOINT".to_string(), server.endpoint_via(&relay)),
                    // Small blocks keep block-list uploads in play with test-sized backups.
                    ("WALG_AZURE_BUFFER_SIZE".to_string(), (1u64 << 20).to_string()),
                    ("WALG_AZURE_MAX_RETRIES".to_string(), "2".to_string()),
                ];
                (None, Some(relay), settings)
            }
            Backend::Swift => {
                let (relay, settings) = swift_settings(label, &dir);
                (None, Some(relay), settings)
            }
            Backend::Sftp => {
                let server = Sshd::shared();
                let relay = server.relay();
                let dir = server.dir(&format!("{label}-{}", dir.path().file_name().unwrap().to_string_lossy()));
                let settings = vec![
                    ("WALG_SSH_PREFIX".to_string(), format!("ssh://127.0.0.1{}", dir.display())),
                    ("SSH_PORT".to_string(), relay.port.to_string()),
                    ("SSH_USERNAME".to_string(), crate::sshd::USER.to_string()),
                    ("SSH_PRIVATE_KEY_PATH".to_string(), server.key.display().to_string()),
                    ("WALG_SSH_MAX_RETRIES".to_string(), "2".to_string()),
                ];
                (None, Some(relay), settings)
            }
            Backend::Gcs => {
                let server = GcsEmulator::shared();
                server.create_bucket(E2E_BUCKET);
                let relay = server.relay();
                // Unique per storage: tests in one process share the bucket.
                let label: String = format!("{label}-{}", dir.path().file_name().unwrap().to_string_lossy())
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
                    .collect();
                let settings = vec![
                    ("WALG_GS_PREFIX".to_string(), format!("gs://{E2E_BUCKET}/{label}")),
                    ("STORAGE_EMULATOR_HOST".to_string(), server.host_via(&relay)),
                    // A small single-request limit keeps resumable uploads in play with
                    // test-sized backups.
                    ("GCS_MAX_CHUNK_SIZE".to_string(), (1u64 << 20).to_string()),
                    ("GCS_MAX_RETRIES".to_string(), "2".to_string()),
                ];
                (None, Some(relay), settings)
            }
        };
        settings.push(("WALG_COMPRESSION_METHOD".to_string(), compression.to_string()));
        if let Some(l) = level {
            settings.push(("WALG_COMPRESSION_LEVEL".to_string(), l.to_string()));
        }
        let key_path = encrypted.then(|| {
            let p = dir.path().join("libsodium.key");
            write_as_postgres(&p, &format!("{TEST_KEY_HEX}\n"));
            settings.push(("WALG_LIBSODIUM_KEY_PATH".to_string(), p.display().to_string()));
            settings.push(("WALG_LIBSODIUM_KEY_TRANSFORM".to_string(), "hex".to_string()));
            p
        });
        let mut inspect_settings = walg_core::Settings::new();
        for (k, v) in &settings {
            inspect_settings.set(k.clone(), v.clone());
        }
        let inspect = walg_core::Config::from_settings(&inspect_settings)
            .and_then(|c| c.open_storage())
            .unwrap_or_else(|e| panic!("harness storage config: {e}"));
        for (k, v) in overrides {
            match settings.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.to_string(),
                None => settings.push((k.to_string(), v.to_string())),
            }
        }
        let yaml: String = settings.iter().map(|(k, v)| format!("{k}: '{}'\n", v.replace('\'', "''"))).collect();
        write_as_postgres(&config, &yaml);
        // The file holds secrets (as a real one would): only its owner may read it.
        crate::scratch::set_mode(&config, 0o600);
        Storage { dir, backend, config, compression: compression.to_string(), settings, s3, relay, inspect, level, key_path }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The directory of a file storage (WALG_FILE_PREFIX); panics for S3.
    pub fn file_prefix(&self) -> PathBuf {
        assert_eq!(self.backend, Backend::File, "file_prefix() of an S3 storage");
        PathBuf::from(self.setting("WALG_FILE_PREFIX").unwrap())
    }

    /// `wal_005/` of a file storage, for tests that change its permissions; panics for S3.
    pub fn wal_dir(&self) -> PathBuf {
        self.file_prefix().join("wal_005")
    }

    /// `basebackups_005/` of a file storage; panics for S3.
    pub fn backups_dir(&self) -> PathBuf {
        self.file_prefix().join("basebackups_005")
    }

    /// The S3 server behind an S3 storage (to stop and start its endpoint).
    pub fn s3_server(&self) -> &S3Server {
        self.s3.as_ref().expect("not an S3 storage")
    }

    /// An outage: this storage's endpoint refuses new connections and open ones are cut (S3's
    /// own server, or this storage's relay to a shared one). Panics for file storage.
    pub fn stop_endpoint(&self) {
        match (&self.s3, &self.relay) {
            (Some(s3), _) => s3.stop_endpoint(),
            (_, Some(relay)) => relay.stop(),
            _ => panic!("{:?} storage has no endpoint to stop", self.backend),
        }
    }

    /// The endpoint is back (same port, same objects).
    pub fn start_endpoint(&self) {
        match (&self.s3, &self.relay) {
            (Some(s3), _) => s3.start_endpoint(),
            (_, Some(relay)) => relay.start(),
            _ => panic!("{:?} storage has no endpoint to start", self.backend),
        }
    }

    /// `127.0.0.1:PORT` of the endpoint the extension and the CLI talk to: an unreachable-storage
    /// error names it.
    pub fn endpoint_addr(&self) -> String {
        match (&self.s3, &self.relay) {
            (Some(s3), _) => s3.endpoint().trim_start_matches("http://").trim_start_matches("https://").to_string(),
            (_, Some(relay)) => format!("127.0.0.1:{}", relay.port),
            _ => panic!("{:?} storage has no endpoint", self.backend),
        }
    }

    fn setting(&self, key: &str) -> Option<&str> {
        self.settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// postgresql.conf lines that load the extension and archive through it, with no `walg.*`
    /// setting but `walg.config_file`: everything else comes from the WAL-G file.
    pub fn config_file_only_conf(&self) -> String {
        format!("{ARCHIVE_THROUGH_WALG}walg.config_file = '{}'\n", self.config.display())
    }

    /// postgresql.conf lines that load the extension and archive through it into this storage.
    /// File storage is configured by GUCs only; S3 by the walg.s3_* / walg.aws_* GUCs plus
    /// `walg.config_file` for the keys (secrets never go into a GUC).
    pub fn extension_conf(&self) -> String {
        let mut conf = format!("{ARCHIVE_THROUGH_WALG}walg.compression_method = '{}'\n", self.compression);
        match self.backend {
            Backend::File => {
                conf.push_str(&format!("walg.file_prefix = '{}'\n", self.setting("WALG_FILE_PREFIX").unwrap()));
            }
            Backend::S3 => {
                conf.push_str(&format!("walg.config_file = '{}'\n", self.config.display()));
                for (guc, key) in [
                    ("walg.s3_prefix", "WALG_S3_PREFIX"),
                    ("walg.aws_endpoint", "AWS_ENDPOINT"),
                    ("walg.aws_region", "AWS_REGION"),
                    ("walg.aws_s3_force_path_style", "AWS_S3_FORCE_PATH_STYLE"),
                ] {
                    conf.push_str(&format!("{guc} = '{}'\n", self.setting(key).unwrap()));
                }
            }
            Backend::Azure => {
                conf.push_str(&format!("walg.config_file = '{}'\n", self.config.display()));
                for (guc, key) in [
                    ("walg.az_prefix", "WALG_AZ_PREFIX"),
                    ("walg.azure_storage_account", "AZURE_STORAGE_ACCOUNT"),
                    ("walg.azure_endpoint", "WALG_AZURE_ENDPOINT"),
                ] {
                    conf.push_str(&format!("{guc} = '{}'\n", self.setting(key).unwrap()));
                }
            }
            Backend::Swift => {
                conf.push_str(&format!("walg.config_file = '{}'\n", self.config.display()));
                for (guc, key) in [("walg.swift_prefix", "WALG_SWIFT_PREFIX"), ("walg.os_auth_url", "OS_AUTH_URL"), ("walg.os_username", "OS_USERNAME")] {
                    conf.push_str(&format!("{guc} = '{}'\n", self.setting(key).unwrap()));
                }
            }
            Backend::Sftp => {
                conf.push_str(&format!("walg.config_file = '{}'\n", self.config.display()));
                for (guc, key) in [
                    ("walg.ssh_prefix", "WALG_SSH_PREFIX"),
                    ("walg.ssh_port", "SSH_PORT"),
                    ("walg.ssh_username", "SSH_USERNAME"),
                    ("walg.ssh_private_key_path", "SSH_PRIVATE_KEY_PATH"),
                ] {
                    conf.push_str(&format!("{guc} = '{}'\n", self.setting(key).unwrap()));
                }
            }
            Backend::Gcs => {
                conf.push_str(&format!("walg.config_file = '{}'\n", self.config.display()));
                for (guc, key) in [("walg.gs_prefix", "WALG_GS_PREFIX"), ("walg.storage_emulator_host", "STORAGE_EMULATOR_HOST")] {
                    conf.push_str(&format!("{guc} = '{}'\n", self.setting(key).unwrap()));
                }
            }
        }
        if let Some(l) = self.level {
            conf.push_str(&format!("walg.compression_level = {l}\n"));
        }
        if let Some(k) = &self.key_path {
            conf.push_str(&format!(
                "walg.libsodium_key_path = '{}'\nwalg.libsodium_key_transform = 'hex'\n",
                k.display()
            ));
        }
        conf
    }

    /// Environment for the CLI, equivalent to the config file.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.settings.clone();
        if self.key_path.is_some() {
            // The key itself through the environment (it wins over the key file, as in WAL-G).
            env.push(("WALG_LIBSODIUM_KEY".to_string(), TEST_KEY_HEX.to_string()));
        }
        env
    }

    /// `walg-ext --config <this storage's file> <args>`.
    pub fn walg_ext(&self, args: &[&str]) -> Outcome {
        let cfg = self.config.display().to_string();
        let mut all = vec!["--config", cfg.as_str()];
        all.extend_from_slice(args);
        walg_ext(&all, &[])
    }

    /// `walg-ext <args>` configured through the environment (WALG_* / AWS_*).
    pub fn walg_ext_env(&self, args: &[&str]) -> Outcome {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        walg_ext(args, &env)
    }

    /// The restore_command for a server restoring from this storage.
    pub fn restore_command(&self) -> String {
        format!("{} --config {} wal-fetch %f %p", walg_ext_bin(), self.config.display())
    }

    /// Every object key under `prefix` (relative to the storage root), sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.inspect
            .list(prefix)
            .unwrap_or_else(|e| panic!("list {prefix:?} in {}: {e}", self.inspect.describe()))
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    /// Delete an object behind walg_ext's back (a "lost" file).
    pub fn delete(&self, key: &str) {
        self.inspect.delete(key).unwrap_or_else(|e| panic!("delete {key}: {e}"));
    }

    pub fn has(&self, key: &str) -> bool {
        self.inspect.exists(key).unwrap_or_else(|e| panic!("stat {key} in {}: {e}", self.inspect.describe()))
    }

    /// The bytes of object `key`; panics when it is missing.
    pub fn read(&self, key: &str) -> Vec<u8> {
        walg_core::storage::get_bytes(self.inspect.as_ref(), key)
            .unwrap_or_else(|e| panic!("read {key} in {}: {e}", self.inspect.describe()))
            .unwrap_or_else(|| panic!("{key} is not in {}", self.inspect.describe()))
    }

    /// "file:///..." or "s3://bucket/path (endpoint ...)", for messages.
    pub fn describe(&self) -> String {
        self.inspect.describe()
    }

    /// The stored object key for WAL file `name` (any known extension), if present.
    pub fn wal_object(&self, name: &str) -> Option<String> {
        let keys = self.keys(&format!("wal_005/{name}"));
        KNOWN_EXTENSIONS.iter().find_map(|ext| {
            let k = if ext.is_empty() { format!("wal_005/{name}") } else { format!("wal_005/{name}.{ext}") };
            keys.contains(&k).then_some(k)
        })
    }

    /// The object key WAL file `name` must have with this storage's compression.
    pub fn expected_wal_object(&self, name: &str) -> String {
        let ext = extension_for(&self.compression);
        if ext.is_empty() {
            format!("wal_005/{name}")
        } else {
            format!("wal_005/{name}.{ext}")
        }
    }

    pub fn sentinel(&self, backup: &str) -> String {
        format!("basebackups_005/{backup}_backup_stop_sentinel.json")
    }

    /// Names of the backups that have a sentinel (that is: the backups that exist).
    pub fn sentinel_backups(&self) -> Vec<String> {
        self.keys("basebackups_005/")
            .into_iter()
            .filter_map(|k| {
                let name = k.strip_prefix("basebackups_005/")?;
                (!name.contains('/')).then_some(())?;
                name.strip_suffix("_backup_stop_sentinel.json").map(str::to_string)
            })
            .collect()
    }

    /// Every `tar_partitions/part_*` object key of every (complete or not) backup.
    pub fn part_objects(&self) -> Vec<String> {
        self.keys("basebackups_005/")
            .into_iter()
            .filter(|k| k.contains("/tar_partitions/part_"))
            .collect()
    }

    /// Names of the objects in `basebackups_005/<backup>/tar_partitions`.
    pub fn tar_partitions(&self, backup: &str) -> Vec<String> {
        let prefix = format!("basebackups_005/{backup}/tar_partitions/");
        self.keys(&prefix).into_iter().map(|k| k[prefix.len()..].to_string()).collect()
    }

    /// All object names in wal_005.
    pub fn wal_objects(&self) -> Vec<String> {
        self.keys("wal_005/").into_iter().map(|k| k["wal_005/".len()..].to_string()).collect()
    }
}

/// The WAL-G settings of a Swift storage: the process's Swift, container `walg-e2e`, a path
/// unique per storage (tests in one process share the container).
fn swift_settings(label: &str, dir: &ScratchDir) -> (Relay, Vec<(String, String)>) {
    let server = SwiftServer::shared();
    server.create_container(E2E_BUCKET);
    let relay = server.relay();
    let label: String = format!("{label}-{}", dir.path().file_name().unwrap().to_string_lossy())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .collect();
    let settings = vec![
        ("WALG_SWIFT_PREFIX".to_string(), format!("swift://{E2E_BUCKET}/{label}")),
        ("OS_AUTH_URL".to_string(), server.auth_url_via(&relay)),
        ("OS_USERNAME".to_string(), crate::swift_server::USER.to_string()),
        ("OS_PASSWORD".to_string(), crate::swift_server::KEY.to_string()),
        ("WALG_SWIFT_MAX_RETRIES".to_string(), "2".to_string()),
    ];
    (relay, settings)
}

/// Entry names of a directory; empty if it does not exist.
pub fn list_dir(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}
