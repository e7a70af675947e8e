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
        worker::scheduler::register();
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
            "walg.s3_storage_class",
            "walg.s3_sse",
            "walg.s3_sse_kms_id",
            "walg.s3_ca_cert_file",
        ] {
            let v = Spi::get_one::<String>(&format!("SELECT current_setting('{name}')")).unwrap();
            assert_eq!(v.as_deref(), Some(""), "{name} is registered and empty by default");
        }
        let v = Spi::get_one::<String>("SELECT current_setting('walg.aws_s3_force_path_style')").unwrap();
        assert_eq!(v.as_deref(), Some("off"), "a boolean now");
        for secret in ["walg.aws_access_key_id", "walg.aws_secret_access_key", "walg.aws_session_token"] {
            let v = Spi::get_one::<String>(&format!("SELECT current_setting('{secret}', true)")).unwrap();
            assert_eq!(v, None, "{secret} must not be a setting");
        }
    }

    /// Every GUC is the registry's: its type, unit, context and description; units are
    /// PostgreSQL's (bytes show as `20MB`).
    #[pg_test]
    fn gucs_follow_the_registry() {
        use walg_core::config::registry::{self as r, Kind, Unit};
        for s in r::ALL {
            let Some(guc) = s.guc else {
                let n = Spi::get_one::<i64>(&format!("SELECT count(*) FROM pg_settings WHERE name = 'walg.{}'", s.key.to_lowercase())).unwrap();
                assert_eq!(n, Some(0), "{} is not a GUC", s.key);
                continue;
            };
            let row = Spi::get_one::<String>(&format!(
                "SELECT vartype || '|' || coalesce(unit, '') || '|' || context || '|' || coalesce(array_to_string(enumvals, ','), '') || '|' || short_desc \
                 FROM pg_settings WHERE name = '{guc}'"
            ))
            .unwrap()
            .unwrap_or_else(|| panic!("{guc} is not registered"));
            let (vartype, unit) = match s.kind {
                Kind::Text => ("string", ""),
                Kind::Bool => ("bool", ""),
                Kind::Enum(_) if matches!(s.default, r::Default::Unset(_)) => ("string", ""),
                Kind::Enum(_) => ("enum", ""),
                Kind::Int { unit: Unit::Bytes | Unit::BytesPerSecond, .. } => ("integer", "B"),
                Kind::Int { unit: Unit::Milliseconds, .. } => ("integer", "ms"),
                Kind::Int { unit: Unit::Seconds, .. } => ("integer", "s"),
                Kind::Int { unit: Unit::None, .. } => ("integer", ""),
            };
            let f: Vec<&str> = row.splitn(5, '|').collect();
            assert_eq!((f[0], f[1], f[2]), (vartype, unit, "sighup"), "{guc}: {row}");
            if let (Kind::Enum(values), "enum") = (s.kind, vartype) {
                assert_eq!(f[3], values.join(","), "{guc}");
            }
            assert_eq!(f[4], s.doc.replace('`', ""), "{guc}");
        }
        let show = |q: &str| Spi::get_one::<String>(&format!("SELECT current_setting('{q}')")).unwrap().unwrap();
        assert_eq!(show("walg.s3_max_part_size"), "20MB");
        assert_eq!(show("walg.tar_size_threshold"), "1073741823B");
        assert_eq!(show("walg.disk_rate_limit"), "0");
        assert_eq!(show("walg.compression_method"), "lz4");
        assert_eq!(show("walg.compression_level"), "-1");
        assert_eq!(show("walg.upload_concurrency"), "2");
        let max = Spi::get_one::<String>("SELECT max_val FROM pg_settings WHERE name = 'walg.tar_size_threshold'").unwrap();
        assert_eq!(max.as_deref(), Some("2147483647"));
    }

    /// Only settings given in postgresql.conf become WAL-G keys: the rest (at PostgreSQL's
    /// default) defer to walg.config_file, then the registry's default.
    #[pg_test]
    fn only_settings_that_are_set_override_the_file() {
        let set = crate::settings::guc_settings();
        let pairs: Vec<(&str, &str)> = set.iter().collect();
        assert_eq!(
            pairs,
            vec![("WALG_FILE_PREFIX", "/tmp/walg-ext-pgrx-storage"), ("WALG_UPLOAD_CONCURRENCY", "2")]
        );
    }

    // walg.* names are reserved: a typo is refused rather than kept as a placeholder.
    #[pg_test(error = "invalid configuration parameter name \"walg.compresion_method\"")]
    fn unknown_walg_settings_are_refused() {
        Spi::run("SET walg.compresion_method = 'zstd'").unwrap();
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
