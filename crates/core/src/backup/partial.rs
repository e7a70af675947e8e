//! Partial restore (WAL-G's `--restore-only`): only the named databases get their relation
//! files; every other database keeps its system catalogs and gets an empty placeholder for each
//! other relation file, so the cluster starts, replays WAL (a page first touched after the
//! backup's checkpoint arrives as a full-page image) and lets the others be dropped.
//!
//! Rules (WAL-G's, from its extract_provider_with_spec.go and names_metadata.go):
//! - a relation file is `/base/<db>/<file>` or `/pg_tblspc/<spc>/<version dir>/<db>/<file>`,
//!   `<file>` being `<relfilenode>[_fork][.segment]`; anything else (PG_VERSION,
//!   pg_filenode.map, pg_internal.init, global/) is always restored;
//! - databases with an OID below 16384 (template0, template1, postgres) are always restored;
//! - in a database not asked for, files of relfilenode below 16384 (initdb's catalogs) and the
//!   relfilenodes that WAL-G's `DatabasesByNames` lists as system tables (OID below 16384) are
//!   restored, every other relation file becomes an empty placeholder.
//!
//! Names come from the backup's metadata: WAL-G's `DatabasesByNames` or ours,
//! `WalgExtDatabases`. A name the backup does not know is an error before anything is written.
//! A catalog that was rewritten (VACUUM FULL) in a database not asked for gets a new relfilenode
//! and becomes a placeholder too: such a database may not accept connections; drop it.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};

/// PostgreSQL's FirstNormalObjectId: OIDs and relfilenodes below it were made by initdb.
pub const FIRST_NORMAL_OID: u32 = 16384;

/// What a partial restore keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreOnly {
    /// OIDs of the databases asked for.
    pub databases: BTreeSet<u32>,
    /// Per database, relfilenodes of system tables recorded by WAL-G (`DatabasesByNames` tables
    /// with an OID below 16384): restored in every database.
    pub system_files: BTreeMap<u32, BTreeSet<u32>>,
}

/// One database as the backup records it: its OID, and (WAL-G's `tables_new`) the
/// relfilenodes of its system tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordedDatabase {
    pub oid: u32,
    pub system_files: BTreeSet<u32>,
}

/// The databases recorded in files_metadata.json: WAL-G's `DatabasesByNames`
/// (`{"name": {"oid": N, "tables_new": {"schema.table": {"oid": N, "relfilenode": N, "subtables": {...}}}}}`)
/// or ours, `WalgExtDatabases` (`{"name": oid}`).
pub fn recorded_databases(
    walg: &serde_json::Map<String, serde_json::Value>,
    ours: &BTreeMap<String, u32>,
    fm_key: &str,
) -> Result<BTreeMap<String, RecordedDatabase>> {
    let mut out: BTreeMap<String, RecordedDatabase> =
        ours.iter().map(|(n, &oid)| (n.clone(), RecordedDatabase { oid, system_files: BTreeSet::new() })).collect();
    for (name, v) in walg {
        let oid = v
            .get("oid")
            .and_then(|o| o.as_u64())
            .and_then(|o| u32::try_from(o).ok())
            .ok_or_else(|| Error::corrupt(fm_key, format!("DatabasesByNames[{name:?}] has no valid oid")))?;
        let mut system_files = BTreeSet::new();
        if let Some(tables) = v.get("tables_new").and_then(|t| t.as_object()) {
            collect_system_files(tables, &mut system_files);
        }
        out.insert(name.clone(), RecordedDatabase { oid, system_files });
    }
    Ok(out)
}

fn collect_system_files(tables: &serde_json::Map<String, serde_json::Value>, into: &mut BTreeSet<u32>) {
    for t in tables.values() {
        let num = |k: &str| t.get(k).and_then(|v| v.as_u64()).and_then(|v| u32::try_from(v).ok());
        if let (Some(oid), Some(node)) = (num("oid"), num("relfilenode")) {
            if oid < FIRST_NORMAL_OID {
                into.insert(node);
            }
        }
        if let Some(sub) = t.get("subtables").and_then(|s| s.as_object()) {
            collect_system_files(sub, into);
        }
    }
}

/// Split `--restore-only` values: comma-separated, double quotes only group (WAL-G's
/// `my_db,"another db"` = `my_db,another" "db`).
pub fn parse_names(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for a in args {
        let mut cur = String::new();
        let mut quoted = false;
        for c in a.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => out.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        out.push(cur);
    }
    out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

impl RestoreOnly {
    /// Resolve database names against what the backup recorded.
    pub fn resolve(names: &[String], recorded: &BTreeMap<String, RecordedDatabase>, backup: &str) -> Result<RestoreOnly> {
        if names.is_empty() {
            return Err(Error::InvalidArgument("--restore-only needs at least one database name".into()));
        }
        if recorded.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{backup} records no database names (taken before walg_ext recorded them, or by WAL-G without \
                 DatabasesByNames): it cannot be restored partially; restore it whole"
            )));
        }
        let mut databases = BTreeSet::new();
        for n in names {
            if n.contains('/') {
                return Err(Error::InvalidArgument(format!(
                    "--restore-only {n:?}: only whole databases can be restored partially, not single tables"
                )));
            }
            match recorded.get(n) {
                Some(d) => {
                    databases.insert(d.oid);
                }
                None => {
                    let known: Vec<&str> = recorded.keys().map(|k| k.as_str()).collect();
                    return Err(Error::InvalidArgument(format!(
                        "--restore-only: {backup} has no database {n:?} (it has: {})",
                        known.join(", ")
                    )));
                }
            }
        }
        let system_files = recorded.values().map(|d| (d.oid, d.system_files.clone())).collect();
        Ok(RestoreOnly { databases, system_files })
    }

    /// Whether the tar entry `name` is restored as an empty placeholder.
    pub fn is_placeholder(&self, name: &str) -> bool {
        let Some((db, file)) = relation_file(name) else { return false };
        db >= FIRST_NORMAL_OID
            && !self.databases.contains(&db)
            && file >= FIRST_NORMAL_OID
            && !self.system_files.get(&db).is_some_and(|s| s.contains(&file))
    }
}

/// (database OID, relfilenode) of a relation file's tar entry name.
fn relation_file(name: &str) -> Option<(u32, u32)> {
    let name = name.trim_start_matches('/');
    let parts: Vec<&str> = name.split('/').collect();
    let (db, file) = match parts.as_slice() {
        ["base", db, file] => (*db, *file),
        ["pg_tblspc", _, _, db, file] => (*db, *file),
        _ => return None,
    };
    let digits = |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u32>().ok()).flatten();
    let node = file.split(['.', '_']).next()?;
    Some((digits(db)?, digits(node)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recorded() -> BTreeMap<String, RecordedDatabase> {
        let walg = json!({
            "shop": {"oid": 16390, "tables_new": {
                "pg_catalog.pg_class": {"oid": 1259, "relfilenode": 16500},
                "public.orders": {"oid": 16400, "relfilenode": 16401, "subtables": {
                    "pg_toast.pg_toast_16400": {"oid": 16404, "relfilenode": 16404}
                }}
            }},
        });
        let ours = BTreeMap::from([("crm".to_string(), 16384u32), ("postgres".to_string(), 5)]);
        recorded_databases(walg.as_object().unwrap(), &ours, "fm").unwrap()
    }

    #[test]
    fn names_are_split_like_walg() {
        assert_eq!(parse_names(&["my_db,\"another db\"".into()]), ["my_db", "another db"]);
        assert_eq!(parse_names(&["my_db,another\" \"db".into()]), ["my_db", "another db"]);
        assert_eq!(parse_names(&["a".into(), "b,,c".into()]), ["a", "b", "c"]);
    }

    #[test]
    fn only_user_relation_files_of_other_databases_become_placeholders() {
        let r = RestoreOnly::resolve(&["crm".into()], &recorded(), "b").unwrap();
        // The database asked for: everything.
        assert!(!r.is_placeholder("/base/16384/16390"));
        assert!(!r.is_placeholder("/base/16384/16390_fsm"));
        // Another user database: user relations (all forks and segments) are placeholders ...
        for f in ["/base/16390/16401", "/base/16390/16401.1", "/base/16390/16401_vm", "/base/16390/16404", "base/16390/20000_init"] {
            assert!(r.is_placeholder(f), "{f}");
        }
        // ... but initdb's catalogs, a rewritten catalog WAL-G recorded, and non-relation files stay.
        for f in ["/base/16390/1259", "/base/16390/16500", "/base/16390/PG_VERSION", "/base/16390/pg_filenode.map", "/base/16390/pg_internal.init"] {
            assert!(!r.is_placeholder(f), "{f}");
        }
        // System databases and global/ are always whole; tablespace paths are recognised.
        assert!(!r.is_placeholder("/base/5/16401") && !r.is_placeholder("/base/1/16401"));
        assert!(!r.is_placeholder("/global/16401"));
        assert!(r.is_placeholder("/pg_tblspc/16395/PG_15_202209061/16390/16401"));
        assert!(!r.is_placeholder("/pg_tblspc/16395/PG_15_202209061/16384/16401"));
    }

    #[test]
    fn unknown_names_tables_and_backups_without_names_are_refused() {
        let e = RestoreOnly::resolve(&["nope".into()], &recorded(), "b").unwrap_err();
        assert!(e.to_string().contains("crm, postgres, shop"), "{e}");
        let e = RestoreOnly::resolve(&["shop/orders".into()], &recorded(), "b").unwrap_err();
        assert!(e.to_string().contains("not single tables"), "{e}");
        let e = RestoreOnly::resolve(&["shop".into()], &BTreeMap::new(), "b").unwrap_err();
        assert!(e.to_string().contains("records no database names"), "{e}");
        assert!(RestoreOnly::resolve(&[], &recorded(), "b").is_err());
        let bad = json!({"x": {"tables_new": {}}});
        assert!(recorded_databases(bad.as_object().unwrap(), &BTreeMap::new(), "fm").is_err());
    }
}
