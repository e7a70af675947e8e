//! SQL functions: check arguments, call walg_core, turn results into rows and errors into ERRORs.
mod backup;

use pgrx::prelude::*;

/// Raise a walg_core error as an ERROR with a SQLSTATE that fits its kind.
pub(crate) fn raise(e: walg_core::Error) -> ! {
    use walg_core::Error as E;
    let code = match &e {
        E::Config(_) => PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
        E::NotFound(_) => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        E::Storage { .. } | E::Io { .. } => PgSqlErrorCode::ERRCODE_IO_ERROR,
        E::Format(_) | E::Codec { .. } => PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
        E::Conflict(_) => PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
        E::Cancelled(_) => PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
    };
    ereport!(PgLogLevel::ERROR, code, format!("walg_ext: {e}"));
    unreachable!()
}
