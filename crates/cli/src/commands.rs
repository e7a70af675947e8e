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

pub fn backup_fetch(config: Option<&Path>, target: &Path, name: &str) -> Result<()> {
    let cfg = load_config(config)?;
    let storage = cfg.open_storage()?;
    let name = backup::fetch::resolve_backup_name(storage.as_ref(), name)?;
    eprintln!("walg-ext: restoring {name} from {} into {}", storage.describe(), target.display());
    let log = |line: &str| eprintln!("walg-ext: {line}");
    // fetch logs the closing summary itself.
    backup::fetch::fetch(&cfg, &storage, &name, target, &log)?;
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
            Ok(false) => return ExitCode::from(crate::exit::NOT_IN_STORAGE),
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
