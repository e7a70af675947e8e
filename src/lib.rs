//! walg_ext: the PostgreSQL side of walg_ext. Glue only: settings, shared memory, the archive
//! module, the backup worker and SQL functions. Everything else lives in `walg_core`.
use pgrx::prelude::*;

mod api;
mod archive;
mod pg_lsn;
mod settings;
mod shmem;
mod worker;

::pgrx::pg_module_magic!();

#[pg_guard]
#[allow(non_snake_case)]
pub extern "C-unwind" fn _PG_init() {
    settings::register();
    // Shared memory (the backup job slot) can only be requested while the postmaster loads us
    // from shared_preload_libraries; elsewhere (archiver via archive_library only, or a plain
    // CREATE EXTENSION) the SQL functions that need it say so.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        shmem::init();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn settings_are_registered() {
        let p = Spi::get_one::<String>("SELECT current_setting('walg.file_prefix')").unwrap();
        assert_eq!(p.as_deref(), Some("/tmp/walg-ext-pgrx-storage"));
        // Unset settings fall back to walg_core's defaults (WAL-G's: lz4).
        let cfg = crate::settings::load_config().expect("config");
        assert_eq!(cfg.compression, walg_core::codec::Compression::Lz4);
        assert_eq!(cfg.upload_concurrency, 2);
    }

    #[pg_test]
    fn backup_push_then_list() {
        let name = Spi::get_one::<String>("SELECT walg_backup_push()").unwrap().unwrap();
        assert!(name.starts_with("base_") && name.len() == 29, "unexpected name {name}");
        let listed = Spi::get_one::<bool>(&format!(
            "SELECT start_lsn <= finish_lsn AND compressed_size > 0 AND uncompressed_size > 0 \
               AND wal_file_name = substr(backup_name, 6) AND NOT is_permanent \
             FROM walg_backup_list() WHERE backup_name = '{name}'"
        ))
        .unwrap();
        assert_eq!(listed, Some(true));
        let lsn_type = Spi::get_one::<String>(
            "SELECT pg_typeof(start_lsn)::text FROM walg_backup_list() LIMIT 1",
        )
        .unwrap();
        assert_eq!(lsn_type.as_deref(), Some("pg_lsn"));
    }

    #[pg_test]
    fn s3_settings_are_registered_and_secrets_are_not() {
        for name in [
            "walg.s3_prefix",
            "walg.aws_endpoint",
            "walg.aws_region",
            "walg.aws_s3_force_path_style",
            "walg.s3_storage_class",
            "walg.s3_sse",
            "walg.s3_sse_kms_id",
            "walg.s3_ca_cert_file",
        ] {
            let v = Spi::get_one::<String>(&format!("SELECT current_setting('{name}')")).unwrap();
            assert_eq!(v.as_deref(), Some(""), "{name} is registered and empty by default");
        }
        for secret in ["walg.aws_access_key_id", "walg.aws_secret_access_key", "walg.aws_session_token"] {
            let v = Spi::get_one::<String>(&format!("SELECT current_setting('{secret}', true)")).unwrap();
            assert_eq!(v, None, "{secret} must not be a setting");
        }
    }

    // walg.* are server-wide (SIGHUP): the archiver and the backup worker must see the same.
    #[pg_test(error = "parameter \"walg.compression_method\" cannot be changed now")]
    fn settings_cannot_be_set_per_session() {
        Spi::run("SET walg.compression_method = 'zstd'").unwrap();
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'walg_ext'",
            "walg.file_prefix = '/tmp/walg-ext-pgrx-storage'",
            "walg.upload_concurrency = 2",
        ]
    }
}
