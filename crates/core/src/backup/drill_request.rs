//! A restore drill asked of the server (`walg_restore_drill()`, `walg.drill_schedule`): what is
//! checked before it starts, how the one drill implementation (`walg-ext restore-drill`, see
//! `drill.rs` and the CLI) is invoked, and how its report becomes the SQL function's outcome.
//!
//! Invariants:
//! - Everything about the machine (the PostgreSQL binaries of the backup's major version, amcheck,
//!   the walg-ext binary, free space for one copy, a secret held only in the server's
//!   environment) is checked before anything starts; a refusal records nothing in storage, since
//!   a drill report is a statement about the backup, never about the machine.
//! - Secrets never go on a command line: the child gets `--config <walg.config_file>` (a path)
//!   and the walg.* settings that are set, as their WAL-G variables (settings are never secrets).
//!   The child's environment loses every other walg setting (`config::is_env_setting`: the
//!   WALG_/WALE_/AWS_ variables and WAL-G's Azure keys by name), so it sees exactly the
//!   server's configuration, in the server's order (file, then settings).
//! - A drill that ran (pass or fail) is an outcome, not an error; only a drill that could not run
//!   is an error, with the kind its exit code stands for.
use std::path::{Path, PathBuf};

use serde_json::json;

use super::drill::DrillReport;
use crate::backup::recovery::is_secret_setting;
use crate::config::is_env_setting;
use crate::catalog::{self, BackupInfo};
use crate::config::Settings;
use crate::error::{Error, ErrorKind, Result};

/// Room beyond the copy itself: WAL replayed (fetched and prefetched into its pg_wal), the
/// server's log and temporary files.
pub const SPACE_MARGIN_BYTES: u64 = 256 << 20;

/// Bytes the scratch directory needs for a drill of `name`: the uncompressed sizes of its chain
/// (a delta restores its full backup and every delta up to it: the sum bounds the copy from
/// above), plus a tenth, plus [`SPACE_MARGIN_BYTES`].
pub fn space_needed(all: &[BackupInfo], name: &str) -> Result<u64> {
    catalog::list::find(all, name)?;
    let data: u64 = catalog::list::chain(all, name).iter().map(|b| b.sentinel.uncompressed_size.max(0) as u64).sum();
    Ok(data + data / 10 + SPACE_MARGIN_BYTES)
}

/// Free bytes for an unprivileged user on the file system of `dir` (which must exist).
pub fn free_space(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("{}: a path with a NUL byte", dir.display())))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed out-structure.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::io(dir, std::io::Error::last_os_error()));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

fn gib(n: u64) -> String {
    format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
}

/// Refused unless `available` bytes (of `dir`'s file system) cover `needed`.
pub fn check_space(dir: &Path, backup: &str, needed: u64, available: u64) -> Result<()> {
    if available >= needed {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "not enough free space for a restore drill of {backup}: it needs {} (the backup's uncompressed size, a tenth more, and 256 MiB for WAL), \
         and the file system of {} has {} free; set walg.drill_work_dir to a directory with room for one copy",
        gib(needed),
        dir.display(),
        gib(available)
    )))
}

/// The server's own binaries (`bindir`, of major `server_major`) can run a copy of a backup of
/// `backup_major`: pg_ctl, postgres and psql are there, and amcheck is installed (`sharedir`).
pub fn check_pg_bin(bindir: &Path, sharedir: &Path, server_major: u32, backup_major: u32, backup: &str) -> Result<()> {
    if server_major != backup_major {
        return Err(Error::Refused(format!(
            "{backup} is a backup of PostgreSQL {backup_major}, and this server runs {server_major}: its binaries cannot start the copy; \
             drill it with walg-ext restore-drill --pg-bin <the {backup_major} binaries>"
        )));
    }
    for tool in ["pg_ctl", "postgres", "psql"] {
        let p = bindir.join(tool);
        if !is_executable(&p) {
            return Err(Error::Refused(format!(
                "no PostgreSQL {server_major} {tool} at {} (the server's own binaries): a restore drill needs pg_ctl, postgres and psql \
                 (install the PostgreSQL {server_major} client and server packages)",
                p.display()
            )));
        }
    }
    let control = sharedir.join("extension/amcheck.control");
    if !control.is_file() {
        return Err(Error::Refused(format!(
            "amcheck is not installed ({} is missing): a restore drill checks the copy with it (install PostgreSQL {server_major}'s contrib modules)",
            control.display()
        )));
    }
    Ok(())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The walg-ext binary the server runs (`walg.cli_path`) is an absolute path to an executable.
pub fn check_cli(path: &Path) -> Result<()> {
    if !path.is_absolute() {
        return Err(Error::Refused(format!("walg.cli_path {} is not an absolute path", path.display())));
    }
    if !is_executable(path) {
        return Err(Error::Refused(format!(
            "no walg-ext binary at {} (walg.cli_path): `make install` puts it at /usr/local/bin/walg-ext; \
             set walg.cli_path to where it is and reload",
            path.display()
        )));
    }
    Ok(())
}

/// Refused when the server's environment holds a WAL-G secret (`WALG_LIBSODIUM_KEY`,
/// `AWS_SECRET_ACCESS_KEY`, ...): the copy's restore_command would have to carry it, and a
/// secret never goes into postgresql.auto.conf. (In `walg.config_file` it is fine: the child
/// reads the file.)
pub fn check_env_secrets<'a>(env: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<()> {
    let mut found: Vec<&str> = env
        .into_iter()
        .filter(|(k, v)| !v.is_empty() && is_env_setting(k) && is_secret_setting(k))
        .map(|(k, _)| k)
        .collect();
    found.sort();
    if found.is_empty() {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "the server's environment holds {} : a restore drill's copy fetches WAL with a restore_command that cannot carry a secret; \
         put it in walg.config_file (mode 0600, owned by the server's user) instead",
        found.join(", ")
    )))
}

/// How the server runs a drill: program, arguments, and the environment to set. Every inherited
/// variable that is a walg setting (`config::is_env_setting`) is dropped first, so the child
/// reads only the server's configuration: its file and these settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DrillCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where the child makes `walg-drill-<its pid>` (to clean up after a cancel).
    pub work_dir: PathBuf,
}

/// `walg-ext [--config FILE] restore-drill BACKUP --json --pg-bin BINDIR --work-dir DIR`, with
/// the walg.* settings that are set (`gucs`, as WAL-G keys) in the environment.
pub fn command(cli: &Path, config_file: Option<&Path>, backup: &str, bindir: &Path, work_dir: &Path, gucs: &Settings) -> DrillCommand {
    let mut args = Vec::new();
    if let Some(c) = config_file {
        args.push("--config".to_string());
        args.push(c.display().to_string());
    }
    args.extend(["restore-drill".to_string(), backup.to_string(), "--json".into(), "--pg-bin".into()]);
    args.push(bindir.display().to_string());
    args.push("--work-dir".into());
    args.push(work_dir.display().to_string());
    let env = gucs
        .iter()
        .filter(|(k, _)| is_env_setting(k) && !is_secret_setting(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    DrillCommand { program: cli.to_path_buf(), args, env, work_dir: work_dir.to_path_buf() }
}

/// The kind of error a `walg-ext` exit code stands for (the CLI's exit.rs, inverted).
pub fn kind_of_exit_code(code: Option<i32>) -> ErrorKind {
    match code {
        Some(2) => ErrorKind::BadInput,
        Some(3) => ErrorKind::NotFound,
        Some(4) => ErrorKind::Conflict,
        Some(5) => ErrorKind::Corrupt,
        Some(6) => ErrorKind::Unreachable,
        Some(7) => ErrorKind::LocalIo,
        Some(8) | None => ErrorKind::Cancelled,
        _ => ErrorKind::Internal,
    }
}

/// How a drill the server ran ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ChildResult {
    /// It ran: its report (passed or not).
    Ran(DrillReport),
    /// It could not run (refused, or died): the kind and the message.
    NotRun(ErrorKind, String),
}

/// Read the child's outcome: its `--json` report on stdout when it printed one (pass or fail),
/// else the last `walg-ext:` line of stderr with the kind of its exit code.
pub fn child_result(code: Option<i32>, stdout: &str, stderr: &str) -> ChildResult {
    if let Ok(r) = serde_json::from_str::<DrillReport>(stdout.trim()) {
        return ChildResult::Ran(r);
    }
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("walg-ext:") && !l.contains("warning:"))
        .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
        .map(|l| l.trim_start_matches("walg-ext:").trim().to_string())
        .unwrap_or_else(|| match code {
            Some(c) => format!("walg-ext restore-drill exited with code {c} and said nothing"),
            None => "walg-ext restore-drill was killed by a signal".into(),
        });
    ChildResult::NotRun(kind_of_exit_code(code), line)
}

/// What `walg_restore_drill()` returns for a drill that ran: `backup`, `passed`, `reason` (NULL
/// when it passed, else "failed at <step>: <error>"), `failed_step`, `started_at`,
/// `finished_at`, `seconds` (the whole drill), `timings` (seconds per step), `databases`,
/// `btree_indexes_checked`, `tables_checked`, `report` (its key in storage).
pub fn outcome_json(r: &DrillReport) -> serde_json::Value {
    let ts = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let timings: serde_json::Map<String, serde_json::Value> = r.steps.iter().map(|s| (s.name.clone(), json!(s.seconds))).collect();
    let reason = (!r.passed).then(|| {
        format!("failed at {}: {}", r.failed_step.as_deref().unwrap_or("?"), r.error.as_deref().unwrap_or("no error recorded"))
    });
    json!({
        "backup": r.backup,
        "passed": r.passed,
        "reason": reason,
        "failed_step": r.failed_step,
        "started_at": ts(&r.started_at),
        "finished_at": ts(&r.finished_at),
        "seconds": ((r.finished_at - r.started_at).num_milliseconds() as f64 / 1000.0),
        "timings": timings,
        "databases": r.databases,
        "btree_indexes_checked": r.btree_indexes_checked,
        "tables_checked": r.tables_checked,
        "report": super::drill::drill_key(&r.backup),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::drill::Step;
    use crate::format::Sentinel;
    use crate::storage::{FsStorage, Storage};

    fn backups(sizes: &[(&str, i64, Option<&str>)]) -> (tempfile::TempDir, Vec<BackupInfo>) {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new(dir.path());
        for (i, (name, size, from)) in sizes.iter().enumerate() {
            let mut sen = Sentinel { version: 2, uncompressed_size: *size, ..Default::default() };
            sen.start_time = chrono::DateTime::from_timestamp(1_700_000_000 + i as i64, 0).unwrap();
            if let Some(f) = from {
                sen.delta_from = Some(f.to_string());
                sen.delta_full_name = Some(f.to_string());
                sen.delta_lsn = Some(0x2000000);
                sen.delta_count = Some(1);
            }
            s.put(&crate::format::names::sentinel_key(name), &sen.to_json()).unwrap();
        }
        let all = catalog::list_backups(&s).unwrap();
        (dir, all)
    }

    #[test]
    fn space_needed_covers_the_whole_chain_and_a_margin() {
        let gb = 1i64 << 30;
        let (_d, all) = backups(&[
            ("base_000000010000000000000002", 10 * gb, None),
            ("base_000000010000000000000004_D_000000010000000000000002", gb, Some("base_000000010000000000000002")),
        ]);
        let full = space_needed(&all, "base_000000010000000000000002").unwrap();
        assert_eq!(full, 11 * gb as u64 + SPACE_MARGIN_BYTES);
        let delta = space_needed(&all, "base_000000010000000000000004_D_000000010000000000000002").unwrap();
        assert_eq!(delta, (11 * gb as u64) * 11 / 10 + SPACE_MARGIN_BYTES, "a delta restores its whole chain");
        assert_eq!(space_needed(&all, "base_000000010000000000000009").unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn space_is_checked_against_the_scratch_directory() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_space(dir.path()).unwrap();
        assert!(free > 0);
        check_space(dir.path(), "base_1", free, free).unwrap();
        let e = check_space(dir.path(), "base_1", free + 1, free).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "a refusal: nothing started");
        let m = e.to_string();
        assert!(m.contains("not enough free space") && m.contains("base_1") && m.contains("walg.drill_work_dir"), "{m}");
        assert!(m.contains(&dir.path().display().to_string()), "{m}");
        assert_eq!(free_space(&dir.path().join("missing")).unwrap_err().kind(), ErrorKind::LocalIo);
    }

    fn fake_install(dir: &Path, tools: &[&str], amcheck: bool) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("bin");
        let share = dir.join("share");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(share.join("extension")).unwrap();
        for t in tools {
            let p = bin.join(t);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        if amcheck {
            std::fs::write(share.join("extension/amcheck.control"), "").unwrap();
        }
        (bin, share)
    }

    #[test]
    fn binaries_amcheck_and_the_major_version_are_checked_first() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, share) = fake_install(&dir.path().join("ok"), &["pg_ctl", "postgres", "psql"], true);
        check_pg_bin(&bin, &share, 15, 15, "b").unwrap();
        let e = check_pg_bin(&bin, &share, 15, 14, "b").unwrap_err().to_string();
        assert!(e.contains("PostgreSQL 14") && e.contains("--pg-bin"), "{e}");
        let (bin, share) = fake_install(&dir.path().join("nopsql"), &["pg_ctl", "postgres"], true);
        let e = check_pg_bin(&bin, &share, 15, 15, "b").unwrap_err().to_string();
        assert!(e.contains("no PostgreSQL 15 psql at") && e.contains(&bin.display().to_string()), "{e}");
        let (bin, share) = fake_install(&dir.path().join("noamcheck"), &["pg_ctl", "postgres", "psql"], false);
        let e = check_pg_bin(&bin, &share, 15, 15, "b").unwrap_err().to_string();
        assert!(e.contains("amcheck is not installed"), "{e}");
    }

    #[test]
    fn the_cli_must_be_an_absolute_executable() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, _) = fake_install(dir.path(), &["walg-ext"], false);
        check_cli(&bin.join("walg-ext")).unwrap();
        let e = check_cli(&dir.path().join("nowhere/walg-ext")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(e.to_string().contains("walg.cli_path") && e.to_string().contains("nowhere/walg-ext"), "{e}");
        std::fs::write(dir.path().join("plain"), "").unwrap();
        assert!(check_cli(&dir.path().join("plain")).is_err(), "not executable");
        assert!(check_cli(Path::new("walg-ext")).unwrap_err().to_string().contains("not an absolute path"));
    }

    #[test]
    fn secrets_in_the_environment_are_refused_and_never_passed_on() {
        check_env_secrets([("WALG_FILE_PREFIX", "/b"), ("WALG_LIBSODIUM_KEY_PATH", "/k"), ("HOME", "/root")]).unwrap();
        let e = check_env_secrets([("AWS_SECRET_ACCESS_KEY", "s"), ("WALG_LIBSODIUM_KEY", "k"), ("PGPASSWORD", "x")]).unwrap_err().to_string();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY, WALG_LIBSODIUM_KEY") && e.contains("walg.config_file"), "{e}");
        assert!(!e.contains("PGPASSWORD"), "not a WAL-G setting: {e}");
        check_env_secrets([("WALG_LIBSODIUM_KEY", "")]).unwrap();
        // WAL-G's Azure keys are settings by name, so their secrets are caught too.
        let e = check_env_secrets([("AZURE_STORAGE_SAS_TOKEN", "t"), ("AZURE_CLIENT_ID", "x")]).unwrap_err().to_string();
        assert!(e.contains("AZURE_STORAGE_SAS_TOKEN") && !e.contains("AZURE_CLIENT_ID"), "{e}");
        // And WAL-G's Swift keys (OS_CLOUD is another OpenStack tool's).
        let e = check_env_secrets([("OS_PASSWORD", "p"), ("OS_CLOUD", "x")]).unwrap_err().to_string();
        assert!(e.contains("OS_PASSWORD") && !e.contains("OS_CLOUD"), "{e}");
        // And WAL-G's SFTP password (SSH_AUTH_SOCK is no setting).
        let e = check_env_secrets([("SSH_PASSWORD", "p"), ("SSH_AUTH_SOCK", "/run/a")]).unwrap_err().to_string();
        assert!(e.contains("SSH_PASSWORD") && !e.contains("SSH_AUTH_SOCK"), "{e}");

        let mut gucs = Settings::new();
        gucs.set("WALG_FILE_PREFIX", "/backups");
        gucs.set("AWS_REGION", "eu-west-1");
        gucs.set("WALG_PGP_KEY", "never here, but if it were");
        gucs.set("AZURE_STORAGE_ACCOUNT", "acct");
        let c = command(Path::new("/usr/local/bin/walg-ext"), Some(Path::new("/etc/wal-g.yaml")), "base_1", Path::new("/pg/bin"), Path::new("/var/tmp"), &gucs);
        assert_eq!(
            c.args,
            ["--config", "/etc/wal-g.yaml", "restore-drill", "base_1", "--json", "--pg-bin", "/pg/bin", "--work-dir", "/var/tmp"]
        );
        assert_eq!(
            c.env,
            [
                ("AWS_REGION".to_string(), "eu-west-1".to_string()),
                ("AZURE_STORAGE_ACCOUNT".into(), "acct".into()),
                ("WALG_FILE_PREFIX".into(), "/backups".into())
            ]
        );
        let none = command(Path::new("/x"), None, "base_1", Path::new("/b"), Path::new("/w"), &Settings::new());
        assert_eq!(none.args[0], "restore-drill");
    }

    fn report(passed: bool) -> DrillReport {
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        DrillReport {
            backup: "base_1".into(),
            passed,
            started_at: t,
            finished_at: t + chrono::Duration::milliseconds(4500),
            target: "end of backup".into(),
            failed_step: (!passed).then(|| "amcheck".into()),
            error: (!passed).then(|| "database app: verify_heapam found corruption".into()),
            steps: vec![
                Step { name: "restore".into(), seconds: 1.5, ok: true, detail: None },
                Step { name: "amcheck".into(), seconds: 2.0, ok: passed, detail: None },
            ],
            databases: vec!["app".into()],
            btree_indexes_checked: 3,
            tables_checked: 4,
            host: "h".into(),
            walg_ext_version: "0".into(),
        }
    }

    #[test]
    fn the_childs_report_is_the_outcome_and_its_absence_an_error_of_its_kind() {
        let ok = report(true);
        let out = serde_json::to_string_pretty(&ok).unwrap();
        assert_eq!(child_result(Some(0), &out, "walg-ext: restore drill of base_1: passed"), ChildResult::Ran(ok.clone()));
        let bad = report(false);
        let out = serde_json::to_string_pretty(&bad).unwrap();
        assert_eq!(child_result(Some(5), &out, ""), ChildResult::Ran(bad.clone()), "a failed drill ran: an outcome");
        assert_eq!(
            child_result(Some(2), "", "walg-ext: warning: x\nwalg-ext: no pg_ctl in /nowhere (give --pg-bin DIR)\n"),
            ChildResult::NotRun(ErrorKind::BadInput, "no pg_ctl in /nowhere (give --pg-bin DIR)".into())
        );
        assert_eq!(child_result(Some(6), "", "walg-ext: storage unreachable: x\n"), ChildResult::NotRun(ErrorKind::Unreachable, "storage unreachable: x".into()));
        match child_result(None, "{", "") {
            ChildResult::NotRun(ErrorKind::Cancelled, m) => assert!(m.contains("killed"), "{m}"),
            other => panic!("{other:?}"),
        }

        let j = outcome_json(&ok);
        assert_eq!((j["passed"].as_bool(), j["reason"].is_null()), (Some(true), true));
        assert_eq!(j["timings"]["restore"], 1.5);
        assert_eq!(j["seconds"], 4.5);
        assert_eq!(j["report"], "basebackups_005/base_1/walg_drill.json");
        let j = outcome_json(&bad);
        assert_eq!(j["passed"], false);
        assert_eq!(j["failed_step"], "amcheck");
        assert_eq!(j["reason"], "failed at amcheck: database app: verify_heapam found corruption");
    }
}
