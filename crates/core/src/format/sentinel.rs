//! JSON documents of a backup: the sentinel (commit marker), metadata.json and
//! files_metadata.json. Keys and shapes follow WAL-G; unknown keys are ignored on read.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::integrity::ObjectRecord;

/// WAL-G writes this date format string into every sentinel and metadata.json.
pub const DATE_FMT: &str = "%Y-%m-%dT%H:%M:%S.%fZ";

/// Times as RFC 3339 UTC with the fraction WAL-G (Go) writes: nanoseconds, trailing zeros cut.
pub mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| serde::de::Error::custom(format!("bad time {s:?}: {e}")))
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// `<backup>_backup_stop_sentinel.json`, version 2. The four Delta* fields are all set or all None.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Sentinel {
    /// Start LSN.
    #[serde(rename = "LSN")]
    pub lsn: u64,
    #[serde(rename = "DeltaLSN", skip_serializing_if = "Option::is_none")]
    pub delta_lsn: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_full_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_count: Option<i64>,
    pub pg_version: i32,
    #[serde(rename = "FinishLSN")]
    pub finish_lsn: u64,
    pub system_identifier: Option<u64>,
    pub uncompressed_size: i64,
    pub compressed_size: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub data_catalog_size: i64,
    /// Tablespace spec (`base_prefix`, `tablespaces`, per-oid `loc`/`link`), kept as JSON.
    /// WAL-E wrote it as "spec"; WAL-G reads both.
    #[serde(skip_serializing_if = "Option::is_none", alias = "spec")]
    pub spec: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "is_false")]
    pub files_metadata_disabled: bool,
    /// Always null for PostgreSQL (OrioleDB only), but always present.
    pub chkp_num: Option<serde_json::Value>,
    pub version: i32,
    #[serde(with = "rfc3339")]
    pub start_time: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub finish_time: DateTime<Utc>,
    pub date_fmt: String,
    pub hostname: String,
    pub data_dir: String,
    pub is_permanent: bool,
    /// Ours (WAL-G ignores it): size and XXH3-128 of `files_metadata.json` as stored, so a restore
    /// can tell it is the file this backup wrote, whole.
    #[serde(rename = "WalgExtFilesMetadata", skip_serializing_if = "Option::is_none")]
    pub walg_ext_files_metadata: Option<ObjectRecord>,
    /// Ours (WAL-G ignores it): pages with a wrong checksum this backup found (the sum of the
    /// files' `CorruptBlocks` counts); absent when page checksums were not verified.
    #[serde(rename = "WalgExtCorruptPages", skip_serializing_if = "Option::is_none")]
    pub walg_ext_corrupt_pages: Option<u64>,
    /// Ours (WAL-G ignores it): tablespace OID -> name at backup time, so a restore can take
    /// `--tablespace NAME=DIR`.
    #[serde(rename = "WalgExtTablespaceNames", skip_serializing_if = "Option::is_none")]
    pub walg_ext_tablespace_names: Option<BTreeMap<String, String>>,
    /// Ours (WAL-G ignores it), deltas only: how the pages were chosen, `wal-maps` (from the WAL
    /// block maps) or `full-scan` (every page read, WAL-G's way).
    #[serde(rename = "WalgExtDeltaPages", skip_serializing_if = "Option::is_none")]
    pub walg_ext_delta_pages: Option<String>,
}

/// Ours (WAL-G ignores it): XXH3-128 of the sentinel's own JSON without this key, written by
/// `Sentinel::to_json` and checked by `Sentinel::verify_self_sum`.
pub const SENTINEL_SUM_KEY: &str = "WalgExtSentinelXxh3";

/// The canonical bytes the sentinel's self-sum covers: the JSON object without the sum key,
/// serialized again by serde_json (deterministic for a given parsed value).
fn canonical_sum(v: &serde_json::Value) -> String {
    crate::format::integrity::hash_hex(&serde_json::to_vec(v).expect("json value serializes"))
}

impl Sentinel {
    pub fn is_delta(&self) -> bool {
        self.delta_from.is_some()
    }

    /// The stored form, with our self-sum (`SENTINEL_SUM_KEY`) as the last key.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_value(self).expect("sentinel serializes");
        let sum = canonical_sum(&v);
        v.as_object_mut().expect("sentinel is an object").insert(SENTINEL_SUM_KEY.into(), sum.into());
        serde_json::to_vec(&v).expect("sentinel serializes")
    }

    /// Check the self-sum of a stored sentinel `data` (key `what`): Ok(true) when it matches,
    /// Ok(false) when there is none (written by WAL-G or an older walg_ext), a Corrupt error
    /// naming `what` when the content was changed after it was written.
    pub fn verify_self_sum(data: &[u8], what: &str) -> crate::Result<bool> {
        let mut v: serde_json::Value = serde_json::from_slice(data)
            .map_err(|e| crate::Error::corrupt(what, format!("not valid JSON: {e}")))?;
        let Some(obj) = v.as_object_mut() else {
            return Err(crate::Error::corrupt(what, "not a JSON object"));
        };
        let Some(stored) = obj.remove(SENTINEL_SUM_KEY) else { return Ok(false) };
        let stored = stored.as_str().unwrap_or_default().to_string();
        let got = canonical_sum(&v);
        if got != stored {
            return Err(crate::Error::corrupt(
                what,
                format!("content does not match its {SENTINEL_SUM_KEY} (changed or damaged after it was written)"),
            ));
        }
        Ok(true)
    }

    /// Parse, naming `what` (usually the object key) in the error.
    pub fn from_json(data: &[u8], what: &str) -> crate::Result<Sentinel> {
        let s: Sentinel = serde_json::from_slice(data)
            .map_err(|e| crate::Error::Format(format!("bad sentinel {what}: {e}")))?;
        let set = [s.delta_lsn.is_some(), s.delta_from.is_some(), s.delta_full_name.is_some(), s.delta_count.is_some()];
        if set.iter().any(|&b| b) && !set.iter().all(|&b| b) {
            return Err(crate::Error::Format(format!(
                "bad sentinel {what}: DeltaLSN, DeltaFrom, DeltaFullName and DeltaCount must be set together"
            )));
        }
        Ok(s)
    }
}

/// `metadata.json`: the authoritative permanence flag.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupMetadata {
    #[serde(with = "rfc3339")]
    pub start_time: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub finish_time: DateTime<Utc>,
    pub date_fmt: String,
    pub hostname: String,
    pub data_dir: String,
    pub pg_version: i32,
    pub start_lsn: u64,
    pub finish_lsn: u64,
    pub is_permanent: bool,
    pub system_identifier: Option<u64>,
    pub uncompressed_size: i64,
    pub compressed_size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<serde_json::Value>,
}

impl BackupMetadata {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("metadata serializes")
    }

    pub fn from_json(data: &[u8], what: &str) -> crate::Result<BackupMetadata> {
        serde_json::from_slice(data).map_err(|e| crate::Error::Format(format!("bad metadata {what}: {e}")))
    }
}

/// Page checksum failures found while reading a file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CorruptBlocks {
    pub corrupt_blocks_count: u64,
    pub some_corrupt_blocks: Vec<u32>,
}

/// One file of `files_metadata.json`'s `Files` map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FileDescription {
    #[serde(default)]
    pub is_incremented: bool,
    #[serde(default)]
    pub is_skipped: bool,
    #[serde(rename = "MTime", with = "rfc3339")]
    pub mtime: DateTime<Utc>,
    #[serde(default)]
    pub updates_count: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub corrupt_blocks: Option<CorruptBlocks>,
    /// Ours (WAL-G ignores it): the file's size as stored in the tar (bytes).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<u64>,
}

/// `files_metadata.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FilesMetadata {
    /// Tar entry name -> description (regular files only; never /global/pg_control).
    pub files: BTreeMap<String, FileDescription>,
    /// Tar part name (e.g. "part_001.tar.lz4") -> entry names in it.
    pub tar_file_sets: BTreeMap<String, Vec<String>>,
    /// WAL-G's database names, OIDs and tables (read for partial restore; we write it empty, see
    /// `walg_ext_databases`).
    pub databases_by_names: serde_json::Map<String, serde_json::Value>,
    /// Ours: database name -> OID, for partial restore (backup/partial.rs). Not WAL-G's
    /// `DatabasesByNames`: that needs each database's tables, which a background worker
    /// connected to one database cannot read, and WAL-G's partial restore of a backup whose
    /// `DatabasesByNames` lists no tables would restore no table at all.
    #[serde(rename = "WalgExtDatabases", skip_serializing_if = "BTreeMap::is_empty")]
    pub walg_ext_databases: BTreeMap<String, u32>,
    /// Ours (WAL-G ignores it): every tar object of `TarFileSets` (data parts, pg_control.tar,
    /// backup_label.tar) -> its size and XXH3-128 as stored (after compression and encryption).
    #[serde(rename = "WalgExtParts", skip_serializing_if = "BTreeMap::is_empty")]
    pub walg_ext_parts: BTreeMap<String, ObjectRecord>,
}

impl FilesMetadata {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("files metadata serializes")
    }

    pub fn from_json(data: &[u8], what: &str) -> crate::Result<FilesMetadata> {
        serde_json::from_slice(data)
            .map_err(|e| crate::Error::Format(format!("bad files metadata {what}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A sentinel as WAL-G writes it for a full backup (plus a key from the future).
    const WALG_SENTINEL: &str = r#"{"LSN":23855144,"PgVersion":150004,"FinishLSN":23855440,
      "SystemIdentifier":7339209394853810000,"UncompressedSize":23402544,"CompressedSize":4136418,
      "DataCatalogSize":23369772,"FilesMetadataDisabled":false,"ChkpNum":null,"Version":2,
      "StartTime":"2025-02-21T10:20:11.123456Z","FinishTime":"2025-02-21T10:20:13.5Z",
      "DateFmt":"%Y-%m-%dT%H:%M:%S.%fZ","Hostname":"db1","DataDir":"/var/lib/postgresql/15/main",
      "IsPermanent":false,"SomeFutureKey":{"x":1}}"#;

    #[test]
    fn parses_walg_sentinel_and_round_trips() {
        let s = Sentinel::from_json(WALG_SENTINEL.as_bytes(), "example").unwrap();
        assert_eq!(s.lsn, 23855144);
        assert_eq!(s.finish_lsn, 23855440);
        assert_eq!(s.pg_version, 150004);
        assert_eq!(s.system_identifier, Some(7339209394853810000));
        assert_eq!(s.data_catalog_size, 23369772);
        assert_eq!(s.version, 2);
        assert!(!s.is_delta());
        assert_eq!(s.start_time, Utc.with_ymd_and_hms(2025, 2, 21, 10, 20, 11).unwrap() + chrono::Duration::microseconds(123456));
        assert_eq!(s.hostname, "db1");

        let json: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        let obj = json.as_object().unwrap();
        for key in ["DeltaLSN", "DeltaFrom", "DeltaFullName", "DeltaCount", "Spec", "UserData", "FilesMetadataDisabled", "SomeFutureKey"] {
            assert!(!obj.contains_key(key), "{key} written for a full backup");
        }
        for key in ["LSN", "PgVersion", "FinishLSN", "SystemIdentifier", "UncompressedSize", "CompressedSize",
                    "DataCatalogSize", "ChkpNum", "Version", "StartTime", "FinishTime", "DateFmt", "Hostname",
                    "DataDir", "IsPermanent"] {
            assert!(obj.contains_key(key), "{key} missing");
        }
        assert!(obj["ChkpNum"].is_null());
        assert!(obj["LSN"].is_u64());
        assert_eq!(obj["StartTime"], "2025-02-21T10:20:11.123456Z");
        assert_eq!(obj["FinishTime"], "2025-02-21T10:20:13.500Z");
        assert_eq!(Sentinel::from_json(&s.to_json(), "x").unwrap(), s);
    }

    #[test]
    fn delta_sentinel_keys_all_or_nothing() {
        let mut s = Sentinel::from_json(WALG_SENTINEL.as_bytes(), "example").unwrap();
        s.delta_lsn = Some(100);
        s.delta_from = Some("base_000000010000000000000002".into());
        s.delta_full_name = Some("base_000000010000000000000002".into());
        s.delta_count = Some(1);
        s.user_data = Some(serde_json::json!({"k": "v"}));
        let back = Sentinel::from_json(&s.to_json(), "x").unwrap();
        assert_eq!(back, s);
        assert!(back.is_delta());
        let partial = r#"{"LSN":1,"DeltaFrom":"base_000000010000000000000002","StartTime":"2025-01-01T00:00:00Z","FinishTime":"2025-01-01T00:00:00Z"}"#;
        assert!(matches!(Sentinel::from_json(partial.as_bytes(), "p"), Err(crate::Error::Format(_))));
        assert!(Sentinel::from_json(b"{not json", "broken").unwrap_err().to_string().contains("broken"));
    }

    #[test]
    fn metadata_round_trip_and_keys() {
        let m = BackupMetadata {
            start_time: t("2025-02-21T10:20:11.5Z"),
            finish_time: t("2025-02-21T10:21:11Z"),
            date_fmt: DATE_FMT.into(),
            hostname: "h".into(),
            data_dir: "/pg".into(),
            pg_version: 150004,
            start_lsn: 1,
            finish_lsn: 2,
            is_permanent: true,
            system_identifier: None,
            uncompressed_size: 10,
            compressed_size: 5,
            user_data: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        assert!(v["system_identifier"].is_null());
        assert_eq!(v["is_permanent"], true);
        assert_eq!(v["start_lsn"], 1);
        assert!(v.get("user_data").is_none());
        assert_eq!(BackupMetadata::from_json(&m.to_json(), "m").unwrap(), m);
        let walg = br#"{"start_time":"2025-02-21T10:20:11.5Z","finish_time":"2025-02-21T10:20:13Z","date_fmt":"%Y-%m-%dT%H:%M:%S.%fZ","hostname":"h","data_dir":"/d","pg_version":150004,"start_lsn":5,"finish_lsn":6,"is_permanent":false,"system_identifier":42,"uncompressed_size":1,"compressed_size":1,"user_data":null,"extra":1}"#;
        let m2 = BackupMetadata::from_json(walg, "walg").unwrap();
        assert_eq!(m2.system_identifier, Some(42));
        assert_eq!(m2.start_lsn, 5);
    }

    #[test]
    fn files_metadata_round_trip() {
        let text = r#"{"Files": {"/base/5/1259": {"IsIncremented": true, "IsSkipped": false,
                      "MTime": "2025-02-21T10:20:11.5Z", "UpdatesCount": 0}},
                      "TarFileSets": {"part_001.tar.lz4": ["/PG_VERSION", "/base/5/1259"],
                      "backup_label.tar.lz4": ["tablespace_map", "backup_label"]},
                      "DatabasesByNames": {}}"#;
        let fm = FilesMetadata::from_json(text.as_bytes(), "fm").unwrap();
        let d = &fm.files["/base/5/1259"];
        assert!(d.is_incremented && !d.is_skipped);
        assert_eq!(d.mtime, t("2025-02-21T10:20:11.5Z"));
        assert_eq!(fm.tar_file_sets["part_001.tar.lz4"], vec!["/PG_VERSION", "/base/5/1259"]);
        let back = FilesMetadata::from_json(&fm.to_json(), "x").unwrap();
        assert_eq!(back, fm);
        let v: serde_json::Value = serde_json::from_slice(&fm.to_json()).unwrap();
        assert_eq!(v["Files"]["/base/5/1259"]["MTime"], "2025-02-21T10:20:11.500Z");
        assert!(v["Files"]["/base/5/1259"].get("CorruptBlocks").is_none());
        assert!(v["DatabasesByNames"].is_object());
    }
}
