//! Tablespaces in a backup, as WAL-G records them (FORMAT.md).
//!
//! Files of a tablespace are stored under `/pg_tblspc/<oid>/...`, named as seen through the
//! `pg_tblspc/<oid>` link; neither the link nor the tablespace's own root directory is stored.
//! The sentinel's `Spec` says where each tablespace was: `{"base_prefix": PGDATA,
//! "tablespaces": ["16400"], "16400": {"loc": "/mnt/tbs1", "link": "pg_tblspc/16400"}}`.
//! WAL-G's `--restore-spec FILE` takes the same JSON. `tablespace_map` (from pg_backup_stop,
//! in backup_label.tar) has one `<oid> <path>` line per tablespace, newlines and carriage
//! returns in a path escaped with a backslash (PostgreSQL 15's do_pg_backup_start).

use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub const BASE_PREFIX: &str = "base_prefix";
pub const TABLESPACES: &str = "tablespaces";
pub const TABLESPACE_DIR: &str = "pg_tblspc";

/// One tablespace: its key in `tablespaces` (the link's name in pg_tblspc, the OID) and where
/// its directory is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tablespace {
    pub oid: String,
    /// Absolute path of the tablespace directory (`loc`), no trailing '/'.
    pub location: String,
    /// The link, relative to PGDATA (`link`): always `pg_tblspc/<oid>`.
    pub link: String,
}

impl Tablespace {
    pub fn new(oid: &str, location: &str) -> Tablespace {
        Tablespace { oid: oid.to_string(), location: normalize(location), link: format!("{TABLESPACE_DIR}/{oid}") }
    }
}

/// The sentinel's `Spec` (or a restore spec file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TablespaceSpec {
    /// PGDATA of the backed-up cluster (in a restore spec: the restore target, which we ignore:
    /// the target given on the command line is where links are made).
    pub base_prefix: String,
    /// In the order of `tablespaces`.
    pub tablespaces: Vec<Tablespace>,
}

/// WAL-G trims trailing slashes from every path it records.
fn normalize(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() && p.starts_with('/') { "/".to_string() } else { t.to_string() }
}

/// A tablespace OID as PostgreSQL names the link: decimal digits only.
pub fn is_oid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u32>().is_ok()
}

impl TablespaceSpec {
    pub fn new(base_prefix: &str) -> TablespaceSpec {
        TablespaceSpec { base_prefix: normalize(base_prefix), tablespaces: Vec::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.tablespaces.is_empty()
    }

    pub fn get(&self, oid: &str) -> Option<&Tablespace> {
        self.tablespaces.iter().find(|t| t.oid == oid)
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(BASE_PREFIX.into(), self.base_prefix.clone().into());
        m.insert(TABLESPACES.into(), self.tablespaces.iter().map(|t| Value::from(t.oid.clone())).collect());
        for t in &self.tablespaces {
            let mut l = Map::new();
            l.insert("loc".into(), t.location.clone().into());
            l.insert("link".into(), t.link.clone().into());
            m.insert(t.oid.clone(), Value::Object(l));
        }
        Value::Object(m)
    }

    /// Parse a `Spec` read from `what`; `bad` makes the error (Corrupt for a sentinel,
    /// InvalidArgument for a file the user gave). Refuses what a restore could not use safely:
    /// a key that is not an OID, a link other than `pg_tblspc/<oid>`, a relative location.
    pub fn from_json(v: &Value, bad: &dyn Fn(String) -> Error) -> Result<TablespaceSpec> {
        let o = v.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
        let base = o
            .get(BASE_PREFIX)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("no \"{BASE_PREFIX}\" string")))?;
        let mut spec = TablespaceSpec::new(base);
        let names = match o.get(TABLESPACES) {
            None | Some(Value::Null) => return Ok(spec),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(bad(format!("\"{TABLESPACES}\" is not an array"))),
        };
        for n in names {
            let oid = n.as_str().ok_or_else(|| bad(format!("\"{TABLESPACES}\" holds {n}, not a string")))?;
            if !is_oid(oid) {
                return Err(bad(format!("tablespace {oid:?} is not an OID (a pg_tblspc link name)")));
            }
            if spec.get(oid).is_some() {
                return Err(bad(format!("tablespace {oid} is listed twice")));
            }
            let e = o.get(oid).and_then(Value::as_object).ok_or_else(|| bad(format!("no entry for tablespace {oid}")))?;
            let field = |k: &str| e.get(k).and_then(Value::as_str).ok_or_else(|| bad(format!("tablespace {oid} has no \"{k}\" string")));
            let (loc, link) = (field("loc")?, field("link")?);
            if !loc.starts_with('/') {
                return Err(bad(format!("tablespace {oid}'s location {loc:?} is not an absolute path")));
            }
            let t = Tablespace::new(oid, loc);
            if normalize(link) != t.link {
                return Err(bad(format!("tablespace {oid}'s link is {link:?}, not {:?}", t.link)));
            }
            spec.tablespaces.push(t);
        }
        Ok(spec)
    }
}

/// Parse a `tablespace_map`: (oid, path) per line, as PostgreSQL 15's read_tablespace_map does
/// (a backslash makes the next character part of the path; an unescaped \n or \r ends a line).
pub fn parse_tablespace_map(text: &str, what: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut line = String::new();
    let mut escaped = false;
    let mut finish = |line: &mut String| -> Result<()> {
        if line.is_empty() {
            return Ok(());
        }
        let (oid, path) = line
            .split_once(' ')
            .filter(|(o, p)| is_oid(o) && !p.is_empty())
            .ok_or_else(|| Error::corrupt(what, format!("invalid line in tablespace_map: {line:?}")))?;
        out.push((oid.to_string(), path.to_string()));
        line.clear();
        Ok(())
    };
    for ch in text.chars() {
        if escaped {
            line.push(ch);
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else if ch == '\n' || ch == '\r' {
            finish(&mut line)?;
        } else {
            line.push(ch);
        }
    }
    finish(&mut line)?;
    Ok(out)
}

/// The `tablespace_map` text for `entries`, escaped as PostgreSQL 15 writes it.
pub fn render_tablespace_map(entries: &[(String, String)]) -> String {
    let mut s = String::new();
    for (oid, path) in entries {
        s.push_str(oid);
        s.push(' ');
        for ch in path.chars() {
            if ch == '\n' || ch == '\r' || ch == '\\' {
                s.push('\\');
            }
            s.push(ch);
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corrupt(m: String) -> Error {
        Error::corrupt("s", m)
    }

    #[test]
    fn spec_round_trip_and_walg_shape() {
        let mut s = TablespaceSpec::new("/var/lib/pg/data/");
        s.tablespaces.push(Tablespace::new("16400", "/mnt/tbs1/"));
        s.tablespaces.push(Tablespace::new("16401", "/mnt/tbs 2"));
        let v = s.to_json();
        assert_eq!(
            v,
            serde_json::json!({"base_prefix": "/var/lib/pg/data", "tablespaces": ["16400", "16401"],
                "16400": {"loc": "/mnt/tbs1", "link": "pg_tblspc/16400"},
                "16401": {"loc": "/mnt/tbs 2", "link": "pg_tblspc/16401"}})
        );
        assert_eq!(TablespaceSpec::from_json(&v, &corrupt).unwrap(), s);
        // WAL-G's restore spec as its tests write it (with whitespace, any key order).
        let walg: Value = serde_json::from_str(
            r#"{ "base_prefix": "/tmp/pg", "tablespaces": ["16384"],
                 "16384": { "loc": "/tmp/new_spaces/new_space", "link": "pg_tblspc/16384" } }"#,
        )
        .unwrap();
        let p = TablespaceSpec::from_json(&walg, &corrupt).unwrap();
        assert_eq!(p.tablespaces, vec![Tablespace::new("16384", "/tmp/new_spaces/new_space")]);
        // No tablespaces key: an empty spec.
        assert!(TablespaceSpec::from_json(&serde_json::json!({"base_prefix": "/x"}), &corrupt).unwrap().is_empty());
    }

    #[test]
    fn spec_refuses_what_a_restore_cannot_use() {
        for bad in [
            serde_json::json!([]),
            serde_json::json!({"tablespaces": []}),
            serde_json::json!({"base_prefix": "/d", "tablespaces": ["16400"]}),
            serde_json::json!({"base_prefix": "/d", "tablespaces": ["../x"], "../x": {"loc": "/a", "link": "pg_tblspc/../x"}}),
            serde_json::json!({"base_prefix": "/d", "tablespaces": ["16400"], "16400": {"loc": "rel", "link": "pg_tblspc/16400"}}),
            serde_json::json!({"base_prefix": "/d", "tablespaces": ["16400"], "16400": {"loc": "/a", "link": "base/1"}}),
            serde_json::json!({"base_prefix": "/d", "tablespaces": ["16400", "16400"], "16400": {"loc": "/a", "link": "pg_tblspc/16400"}}),
        ] {
            let e = TablespaceSpec::from_json(&bad, &corrupt).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt, "{bad}");
        }
    }

    #[test]
    fn tablespace_map_escapes_like_postgres() {
        let entries = vec![("16400".to_string(), "/mnt/a b".to_string()), ("16401".to_string(), "/mnt/odd\nname\\x".to_string())];
        let text = render_tablespace_map(&entries);
        assert_eq!(text, "16400 /mnt/a b\n16401 /mnt/odd\\\nname\\\\x\n");
        assert_eq!(parse_tablespace_map(&text, "m").unwrap(), entries);
        assert_eq!(parse_tablespace_map("16400 /x\r\n\n", "m").unwrap(), vec![("16400".to_string(), "/x".to_string())]);
        assert!(parse_tablespace_map("", "m").unwrap().is_empty());
        assert_eq!(parse_tablespace_map("abc /x\n", "m").unwrap_err().kind(), crate::error::ErrorKind::Corrupt);
    }
}
