//! The walg.* settings (GUCs) and their translation into one `walg_core::Config`.
//!
//! Every setting is server-wide (PGC_SIGHUP): the archiver, the backup worker and SQL callers
//! must all see the same storage. A setting left at its default defers to `walg.config_file`
//! (WAL-G's file format and key names), then to walg_core's defaults.
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::{CStr, CString};
use walg_core::config::{Config, Settings};

static CONFIG_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static FILE_PREFIX: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static COMPRESSION_METHOD: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static COMPRESSION_LEVEL: GucSetting<i32> = GucSetting::<i32>::new(-1);
static LIBSODIUM_KEY_PATH: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static LIBSODIUM_KEY_TRANSFORM: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_PREFIX: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static AWS_ENDPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static AWS_REGION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static AWS_S3_FORCE_PATH_STYLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_STORAGE_CLASS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_SSE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_SSE_KMS_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static S3_CA_CERT_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static TAR_SIZE_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(-1);
static UPLOAD_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(-1);
static DISK_RATE_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(-1);

/// (GUC, WAL-G key) pairs for string settings (the S3 ones are in `S3_GUCS`).
const STRING_SETTINGS: &[(&GucSetting<Option<CString>>, &str)] = &[
    (&FILE_PREFIX, "WALG_FILE_PREFIX"),
    (&COMPRESSION_METHOD, "WALG_COMPRESSION_METHOD"),
    (&LIBSODIUM_KEY_PATH, "WALG_LIBSODIUM_KEY_PATH"),
    (&LIBSODIUM_KEY_TRANSFORM, "WALG_LIBSODIUM_KEY_TRANSFORM"),
];

/// S3 string settings: (GUC, variable, WAL-G key, description). No secrets here: keys come only
/// from walg.config_file or the server's environment.
const S3_GUCS: &[(&std::ffi::CStr, &GucSetting<Option<CString>>, &str, &std::ffi::CStr)] = &[
    (c"walg.s3_prefix", &S3_PREFIX, "WALG_S3_PREFIX", c"S3 location of the backups and WAL, s3://bucket/path (WALG_S3_PREFIX)."),
    (c"walg.aws_endpoint", &AWS_ENDPOINT, "AWS_ENDPOINT", c"Endpoint of an S3-compatible service, e.g. http://minio:9000 (AWS_ENDPOINT); empty: AWS."),
    (c"walg.aws_region", &AWS_REGION, "AWS_REGION", c"Region of the bucket (AWS_REGION); empty: the AWS default chain, or us-east-1 with walg.aws_endpoint."),
    (c"walg.aws_s3_force_path_style", &AWS_S3_FORCE_PATH_STYLE, "AWS_S3_FORCE_PATH_STYLE", c"true: path-style URLs (endpoint/bucket/key), needed by most S3-compatible services (AWS_S3_FORCE_PATH_STYLE)."),
    (c"walg.s3_storage_class", &S3_STORAGE_CLASS, "WALG_S3_STORAGE_CLASS", c"Storage class of uploaded objects, e.g. STANDARD_IA (WALG_S3_STORAGE_CLASS); empty: STANDARD."),
    (c"walg.s3_sse", &S3_SSE, "WALG_S3_SSE", c"Server-side encryption: AES256 or aws:kms (WALG_S3_SSE)."),
    (c"walg.s3_sse_kms_id", &S3_SSE_KMS_ID, "WALG_S3_SSE_KMS_ID", c"KMS key id for walg.s3_sse = aws:kms (WALG_S3_SSE_KMS_ID)."),
    (c"walg.s3_ca_cert_file", &S3_CA_CERT_FILE, "WALG_S3_CA_CERT_FILE", c"PEM file with a CA certificate to trust for the endpoint (WALG_S3_CA_CERT_FILE)."),
];

/// Secrets taken from the server's environment (never from a GUC): they override the file, as
/// WAL-G's environment overrides its file.
const SECRET_ENV: &[&str] = &["WALG_LIBSODIUM_KEY"];

/// (GUC, WAL-G key) pairs for integer settings; -1 means "not set here".
const INT_SETTINGS: &[(&GucSetting<i32>, &str)] = &[
    (&COMPRESSION_LEVEL, "WALG_COMPRESSION_LEVEL"),
    (&TAR_SIZE_THRESHOLD, "WALG_TAR_SIZE_THRESHOLD"),
    (&UPLOAD_CONCURRENCY, "WALG_UPLOAD_CONCURRENCY"),
    (&DISK_RATE_LIMIT, "WALG_DISK_RATE_LIMIT"),
];

pub fn register() {
    let ctx = || GucContext::Sighup;
    let none = GucFlags::default;
    GucRegistry::define_string_guc(
        c"walg.config_file",
        c"WAL-G configuration file (JSON or YAML, WAL-G key names) read by walg_ext.",
        c"Settings given here in postgresql.conf override the file. The file may hold secrets: make it readable by the server user only.",
        &CONFIG_FILE,
        ctx(),
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"walg.file_prefix",
        c"Local or mounted directory holding the backups and WAL (WALG_FILE_PREFIX).",
        c"",
        &FILE_PREFIX,
        ctx(),
        none(),
    );
    for &(name, setting, _, short) in S3_GUCS {
        GucRegistry::define_string_guc(name, short, c"", setting, ctx(), none());
    }
    GucRegistry::define_string_guc(
        c"walg.compression_method",
        c"Compression for WAL and backups: lz4 (default), zstd, brotli, lzma or none (WALG_COMPRESSION_METHOD).",
        c"",
        &COMPRESSION_METHOD,
        ctx(),
        none(),
    );
    GucRegistry::define_int_guc(
        c"walg.compression_level",
        c"Compression level (WALG_COMPRESSION_LEVEL): zstd 1..22, brotli 0..11, lzma 0..9; -1: file, WALG_ZSTD_LEVEL or the method's default.",
        c"",
        &COMPRESSION_LEVEL,
        -1,
        22,
        ctx(),
        none(),
    );
    GucRegistry::define_string_guc(
        c"walg.libsodium_key_path",
        c"File holding the libsodium encryption key (WALG_LIBSODIUM_KEY_PATH); empty: no encryption unless the key is in walg.config_file or the environment.",
        c"The key itself (WALG_LIBSODIUM_KEY) is never a setting: put it in walg.config_file or the server's environment.",
        &LIBSODIUM_KEY_PATH,
        ctx(),
        none(),
    );
    GucRegistry::define_string_guc(
        c"walg.libsodium_key_transform",
        c"How the libsodium key text is turned into 32 bytes: none (default), hex or base64 (WALG_LIBSODIUM_KEY_TRANSFORM).",
        c"",
        &LIBSODIUM_KEY_TRANSFORM,
        ctx(),
        none(),
    );
    GucRegistry::define_int_guc(
        c"walg.tar_size_threshold",
        c"Size in bytes after which a backup tar part is closed (WALG_TAR_SIZE_THRESHOLD); -1: file or default (1 GiB - 1).",
        c"",
        &TAR_SIZE_THRESHOLD,
        -1,
        i32::MAX,
        ctx(),
        none(),
    );
    GucRegistry::define_int_guc(
        c"walg.upload_concurrency",
        c"Parallel tar streams (read, compress, upload) of a backup (WALG_UPLOAD_CONCURRENCY); -1: file or number of cores.",
        c"",
        &UPLOAD_CONCURRENCY,
        -1,
        1024,
        ctx(),
        none(),
    );
    GucRegistry::define_int_guc(
        c"walg.disk_rate_limit",
        c"Limit on backup reads from PGDATA in bytes per second (WALG_DISK_RATE_LIMIT); 0: unlimited; -1: file or unlimited.",
        c"",
        &DISK_RATE_LIMIT,
        -1,
        i32::MAX,
        ctx(),
        none(),
    );
}

fn guc_str(s: &GucSetting<Option<CString>>) -> Option<String> {
    s.get().map(|c| c.to_string_lossy().into_owned()).filter(|v| !v.is_empty())
}

/// The effective configuration: `walg.config_file`, overridden by the walg.* settings.
pub fn load_config() -> walg_core::Result<Config> {
    let mut settings = match guc_str(&CONFIG_FILE) {
        Some(path) => Settings::from_file(std::path::Path::new(&path))?,
        None => Settings::default(),
    };
    let mut over = Settings::default();
    for key in SECRET_ENV {
        if let Some(v) = std::env::var(key).ok().filter(|v| !v.is_empty()) {
            over.set(*key, v);
        }
    }
    let s3 = S3_GUCS.iter().map(|&(_, guc, key, _)| (guc, key));
    for (guc, key) in STRING_SETTINGS.iter().map(|&(guc, key)| (guc, key)).chain(s3) {
        if let Some(v) = guc_str(guc) {
            over.set(key, v);
        }
    }
    for (guc, key) in INT_SETTINGS {
        let v = guc.get();
        if v >= 0 {
            over.set(*key, v.to_string());
        }
    }
    settings.merge(&over);
    Config::from_settings(&settings)
}

/// Data directory of this server.
pub fn data_dir() -> std::path::PathBuf {
    unsafe { CStr::from_ptr(pgrx::pg_sys::DataDir) }.to_string_lossy().into_owned().into()
}
