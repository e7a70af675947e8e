//! The one registry of settings: every WAL-G key walg_ext reads, once, with its `walg.*` name,
//! type, unit, default, secret flag, reload context and one-line documentation.
//!
//! Everything else follows from this table: the extension registers its GUCs by iterating
//! [`ALL`] (src/settings.rs), config files and the environment are checked against it
//! ([`check_keys`], [`check_values`]), `Config` reads typed values through it, and the README's
//! settings table is generated from it ([`markdown_table`]; a test keeps them equal).
//!
//! Adding a setting is one entry in the `settings!` list below (then `cargo run -p walg-core
//! --example settings_table` and paste the table into the README).
//!
//! Invariants (tested): keys, aliases and GUC names are unique; a secret never has a GUC; every
//! default parses under its own type; an integer whose default is "unset" has an `unset` value
//! that is inside its range, so the GUC can show it.

use crate::config::Settings;
use crate::error::{Error, Result};

/// Unit of an integer setting. Values are always stored in the base unit (bytes); PostgreSQL
/// accepts `'64MB'` for a GUC with a byte unit and shows it back the same way. A bare number in
/// postgresql.conf or in the WAL-G file is in the base unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A plain count.
    None,
    /// Bytes (PostgreSQL's GUC_UNIT_BYTE).
    Bytes,
    /// Bytes per second: PostgreSQL has no rate unit, so the GUC is in bytes (GUC_UNIT_BYTE).
    BytesPerSecond,
    /// Milliseconds (GUC_UNIT_MS).
    Milliseconds,
    /// Seconds (GUC_UNIT_S).
    Seconds,
}

impl Unit {
    /// How the README names the unit.
    pub fn label(self) -> &'static str {
        match self {
            Unit::None => "",
            Unit::Bytes => "bytes",
            Unit::BytesPerSecond => "bytes/s",
            Unit::Milliseconds => "ms",
            Unit::Seconds => "s",
        }
    }
}

/// Type of a setting's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Free text (paths, URLs, names).
    Text,
    /// An integer in `min..=max`. `unset`, when given, is a value outside that range that means
    /// "not set here" (the GUC needs some value to show); it is documented in the entry.
    Int { min: i64, max: i64, unit: Unit, unset: Option<i64> },
    /// true/false (also on/off, yes/no, 1/0, as PostgreSQL and WAL-G take them).
    Bool,
    /// One of the listed words (compared without case; the listed spelling is what `Config` sees).
    Enum(&'static [&'static str]),
}

/// Default of a setting, as used when neither postgresql.conf, the file nor the environment
/// sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Default {
    /// No value; the text says what that means ("AWS default chain").
    Unset(&'static str),
    /// A value, written as in the WAL-G file.
    Value(&'static str),
    /// The number of CPU cores of the machine (at least 1).
    Cores,
}

/// When a changed GUC takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// `SELECT pg_reload_conf()` (PGC_SIGHUP): server-wide, never per session, so the archiver,
    /// the backup worker and SQL callers always agree.
    Reload,
    /// Only at server start (PGC_POSTMASTER).
    Restart,
}

/// One setting.
#[derive(Debug, PartialEq, Eq)]
pub struct Setting {
    /// WAL-G's key, as in the file and the environment.
    pub key: &'static str,
    /// Other keys WAL-G accepts for the same setting (WAL-E's names); the first set one wins
    /// after `key`.
    pub aliases: &'static [&'static str],
    /// The GUC, or None: secrets (file or environment only) and restore-side settings.
    pub guc: Option<&'static str>,
    pub kind: Kind,
    pub default: Default,
    /// Never a GUC, never logged, never printed.
    pub secret: bool,
    pub context: Context,
    /// One line for the GUC's description and the README's table.
    pub doc: &'static str,
}

/// The GUC naming the WAL-G config file. It is not a WAL-G key, so it is not in [`ALL`]; its GUC
/// is readable by superusers only (the file may hold secrets).
pub const CONFIG_FILE_GUC: &str = "walg.config_file";
/// Description of [`CONFIG_FILE_GUC`].
pub const CONFIG_FILE_DOC: &str =
    "JSON or YAML file with WAL-G keys (`WALG_FILE_PREFIX: /backups`); settings in postgresql.conf override it";

const CORES_MAX: i64 = 1024;

/// `settings! { NAME = Setting { .. }, ... }` defines one `pub static` per entry and [`ALL`] in
/// the same order, so a new setting is one entry.
macro_rules! settings {
    ($($(#[$m:meta])* $name:ident = $setting:expr,)*) => {
        $($(#[$m])* pub static $name: Setting = $setting;)*
        /// Every setting, in the README's order.
        pub static ALL: &[&Setting] = &[$(&$name),*];
    };
}

settings! {
    FILE_PREFIX = Setting {
        key: "WALG_FILE_PREFIX",
        aliases: &[],
        guc: Some("walg.file_prefix"),
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "directory holding `wal_005/` and `basebackups_005/` (this or another storage's prefix is required)",
    },
    COMPRESSION_METHOD = Setting {
        key: "WALG_COMPRESSION_METHOD",
        aliases: &[],
        guc: Some("walg.compression_method"),
        kind: Kind::Enum(&["lz4", "zstd", "brotli", "lzma", "none"]),
        default: Default::Value("lz4"),
        secret: false,
        context: Context::Reload,
        doc: "compression of WAL and backups: `lz4` (LZ4 frame), `zstd`, `brotli`, `lzma`, `none`",
    },
    COMPRESSION_LEVEL = Setting {
        key: "WALG_COMPRESSION_LEVEL",
        aliases: &[],
        guc: Some("walg.compression_level"),
        kind: Kind::Int { min: 0, max: 22, unit: Unit::None, unset: Some(-1) },
        default: Default::Unset("method's default"),
        secret: false,
        context: Context::Reload,
        doc: "zstd 1..22 (default 3), brotli 0..11 (3), lzma 0..9 (6); lz4 and none ignore it; -1: not set",
    },
    ZSTD_LEVEL = Setting {
        key: "WALG_ZSTD_LEVEL",
        aliases: &[],
        guc: None,
        kind: Kind::Text,
        default: Default::Value("default"),
        secret: false,
        context: Context::Reload,
        doc: "WAL-G's zstd level names: `fastest` (1), `default` (3), `better` (7), `best` (11), or a number; `WALG_COMPRESSION_LEVEL` wins",
    },
    ZSTD_LAYOUT = Setting {
        key: "WALG_ZSTD_LAYOUT",
        aliases: &[],
        guc: Some("walg.zstd_layout"),
        kind: Kind::Enum(&["single", "frames"]),
        default: Default::Value("single"),
        secret: false,
        context: Context::Reload,
        doc: "zstd objects as `single` frame (every zstd reader reads them) or `frames`, one per chunk (some readers stop after the first; a little less CPU for WAL at level 3) (walg_ext's own key)",
    },
    LIBSODIUM_KEY_PATH = Setting {
        key: "WALG_LIBSODIUM_KEY_PATH",
        aliases: &[],
        guc: Some("walg.libsodium_key_path"),
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "file holding the encryption key (whitespace around it is ignored)",
    },
    LIBSODIUM_KEY = Setting {
        key: "WALG_LIBSODIUM_KEY",
        aliases: &[],
        guc: None,
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: true,
        context: Context::Reload,
        doc: "the key itself: only in `walg.config_file` or the environment, never a setting; wins over the path",
    },
    LIBSODIUM_KEY_TRANSFORM = Setting {
        key: "WALG_LIBSODIUM_KEY_TRANSFORM",
        aliases: &[],
        guc: Some("walg.libsodium_key_transform"),
        kind: Kind::Enum(&["none", "hex", "base64"]),
        default: Default::Value("none"),
        secret: false,
        context: Context::Reload,
        doc: "`none` (text of at least 25 bytes, cut or zero-padded to 32), `hex` or `base64` (exactly 32 bytes)",
    },
    PGP_KEY_PATH = Setting {
        key: "WALG_PGP_KEY_PATH",
        aliases: &[],
        guc: Some("walg.pgp_key_path"),
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "file holding an ASCII-armored OpenPGP key: the public key is enough to push; restore needs the secret key",
    },
    PGP_KEY = Setting {
        key: "WALG_PGP_KEY",
        aliases: &[],
        guc: None,
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: true,
        context: Context::Reload,
        doc: "the ASCII-armored OpenPGP key itself (a literal `\\n` stands for a newline): file or environment only; wins over the path",
    },
    PGP_KEY_PASSPHRASE = Setting {
        key: "WALG_PGP_KEY_PASSPHRASE",
        aliases: &[],
        guc: None,
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: true,
        context: Context::Reload,
        doc: "passphrase of the OpenPGP secret key (restore side): file or environment only, never a setting",
    },
    S3_PREFIX = Setting {
        key: "WALG_S3_PREFIX",
        aliases: &["WALE_S3_PREFIX"],
        guc: Some("walg.s3_prefix"),
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "`s3://bucket/path`",
    },
    AWS_ENDPOINT = Setting {
        key: "AWS_ENDPOINT",
        aliases: &[],
        guc: Some("walg.aws_endpoint"),
        kind: Kind::Text,
        default: Default::Unset("AWS"),
        secret: false,
        context: Context::Reload,
        doc: "`http(s)://host:port` of an S3-compatible service",
    },
    AWS_REGION = Setting {
        key: "AWS_REGION",
        aliases: &[],
        guc: Some("walg.aws_region"),
        kind: Kind::Text,
        default: Default::Unset("AWS chain; `us-east-1` with an endpoint"),
        secret: false,
        context: Context::Reload,
        doc: "region of the bucket",
    },
    AWS_S3_FORCE_PATH_STYLE = Setting {
        key: "AWS_S3_FORCE_PATH_STYLE",
        aliases: &[],
        guc: Some("walg.aws_s3_force_path_style"),
        kind: Kind::Bool,
        default: Default::Value("false"),
        secret: false,
        context: Context::Reload,
        doc: "`true`: `endpoint/bucket/key` URLs, needed by most S3-compatible services",
    },
    S3_STORAGE_CLASS = Setting {
        key: "WALG_S3_STORAGE_CLASS",
        aliases: &[],
        guc: Some("walg.s3_storage_class"),
        kind: Kind::Text,
        default: Default::Unset("`STANDARD`"),
        secret: false,
        context: Context::Reload,
        doc: "storage class of uploaded objects, e.g. `STANDARD_IA`",
    },
    S3_SSE = Setting {
        key: "WALG_S3_SSE",
        aliases: &[],
        guc: Some("walg.s3_sse"),
        kind: Kind::Enum(&["AES256", "aws:kms", "aws:kms:dsse"]),
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "server-side encryption: `AES256`, `aws:kms`, `aws:kms:dsse`",
    },
    S3_SSE_KMS_ID = Setting {
        key: "WALG_S3_SSE_KMS_ID",
        aliases: &[],
        guc: Some("walg.s3_sse_kms_id"),
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "KMS key for `aws:kms`",
    },
    S3_CA_CERT_FILE = Setting {
        key: "WALG_S3_CA_CERT_FILE",
        aliases: &[],
        guc: Some("walg.s3_ca_cert_file"),
        kind: Kind::Text,
        default: Default::Unset("system roots"),
        secret: false,
        context: Context::Reload,
        doc: "extra CA certificate (PEM) to trust for the endpoint",
    },
    AWS_ACCESS_KEY_ID = Setting {
        key: "AWS_ACCESS_KEY_ID",
        aliases: &[],
        guc: None,
        kind: Kind::Text,
        default: Default::Unset("AWS default chain"),
        secret: true,
        context: Context::Reload,
        doc: "static credentials: key id (with `AWS_SECRET_ACCESS_KEY`)",
    },
    AWS_SECRET_ACCESS_KEY = Setting {
        key: "AWS_SECRET_ACCESS_KEY",
        aliases: &[],
        guc: None,
        kind: Kind::Text,
        default: Default::Unset("AWS default chain"),
        secret: true,
        context: Context::Reload,
        doc: "static credentials: secret key",
    },
    AWS_SESSION_TOKEN = Setting {
        key: "AWS_SESSION_TOKEN",
        aliases: &["AWS_SECURITY_TOKEN"],
        guc: None,
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: true,
        context: Context::Reload,
        doc: "static credentials: session token of temporary credentials",
    },
    AWS_PROFILE = Setting {
        key: "AWS_PROFILE",
        aliases: &[],
        guc: Some("walg.aws_profile"),
        kind: Kind::Text,
        default: Default::Unset("`default`"),
        secret: false,
        context: Context::Reload,
        doc: "profile of `~/.aws/credentials` / `~/.aws/config` for the AWS default chain",
    },
    S3_MAX_PART_SIZE = Setting {
        key: "WALG_S3_MAX_PART_SIZE",
        aliases: &[],
        guc: Some("walg.s3_max_part_size"),
        kind: Kind::Int { min: 5 << 20, max: 5 << 30, unit: Unit::Bytes, unset: None },
        default: Default::Value("20971520"),
        secret: false,
        context: Context::Reload,
        doc: "multipart part size (5 MiB .. 5 GiB; the GUC takes up to 2 GiB - 1); also the single-PUT limit",
    },
    S3_UPLOAD_PARTS_IN_FLIGHT = Setting {
        key: "WALG_S3_UPLOAD_PARTS_IN_FLIGHT",
        aliases: &[],
        guc: Some("walg.s3_upload_parts_in_flight"),
        kind: Kind::Int { min: 1, max: 64, unit: Unit::None, unset: None },
        default: Default::Value("2"),
        secret: false,
        context: Context::Reload,
        doc: "parts of one object uploading at once (walg_ext's own key)",
    },
    S3_MAX_RETRIES = Setting {
        key: "WALG_S3_MAX_RETRIES",
        aliases: &[],
        guc: Some("walg.s3_max_retries"),
        kind: Kind::Int { min: 0, max: 100, unit: Unit::None, unset: None },
        default: Default::Value("15"),
        secret: false,
        context: Context::Reload,
        doc: "retries of a transient S3 failure",
    },
    AZ_PREFIX = Setting {
        key: "WALG_AZ_PREFIX",
        aliases: &[],
        guc: Some("walg.az_prefix"),
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "Azure Blob storage: `azure://container/path` (with `AZURE_STORAGE_ACCOUNT`)",
    },
    AZURE_STORAGE_ACCOUNT = Setting {
        key: "AZURE_STORAGE_ACCOUNT",
        aliases: &[],
        guc: Some("walg.azure_storage_account"),
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "the storage account (required with `WALG_AZ_PREFIX`)",
    },
    AZURE_STORAGE_ACCESS_KEY = Setting {
        key: "AZURE_STORAGE_ACCESS_KEY",
        aliases: &[],
        guc: None,
        kind: Kind::Text,
        default: Default::Unset("SAS token or Azure default chain"),
        secret: true,
        context: Context::Reload,
        doc: "the account's access key (shared key): file or environment only; wins over the SAS token",
    },
    AZURE_STORAGE_SAS_TOKEN = Setting {
        key: "AZURE_STORAGE_SAS_TOKEN",
        aliases: &[],
        guc: None,
        kind: Kind::Text,
        default: Default::Unset("Azure default chain"),
        secret: true,
        context: Context::Reload,
        doc: "a SAS token (with or without the leading `?`): file or environment only",
    },
    AZURE_ENVIRONMENT_NAME = Setting {
        key: "AZURE_ENVIRONMENT_NAME",
        aliases: &[],
        guc: Some("walg.azure_environment_name"),
        kind: Kind::Text,
        default: Default::Value("AzurePublicCloud"),
        secret: false,
        context: Context::Reload,
        doc: "`AzurePublicCloud`, `AzureUSGovernmentCloud`, `AzureChinaCloud` or `AzureGermanCloud`: picks the endpoint suffix (others: public cloud)",
    },
    AZURE_ENDPOINT_SUFFIX = Setting {
        key: "AZURE_ENDPOINT_SUFFIX",
        aliases: &[],
        guc: Some("walg.azure_endpoint_suffix"),
        kind: Kind::Text,
        default: Default::Unset("from AZURE_ENVIRONMENT_NAME"),
        secret: false,
        context: Context::Reload,
        doc: "endpoint suffix: the blob service is `https://<account>.blob.<suffix>`; wins over the environment name",
    },
    AZURE_ENDPOINT = Setting {
        key: "WALG_AZURE_ENDPOINT",
        aliases: &[],
        guc: Some("walg.azure_endpoint"),
        kind: Kind::Text,
        default: Default::Unset("from the account and suffix"),
        secret: false,
        context: Context::Reload,
        doc: "the blob service's whole URL, e.g. Azurite's `http://127.0.0.1:10000/devstoreaccount1`; wins over the suffix (walg_ext's own key: WAL-G has none)",
    },
    AZURE_BUFFER_SIZE = Setting {
        key: "WALG_AZURE_BUFFER_SIZE",
        aliases: &[],
        guc: Some("walg.azure_buffer_size"),
        kind: Kind::Int { min: 1024, max: 4000 << 20, unit: Unit::Bytes, unset: None },
        default: Default::Value("8388608"),
        secret: false,
        context: Context::Reload,
        doc: "size of one uploaded block; an object up to this size is one PUT",
    },
    AZURE_MAX_BUFFERS = Setting {
        key: "WALG_AZURE_MAX_BUFFERS",
        aliases: &[],
        guc: Some("walg.azure_max_buffers"),
        kind: Kind::Int { min: 1, max: 64, unit: Unit::None, unset: None },
        default: Default::Value("4"),
        secret: false,
        context: Context::Reload,
        doc: "blocks of one object uploading at once (memory per writer: buffer size x (this + 1))",
    },
    AZURE_MAX_RETRIES = Setting {
        key: "WALG_AZURE_MAX_RETRIES",
        aliases: &[],
        guc: Some("walg.azure_max_retries"),
        kind: Kind::Int { min: 0, max: 100, unit: Unit::None, unset: None },
        default: Default::Value("15"),
        secret: false,
        context: Context::Reload,
        doc: "retries of a transient Azure failure (walg_ext's own key)",
    },
    GS_PREFIX = Setting {
        key: "WALG_GS_PREFIX",
        aliases: &[],
        guc: Some("walg.gs_prefix"),
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "Google Cloud Storage: `gs://bucket/path`",
    },
    GOOGLE_APPLICATION_CREDENTIALS = Setting {
        key: "GOOGLE_APPLICATION_CREDENTIALS",
        aliases: &[],
        guc: Some("walg.google_application_credentials"),
        kind: Kind::Text,
        default: Default::Unset("Google's default chain: gcloud's file, then the VM's metadata server"),
        secret: false,
        context: Context::Reload,
        doc: "path of a service account's JSON key file (the path is no secret, the file is: readable by the server's user only)",
    },
    STORAGE_EMULATOR_HOST = Setting {
        key: "STORAGE_EMULATOR_HOST",
        aliases: &[],
        guc: Some("walg.storage_emulator_host"),
        kind: Kind::Text,
        default: Default::Unset("Google's endpoint"),
        secret: false,
        context: Context::Reload,
        doc: "a GCS emulator (`host:port` or a URL), Google's clients' convention: no credentials are sent",
    },
    GCS_CONTEXT_TIMEOUT = Setting {
        key: "GCS_CONTEXT_TIMEOUT",
        aliases: &[],
        guc: Some("walg.gcs_context_timeout"),
        kind: Kind::Int { min: 1, max: 7 * 24 * 3600, unit: Unit::Seconds, unset: None },
        default: Default::Value("3600"),
        secret: false,
        context: Context::Reload,
        doc: "longest one GCS request may take, its body included (a read cut by it resumes)",
    },
    GCS_MAX_CHUNK_SIZE = Setting {
        key: "GCS_MAX_CHUNK_SIZE",
        aliases: &[],
        guc: Some("walg.gcs_max_chunk_size"),
        kind: Kind::Int { min: 256 << 10, max: 4000 << 20, unit: Unit::Bytes, unset: None },
        default: Default::Value("52428800"),
        secret: false,
        context: Context::Reload,
        doc: "an object up to this size is one upload request; a larger one is a resumable upload (memory per writer: this + 16 MiB)",
    },
    GCS_MAX_RETRIES = Setting {
        key: "GCS_MAX_RETRIES",
        aliases: &[],
        guc: Some("walg.gcs_max_retries"),
        kind: Kind::Int { min: 0, max: 100, unit: Unit::None, unset: None },
        default: Default::Value("16"),
        secret: false,
        context: Context::Reload,
        doc: "retries of a transient GCS failure",
    },
    SWIFT_PREFIX = Setting {
        key: "WALG_SWIFT_PREFIX",
        aliases: &[],
        guc: Some("walg.swift_prefix"),
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "OpenStack Swift: `swift://container/path` (with `OS_AUTH_URL`, `OS_USERNAME`, `OS_PASSWORD`)",
    },
    OS_AUTH_URL = Setting {
        key: "OS_AUTH_URL",
        aliases: &[],
        guc: Some("walg.os_auth_url"),
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "Swift's authentication URL: TempAuth/Swauth v1.0 (`.../auth/v1.0`) or Keystone v3 (`.../v3`)",
    },
    OS_USERNAME = Setting {
        key: "OS_USERNAME",
        aliases: &[],
        guc: Some("walg.os_username"),
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "Swift user (v1.0: `account:user`)",
    },
    OS_PASSWORD = Setting {
        key: "OS_PASSWORD",
        aliases: &[],
        guc: None,
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: true,
        context: Context::Reload,
        doc: "the Swift user's password (v1.0: its key): file or environment only",
    },
    OS_PROJECT_NAME = Setting {
        key: "OS_PROJECT_NAME",
        aliases: &["OS_TENANT_NAME"],
        guc: Some("walg.os_project_name"),
        kind: Kind::Text,
        default: Default::Unset("none (Keystone v3 needs one)"),
        secret: false,
        context: Context::Reload,
        doc: "Keystone project (WAL-G's `OS_TENANT_NAME` is the same; this one wins, as in ncw/swift)",
    },
    OS_REGION_NAME = Setting {
        key: "OS_REGION_NAME",
        aliases: &[],
        guc: Some("walg.os_region_name"),
        kind: Kind::Text,
        default: Default::Unset("the catalog's first object-store endpoint"),
        secret: false,
        context: Context::Reload,
        doc: "Keystone region whose object-store endpoint is used",
    },
    OS_USER_DOMAIN_NAME = Setting {
        key: "OS_USER_DOMAIN_NAME",
        aliases: &[],
        guc: Some("walg.os_user_domain_name"),
        kind: Kind::Text,
        default: Default::Value("Default"),
        secret: false,
        context: Context::Reload,
        doc: "Keystone v3: the user's domain",
    },
    OS_PROJECT_DOMAIN_NAME = Setting {
        key: "OS_PROJECT_DOMAIN_NAME",
        aliases: &[],
        guc: Some("walg.os_project_domain_name"),
        kind: Kind::Text,
        default: Default::Unset("the user's domain"),
        secret: false,
        context: Context::Reload,
        doc: "Keystone v3: the project's domain, when it differs from the user's",
    },
    ST_AUTH_VERSION = Setting {
        key: "ST_AUTH_VERSION",
        aliases: &[],
        guc: Some("walg.st_auth_version"),
        kind: Kind::Enum(&["0", "1", "3"]),
        default: Default::Value("0"),
        secret: false,
        context: Context::Reload,
        doc: "Swift auth version: 1 (v1.0), 3 (Keystone v3) or 0 (from `OS_AUTH_URL`: `v3` in it means 3, else 1); Keystone v2 is not supported",
    },
    OS_ENDPOINT_TYPE = Setting {
        key: "OS_ENDPOINT_TYPE",
        aliases: &[],
        guc: Some("walg.os_endpoint_type"),
        kind: Kind::Enum(&["public", "internal", "admin"]),
        default: Default::Value("public"),
        secret: false,
        context: Context::Reload,
        doc: "Keystone v3: which of the catalog's object-store endpoints (interfaces) is used",
    },
    SWIFT_MAX_RETRIES = Setting {
        key: "WALG_SWIFT_MAX_RETRIES",
        aliases: &[],
        guc: Some("walg.swift_max_retries"),
        kind: Kind::Int { min: 0, max: 100, unit: Unit::None, unset: None },
        default: Default::Value("15"),
        secret: false,
        context: Context::Reload,
        doc: "retries of a transient Swift failure (walg_ext's own key)",
    },
    SSH_PREFIX = Setting {
        key: "WALG_SSH_PREFIX",
        aliases: &[],
        guc: Some("walg.ssh_prefix"),
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "SFTP storage: `ssh://host/path`, the path absolute on the host (with `SSH_USERNAME`)",
    },
    SSH_PORT = Setting {
        key: "SSH_PORT",
        aliases: &[],
        guc: Some("walg.ssh_port"),
        kind: Kind::Int { min: 1, max: 65535, unit: Unit::None, unset: None },
        default: Default::Value("22"),
        secret: false,
        context: Context::Reload,
        doc: "the SSH server's port",
    },
    SSH_USERNAME = Setting {
        key: "SSH_USERNAME",
        aliases: &[],
        guc: Some("walg.ssh_username"),
        kind: Kind::Text,
        default: Default::Unset("none"),
        secret: false,
        context: Context::Reload,
        doc: "the user to log in as (required with `WALG_SSH_PREFIX`)",
    },
    SSH_PASSWORD = Setting {
        key: "SSH_PASSWORD",
        aliases: &[],
        guc: None,
        kind: Kind::Text,
        default: Default::Unset("key only"),
        secret: true,
        context: Context::Reload,
        doc: "the user's password: file or environment only; tried after the private key",
    },
    SSH_PRIVATE_KEY_PATH = Setting {
        key: "SSH_PRIVATE_KEY_PATH",
        aliases: &[],
        guc: Some("walg.ssh_private_key_path"),
        kind: Kind::Text,
        default: Default::Unset("password only"),
        secret: false,
        context: Context::Reload,
        doc: "an unencrypted private key file (OpenSSH or PEM format), readable by the server's user",
    },
    SSH_MAX_RETRIES = Setting {
        key: "WALG_SSH_MAX_RETRIES",
        aliases: &[],
        guc: Some("walg.ssh_max_retries"),
        kind: Kind::Int { min: 0, max: 100, unit: Unit::None, unset: None },
        default: Default::Value("15"),
        secret: false,
        context: Context::Reload,
        doc: "retries of a transient SFTP failure (walg_ext's own key)",
    },
    TAR_SIZE_THRESHOLD = Setting {
        key: "WALG_TAR_SIZE_THRESHOLD",
        aliases: &[],
        guc: Some("walg.tar_size_threshold"),
        kind: Kind::Int { min: 1, max: i64::MAX, unit: Unit::Bytes, unset: None },
        default: Default::Value("1073741823"),
        secret: false,
        context: Context::Reload,
        doc: "size after which a backup tar part is closed (the GUC takes up to 2 GiB - 1)",
    },
    UPLOAD_CONCURRENCY = Setting {
        key: "WALG_UPLOAD_CONCURRENCY",
        aliases: &[],
        guc: Some("walg.upload_concurrency"),
        kind: Kind::Int { min: 1, max: CORES_MAX, unit: Unit::None, unset: None },
        default: Default::Cores,
        secret: false,
        context: Context::Reload,
        doc: "parallel tar streams (read, compress, upload) in a backup, each with its own zstd helper threads; WAL files archived at once",
    },
    DISK_RATE_LIMIT = Setting {
        key: "WALG_DISK_RATE_LIMIT",
        aliases: &[],
        guc: Some("walg.disk_rate_limit"),
        kind: Kind::Int { min: 0, max: i64::MAX, unit: Unit::BytesPerSecond, unset: None },
        default: Default::Value("0"),
        secret: false,
        context: Context::Reload,
        doc: "limit on reads from PGDATA by a backup; 0: unlimited (the GUC takes up to 2 GiB - 1)",
    },
    VERIFY_PAGE_CHECKSUMS = Setting {
        key: "WALG_VERIFY_PAGE_CHECKSUMS",
        aliases: &[],
        guc: Some("walg.verify_page_checksums"),
        kind: Kind::Bool,
        default: Default::Value("true"),
        secret: false,
        context: Context::Reload,
        doc: "with data checksums on, verify the checksum of every page of every relation file a backup reads; corrupt pages are recorded (`CorruptBlocks`) and warned about (default `true`, as pgBackRest; WAL-G's default is `false`)",
    },
    STORE_ALL_CORRUPT_BLOCKS = Setting {
        key: "WALG_STORE_ALL_CORRUPT_BLOCKS",
        aliases: &[],
        guc: Some("walg.store_all_corrupt_blocks"),
        kind: Kind::Bool,
        default: Default::Value("false"),
        secret: false,
        context: Context::Reload,
        doc: "record every corrupt block number of a file in `files_metadata.json`, not only the first 10 (the count is always whole)",
    },
    FAIL_ON_CORRUPT_PAGES = Setting {
        key: "WALG_FAIL_ON_CORRUPT_PAGES",
        aliases: &[],
        guc: Some("walg.fail_on_corrupt_pages"),
        kind: Kind::Bool,
        default: Default::Value("false"),
        secret: false,
        context: Context::Reload,
        doc: "`true`: a backup that finds a corrupt page fails, naming the files and blocks, instead of completing with them recorded (walg_ext's own key)",
    },
    BACKUP_SCHEDULE = Setting {
        key: "WALG_BACKUP_SCHEDULE",
        aliases: &[],
        guc: Some("walg.backup_schedule"),
        kind: Kind::Text,
        default: Default::Unset("off"),
        secret: false,
        context: Context::Reload,
        doc: "cron expression (`0 * * * *`; 6 fields: seconds first; `@daily`) in the server's `timezone`: the scheduler takes a backup at each tick (walg_ext's own key)",
    },
    FULL_BACKUP_SCHEDULE = Setting {
        key: "WALG_FULL_BACKUP_SCHEDULE",
        aliases: &[],
        guc: Some("walg.full_backup_schedule"),
        kind: Kind::Text,
        default: Default::Unset("off"),
        secret: false,
        context: Context::Reload,
        doc: "cron expression for full backups (WAL-G's `--full`); the ticks of `walg.backup_schedule` take a delta when `walg.delta_max_steps` allows (walg_ext's own key)",
    },
    RETAIN = Setting {
        key: "WALG_RETAIN",
        aliases: &[],
        guc: Some("walg.retain"),
        kind: Kind::Text,
        default: Default::Unset("off"),
        secret: false,
        context: Context::Reload,
        doc: "WAL-G `delete retain` arguments (`FULL 7`, `FIND_FULL 7`, `7 --after 2026-01-01T00:00:00Z`) applied with confirm after each successful scheduled backup, then `delete garbage` (walg_ext's own key)",
    },
    BACKUP_RETRIES = Setting {
        key: "WALG_BACKUP_RETRIES",
        aliases: &[],
        guc: Some("walg.backup_retries"),
        kind: Kind::Int { min: 0, max: 100, unit: Unit::None, unset: None },
        default: Default::Value("2"),
        secret: false,
        context: Context::Reload,
        doc: "retries of a failed scheduled backup before its tick counts as failed (walg_ext's own key)",
    },
    BACKUP_RETRY_DELAY = Setting {
        key: "WALG_BACKUP_RETRY_DELAY",
        aliases: &[],
        guc: Some("walg.backup_retry_delay"),
        kind: Kind::Int { min: 1, max: 86400, unit: Unit::Seconds, unset: None },
        default: Default::Value("60"),
        secret: false,
        context: Context::Reload,
        doc: "wait before the first retry of a failed scheduled backup; doubled for each further one, at most 6 h (walg_ext's own key)",
    },
    BACKUP_ON_STANDBY = Setting {
        key: "WALG_BACKUP_ON_STANDBY",
        aliases: &[],
        guc: Some("walg.backup_on_standby"),
        kind: Kind::Bool,
        default: Default::Value("false"),
        secret: false,
        context: Context::Reload,
        doc: "`true`: scheduled backups and retention also run while the server is a standby (walg_ext's own key)",
    },
    BACKUP_ON_PRIMARY = Setting {
        key: "WALG_BACKUP_ON_PRIMARY",
        aliases: &[],
        guc: Some("walg.backup_on_primary"),
        kind: Kind::Bool,
        default: Default::Value("true"),
        secret: false,
        context: Context::Reload,
        doc: "`false`: scheduled backups and retention do not run while the server is a primary; with `walg.backup_on_standby` on, one configuration for both servers has only the standby take them (walg_ext's own key)",
    },
    HEALTH_CHECK_INTERVAL = Setting {
        key: "WALG_HEALTH_CHECK_INTERVAL",
        aliases: &[],
        guc: Some("walg.health_check_interval"),
        kind: Kind::Int { min: 1, max: 86400, unit: Unit::Seconds, unset: None },
        default: Default::Value("60"),
        secret: false,
        context: Context::Reload,
        doc: "how often the scheduler lists storage and checks WAL for `walg_health()` and saves the counters (walg_ext's own key)",
    },
    DRILL_SCHEDULE = Setting {
        key: "WALG_DRILL_SCHEDULE",
        aliases: &[],
        guc: Some("walg.drill_schedule"),
        kind: Kind::Text,
        default: Default::Unset("off"),
        secret: false,
        context: Context::Reload,
        doc: "cron expression: the scheduler runs a restore drill (`walg-ext restore-drill`) of the latest backup at each tick, as `walg_restore_drill()` does (walg_ext's own key)",
    },
    DRILL_WORK_DIR = Setting {
        key: "WALG_DRILL_WORK_DIR",
        aliases: &[],
        guc: Some("walg.drill_work_dir"),
        kind: Kind::Text,
        default: Default::Unset("the server's `$TMPDIR`, else `/tmp`"),
        secret: false,
        context: Context::Reload,
        doc: "where a drill asked of the server restores its scratch copy (`--work-dir`); it needs free space for one copy, checked first (walg_ext's own key)",
    },
    CLI_PATH = Setting {
        key: "WALG_CLI_PATH",
        aliases: &[],
        guc: Some("walg.cli_path"),
        kind: Kind::Text,
        default: Default::Value("/usr/local/bin/walg-ext"),
        secret: false,
        context: Context::Reload,
        doc: "the `walg-ext` binary the server runs for restore drills (`make install` puts it at the default path) (walg_ext's own key)",
    },
    DELTA_MAX_STEPS = Setting {
        key: "WALG_DELTA_MAX_STEPS",
        aliases: &[],
        guc: Some("walg.delta_max_steps"),
        kind: Kind::Int { min: 0, max: 1_000_000, unit: Unit::None, unset: None },
        default: Default::Value("0"),
        secret: false,
        context: Context::Reload,
        doc: "delta backups allowed between two full ones; 0: every backup is full (WAL-G's meaning)",
    },
    DELTA_ORIGIN = Setting {
        key: "WALG_DELTA_ORIGIN",
        aliases: &[],
        guc: Some("walg.delta_origin"),
        kind: Kind::Enum(&["LATEST", "LATEST_FULL"]),
        default: Default::Value("LATEST"),
        secret: false,
        context: Context::Reload,
        doc: "base of a delta: `LATEST` (the newest backup, so deltas chain) or `LATEST_FULL` (the newest backup's full)",
    },
    DELTA_WAL_MAPS = Setting {
        key: "WALG_DELTA_WAL_MAPS",
        aliases: &[],
        guc: Some("walg.delta_wal_maps"),
        kind: Kind::Bool,
        default: Default::Value("true"),
        secret: false,
        context: Context::Reload,
        doc: "with `walg.delta_max_steps` > 0, the archiver stores a changed-block map of each WAL segment it archives, and a delta whose WAL range the maps cover reads only the pages they name; `false`: no maps are written or used, every delta scans whole files (walg_ext's own key)",
    },
    DELTA_MAP_CHECK = Setting {
        key: "WALG_DELTA_MAP_CHECK",
        aliases: &[],
        guc: Some("walg.delta_map_check"),
        kind: Kind::Bool,
        default: Default::Value("false"),
        secret: false,
        context: Context::Reload,
        doc: "a delta planned from the WAL maps also scans every page of the files it increments and fails if a page changed within its WAL range is missing from the maps (a proving mode: it reads all the data, as a full scan does) (walg_ext's own key)",
    },
    DOWNLOAD_CONCURRENCY = Setting {
        key: "WALG_DOWNLOAD_CONCURRENCY",
        aliases: &[],
        guc: None,
        kind: Kind::Int { min: 1, max: CORES_MAX, unit: Unit::None, unset: None },
        default: Default::Cores,
        secret: false,
        context: Context::Reload,
        doc: "parallel tar parts extracted by `walg-ext backup-fetch`; segments `walg-ext wal-fetch` prefetches ahead, in parallel (1: no prefetch) (restore side only)",
    },
    PREFETCH_DIR = Setting {
        key: "WALG_PREFETCH_DIR",
        aliases: &[],
        guc: None,
        kind: Kind::Text,
        default: Default::Unset("the directory of restore_command's %p (pg_wal)"),
        secret: false,
        context: Context::Reload,
        doc: "where `walg-ext wal-fetch` keeps prefetched segments (`<dir>/.wal-g/prefetch`, WAL-G's layout); must be on the file system of pg_wal, or prefetched files are not used",
    },
}

/// WAL-G's own keys that walg_ext does not support. A WAL-G config file may hold them, so they
/// are no typo: they are warned about, not refused here. (Some of them are refused later by
/// `Config` because ignoring them would be unsafe, e.g. a PGP key or another storage's prefix.)
/// A key that gains support moves from here into `settings!` (a test forbids both).
pub const WALG_KEYS_NOT_USED: &[&str] = &[
    "WALG_UPLOAD_DISK_CONCURRENCY", "WALG_UPLOAD_QUEUE", "WALG_DOWNLOAD_FILE_RETRIES",
    "WALG_SENTINEL_USER_DATA", "WALG_PREVENT_WAL_OVERWRITE", "WALG_UPLOAD_WAL_METADATA",
    "WALG_STORAGE_PREFIX", "WALG_NETWORK_RATE_LIMIT",
    "WALG_USE_WAL_DELTA", "WALG_USE_REVERSE_UNPACK", "WALG_SKIP_REDUNDANT_TARS",
    "WALG_USE_RATING_COMPOSER",
    "WALG_USE_COPY_COMPOSER", "WALG_USE_DATABASE_COMPOSER", "WALG_WITHOUT_FILES_METADATA",
    "WALG_DELTA_FROM_NAME", "WALG_DELTA_FROM_USER_DATA", "WALG_FETCH_TARGET_USER_DATA",
    "WALG_LOG_LEVEL", "WALG_LOG_DESTINATION", "WALG_TAR_DISABLE_FSYNC", "WALG_CSE_KMS_ID",
    "WALG_CSE_KMS_REGION", "WALG_GPG_KEY_ID", "WALE_GPG_KEY_ID", "WALG_ENVELOPE_PGP_KEY",
    "WALG_ENVELOPE_PGP_KEY_PATH", "WALG_ENVELOPE_CACHE_EXPIRATION", "WALG_DIRECT_IO",
    "WALG_STREAM_CREATE_COMMAND", "WALG_STREAM_RESTORE_COMMAND", "WALG_SERIALIZER_TYPE",
    "WALG_STATSD_ADDRESS", "WALG_STATSD_EXTRA_TAGS", "WALG_SLOTNAME", "WALG_PG_WAL_SIZE",
    "WALG_PG_WAL_PAGE_SIZE", "WALG_PG_BLOCK_SIZE", "WALG_INTEGRITY_MAX_DELAYED_WALS",
    "WALG_ALIVE_CHECK_INTERVAL", "WALG_STOP_BACKUP_TIMEOUT",
    "WALG_FAILOVER_STORAGES", "WALG_FAILOVER_STORAGES_CHECK", "WALG_FAILOVER_STORAGES_CHECK_TIMEOUT",
    "WALG_FAILOVER_STORAGES_CACHE_LIFETIME", "WALG_DAEMON_WAL_UPLOAD_TIMEOUT", "WALG_TARGET_STORAGE",
    "WALG_DISABLE_PARTIAL_RESTORE", "WALG_FORCE_WAL_DELTA", "TOTAL_BG_UPLOADED_LIMIT",
    "PG_READY_RENAME", "PGBACKREST_STANZA",
    "AWS_DEFAULT_REGION", "AWS_DEFAULT_OUTPUT",
    "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_CA_BUNDLE", "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE", "WALG_S3_SSE_C", "WALG_S3_ENDPOINT_SOURCE", "WALG_S3_ENDPOINT_PORT",
    "WALG_S3_USE_LIST_OBJECTS_V1", "WALG_S3_LOG_LEVEL", "WALG_S3_RANGE_BATCH_ENABLED",
    "WALG_S3_RANGE_MAX_RETRIES", "AZURE_TRY_TIMEOUT", "AZURE_BLOB_STORE_API_VERSION", "WALG_OSS_PREFIX", "SSH_JUMP_HOST", "SSH_JUMP_PORT", "GOMAXPROCS", "GODEBUG", "HTTP_LISTEN",
    "HTTP_EXPOSE_PPROF", "HTTP_EXPOSE_EXPVAR", "PROFILE_SAMPLING_RATIO", "PROFILE_MODE",
    "PROFILE_PATH", "PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGPASSFILE",
    "PGDATABASE", "PGSSLMODE", "PGSSLKEY", "PGSSLCERT", "PGSSLROOTCERT", "PGAPPNAME", "USER",
];

/// The setting a key (or one of its aliases) names.
pub fn find(key: &str) -> Option<&'static Setting> {
    ALL.iter().copied().find(|s| s.key == key || s.aliases.contains(&key))
}

/// The setting a GUC name names.
pub fn by_guc(name: &str) -> Option<&'static Setting> {
    ALL.iter().copied().find(|s| s.guc == Some(name))
}

/// A value parsed under its setting's type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Int(i64),
    Bool(bool),
    /// An enum value in the registry's spelling.
    Choice(&'static str),
}

fn cores() -> i64 {
    std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1).clamp(1, CORES_MAX)
}

/// PostgreSQL's and WAL-G's boolean words.
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "y" | "on" => Some(true),
        "false" | "f" | "0" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

impl Setting {
    /// Where the value may come from, for messages.
    fn what(&self) -> String {
        match self.guc {
            Some(g) => format!("{} ({g})", self.key),
            None => self.key.to_string(),
        }
    }

    /// Parse `raw` (already trimmed, non-empty) under this setting's type. The error names the
    /// key, the value (never a secret's) and what is allowed.
    pub fn parse(&self, raw: &str) -> Result<Value> {
        let shown = if self.secret { "(hidden)".to_string() } else { format!("{raw:?}") };
        match self.kind {
            Kind::Text => Ok(Value::Text(raw.to_string())),
            Kind::Bool => parse_bool(raw).map(Value::Bool).ok_or_else(|| {
                Error::Config(format!("{}: value {shown} is not a boolean (true or false)", self.what()))
            }),
            Kind::Enum(values) => values
                .iter()
                .find(|v| v.eq_ignore_ascii_case(raw))
                .map(|v| Value::Choice(v))
                .ok_or_else(|| {
                    Error::Config(format!("{}: value {shown} is not one of {}", self.what(), values.join(", ")))
                }),
            Kind::Int { min, max, unit, unset } => {
                let unit = match unit.label() {
                    "" => String::new(),
                    l => format!(" in {l}"),
                };
                let n: i64 = raw.parse().map_err(|_| {
                    Error::Config(format!("{}: value {shown} is not an integer{unit}", self.what()))
                })?;
                if (min..=max).contains(&n) || unset == Some(n) {
                    Ok(Value::Int(n))
                } else {
                    Err(Error::Config(format!("{}: value {shown} is out of range {min}..{max}{unit}", self.what())))
                }
            }
        }
    }

    /// The default as a value: None when the default is "unset".
    pub fn default_value(&self) -> Option<Value> {
        match self.default {
            Default::Unset(_) => None,
            Default::Value(v) => Some(self.parse(v).expect("registry defaults parse (tested)")),
            Default::Cores => Some(Value::Int(cores())),
        }
    }

    /// The default as the README writes it.
    pub fn default_doc(&self) -> String {
        match self.default {
            Default::Unset(what) => what.to_string(),
            Default::Value(v) if matches!(self.kind, Kind::Int { .. }) => v.to_string(),
            Default::Value(v) => format!("`{v}`"),
            Default::Cores => "number of cores".to_string(),
        }
    }
}

impl Settings {
    /// The raw value of `s`: under its key, else under the first alias set; trimmed, and None
    /// when empty (WAL-G treats an empty value as unset).
    pub fn raw(&self, s: &Setting) -> Option<&str> {
        std::iter::once(s.key)
            .chain(s.aliases.iter().copied())
            .find_map(|k| self.get(k).map(str::trim).filter(|v| !v.is_empty()))
    }

    /// The key `s` was found under (its own or an alias), for messages.
    pub fn key_of(&self, s: &Setting) -> &'static str {
        std::iter::once(s.key)
            .chain(s.aliases.iter().copied())
            .find(|k| self.get(k).is_some_and(|v| !v.trim().is_empty()))
            .unwrap_or(s.key)
    }

    /// Typed value of `s`, or its default; None when neither is set (or the value is the
    /// setting's documented "unset" number).
    pub fn value_of(&self, s: &Setting) -> Result<Option<Value>> {
        let v = match self.raw(s) {
            Some(raw) => Some(s.parse(raw)?),
            None => s.default_value(),
        };
        Ok(match (v, s.kind) {
            (Some(Value::Int(n)), Kind::Int { unset: Some(u), .. }) if n == u => None,
            (v, _) => v,
        })
    }

    /// Integer setting `s` (value or default).
    pub fn int(&self, s: &Setting) -> Result<Option<i64>> {
        match self.value_of(s)? {
            None => Ok(None),
            Some(Value::Int(n)) => Ok(Some(n)),
            Some(other) => Err(Error::Internal(format!("{}: {other:?} is not an integer setting", s.key))),
        }
    }

    /// Boolean setting `s` (value or default; false when neither).
    pub fn flag(&self, s: &Setting) -> Result<bool> {
        match self.value_of(s)? {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(other) => Err(Error::Internal(format!("{}: {other:?} is not a boolean setting", s.key))),
        }
    }

    /// Text or enum setting `s` (value or default) as a string.
    pub fn text(&self, s: &Setting) -> Result<Option<String>> {
        Ok(match self.value_of(s)? {
            None => None,
            Some(Value::Text(t)) => Some(t),
            Some(Value::Choice(c)) => Some(c.to_string()),
            Some(Value::Int(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
        })
    }
}

/// Every registry setting present in `settings` parses under its type (first error wins).
pub fn check_values(settings: &Settings) -> Result<()> {
    for s in ALL {
        if let Some(raw) = settings.raw(s) {
            s.parse(raw)?;
        }
    }
    Ok(())
}

/// Where a set of settings came from: the checks differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A WAL-G config file: every key must be known.
    File,
    /// The process environment: it holds unrelated variables too, so only WALG_*/WALE_* names
    /// are looked at, and an unknown one is a warning.
    Env,
}

/// Levenshtein distance (small strings only).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The known key closest to `key`, if it is close enough to be a likely typo.
pub fn closest_key(key: &str) -> Option<&'static str> {
    let upper = key.to_ascii_uppercase();
    let keys = ALL.iter().flat_map(|s| std::iter::once(s.key).chain(s.aliases.iter().copied()));
    keys.chain(WALG_KEYS_NOT_USED.iter().copied())
        .map(|k| (distance(&upper, k), k))
        .filter(|&(d, k)| d <= 3.max(k.len() / 6))
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

fn unknown(key: &str, place: &str) -> String {
    match closest_key(key) {
        Some(k) => format!("unknown setting {key} in {place} (did you mean {k}?)"),
        None => format!("unknown setting {key} in {place}"),
    }
}

/// Check the keys of `settings` against the registry. A file's unknown key is an error naming
/// it and the closest known key (a silently ignored typo such as WALG_COMPRESION_METHOD would
/// upload with the default); an unknown WALG_*/WALE_* variable in the environment is a warning.
/// WAL-G keys that walg_ext does not use are warnings in both. Returns the warnings.
pub fn check_keys(settings: &Settings, origin: Origin) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (key, _) in settings.iter() {
        let walg_name = key.starts_with("WALG_") || key.starts_with("WALE_");
        if find(key).is_some() || (origin == Origin::Env && !walg_name) {
            continue;
        }
        let place = match origin {
            Origin::File => "the config file",
            Origin::Env => "the environment",
        };
        if WALG_KEYS_NOT_USED.contains(&key) {
            warnings.push(format!("{key} in {place} is a WAL-G setting that walg_ext does not support"));
            continue;
        }
        match origin {
            Origin::File => return Err(Error::Config(unknown(key, place))),
            Origin::Env => warnings.push(format!("{}: ignored", unknown(key, place))),
        }
    }
    Ok(warnings)
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The README's settings table, generated from the registry (one row per setting, in [`ALL`]'s
/// order, after `walg.config_file`).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| setting (server) | WAL-G key (file / env) | type | default | meaning |\n|---|---|---|---|---|\n",
    );
    out.push_str(&format!("| `{CONFIG_FILE_GUC}` | — | path | none | {CONFIG_FILE_DOC} |\n"));
    for s in ALL {
        let guc = match (s.guc, s.secret) {
            (Some(g), _) => format!("`{g}`"),
            (None, true) => "— (secret: file or environment only)".to_string(),
            (None, false) => "— (file or environment only)".to_string(),
        };
        let mut key = format!("`{}`", s.key);
        for a in s.aliases {
            key.push_str(&format!(" (or `{a}`)"));
        }
        let kind = match s.kind {
            Kind::Text => "text".to_string(),
            Kind::Bool => "bool".to_string(),
            Kind::Enum(_) => "enum".to_string(),
            Kind::Int { unit: Unit::None, .. } => "integer".to_string(),
            Kind::Int { unit, .. } => format!("integer, {}", unit.label()),
        };
        out.push_str(&format!("| {guc} | {key} | {kind} | {} | {} |\n", md_escape(&s.default_doc()), md_escape(s.doc)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_aliases_and_gucs_are_unique() {
        let mut keys = HashSet::new();
        let mut gucs = HashSet::new();
        for s in ALL {
            for k in std::iter::once(s.key).chain(s.aliases.iter().copied()) {
                assert!(keys.insert(k), "{k} twice");
                assert!(!WALG_KEYS_NOT_USED.contains(&k), "{k} is used, not in WALG_KEYS_NOT_USED");
            }
            if let Some(g) = s.guc {
                assert!(gucs.insert(g), "{g} twice");
                assert!(g.starts_with("walg.") && g == g.to_ascii_lowercase() && g != CONFIG_FILE_GUC, "{g}");
                assert!(!s.secret, "secret {} must not be a GUC", s.key);
            }
            assert!(!s.doc.is_empty() && !s.doc.contains('\n'), "{}: one-line doc", s.key);
        }
        let mut unused = HashSet::new();
        assert!(WALG_KEYS_NOT_USED.iter().all(|k| unused.insert(k)), "WALG_KEYS_NOT_USED has a duplicate");
    }

    #[test]
    fn defaults_parse_under_their_own_type() {
        for s in ALL {
            if let Default::Value(v) = s.default {
                s.parse(v).unwrap_or_else(|e| panic!("{}: default {v:?}: {e}", s.key));
            }
            if let Kind::Int { min, max, unset, .. } = s.kind {
                assert!(min <= max, "{}", s.key);
                if let Some(u) = unset {
                    assert!(!(min..=max).contains(&u), "{}: unset value {u} inside the range", s.key);
                }
                if matches!(s.default, Default::Unset(_)) {
                    assert!(unset.is_some(), "{}: an integer with no default needs an unset value for its GUC", s.key);
                }
                // The GUC (an i32) must be able to hold its default.
                if let (Some(_), Some(Value::Int(n))) = (s.guc, s.default_value()) {
                    assert!(i32::try_from(n).is_ok(), "{}: default {n} does not fit a GUC", s.key);
                }
            }
            if let Kind::Enum(values) = s.kind {
                assert!(!values.is_empty() && values.iter().all(|v| !v.is_empty()), "{}", s.key);
            }
        }
        assert_eq!(ALL.iter().filter(|s| s.default == Default::Cores).count(), 2);
    }

    #[test]
    fn values_are_checked_with_key_and_allowed_values() {
        let err = COMPRESSION_METHOD.parse("gzip").unwrap_err().to_string();
        assert!(err.contains("WALG_COMPRESSION_METHOD") && err.contains("walg.compression_method"), "{err}");
        assert!(err.contains("\"gzip\"") && err.contains("lz4, zstd, brotli, lzma, none"), "{err}");
        assert_eq!(COMPRESSION_METHOD.parse("ZSTD").unwrap(), Value::Choice("zstd"));
        let err = UPLOAD_CONCURRENCY.parse("0").unwrap_err().to_string();
        assert!(err.contains("out of range 1..1024"), "{err}");
        let err = TAR_SIZE_THRESHOLD.parse("1GB").unwrap_err().to_string();
        assert!(err.contains("not an integer in bytes"), "{err}");
        let err = AWS_S3_FORCE_PATH_STYLE.parse("maybe").unwrap_err().to_string();
        assert!(err.contains("AWS_S3_FORCE_PATH_STYLE") && err.contains("boolean"), "{err}");
        assert_eq!(AWS_S3_FORCE_PATH_STYLE.parse("on").unwrap(), Value::Bool(true));
        assert_eq!(COMPRESSION_LEVEL.parse("-1").unwrap(), Value::Int(-1));
        assert!(COMPRESSION_LEVEL.parse("-2").is_err());

        let mut s = Settings::new();
        s.set("WALE_S3_PREFIX", "s3://b/p");
        assert_eq!(s.text(&S3_PREFIX).unwrap().as_deref(), Some("s3://b/p"));
        assert_eq!(s.key_of(&S3_PREFIX), "WALE_S3_PREFIX");
        s.set("WALG_S3_PREFIX", "s3://c");
        assert_eq!(s.text(&S3_PREFIX).unwrap().as_deref(), Some("s3://c"), "the key wins over the alias");
        assert_eq!(s.int(&S3_MAX_RETRIES).unwrap(), Some(15), "default");
        assert_eq!(s.int(&COMPRESSION_LEVEL).unwrap(), None, "unset default");
        s.set("WALG_COMPRESSION_LEVEL", "-1");
        assert_eq!(s.int(&COMPRESSION_LEVEL).unwrap(), None, "-1 means not set");
        s.set("WALG_COMPRESSION_LEVEL", " 5 ");
        assert_eq!(s.int(&COMPRESSION_LEVEL).unwrap(), Some(5));
        assert!(check_values(&s).is_ok());
        s.set("WALG_S3_MAX_RETRIES", "lots");
        let err = check_values(&s).unwrap_err().to_string();
        assert!(err.contains("WALG_S3_MAX_RETRIES") && err.contains("lots"), "{err}");
    }

    #[test]
    fn unknown_keys_in_file_and_environment() {
        let mut file = Settings::new();
        file.set("WALG_FILE_PREFIX", "/b");
        file.set("WALG_USE_WAL_DELTA", "true");
        let warnings = check_keys(&file, Origin::File).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("WALG_USE_WAL_DELTA") && warnings[0].contains("does not support"), "{warnings:?}");
        file.set("WALG_COMPRESION_METHOD", "zstd");
        let err = check_keys(&file, Origin::File).unwrap_err().to_string();
        assert!(
            err.contains("unknown setting WALG_COMPRESION_METHOD") && err.contains("did you mean WALG_COMPRESSION_METHOD?"),
            "{err}"
        );
        let mut odd = Settings::new();
        odd.set("SOMETHING_ELSE_ENTIRELY", "1");
        let err = check_keys(&odd, Origin::File).unwrap_err().to_string();
        assert!(err.contains("SOMETHING_ELSE_ENTIRELY") && !err.contains("did you mean"), "{err}");

        let mut env = Settings::new();
        env.set("WALG_UPLOAD_CONCURENCY", "4");
        env.set("AWS_SOMETHING_THE_SDK_READS", "x");
        env.set("AWS_CA_BUNDLE", "/etc/ssl/ca.pem");
        env.set("PGHOST", "/run/postgresql");
        env.set("WALE_S3_PREFIX", "s3://b");
        let warnings = check_keys(&env, Origin::Env).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("did you mean WALG_UPLOAD_CONCURRENCY?"), "{warnings:?}");
        assert_eq!(closest_key("walg_s3_prefix"), Some("WALG_S3_PREFIX"));
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn registry_finds_keys_aliases_and_gucs() {
        assert_eq!(find("AWS_SECURITY_TOKEN").map(|s| s.key), Some("AWS_SESSION_TOKEN"));
        assert_eq!(by_guc("walg.s3_prefix").map(|s| s.key), Some("WALG_S3_PREFIX"));
        assert!(by_guc(CONFIG_FILE_GUC).is_none());
        assert!(find("WALG_GPG_KEY_ID").is_none());
        assert!(find("WALG_PGP_KEY").is_some_and(|s| s.secret && s.guc.is_none()));
        assert!(find("WALG_PGP_KEY_PASSPHRASE").is_some_and(|s| s.secret && s.guc.is_none()));
        assert_eq!(by_guc("walg.pgp_key_path").map(|s| s.key), Some("WALG_PGP_KEY_PATH"));
    }
}

#[cfg(test)]
mod readme {
    /// README.md's settings table is the registry's, row for row (same GUC, WAL-G key, type,
    /// default and meaning). To update it: `cargo run -p walg-core --example settings_table`.
    #[test]
    fn readme_settings_table_matches_the_registry() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        let start = readme.find("| setting (server) |").expect("README has a settings table");
        let end = readme[start..].find("\n\n").map_or(readme.len(), |e| start + e + 1);
        let table = &readme[start..end];
        let expected = super::markdown_table();
        if table != expected {
            let diff: Vec<String> = expected
                .lines()
                .zip(table.lines().chain(std::iter::repeat("(missing)")))
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("registry: {a}\nREADME:   {b}"))
                .collect();
            panic!(
                "README.md's settings table differs from the registry; run `cargo run -p walg-core --example settings_table` and paste it:\n{}\n(README has {} lines, registry {})",
                diff.join("\n"),
                table.lines().count(),
                expected.lines().count()
            );
        }
    }
}
