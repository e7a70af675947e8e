//! One function per command; all the work is in walg_core.
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use walg_core::config::{Config, Settings};
use walg_core::format::names::lsn_to_string;
use walg_core::{backup, catalog, wal, Error, Result};

/// WAL-G's precedence: the config file, then the environment on top of it.
pub fn load_config(file: Option<&Path>) -> Result<Config> {
    let mut settings = match file {
        Some(f) => Settings::from_file(f)?,
        None => Settings::default(),
    };
    settings.merge(&Settings::from_env());
    Config::from_settings(&settings)
}

pub fn backup_fetch(config: Option<&Path>, target: &Path, name: &str) -> Result<()> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let name = backup::fetch::resolve_backup_name(storage.as_ref(), name)?;
    eprintln!("walg-ext: restoring {name} from {} into {}", storage.describe(), target.display());
    let log = |line: &str| eprintln!("walg-ext: {line}");
    let s = backup::fetch::fetch(&cfg, &storage, &name, target, &log)?;
    eprintln!("walg-ext: restored {} ({} files, {} bytes)", s.backup, s.files, s.bytes);
    Ok(())
}

pub fn backup_list(config: Option<&Path>, json: bool, detail: bool) -> Result<()> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let backups = catalog::list_backups(storage.as_ref())?;
    if json {
        let rows: Vec<serde_json::Value> = backups.iter().map(backup_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("JSON of plain values"));
        return Ok(());
    }
    if backups.is_empty() {
        eprintln!("walg-ext: no backups found in {}", storage.describe());
        return Ok(());
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["backup_name", "modified", "wal_file_name", "storage_name"];
    if detail {
        header.extend([
            "start_time", "finish_time", "hostname", "data_dir", "pg_version", "start_lsn", "finish_lsn",
            "is_permanent",
        ]);
    }
    table.push(header.iter().map(|s| s.to_string()).collect());
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
            ]);
        }
        table.push(row);
    }
    print_table(&table);
    Ok(())
}

fn backup_json(b: &catalog::BackupInfo) -> serde_json::Value {
    let s = &b.sentinel;
    serde_json::json!({
        "backup_name": b.name,
        "time": rfc3339(b.modified),
        "wal_file_name": b.wal_file_name,
        "storage_name": "default",
        "start_time": rfc3339(s.start_time.into()),
        "finish_time": rfc3339(s.finish_time.into()),
        "hostname": s.hostname,
        "data_dir": s.data_dir,
        "pg_version": s.pg_version,
        "start_lsn": s.lsn,
        "finish_lsn": s.finish_lsn,
        "is_permanent": b.is_permanent,
        "system_identifier": s.system_identifier,
        "uncompressed_size": s.uncompressed_size,
        "compressed_size": s.compressed_size,
    })
}

fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        println!("{}", line.join(" ").trim_end());
    }
}

/// restore_command semantics: 0 fetched, 1 truly absent, 126 anything else (after retries),
/// so that PostgreSQL stops recovery instead of ending it early on a storage hiccup.
pub fn wal_fetch(config: Option<&Path>, file: &str, dest: &Path) -> ExitCode {
    const ATTEMPTS: u32 = 3;
    let mut last: Option<Error> = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500 << attempt));
        }
        let r = load_config(config).and_then(|cfg| {
            let storage = cfg.open_storage()?;
            wal::fetch(&cfg, storage.as_ref(), file, dest)
        });
        match r {
            Ok(true) => return ExitCode::SUCCESS,
            Ok(false) => return ExitCode::from(1),
            // A bad configuration, key or object will not get better by retrying.
            Err(e @ (Error::Config(_) | Error::Codec { .. })) => {
                last = Some(e);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        eprintln!("walg-ext: wal-fetch {file}: {e}");
    }
    ExitCode::from(126)
}

pub fn wal_push(config: Option<&Path>, path: &Path) -> Result<()> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| Error::Format(format!("{}: not a WAL file path", path.display())))?;
    match wal::push(&cfg, storage.as_ref(), file, path)? {
        wal::PushOutcome::Uploaded { key, bytes } => eprintln!("walg-ext: archived {file} as {key} ({bytes} bytes)"),
        wal::PushOutcome::UploadedAhead => eprintln!("walg-ext: {file} already uploaded"),
        wal::PushOutcome::AlreadyArchived { key } => {
            eprintln!("walg-ext: {file} already archived as {key} with identical content")
        }
    }
    Ok(())
}
