//! One function per command; all the work is in walg_core.
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use walg_core::config::{Config, Settings};
use walg_core::{backup, wal, Error, ErrorKind, Result};

/// WAL-G's precedence: the config file, then the environment on top of it. A file with an
/// unknown key is refused; WAL-G keys walg-ext ignores, and unknown WALG_* variables in the
/// environment, are warned about on stderr.
pub fn load_config(file: Option<&Path>) -> Result<Config> {
    use walg_core::config::registry::{check_keys, Origin};
    let mut settings = match file {
        Some(f) => {
            let s = Settings::from_file(f)?;
            warn(check_keys(&s, Origin::File)?);
            s
        }
        None => Settings::default(),
    };
    let env = Settings::from_env();
    warn(check_keys(&env, Origin::Env)?);
    settings.merge(&env);
    Config::from_settings(&settings)
}

fn warn(warnings: Vec<String>) {
    for w in warnings {
        eprintln!("walg-ext: warning: {w}");
    }
}

pub fn backup_fetch(config: Option<&Path>, target: &Path, name: &str, ts: &backup::tablespaces::TablespaceOptions) -> Result<()> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let name = backup::fetch::resolve_backup_name(storage.as_ref(), name)?;
    eprintln!("walg-ext: restoring {name} from {} into {}", storage.describe(), target.display());
    let log = |line: &str| eprintln!("walg-ext: {line}");
    // fetch logs the closing summary itself.
    backup::fetch::fetch_with(&cfg, &storage, &name, target, ts, &log)?;
    Ok(())
}

pub fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        println!("{}", line.join(" ").trim_end());
    }
}

/// restore_command semantics (exit.rs): 0 fetched, 1 only when storage was reached and said
/// the file is not there, 126 anything else (after retries), so that PostgreSQL stops recovery
/// instead of ending it early on a missing mount, a typo or a storage hiccup.
///
/// A segment already prefetched (wal/prefetch.rs) is served from disk after the same checks;
/// anything wrong with the prefetch only means a direct fetch. After a segment is in place, a
/// detached `walg-ext wal-prefetch` downloads the next ones (see `spawn_prefetcher`).
pub fn wal_fetch(config: Option<&Path>, file: &str, dest: &Path) -> ExitCode {
    const ATTEMPTS: u32 = 3;
    let prefetching = wal::prefetch::is_segment_name(file);
    if prefetching {
        if let Ok(cfg) = load_config(config) {
            let dirs = wal::prefetch::Dirs::new(cfg.prefetch_dir.as_deref(), dest);
            match wal::prefetch::take(&dirs, file, dest, &cfg.describe_storage()) {
                Ok(()) => {
                    eprintln!("walg-ext: wal-fetch {file}: served from the prefetch directory {}", dirs.ready.display());
                    spawn_prefetcher(config, &cfg, file, dest);
                    return ExitCode::SUCCESS;
                }
                Err(wal::prefetch::NotServed::Rejected(why)) => {
                    eprintln!("walg-ext: wal-fetch {file}: prefetched copy rejected ({why}); fetching from storage")
                }
                Err(_) => {}
            }
        }
    }
    let mut last: Option<Error> = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500 << attempt));
        }
        let r = load_config(config).and_then(|cfg| {
            let storage = cfg.open_storage()?;
            wal::fetch(&cfg, storage.as_ref(), file, dest).map(|found| (found, cfg))
        });
        match r {
            Ok((true, cfg)) => {
                if prefetching {
                    spawn_prefetcher(config, &cfg, file, dest);
                }
                return ExitCode::SUCCESS;
            }
            Ok((false, _)) => return ExitCode::from(crate::exit::NOT_IN_STORAGE),
            // Storage or the local disk may come back; a bad configuration, a damaged object
            // or a conflict will not get better by retrying.
            Err(e) if matches!(e.kind(), ErrorKind::Unreachable | ErrorKind::LocalIo) => last = Some(e),
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    if let Some(e) = last {
        eprintln!("walg-ext: wal-fetch {file}: {e}");
    }
    ExitCode::from(crate::exit::WAL_FETCH_FAILED)
}

/// Start `walg-ext wal-prefetch FILE DIR` in the background and return at once, as WAL-G does
/// (a child process rather than a thread: restore_command's process must exit for recovery to
/// go on). The child stays in restore_command's process group, so a server shutdown (which
/// signals the startup process's group) ends it too; it downloads at most
/// WALG_DOWNLOAD_CONCURRENCY segments and exits, so it never outlives the recovery step that
/// started it by more than those downloads. Its output goes nowhere: a failed prefetch only
/// means the next wal-fetch downloads the segment itself and reports any problem then.
fn spawn_prefetcher(config: Option<&Path>, cfg: &walg_core::Config, file: &str, dest: &Path) {
    if cfg.download_concurrency < 2 {
        return;
    }
    // The segment size from the segment just put in place (PostgreSQL may remove it soon).
    let Some(seg_size) = wal::prefetch::segment_size_of(dest) else { return };
    let Ok(exe) = std::env::current_exe() else { return };
    let location = match &cfg.prefetch_dir {
        Some(d) => d.clone(),
        None => dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf(),
    };
    let mut cmd = std::process::Command::new(exe);
    if let Some(c) = config {
        cmd.arg("--config").arg(std::fs::canonicalize(c).unwrap_or_else(|_| c.to_path_buf()));
    }
    cmd.arg("--wal-segment-size")
        .arg(seg_size.to_string())
        .arg("wal-prefetch")
        .arg(file)
        .arg(&location)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Not waited for: the child is re-parented when this process exits. Its segments are
    // claimed for it now, before PostgreSQL asks for the next one.
    if let Ok(child) = cmd.spawn() {
        let dirs = wal::prefetch::Dirs::at(&location);
        let names = wal::prefetch::next_segments(file, seg_size, cfg.download_concurrency);
        wal::prefetch::claim_for(&dirs, &names, child.id());
    }
}

/// The hidden `wal-prefetch FILE LOCATION`: download the segments after FILE into
/// LOCATION/.wal-g/prefetch (wal/prefetch.rs). Failures are only logged (to nowhere when
/// started by wal-fetch): the real fetch does its own.
pub fn wal_prefetch(config: Option<&Path>, file: &str, location: &Path, seg_size: u64) -> Result<()> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let dirs = wal::prefetch::Dirs::at(location);
    let log = |l: &str| eprintln!("walg-ext: wal-prefetch: {l}");
    wal::prefetch::run(&cfg.pipeline(), storage.as_ref(), &dirs, file, seg_size, cfg.download_concurrency, &log);
    Ok(())
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
        wal::PushOutcome::AlreadyArchived { key } => {
            eprintln!("walg-ext: {file} already archived as {key} with identical content")
        }
        wal::PushOutcome::Overwritten { key, bytes, previous } => eprintln!(
            "walg-ext: WARNING: {file} was already archived with different content as {previous}; \
             replaced it with {key} ({bytes} bytes; .partial files are never read by recovery)"
        ),
    }
    Ok(())
}
