//! A PostgreSQL 15 cluster owned by postgres in its own /tmp directory, reachable only through a
//! Unix socket in that directory (`listen_addresses = ''`), so clusters never collide.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmd::{
    append_file, as_postgres, chown_postgres, run, run_ok, tail_lines, write_as_postgres, Outcome,
    Running,
};
use crate::scratch::{set_mode, ScratchDir};
use crate::storage::Storage;

/// PostgreSQL 15 binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub fn pg_bin(tool: &str) -> String {
    format!("{PG_BIN}/{tool}")
}

/// Generous upper bound for one SQL statement (backups included).
pub const SQL_TIMEOUT: Duration = Duration::from_secs(900);

/// A free TCP port. The server does not listen on TCP, but the port names its Unix socket, and
/// distinct ports keep the log lines and `ps` output apart.
fn pick_port() -> u16 {
    use std::sync::Mutex;
    static USED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut used = USED.lock().unwrap();
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
    panic!("could not pick a free port");
}

pub struct Cluster {
    pub name: String,
    dir: ScratchDir,
    /// PGDATA.
    pub data: PathBuf,
    pub port: u16,
    /// Server log (pg_ctl -l).
    pub log: PathBuf,
    running: bool,
}

impl Cluster {
    fn new_dir(name: &str) -> (ScratchDir, PathBuf, PathBuf, u16) {
        let dir = ScratchDir::new(name);
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        (dir, data, log, pick_port())
    }

    /// Settings every cluster gets: private socket, no TCP, a port, useful logging.
    fn base_conf(&self) -> String {
        format!(
            "\n# --- walg-e2e harness ---\n\
             port = {}\n\
             listen_addresses = ''\n\
             unix_socket_directories = '{}'\n\
             log_line_prefix = '%m [%p] %b '\n\
             log_min_messages = info\n",
            self.port,
            self.dir.path().display()
        )
    }

    /// `initdb --data-checksums` a new cluster (not started) and append `extra_conf` to its
    /// postgresql.conf.
    pub fn init(name: &str, extra_conf: &str) -> Cluster {
        let (dir, data, log, port) = Self::new_dir(name);
        let c = Cluster { name: name.to_string(), dir, data, port, log, running: false };
        let mut cmd = as_postgres(pg_bin("initdb"));
        cmd.current_dir(c.dir.path())
            .args(["--data-checksums", "--no-sync", "--no-instructions"])
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("-D")
            .arg(&c.data);
        run_ok(&mut cmd, &format!("initdb of cluster {name}"), Duration::from_secs(300));
        c.append_conf(&c.base_conf());
        c.append_conf(extra_conf);
        c
    }

    /// A new cluster directory with an empty, postgres-owned, 0700 data directory (no initdb):
    /// something else (backup-fetch, pg_basebackup) fills it.
    pub fn empty(name: &str) -> Cluster {
        let (dir, data, log, port) = Self::new_dir(name);
        let c = Cluster { name: name.to_string(), dir, data, port, log, running: false };
        std::fs::create_dir(&c.data)
            .unwrap_or_else(|e| panic!("could not create {}: {e}", c.data.display()));
        set_mode(&c.data, 0o700);
        chown_postgres(&c.data);
        c
    }

    /// Restores `backup` (a name or `LATEST`) from `storage` with `walg-ext backup-fetch` (run as
    /// postgres) into a new cluster directory, and configures archive recovery from the same
    /// storage (see [`Cluster::configure_recovery`]) with
    /// `restore_command = 'walg-ext --config <file> wal-fetch %f %p'`. Not started.
    pub fn restore_into(name: &str, storage: &Storage, backup: &str, extra_conf: &str) -> Cluster {
        let c = Cluster::empty(name);
        let target = c.data.display().to_string();
        let out = storage.walg_ext(&["backup-fetch", &target, backup]);
        if !out.success() {
            panic!("walg-ext backup-fetch {backup} into {target} failed\n{}", out.describe());
        }
        for must in ["PG_VERSION", "global/pg_control", "backup_label"] {
            assert!(
                c.data.join(must).exists(),
                "backup-fetch succeeded but {must} is missing from {target}\n\
                 backup-fetch output:\n{}",
                out.describe()
            );
        }
        c.configure_recovery(&storage.restore_command(), extra_conf);
        c
    }

    /// Turns a restored data directory into a server that does archive recovery and then
    /// promotes: `recovery.signal`, and in postgresql.auto.conf (read after postgresql.conf, so it
    /// overrides what the backup brought along: the source's port, socket directory and
    /// archiving) this cluster's port and socket, `archive_mode = off`, `restore_command`,
    /// `recovery_target_timeline = 'latest'`, then `extra_conf`.
    pub fn configure_recovery(&self, restore_command: &str, extra_conf: &str) {
        write_as_postgres(&self.data.join("recovery.signal"), "");
        let auto = self.data.join("postgresql.auto.conf");
        let conf = format!(
            "{}archive_mode = off\n\
             restore_command = '{}'\n\
             recovery_target_timeline = 'latest'\n{}\n",
            self.base_conf(),
            restore_command.replace('\'', "''"),
            extra_conf
        );
        if auto.exists() {
            append_file(&auto, &conf);
        } else {
            write_as_postgres(&auto, &conf);
        }
    }

    /// A streaming standby of `primary`, made with `pg_basebackup -R -X stream -c fast`
    /// (standby.signal, primary_conninfo over the primary's socket); postgresql.auto.conf then
    /// gets this cluster's port and socket, then `extra_conf`. It keeps the primary's
    /// postgresql.conf (so the same walg.* settings). Not started.
    pub fn standby_of(name: &str, primary: &Cluster, extra_conf: &str) -> Cluster {
        let c = Cluster::empty(name);
        let mut cmd = as_postgres(pg_bin("pg_basebackup"));
        cmd.current_dir("/tmp")
            .args(["-h", &primary.socket_dir(), "-p", &primary.port.to_string(), "-U", "postgres"])
            .args(["-X", "stream", "-c", "fast", "-R", "-D"])
            .arg(&c.data);
        run_ok(&mut cmd, &format!("pg_basebackup -R of {} for standby {name}", primary.name), Duration::from_secs(300));
        append_file(&c.data.join("postgresql.auto.conf"), &format!("{}{extra_conf}\n", c.base_conf()));
        c
    }

    /// A started streaming standby of `primary` (see [`Cluster::standby_of`]), returned once its
    /// WAL receiver streams.
    pub fn streaming_standby(name: &str, primary: &Cluster, extra_conf: &str) -> Cluster {
        let mut s = Cluster::standby_of(name, primary, extra_conf);
        s.start();
        crate::wait_until("the standby to stream", Duration::from_secs(60), || {
            (s.try_psql("SELECT status FROM pg_stat_wal_receiver").ok()? == "streaming").then_some(())
        });
        s
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket_dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    pub fn pg_wal(&self) -> PathBuf {
        self.data.join("pg_wal")
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Appends lines to postgresql.conf (takes effect at the next start or reload).
    pub fn append_conf(&self, text: &str) {
        append_file(&self.data.join("postgresql.conf"), &format!("\n{text}\n"));
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        tail_lines(&String::from_utf8_lossy(&text), n)
    }

    /// The whole server log.
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    fn pg_ctl(&self, args: &[&str]) -> Outcome {
        let mut cmd = as_postgres(pg_bin("pg_ctl"));
        cmd.current_dir(self.dir.path()).arg("-D").arg(&self.data).args(args);
        run(&mut cmd, None, Duration::from_secs(400))
    }

    /// `pg_ctl start -w`; panics with the log tail if the server does not come up.
    pub fn start(&mut self) {
        let log = self.log.display().to_string();
        let out = self.pg_ctl(&["-l", &log, "-w", "-t", "300", "start"]);
        if !out.success() {
            panic!(
                "could not start cluster {}\n{}\n--- server log (tail) ---\n{}",
                self.name,
                out.describe(),
                self.log_tail(60)
            );
        }
        self.running = true;
    }

    /// `pg_ctl stop -m fast -w`.
    pub fn stop(&mut self) {
        let out = self.pg_ctl(&["-m", "fast", "-w", "-t", "300", "stop"]);
        if !out.success() {
            panic!(
                "could not stop cluster {}\n{}\n--- server log (tail) ---\n{}",
                self.name,
                out.describe(),
                self.log_tail(60)
            );
        }
        self.running = false;
        // Whatever a test does, the scheduler never fails on its own: it has no reason to raise
        // an ERROR (it logs WARNINGs and carries on), so one in the log is a defect (it once
        // died at every start of a standby or a restore).
        let log = self.log_text();
        assert!(
            !log.contains("walg_ext scheduler ERROR") && !log.contains("walg_ext scheduler FATAL"),
            "the walg_ext scheduler raised an error in cluster {}\n{}",
            self.name,
            self.log_tail(60)
        );
    }

    /// `pg_ctl stop -m immediate`, ignoring failures (used on drop).
    pub fn stop_immediate(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let _ = self.pg_ctl(&["-m", "immediate", "-w", "-t", "60", "stop"]);
        }
        self.running = false;
    }

    /// `pg_ctl reload`.
    pub fn reload(&self) {
        let out = self.pg_ctl(&["reload"]);
        if !out.success() {
            panic!("could not reload cluster {}\n{}", self.name, out.describe());
        }
    }

    fn psql_cmd(&self, db: &str) -> Command {
        let mut cmd = as_postgres(pg_bin("psql"));
        cmd.current_dir(self.dir.path())
            .args(["-h", &self.socket_dir(), "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db])
            .args(["-AtXq", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .env_remove("PGOPTIONS");
        cmd
    }

    /// Runs SQL in database `db`; `Err(description)` if psql fails.
    pub fn try_psql_db(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = run(&mut self.psql_cmd(db), Some(sql), SQL_TIMEOUT);
        if out.success() {
            Ok(out.stdout.trim_end_matches('\n').to_string())
        } else {
            Err(format!("psql on cluster {} failed\nSQL: {}\n{}", self.name, sql, out.describe()))
        }
    }

    /// Runs SQL in database postgres; `Err(description)` if psql fails.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.try_psql_db("postgres", sql)
    }

    /// Runs SQL (`psql -AtXq -v ON_ERROR_STOP=1`) in database postgres and returns stdout without
    /// the final newline. Panics with psql's stderr on failure.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        self.try_psql_db(db, sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts psql running `sql` in the background (for statements we want to interrupt).
    pub fn psql_background(&self, sql: &str) -> Running {
        Running::spawn(&mut self.psql_cmd("postgres"), Some(sql))
    }

    /// Runs pgbench with `args` against database postgres; returns its output.
    pub fn pgbench(&self, args: &[&str]) -> String {
        let mut cmd = as_postgres(pg_bin("pgbench"));
        cmd.current_dir(self.dir.path())
            .args(["-h", &self.socket_dir(), "-p", &self.port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres");
        let out = run(&mut cmd, None, Duration::from_secs(1800));
        let text = out.all_output();
        out.expect_success(&format!("pgbench on cluster {}", self.name));
        text
    }

    /// `pgbench -i -s <scale>`.
    pub fn pgbench_init(&self, scale: u32) {
        self.pgbench(&["-i", "-q", "-s", &scale.to_string()]);
    }

    /// `pg_dumpall`, with the per-run random `\restrict` keys (PostgreSQL 15.14+) removed so two
    /// dumps of equal clusters compare equal.
    pub fn dumpall(&self) -> String {
        let mut cmd = as_postgres(pg_bin("pg_dumpall"));
        cmd.current_dir(self.dir.path())
            .args(["-h", &self.socket_dir(), "-p", &self.port.to_string(), "-U", "postgres"]);
        let raw = run_ok(&mut cmd, &format!("pg_dumpall of cluster {}", self.name), SQL_TIMEOUT);
        normalize_dump(&raw)
    }

    /// `SELECT pg_walfile_name(pg_switch_wal())`: the name of the segment that was just closed.
    pub fn switch_wal(&self) -> String {
        self.psql("SELECT pg_walfile_name(pg_switch_wal())")
    }

    /// (last_archived_wal, archived_count, failed_count, last_failed_wal) from pg_stat_archiver.
    pub fn archiver_stats(&self) -> Result<(String, i64, i64, String), String> {
        let row = self.try_psql(
            "SELECT coalesce(last_archived_wal, ''), archived_count, failed_count, \
             coalesce(last_failed_wal, '') FROM pg_stat_archiver",
        )?;
        let f: Vec<&str> = row.split('|').collect();
        if f.len() != 4 {
            return Err(format!("unexpected pg_stat_archiver row {row:?}"));
        }
        Ok((
            f[0].to_string(),
            f[1].parse().unwrap_or(-1),
            f[2].parse().unwrap_or(-1),
            f[3].to_string(),
        ))
    }

    /// Waits until the archiver has archived `wal_file_name` (or a later segment of the same
    /// timeline). Panics with archiver statistics and the log tail on timeout.
    pub fn wait_archived(&self, wal_file_name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = Err("never polled".to_string());
        while Instant::now() < deadline {
            last = self.archiver_stats();
            if let Ok((archived, ..)) = &last {
                if archived.len() == wal_file_name.len()
                    && archived[..8] == wal_file_name[..8]
                    && archived.as_str() >= wal_file_name
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "cluster {}: {wal_file_name} not archived within {timeout:?}\n\
             pg_stat_archiver (last_archived_wal, archived_count, failed_count, last_failed_wal): \
             {last:?}\n--- server log (tail) ---\n{}",
            self.name,
            self.log_tail(60)
        );
    }

    /// Waits until the server accepts connections (`SELECT 1` works).
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.try_psql("SELECT 1") {
                Ok(_) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "cluster {} did not accept connections within {timeout:?}\nlast error: {last}\n\
             --- server log (tail) ---\n{}",
            self.name,
            self.log_tail(60)
        );
    }

    /// Waits until `pg_is_in_recovery()` is false (recovery ended and the server promoted).
    pub fn wait_recovery_done(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.try_psql("SELECT pg_is_in_recovery()") {
                Ok(v) if v == "f" => return,
                Ok(v) => last = format!("pg_is_in_recovery() = {v}"),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "cluster {} still in recovery after {timeout:?}\nlast: {last}\n\
             --- server log (tail) ---\n{}",
            self.name,
            self.log_tail(80)
        );
    }

    /// Polls `sql` until it returns `expected` (errors count as "not yet").
    pub fn wait_for_value(&self, sql: &str, expected: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.try_psql(sql) {
                Ok(v) if v == expected => return,
                Ok(v) => last = format!("got {v:?}"),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "cluster {}: `{sql}` did not return {expected:?} within {timeout:?}; last: {last}\n\
             --- server log (tail) ---\n{}",
            self.name,
            self.log_tail(40)
        );
    }

    /// `ALTER SYSTEM SET name = value` and `pg_reload_conf()`.
    /// WAL files waiting for the archiver (`archive_status/*.ready`), sorted.
    pub fn ready_segments(&self) -> Vec<String> {
        let mut v: Vec<String> = crate::storage::list_dir(&self.pg_wal().join("archive_status"))
            .into_iter()
            .filter_map(|n| n.strip_suffix(".ready").map(str::to_string))
            .collect();
        v.sort();
        v
    }

    /// `walg_backup_push()` while pgbench (2 clients, `load_secs` seconds) writes all through
    /// it; the backup starts `start_after` into the load. Returns the backup's name.
    pub fn backup_under_pgbench(&self, load_secs: u32, start_after: Duration) -> String {
        let secs = load_secs.to_string();
        std::thread::scope(|scope| {
            let load = scope.spawn(|| self.pgbench(&["-n", "-T", &secs, "-c", "2"]));
            std::thread::sleep(start_after);
            let name = self.psql("SELECT walg_backup_push()");
            load.join().expect("pgbench thread");
            name
        })
    }

    /// The pid of the running `walg_ext backup` worker, if one runs.
    pub fn backup_worker_pid(&self) -> Option<i32> {
        self.try_psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walg_ext backup'")
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
    }

    pub fn set_and_reload(&self, name: &str, value: &str) {
        self.psql(&format!("ALTER SYSTEM SET {name} = {value}"));
        self.psql("SELECT pg_reload_conf()");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- cluster {} ({}) server log, last 40 lines ---\n{}\n--- end of log ---",
                self.name,
                self.dir.path().display(),
                self.log_tail(40)
            );
        }
        self.stop_immediate();
    }
}

/// Removes lines that differ between two dumps of identical clusters.
pub fn normalize_dump(dump: &str) -> String {
    dump.lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Panics unless the two dumps are equal; on mismatch both are written to files (kept) and the
/// message shows the first differing line and a `diff` command.
pub fn assert_dumps_equal(expected: &str, actual: &str, what: &str) {
    if expected == actual {
        return;
    }
    let dir = std::env::temp_dir().join(format!("walg-e2e-dumps-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let safe: String = what.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let a = dir.join(format!("{safe}-expected.sql"));
    let b = dir.join(format!("{safe}-actual.sql"));
    let _ = std::fs::write(&a, expected);
    let _ = std::fs::write(&b, actual);
    let (el, al): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let first = (0..el.len().max(al.len()))
        .find(|&i| el.get(i) != al.get(i))
        .unwrap_or(0);
    panic!(
        "{what}: pg_dumpall output differs ({} vs {} lines)\nfirst difference at line {}:\n  \
         expected: {:?}\n  actual:   {:?}\nsee: diff -u {} {}",
        el.len(),
        al.len(),
        first + 1,
        el.get(first),
        al.get(first),
        a.display(),
        b.display()
    );
}
