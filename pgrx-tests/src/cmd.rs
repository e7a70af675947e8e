//! Running external commands, as the `postgres` OS user when the tests run as root.
//!
//! Every helper here turns a failure into a panic that names the command line, its exit status
//! and its stderr, so a failing test says what went wrong without re-running anything.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The OS user that owns every cluster and runs every PostgreSQL and walg-ext command.
pub const PG_USER: &str = "postgres";

/// Result of a finished command.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code; `None` if the process died from a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout and stderr together, for "the message mentions X" checks.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// A readable multi-line description of what happened.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nexit status: {}\n--- stderr ---\n{}\n--- stdout (last 40 lines) ---\n{}",
            self.cmdline,
            match self.code {
                Some(c) => c.to_string(),
                None => "killed by a signal".to_string(),
            },
            self.stderr.trim_end(),
            tail_lines(&self.stdout, 40).trim_end()
        )
    }

    /// Panics with `describe()` unless the command exited 0; returns stdout.
    pub fn expect_success(self, what: &str) -> String {
        if !self.success() {
            panic!("{what} failed\n{}", self.describe());
        }
        self.stdout
    }
}

/// True when this process runs as root (uid 0).
pub fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
            .unwrap_or(false)
    })
}

/// A `Command` that runs `program` as the postgres user (through `runuser` when we are root,
/// directly otherwise: then we assume the tests already run as the cluster owner).
pub fn as_postgres(program: impl AsRef<str>) -> Command {
    let program = program.as_ref();
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_USER, "--", program]);
        c
    } else {
        Command::new(program)
    }
}

/// Gives `path` to the postgres user (no-op unless root). Panics on failure.
pub fn chown_postgres(path: &Path) {
    if !is_root() {
        return;
    }
    let out = run(
        Command::new("chown").arg(format!("{PG_USER}:{PG_USER}")).arg(path),
        None,
        Duration::from_secs(30),
    );
    if !out.success() {
        panic!("could not give {} to {PG_USER}\n{}", path.display(), out.describe());
    }
}

/// Writes `contents` to `path` and makes it owned by postgres.
pub fn write_as_postgres(path: &Path, contents: &str) {
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("could not write {}: {e}", path.display()));
    chown_postgres(path);
}

/// Appends `contents` to an existing file (ownership unchanged).
pub fn append_file(path: &Path, contents: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("could not open {} for appending: {e}", path.display()));
    f.write_all(contents.as_bytes())
        .unwrap_or_else(|e| panic!("could not append to {}: {e}", path.display()));
}

pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            s.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

pub fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// A started process whose stdout and stderr are collected by two threads.
pub struct Running {
    pub cmdline: String,
    child: Child,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
    status: Option<ExitStatus>,
}

fn collect<R: Read + Send + 'static>(r: Option<R>) -> Option<JoinHandle<String>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    })
}

impl Running {
    /// Starts `cmd` with piped output and, if given, `stdin` fed then closed.
    pub fn spawn(cmd: &mut Command, stdin: Option<&str>) -> Running {
        let cmdline = cmdline(cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start `{cmdline}`: {e}"));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            let input = input.to_string();
            // A writer thread, so a big input cannot deadlock against a full stdout pipe.
            std::thread::spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        let out = collect(child.stdout.take());
        let err = collect(child.stderr.take());
        Running { cmdline, child, out, err, status: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True once the process has exited (does not block).
    pub fn is_finished(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        match self.child.try_wait() {
            Ok(Some(st)) => {
                self.status = Some(st);
                true
            }
            Ok(None) => false,
            Err(e) => panic!("could not poll `{}`: {e}", self.cmdline),
        }
    }

    /// Waits up to `timeout`; returns `None` (process still running) on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Outcome> {
        let deadline = Instant::now() + timeout;
        while !self.is_finished() {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let stdout = self.out.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        let stderr = self.err.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        Some(Outcome {
            cmdline: self.cmdline.clone(),
            code: self.status.and_then(|s| s.code()),
            stdout,
            stderr,
        })
    }

    /// Stops the process: SIGTERM first (runuser forwards it to its child), then SIGKILL.
    pub fn terminate(&mut self) {
        if self.is_finished() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if self.wait_timeout(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Waits up to `timeout`, panicking (after stopping the process) if it is still running.
    pub fn wait(mut self, timeout: Duration) -> Outcome {
        match self.wait_timeout(timeout) {
            Some(o) => o,
            None => {
                self.terminate();
                let partial = self.wait_timeout(Duration::from_secs(5));
                panic!(
                    "`{}` did not finish within {:?}; stopped it\n{}",
                    self.cmdline,
                    timeout,
                    partial.map(|o| o.describe()).unwrap_or_default()
                );
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Runs `cmd` to completion (at most `timeout`, then it is stopped and we panic).
pub fn run(cmd: &mut Command, stdin: Option<&str>, timeout: Duration) -> Outcome {
    Running::spawn(cmd, stdin).wait(timeout)
}

/// Runs `cmd` and panics with a readable message unless it exits 0. Returns stdout.
pub fn run_ok(cmd: &mut Command, what: &str, timeout: Duration) -> String {
    run(cmd, None, timeout).expect_success(what)
}
