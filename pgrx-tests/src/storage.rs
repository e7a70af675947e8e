//! A file-system storage prefix (WALG_FILE_PREFIX) plus the walg-ext config file that points at it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd::{as_postgres, run, write_as_postgres, Outcome};
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
    for var in [
        "WALG_FILE_PREFIX",
        "WALG_COMPRESSION_METHOD",
        "WALG_COMPRESSION_LEVEL",
        "WALG_S3_PREFIX",
        "WALG_CONFIG_FILE",
        "WALG_LIBSODIUM_KEY",
        "WALG_LIBSODIUM_KEY_PATH",
        "WALG_LIBSODIUM_KEY_TRANSFORM",
    ] {
        cmd.env_remove(var);
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

pub struct Storage {
    dir: ScratchDir,
    /// WALG_FILE_PREFIX / walg.file_prefix.
    pub prefix: PathBuf,
    /// A WAL-G style YAML config file for `walg-ext --config`.
    pub config: PathBuf,
    /// Compression method the cluster and the CLI are configured with.
    pub compression: String,
    /// Compression level (walg.compression_level / WALG_COMPRESSION_LEVEL), if set.
    pub level: Option<i32>,
    /// libsodium key file (hex), when this storage is encrypted.
    pub key_path: Option<PathBuf>,
}

/// The hex key of encrypted test storages (32 bytes).
pub const TEST_KEY_HEX: &str = "6b9f3d2c1a0e4f5d8c7b6a5948372615f4e3d2c1b0a998877665544332211000";

impl Storage {
    /// A new empty storage prefix, with `compression` (`lz4`, `zstd`, `none`, ...).
    pub fn new(label: &str, compression: &str) -> Storage {
        Storage::with_options(label, compression, None, false)
    }

    /// A storage with a compression `level` and, if `encrypted`, libsodium encryption with
    /// `TEST_KEY_HEX` from a key file (WALG_LIBSODIUM_KEY_PATH, transform hex).
    pub fn with_options(label: &str, compression: &str, level: Option<i32>, encrypted: bool) -> Storage {
        let dir = ScratchDir::new(&format!("{label}-storage"));
        let prefix = dir.subdir("bucket");
        let config = dir.path().join("walg.yaml");
        let mut yaml = format!("WALG_FILE_PREFIX: {}\nWALG_COMPRESSION_METHOD: {}\n", prefix.display(), compression);
        if let Some(l) = level {
            yaml.push_str(&format!("WALG_COMPRESSION_LEVEL: {l}\n"));
        }
        let key_path = encrypted.then(|| {
            let p = dir.path().join("libsodium.key");
            write_as_postgres(&p, &format!("{TEST_KEY_HEX}\n"));
            yaml.push_str(&format!("WALG_LIBSODIUM_KEY_PATH: {}\nWALG_LIBSODIUM_KEY_TRANSFORM: hex\n", p.display()));
            p
        });
        write_as_postgres(&config, &yaml);
        Storage { dir, prefix, config, compression: compression.to_string(), level, key_path }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// postgresql.conf lines that load the extension, archive through it into this storage.
    pub fn extension_conf(&self) -> String {
        let mut conf = format!(
            "shared_preload_libraries = 'walg_ext'\n\
             archive_mode = on\n\
             archive_library = 'walg_ext'\n\
             walg.file_prefix = '{}'\n\
             walg.compression_method = '{}'\n",
            self.prefix.display(),
            self.compression
        );
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
        let mut env = vec![
            ("WALG_FILE_PREFIX".to_string(), self.prefix.display().to_string()),
            ("WALG_COMPRESSION_METHOD".to_string(), self.compression.clone()),
        ];
        if let Some(l) = self.level {
            env.push(("WALG_COMPRESSION_LEVEL".to_string(), l.to_string()));
        }
        if self.key_path.is_some() {
            // The key itself through the environment (the config file names the key file).
            env.push(("WALG_LIBSODIUM_KEY".to_string(), TEST_KEY_HEX.to_string()));
            env.push(("WALG_LIBSODIUM_KEY_TRANSFORM".to_string(), "hex".to_string()));
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

    /// `walg-ext <args>` configured through WALG_FILE_PREFIX / WALG_COMPRESSION_METHOD.
    pub fn walg_ext_env(&self, args: &[&str]) -> Outcome {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        walg_ext(args, &env)
    }

    /// The restore_command for a server restoring from this storage.
    pub fn restore_command(&self) -> String {
        format!("{} --config {} wal-fetch %f %p", walg_ext_bin(), self.config.display())
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.prefix.join("wal_005")
    }

    pub fn backups_dir(&self) -> PathBuf {
        self.prefix.join("basebackups_005")
    }

    /// The stored object for WAL file `name` (any known extension), if present.
    pub fn wal_object(&self, name: &str) -> Option<PathBuf> {
        KNOWN_EXTENSIONS.iter().find_map(|ext| {
            let p = if ext.is_empty() {
                self.wal_dir().join(name)
            } else {
                self.wal_dir().join(format!("{name}.{ext}"))
            };
            p.is_file().then_some(p)
        })
    }

    /// The object path WAL file `name` must have with this storage's compression.
    pub fn expected_wal_object(&self, name: &str) -> PathBuf {
        let ext = extension_for(&self.compression);
        if ext.is_empty() {
            self.wal_dir().join(name)
        } else {
            self.wal_dir().join(format!("{name}.{ext}"))
        }
    }

    pub fn sentinel(&self, backup: &str) -> PathBuf {
        self.backups_dir().join(format!("{backup}_backup_stop_sentinel.json"))
    }

    /// Names of the backups that have a sentinel (that is: the backups that exist).
    pub fn sentinel_backups(&self) -> Vec<String> {
        let mut v: Vec<String> = list_dir(&self.backups_dir())
            .into_iter()
            .filter_map(|n| n.strip_suffix("_backup_stop_sentinel.json").map(str::to_string))
            .collect();
        v.sort();
        v
    }

    /// Every `tar_partitions/part_*` object of every (complete or not) backup.
    pub fn part_objects(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for b in list_dir(&self.backups_dir()) {
            let parts = self.backups_dir().join(&b).join("tar_partitions");
            for p in list_dir(&parts) {
                if p.starts_with("part_") {
                    out.push(parts.join(p));
                }
            }
        }
        out.sort();
        out
    }

    /// Names of the objects in `basebackups_005/<backup>/tar_partitions`.
    pub fn tar_partitions(&self, backup: &str) -> Vec<String> {
        let mut v = list_dir(&self.backups_dir().join(backup).join("tar_partitions"));
        v.sort();
        v
    }

    /// All file names in wal_005.
    pub fn wal_objects(&self) -> Vec<String> {
        let mut v = list_dir(&self.wal_dir());
        v.sort();
        v
    }
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
