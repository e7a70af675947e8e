//! `pg_lsn` as a return type: pgrx has no mapping for it. A pg_lsn datum is a by-value u64.
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::IntoDatum;

#[derive(Clone, Copy, Debug)]
pub struct PgLsn(pub u64);

impl IntoDatum for PgLsn {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(pg_sys::Datum::from(self.0))
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::PG_LSNOID
    }
}

unsafe impl SqlTranslatable for PgLsn {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::PgLsn");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("pg_lsn"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("pg_lsn")));
}

unsafe impl pgrx::callconv::BoxRet for PgLsn {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(pg_sys::Datum::from(self.0)) }
    }
}

/// The server's timeline and WAL position (the replay position on a standby), for wal-verify
/// and the health check. Read-only SPI (`select`, not `update`): pgrx's mutating calls assign a
/// transaction id, which a server in recovery refuses ("cannot assign TransactionIds during
/// recovery"). Needs a transaction.
pub fn current_segment() -> Result<walg_core::catalog::wal_verify::CurrentSegment, String> {
    let row = pgrx::Spi::connect(|c| {
        c.select(
            "SELECT CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint())::bigint \
                         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END, \
                    CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text",
            Some(1),
            &[],
        )?
        .first()
        .get_two::<i64, String>()
    });
    match row {
        Ok((Some(t), Some(l))) => {
            let lsn = walg_core::format::names::parse_lsn(&l).map_err(|e| e.to_string())?;
            Ok(walg_core::catalog::wal_verify::CurrentSegment { timeline: t as u32, lsn })
        }
        other => Err(format!("cannot read the current WAL position: {other:?}")),
    }
}
