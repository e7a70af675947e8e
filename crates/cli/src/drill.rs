//! `restore-drill`: restore a backup into a scratch directory, start a throwaway PostgreSQL on a
//! private Unix socket (no TCP, no archiving, no preloaded libraries), recover to the end of
//! the backup (or the target), amcheck it, stop, remove it, and store the outcome beside the
//! backup (walg_core::backup::drill holds the sequence; this file is the PostgreSQL host).
//!
//! What belongs to the environment (no PostgreSQL binaries of the backup's major version, no
//! `postgres` user, a secret in the environment) is refused before anything starts and leaves no
//! report; everything that happens to the copy is recorded, pass or fail.
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use walg_core::backup::drill::{self, DrillHost};
use walg_core::backup::recovery::{self, TargetAction, Target};
use walg_core::catalog::{self, pitr};
use walg_core::{backup, Error, Result};

use crate::commands::load_config;
use crate::recovery::RecoveryArgs;

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// Backup name (base_...) or LATEST.
    #[arg(default_value = "LATEST")]
    pub name: String,
    /// Directory with the PostgreSQL binaries (pg_ctl, postgres, psql) of the backup's major
    /// version; default: `pg_config --bindir`.
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// Where the scratch directory is made (it needs room for one copy); default: $TMPDIR or /tmp.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Database role the checks connect as; default: the OS user the server runs as.
    #[arg(long, value_name = "ROLE")]
    pub db_user: Option<String>,
    /// Give up when recovery has not finished after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub timeout: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub recovery: RecoveryArgs,
}

/// The OS user the throwaway server runs as.
struct RunAs {
    name: String,
    ids: Option<(u32, u32)>,
}

fn run_as() -> Result<RunAs> {
    // SAFETY: plain libc calls; getpwnam's result is copied out before any other call.
    unsafe {
        if libc::geteuid() != 0 {
            let pw = libc::getpwuid(libc::geteuid());
            let name = if pw.is_null() {
                std::env::var("USER").unwrap_or_default()
            } else {
                std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
            };
            return Ok(RunAs { name, ids: None });
        }
        let user = CString::new("postgres").expect("no NUL");
        let pw = libc::getpwnam(user.as_ptr());
        if pw.is_null() {
            return Err(Error::InvalidArgument(
                "restore-drill runs as root only to drop to the postgres user, and there is no postgres user: run it as the user that owns the PostgreSQL installation".into(),
            ));
        }
        Ok(RunAs { name: "postgres".into(), ids: Some(((*pw).pw_uid, (*pw).pw_gid)) })
    }
}

/// `--pg-bin`, else `pg_config --bindir`; must hold pg_ctl and psql of `major`.
fn pg_bin(arg: Option<&Path>, major: u32) -> Result<PathBuf> {
    let dir = match arg {
        Some(d) => d.to_path_buf(),
        None => {
            let out = Command::new("pg_config").arg("--bindir").output().map_err(|e| {
                Error::InvalidArgument(format!("cannot run pg_config to find the PostgreSQL binaries ({e}): give --pg-bin DIR"))
            })?;
            if !out.status.success() {
                return Err(Error::InvalidArgument("pg_config --bindir failed: give --pg-bin DIR".into()));
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    for tool in ["pg_ctl", "psql", "postgres"] {
        if !dir.join(tool).is_file() {
            return Err(Error::InvalidArgument(format!("no {tool} in {} (give --pg-bin DIR)", dir.display())));
        }
    }
    let out = Command::new(dir.join("postgres"))
        .arg("--version")
        .output()
        .map_err(|e| Error::InvalidArgument(format!("{}/postgres --version: {e}", dir.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let found = text.split_whitespace().find_map(|w| w.split('.').next()?.parse::<u32>().ok());
    if found != Some(major) {
        return Err(Error::InvalidArgument(format!(
            "the backup is of PostgreSQL {major}, but {}/postgres is {:?}: give --pg-bin with the {major} binaries",
            dir.display(),
            text.trim()
        )));
    }
    Ok(dir)
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| Error::io(path, e))?;
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        for e in fs::read_dir(path).map_err(|e| Error::io(path, e))? {
            chown_tree(&e.map_err(|e| Error::io(path, e))?.path(), uid, gid)?;
        }
    }
    Ok(())
}

struct PgHost<'a> {
    cfg: walg_core::Config,
    storage: std::sync::Arc<dyn walg_core::storage::Storage>,
    plan: &'a pitr::RecoveryPlan,
    req: recovery::RecoveryRequest,
    recovery_block: String,
    bin: PathBuf,
    user: RunAs,
    db_user: String,
    scratch: PathBuf,
    data: PathBuf,
    timeout: Duration,
}

impl PgHost<'_> {
    fn socket_dir(&self) -> PathBuf {
        self.scratch.join("socket")
    }
    fn log_file(&self) -> PathBuf {
        self.scratch.join("server.log")
    }
    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        if let Some((uid, gid)) = self.user.ids {
            c.uid(uid).gid(gid);
        }
        c.current_dir(&self.scratch).stdin(Stdio::null());
        for v in ["PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGOPTIONS", "PGSERVICE", "PGDATA"] {
            c.env_remove(v);
        }
        c
    }
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }
    fn failed(&self, what: &str) -> Error {
        Error::corrupt("restored copy", format!("{what}; server log: {}", self.log_tail()))
    }
    fn running(&self) -> bool {
        self.command("pg_ctl").arg("status").arg("-D").arg(&self.data).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    }
}

/// Settings that make the copy a throwaway: no TCP, a private socket, nothing archived or
/// streamed, no preloaded libraries (the walg_ext scheduler must not run backups from a copy),
/// trust on the private socket only, modest memory.
fn drill_settings(socket: &Path, hba: &Path) -> String {
    let q = |p: &Path| recovery::conf_quote(&p.display().to_string());
    format!(
        "# walg-ext restore-drill: a throwaway copy (private socket, no TCP, no archiving)\n\
         listen_addresses = ''\nport = 5432\nunix_socket_directories = {}\nunix_socket_permissions = 0700\n\
         hba_file = {}\nssl = off\narchive_mode = off\narchive_command = ''\narchive_library = ''\n\
         shared_preload_libraries = ''\nsynchronous_standby_names = ''\nprimary_conninfo = ''\n\
         shared_buffers = '128MB'\nlogging_collector = off\n\
         log_destination = 'stderr'\ncluster_name = 'walg-restore-drill'\nhot_standby = on\n",
        q(socket),
        q(hba)
    )
}

impl DrillHost for PgHost<'_> {
    fn restore(&mut self, data: &Path) -> Result<String> {
        if !self.plan.problems.is_empty() {
            return Err(Error::Refused(self.plan.problems.join("; ")));
        }
        let log = |line: &str| eprintln!("walg-ext: {line}");
        // Tablespaces go inside the scratch directory too (the originals may be in use), removed with it.
        let ts = backup::tablespaces::TablespaceOptions { under: Some(self.scratch.join("tablespaces")), ..Default::default() };
        backup::fetch::fetch_with(&self.cfg, &self.storage, &self.plan.backup, data, &ts, &log)?;
        // A cluster configured from /etc (Debian) has no postgresql.conf in PGDATA.
        let conf = data.join("postgresql.conf");
        if !conf.exists() {
            fs::write(&conf, "# written by walg-ext restore-drill: the backup had none\n").map_err(|e| Error::io(&conf, e))?;
        }
        recovery::write_recovery_files(data, &self.req, &self.recovery_block)?;
        let hba = self.scratch.join("pg_hba.conf");
        fs::write(&hba, "local all all trust\n").map_err(|e| Error::io(&hba, e))?;
        fs::create_dir_all(self.socket_dir()).map_err(|e| Error::io(self.socket_dir(), e))?;
        let auto = data.join("postgresql.auto.conf");
        let mut text = fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&drill_settings(&self.socket_dir(), &hba));
        fs::write(&auto, text).map_err(|e| Error::io(&auto, e))?;
        fs::set_permissions(data, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(data, e))?;
        if let Some((uid, gid)) = self.user.ids {
            chown_tree(&self.scratch, uid, gid)?;
        }
        Ok(format!("{} restored into {}", self.plan.backup, data.display()))
    }

    fn start(&mut self, data: &Path) -> Result<()> {
        let out = self
            .command("pg_ctl")
            .args(["start", "-W", "-D"])
            .arg(data)
            .arg("-l")
            .arg(self.log_file())
            .output()
            .map_err(|e| Error::io(self.bin.join("pg_ctl"), e))?;
        if !out.status.success() {
            return Err(self.failed(&format!("pg_ctl start failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(())
    }

    fn wait_recovered(&mut self) -> Result<()> {
        let t = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            if let Ok(v) = self.query("template1", "SELECT pg_is_in_recovery()") {
                if v.trim() == "f" {
                    return Ok(());
                }
            }
            // (pg_ctl start -W returns before the postmaster has written its pid file.)
            if t.elapsed() > Duration::from_secs(2) && !self.running() {
                return Err(self.failed("the server stopped before recovery finished"));
            }
            if t.elapsed() > self.timeout {
                return Err(self.failed(&format!("recovery did not finish within {} s", self.timeout.as_secs())));
            }
        }
    }

    fn query(&mut self, db: &str, sql: &str) -> Result<String> {
        let out = self
            .command("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args(["-p", "5432", "-U", &self.db_user, "-d", db, "-c", sql])
            .output()
            .map_err(|e| Error::io(self.bin.join("psql"), e))?;
        if !out.status.success() {
            return Err(Error::corrupt("restored copy", String::from_utf8_lossy(&out.stderr).trim().replace('\n', " ")));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn stop(&mut self) -> Result<()> {
        let stop = |mode: &str| {
            self.command("pg_ctl")
                .args(["stop", "-w", "-t", "120", "-m", mode, "-D"])
                .arg(&self.data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if stop("fast") || stop("immediate") || !self.running() {
            return Ok(());
        }
        Err(self.failed("the server did not stop"))
    }
}

pub fn restore_drill(config: Option<&Path>, args: &DrillArgs, seg: u64) -> Result<()> {
    let r = &args.recovery;
    if r.standby || r.dry_run {
        return Err(Error::InvalidArgument("restore-drill takes no --standby or --dry-run".into()));
    }
    let mut req = r.request()?;
    if matches!(req.action, Some(a) if a != TargetAction::Promote) {
        return Err(Error::InvalidArgument("restore-drill always promotes at the target (--target-action promote)".into()));
    }
    let target_text = req.target.as_ref().map(|t| t.to_string()).unwrap_or_else(|| "end of backup".into());
    if req.target.is_none() {
        req.target = Some(Target::Immediate);
    }
    req.action = Some(TargetAction::Promote);
    req.check()?;
    let cfg = load_config(config)?;
    let (rc, _) = crate::recovery::restore_command_for(config)?;
    let storage = cfg.open_storage()?;
    let plan = pitr::plan(storage.as_ref(), &cfg.pipeline(), &args.name, &req, true, seg)?;
    let all = catalog::list_backups(storage.as_ref())?;
    let info = catalog::list::find(&all, &plan.backup)?;
    let major = (info.sentinel.pg_version / 10000) as u32;
    let bin = pg_bin(args.pg_bin.as_deref(), major)?;
    let user = run_as()?;
    let db_user = args.db_user.clone().unwrap_or_else(|| user.name.clone());
    // The copy's restore_command reads the config file as the server's user: a file only root
    // can read would fail the recovery, which is no fault of the backup.
    if let (Some(c), Some((uid, gid))) = (config, user.ids) {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(c).map_err(|e| Error::Config(format!("config file {}: {e}", c.display())))?;
        let readable = (m.uid() == uid && m.mode() & 0o400 != 0) || (m.gid() == gid && m.mode() & 0o040 != 0) || m.mode() & 0o004 != 0;
        if !readable {
            return Err(Error::InvalidArgument(format!(
                "the throwaway server runs as postgres and its restore_command reads {}, which postgres cannot read: \
                 give it to postgres (chown postgres, mode 0600)",
                c.display()
            )));
        }
    }

    let base = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = base.join(format!("walg-drill-{}", std::process::id()));
    // PostgreSQL's socket path (<scratch>/socket/.s.PGSQL.5432) must fit in sun_path (107 bytes).
    let socket_len = scratch.join("socket/.s.PGSQL.5432").as_os_str().len();
    if socket_len > 100 {
        return Err(Error::InvalidArgument(format!(
            "--work-dir {}: too long for the copy's Unix socket path ({socket_len} bytes, at most 100): give a shorter one",
            base.display()
        )));
    }
    fs::create_dir(&scratch).map_err(|e| Error::io(&scratch, e))?;
    fs::set_permissions(&scratch, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(&scratch, e))?;
    for l in crate::recovery::describe(&plan, &req, true) {
        eprintln!("walg-ext: {l}");
    }
    let header = format!("recovery set up by walg-ext restore-drill of {}", plan.backup);
    let recovery_block = recovery::render_settings(&header, &recovery::recovery_settings(&req, &rc));
    let mut host = PgHost {
        cfg: cfg.clone(),
        storage: storage.clone(),
        plan: &plan,
        req: req.clone(),
        recovery_block,
        bin,
        user,
        db_user,
        data: scratch.join("data"),
        scratch: scratch.clone(),
        timeout: Duration::from_secs(args.timeout),
    };
    let log = |l: &str| eprintln!("walg-ext: {l}");
    let (report, first) = drill::run(&mut host, &plan.backup, &target_text, &scratch, &log);
    let stored = drill::write_report(storage.as_ref(), &report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("JSON of plain values"));
    }
    eprintln!("walg-ext: restore drill of {}: {}", report.backup, report.summary());
    match (first, stored) {
        (Some(e), stored) => {
            if let Err(s) = stored {
                eprintln!("walg-ext: and the report could not be stored: {s}");
            }
            Err(prefix(e, &format!("restore drill of {} failed at {}: ", report.backup, report.failed_step.as_deref().unwrap_or("?"))))
        }
        (None, Err(s)) => Err(s),
        (None, Ok(())) => {
            eprintln!("walg-ext: report stored as {}", drill::drill_key(&report.backup));
            Ok(())
        }
    }
}

/// The same error (same kind, so the same exit code) with `p` in front of its message.
fn prefix(e: Error, p: &str) -> Error {
    match e {
        Error::Corrupt { object, msg } => Error::Corrupt { object: format!("{p}{object}"), msg },
        Error::Refused(m) => Error::Refused(format!("{p}{m}")),
        Error::Unreachable(m) => Error::Unreachable(format!("{p}{m}")),
        Error::NotFound(m) => Error::NotFound(format!("{p}{m}")),
        Error::Format(m) => Error::Format(format!("{p}{m}")),
        Error::Internal(m) => Error::Internal(format!("{p}{m}")),
        other => {
            eprintln!("walg-ext: {p}");
            other
        }
    }
}
