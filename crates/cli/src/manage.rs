//! Operator commands with WAL-G's names and output: backup-list, backup-mark, wal-show,
//! wal-verify, delete (storage tools: st.rs). Same core code as the SQL functions of the extension.
use std::path::Path;

use walg_core::catalog::delete::{self, DeleteRequest};
use walg_core::catalog::wal_verify::{self, Check, CurrentSegment, IntegrityOptions};
use walg_core::catalog::{self, wal_show};
use walg_core::format::names::{lsn_to_string, parse_wal_file_name_with};
use walg_core::{Error, Result};

use crate::commands::{load_config, print_table, rfc3339};

pub fn backup_list(config: Option<&Path>, json: bool, detail: bool) -> Result<()> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let backups = catalog::list_backups(storage.as_ref())?;
    if json {
        let rows: Vec<serde_json::Value> = backups
            .iter()
            .map(|b| {
                let mut v = b.detail_json();
                if !detail {
                    let keep = ["backup_name", "time", "wal_file_name", "storage_name", "last_drill"];
                    v.as_object_mut().unwrap().retain(|k, _| keep.contains(&k.as_str()));
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("JSON of plain values"));
        return Ok(());
    }
    if backups.is_empty() {
        eprintln!("walg-ext: no backups found in {}", storage.describe());
        return Ok(());
    }
    let mut header = vec!["backup_name", "modified", "wal_file_name", "storage_name"];
    if detail {
        header.extend([
            "start_time", "finish_time", "hostname", "data_dir", "pg_version", "start_lsn", "finish_lsn",
            "is_permanent", "is_full", "delta_from", "delta_full_name", "delta_count", "delta_pages", "user_data",
            "corrupt_pages",
        ]);
    }
    header.push("last_drill");
    let mut table = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for b in &backups {
        let s = &b.sentinel;
        let mut row = vec![b.name.clone(), rfc3339(b.modified), b.wal_file_name.clone(), "default".into()];
        if detail {
            row.extend([
                rfc3339(s.start_time.into()),
                rfc3339(s.finish_time.into()),
                s.hostname.clone(),
                s.data_dir.clone(),
                s.pg_version.to_string(),
                lsn_to_string(s.lsn),
                lsn_to_string(s.finish_lsn),
                b.is_permanent.to_string(),
                b.is_full().to_string(),
                s.delta_from.clone().unwrap_or_default(),
                s.delta_full_name.clone().unwrap_or_default(),
                s.delta_count.map(|c| c.to_string()).unwrap_or_default(),
                s.walg_ext_delta_pages.clone().unwrap_or_default(),
                b.user_data().map(|u| u.to_string()).unwrap_or_default(),
                s.walg_ext_corrupt_pages.map(|n| n.to_string()).unwrap_or_default(),
            ]);
        }
        row.push(b.drill.as_ref().map(|d| d.summary()).unwrap_or_else(|| "-".into()));
        table.push(row);
    }
    print_table(&table);
    Ok(())
}

pub fn backup_mark(config: Option<&Path>, name: &str, impermanent: bool) -> Result<()> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let changed = catalog::mark::mark(storage.as_ref(), name, !impermanent)?;
    let what = if impermanent { "not permanent" } else { "permanent" };
    if changed.is_empty() {
        eprintln!("walg-ext: {name} was already {what}");
    }
    for n in changed {
        println!("{n} marked {what}");
    }
    Ok(())
}

/// `copy --from FILE --to FILE [--all | BACKUP...] [--with-history]` (catalog/copy.rs).
pub fn copy(from: &Path, to: &Path, all: bool, backups: Vec<String>, with_history: bool, seg: u64) -> Result<()> {
    use walg_core::catalog::copy::{CopyRequest, Selection};
    let (src, dst) = (load_config(Some(from))?, load_config(Some(to))?);
    let (src_storage, dst_storage) = (src.open_storage()?, dst.open_storage()?);
    let selection = if all { Selection::All } else { Selection::Names(backups) };
    let req = CopyRequest { selection, with_history, concurrency: src.download_concurrency.max(dst.upload_concurrency) };
    let log = |l: &str| eprintln!("walg-ext: {l}");
    let report = catalog::copy::copy(src_storage.as_ref(), dst_storage.as_ref(), &req, seg, &log)?;
    for b in report.backups {
        println!("{b}");
    }
    Ok(())
}

pub fn wal_show(config: Option<&Path>, json: bool, seg: u64) -> Result<()> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let backups = catalog::list_backups(storage.as_ref())?;
    let rows = wal_show::wal_show(storage.as_ref(), &cfg.pipeline(), &backups, seg)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("plain values"));
        return Ok(());
    }
    let mut table = vec![[
        "TLI", "PARENT TLI", "SWITCHPOINT LSN", "START SEGMENT", "END SEGMENT", "SEGMENT RANGE", "SEGMENTS COUNT",
        "STATUS", "BACKUPS COUNT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>()];
    for t in &rows {
        table.push(vec![
            t.id.to_string(),
            t.parent_id.to_string(),
            t.switch_point(),
            t.start_segment.clone(),
            t.end_segment.clone(),
            t.segment_range_size.to_string(),
            t.segments_count.to_string(),
            t.status.to_string(),
            t.backups.len().to_string(),
        ]);
    }
    print_table(&table);
    for t in rows.iter().filter(|t| !t.missing_segments.is_empty()) {
        println!("timeline {} missing segments: {}", t.id, t.missing_segments.join(", "));
    }
    Ok(())
}

pub fn wal_verify(config: Option<&Path>, checks: &[String], json: bool, current: Option<&str>, seg: u64) -> Result<bool> {
    let checks: Vec<Check> = checks.iter().map(|c| Check::parse(c)).collect::<Result<_>>()?;
    if checks.is_empty() {
        return Err(Error::InvalidArgument("no check given: use integrity and/or timeline".into()));
    }
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let current = match current {
        Some(name) => {
            let (timeline, segno) = parse_wal_file_name_with(name, seg)
                .ok_or_else(|| Error::InvalidArgument(format!("{name:?} is not a WAL segment name")))?;
            CurrentSegment { timeline, lsn: segno * seg }
        }
        None => {
            let c = wal_verify::current_from_storage(storage.as_ref(), seg)?
                .ok_or_else(|| Error::Refused("no WAL in storage: give --current-segment".into()))?;
            eprintln!(
                "walg-ext: no --current-segment given: assuming the segment after the newest in storage ({})",
                walg_core::format::names::wal_file_name(c.timeline, c.lsn, seg)
            );
            c
        }
    };
    let mut out = serde_json::Map::new();
    let mut all_ok = true;
    for check in checks {
        match check {
            Check::Integrity => {
                let backups = catalog::list_backups(storage.as_ref())?;
                let opt = IntegrityOptions { wal_segment_size: seg, max_delayed: 0, uploading: cfg.upload_concurrency };
                let r = wal_verify::integrity(storage.as_ref(), &cfg.pipeline(), &backups, current, opt)?;
                all_ok &= r.status == wal_verify::CheckStatus::Ok;
                if json {
                    out.insert("integrity".into(), serde_json::to_value(&r).expect("plain"));
                    continue;
                }
                println!("[wal-verify] integrity check status: {}", r.status.as_str());
                println!("[wal-verify] integrity check details:");
                let mut table = vec![["TLI", "START", "END", "SEGMENTS COUNT", "STATUS"].iter().map(|s| s.to_string()).collect::<Vec<_>>()];
                for d in &r.details {
                    table.push(vec![
                        d.timeline_id.to_string(),
                        d.start_segment.clone(),
                        d.end_segment.clone(),
                        d.segments_count.to_string(),
                        d.status.as_str().to_string(),
                    ]);
                }
                print_table(&table);
            }
            Check::Timeline => {
                let r = wal_verify::timeline(storage.as_ref(), current.timeline)?;
                all_ok &= r.status == wal_verify::CheckStatus::Ok;
                if json {
                    out.insert("timeline".into(), serde_json::to_value(&r).expect("plain"));
                    continue;
                }
                println!("[wal-verify] timeline check status: {}", r.status.as_str());
                println!("[wal-verify] timeline check details:");
                match r.highest_storage_timeline_id {
                    Some(h) => println!("Highest timeline found in storage: {h}"),
                    None => println!("Highest timeline found in storage: none"),
                }
                println!("Current cluster timeline: {}", r.current_timeline_id);
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out).expect("plain"));
    }
    Ok(all_ok)
}

pub fn delete(config: Option<&Path>, args: &[String], after: Option<&str>, confirm: bool, json: bool, seg: u64) -> Result<()> {
    // Bad words are reported before storage is even opened.
    let req = DeleteRequest::parse_args(args, after, chrono::Utc::now())?;
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let plan = delete::run(storage.as_ref(), &req, seg, confirm)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan).expect("plain"));
        return Ok(());
    }
    let verb = if confirm { "deleted" } else { "will be deleted" };
    for o in &plan.objects {
        println!("{verb}: {}", o.display_key());
    }
    for n in &plan.notes {
        eprintln!("walg-ext: {n}");
    }
    for m in &plan.in_progress {
        eprintln!("walg-ext: backup in progress, its objects and the WAL from its start are kept: {m}");
    }
    if plan.objects.is_empty() {
        eprintln!("walg-ext: nothing to delete");
    } else if !confirm {
        eprintln!("walg-ext: dry run, nothing was deleted ({} objects); add --confirm to delete", plan.objects.len());
    } else {
        eprintln!("walg-ext: deleted {} objects ({} backups)", plan.objects.len(), plan.backups.len());
    }
    Ok(())
}
