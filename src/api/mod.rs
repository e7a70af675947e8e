//! SQL functions: check arguments, call walg_core, turn results into rows and errors into ERRORs.
//! One file per area; privileges are in sql/privileges.sql (nothing runs for PUBLIC).
mod backup;
mod delete;
mod drill;
mod schedule;
mod status;
mod wal;

// Privileges: after every function of the extension exists.
pgrx::extension_sql_file!("../../sql/privileges.sql", name = "privileges", finalize);

use pgrx::prelude::*;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use walg_core::{Config, Storage};

/// Raise a walg_core error as an ERROR with a SQLSTATE that fits its kind, and a hint.
pub(crate) fn raise(e: walg_core::Error) -> ! {
    let (code, hint) = sqlstate_for(&e);
    error_with(code, &format!("walg_ext: {e}"), hint)
}

/// The one mapping from a core error to a SQLSTATE and hint, chosen by the error's kind.
pub(crate) fn sqlstate_for(e: &walg_core::Error) -> (PgSqlErrorCode, &'static str) {
    if matches!(e, walg_core::Error::Config(_)) {
        return (
            PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
            "Set walg.file_prefix (or walg.config_file) in postgresql.conf and reload.",
        );
    }
    match e {
        walg_core::Error::Refused(_) => (PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "Nothing was changed."),
        _ => sqlstate_for_kind(e.kind()),
    }
}

/// SQLSTATE and hint by kind alone: what `sqlstate_for` gives for every error but the two it
/// treats specially (a configuration error, a refusal).
pub(crate) fn sqlstate_for_kind(kind: walg_core::ErrorKind) -> (PgSqlErrorCode, &'static str) {
    use walg_core::ErrorKind as K;
    match kind {
        K::NotFound => (PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, "SELECT backup_name FROM walg_backup_list() shows what exists."),
        K::Unreachable => (
            PgSqlErrorCode::ERRCODE_IO_ERROR,
            "Check that the storage is reachable and readable by the server's operating system user.",
        ),
        K::LocalIo => (PgSqlErrorCode::ERRCODE_IO_ERROR, "Check the file system of the server (space, permissions)."),
        K::Corrupt => (PgSqlErrorCode::ERRCODE_DATA_CORRUPTED, "The object named above is damaged or not in WAL-G's format."),
        K::Conflict => (PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, ""),
        K::Cancelled => (PgSqlErrorCode::ERRCODE_QUERY_CANCELED, ""),
        K::BadInput => (PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, ""),
        K::Internal => (PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "This is a bug in walg_ext: please report it with the server log."),
    }
}

/// ERROR with a SQLSTATE and an optional hint.
pub(crate) fn error_with(code: PgSqlErrorCode, msg: &str, hint: &str) -> ! {
    let mut r = pgrx::pg_sys::panic::ErrorReport::new(code, msg.to_string(), function_name!());
    if !hint.is_empty() {
        r = r.set_hint(hint);
    }
    r.report(PgLogLevel::ERROR);
    unreachable!()
}

/// Unwrap a core result or raise it.
pub(crate) fn ok<T>(r: walg_core::Result<T>) -> T {
    r.unwrap_or_else(|e| raise(e))
}

/// The configuration and its storage, or an ERROR (not configured / unusable).
pub(crate) fn open() -> (Config, Arc<dyn Storage>) {
    let cfg = ok(crate::settings::load_config());
    let storage = ok(cfg.open_storage());
    (cfg, storage)
}

/// This server's WAL segment size.
pub(crate) fn wal_segment_size() -> u64 {
    unsafe { pg_sys::wal_segment_size as u64 }
}

pub(crate) fn to_tstz(t: SystemTime) -> Option<TimestampWithTimeZone> {
    let micros = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    };
    to_timestamp_micros(micros)
}

pub(crate) fn chrono_to_tstz(t: &chrono::DateTime<chrono::Utc>) -> Option<TimestampWithTimeZone> {
    to_timestamp_micros(t.timestamp_micros())
}

/// Unix microseconds to timestamptz (PostgreSQL's epoch is 2000-01-01).
pub(crate) fn to_timestamp_micros(unix_micros: i64) -> Option<TimestampWithTimeZone> {
    const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
    TimestampWithTimeZone::try_from(unix_micros - PG_EPOCH_OFFSET_MICROS).ok()
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// SQLSTATE of running `q` ("ok" when it succeeds), through a subtransaction.
    fn sqlstate(q: &str) -> String {
        // Created once per session (by the first caller, before any SET ROLE).
        let exists = Spi::get_one::<bool>("SELECT to_regprocedure('pg_temp.walg_state(text)') IS NOT NULL");
        if exists.unwrap() != Some(true) {
            Spi::run(
                "CREATE FUNCTION pg_temp.walg_state(q text) RETURNS text LANGUAGE plpgsql AS $$ \
                 BEGIN EXECUTE q; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE || ' ' || SQLERRM; END $$",
            )
            .unwrap();
        }
        Spi::get_one_with_args::<String>("SELECT pg_temp.walg_state($1)", &[q.into()]).unwrap().unwrap()
    }

    #[pg_test]
    fn bad_arguments_get_fitting_sqlstates() {
        let cases = [
            ("SELECT * FROM walg_delete_retain(0)", "22023", "at least 1"),
            ("SELECT * FROM walg_delete_retain(-3)", "22023", "at least 1"),
            ("SELECT * FROM walg_delete_retain(2, 'HALF')", "22023", "unknown retain modifier"),
            ("SELECT * FROM walg_delete('bogus 1')", "22023", "unknown delete mode"),
            ("SELECT * FROM walg_delete_garbage('SOME')", "22023", "unknown garbage scope"),
            ("SELECT * FROM walg_wal_verify('bogus')", "22023", "unknown wal-verify check"),
            ("SELECT * FROM walg_wal_verify('')", "22023", "no check given"),
            ("SELECT * FROM walg_delete_before('2999-01-01T00:00:00Z')", "22023", "in the future"),
            ("SELECT * FROM walg_delete_retain(1, after => '2999-01-01 00:00:00')", "22023", "in the future"),
            ("SELECT * FROM walg_delete_before('last tuesday')", "22023", "neither a backup name nor a time"),
            ("SELECT * FROM walg_delete_target('base_000000010000000000000077')", "42704", "does not exist"),
            ("SELECT * FROM walg_delete_before('base_000000010000000000000077')", "42704", "does not exist"),
            ("SELECT * FROM walg_backup_mark('base_000000010000000000000077', true)", "42704", "does not exist"),
            ("SELECT * FROM walg_delete_target('nonsense')", "22023", "not a valid backup name"),
        ];
        for (q, code, text) in cases {
            let got = sqlstate(q);
            assert!(got.starts_with(code) && got.contains(text), "{q}: got {got:?}, want {code} .. {text}");
        }
        // Valid calls on this (possibly empty) storage work and a dry run deletes nothing.
        assert_eq!(sqlstate("SELECT * FROM walg_delete_retain(1000)"), "ok");
        assert_eq!(sqlstate("SELECT * FROM walg_wal_show()"), "ok");
        assert_eq!(sqlstate("SELECT * FROM walg_wal_verify('integrity, timeline')"), "ok");
        assert_eq!(sqlstate("SELECT * FROM walg_status()"), "ok");
    }

    #[pg_test]
    fn user_data_too_large_is_refused() {
        let got = sqlstate("SELECT walg_backup_push(user_data => jsonb_build_object('x', repeat('a', 5000)))");
        assert!(got.starts_with("54000") && got.contains("at most"), "{got}");
    }

    #[pg_test]
    fn nothing_for_public_everything_for_walg_admin() {
        Spi::run(
            "DROP ROLE IF EXISTS walg_t_plain; DROP ROLE IF EXISTS walg_t_admin; \
             CREATE ROLE walg_t_plain; CREATE ROLE walg_t_admin IN ROLE walg_admin",
        )
        .unwrap();
        assert_eq!(sqlstate("SELECT 1"), "ok");
        let fns = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e' \
             JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'walg_ext'",
        )
        .unwrap()
        .unwrap();
        assert!(fns >= 12, "{fns} functions");
        let public = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e' \
             JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'walg_ext' \
             WHERE has_function_privilege('public', p.oid, 'EXECUTE') \
                OR NOT has_function_privilege('walg_admin', p.oid, 'EXECUTE')",
        )
        .unwrap();
        assert_eq!(public, Some(0), "every function: not for PUBLIC, executable by walg_admin");
        Spi::run("SET ROLE walg_t_plain").unwrap();
        for q in [
            "SELECT count(*) FROM walg_backup_list()",
            "SELECT * FROM walg_status()",
            "SELECT * FROM walg_delete_retain(1)",
            "SELECT walg_backup_push()",
        ] {
            let got = sqlstate(q);
            assert!(got.starts_with("42501") && got.contains("permission denied"), "{q}: {got}");
        }
        let got = sqlstate("SELECT current_setting('walg.config_file')");
        assert!(got.starts_with("42501"), "walg.config_file readable by a plain role: {got}");
        Spi::run("RESET ROLE; SET ROLE walg_t_admin").unwrap();
        assert_eq!(sqlstate("SELECT count(*) FROM walg_backup_list(true)"), "ok");
        assert_eq!(sqlstate("SELECT * FROM walg_status()"), "ok");
        assert_eq!(sqlstate("SELECT * FROM walg_delete_retain(1000)"), "ok");
        Spi::run("RESET ROLE").unwrap();
    }
}
