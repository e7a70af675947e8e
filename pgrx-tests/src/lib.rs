//! End-to-end test harness for walg_ext: real PostgreSQL 15 clusters (run as the `postgres` OS
//! user), a storage prefix (a directory, or S3 on a moto server the harness starts), and the
//! `walg-ext` CLI.
//!
//! Tests that need the extension call [`require_installed`] first, so a machine without
//! `make install` fails loudly instead of passing vacuously.
//!
//! Environment:
//! - `WALG_E2E_KEEP=1` keeps the cluster and storage directories (servers are still stopped).
//! - `WALG_EXT_BIN` overrides the CLI path (default `/usr/local/bin/walg-ext`).

pub mod cluster;
pub mod cmd;
pub mod azurite;
pub mod gcs_emulator;
pub mod s3server;
pub mod scratch;
pub mod sshd;
pub mod storage;
pub mod swift_server;

use std::path::Path;
use std::time::{Duration, Instant};

pub use cluster::{assert_dumps_equal, normalize_dump, pg_bin, Cluster, PG_BIN};
pub use cmd::{as_postgres, is_root, Outcome, Running};
pub use scratch::{keep_dirs, ScratchDir};
pub use s3server::S3Server;
pub use storage::{walg_ext, walg_ext_bin, Backend, Storage};

/// Where `make install` puts the extension's shared library.
pub const EXTENSION_SO: &str = "/usr/lib/postgresql/15/lib/walg_ext.so";
/// Where `make install` puts the control file.
pub const EXTENSION_CONTROL: &str = "/usr/share/postgresql/15/extension/walg_ext.control";

/// Panics ("run make install first") unless the extension and the CLI are installed, and unless
/// the PostgreSQL 15 binaries are there. Call at the start of every test that uses walg_ext.
pub fn require_installed() {
    require_postgres();
    let bin = walg_ext_bin();
    let mut missing = Vec::new();
    for p in [EXTENSION_SO, EXTENSION_CONTROL, bin.as_str()] {
        if !Path::new(p).is_file() {
            missing.push(p.to_string());
        }
    }
    if !missing.is_empty() {
        panic!(
            "walg_ext is not installed (missing: {}): run make install first \
             (or set WALG_EXT_BIN to the walg-ext binary)",
            missing.join(", ")
        );
    }
}

/// Panics unless the PostgreSQL 15 binaries exist and we can run them as postgres.
pub fn require_postgres() {
    for tool in ["initdb", "pg_ctl", "postgres", "psql", "pgbench", "pg_dumpall"] {
        let p = pg_bin(tool);
        assert!(Path::new(&p).is_file(), "PostgreSQL 15 tool {p} is missing");
    }
    if !is_root() {
        let user = std::env::var("USER").unwrap_or_default();
        assert!(
            user == cmd::PG_USER,
            "run the end-to-end tests as root (they switch to postgres with runuser) or as \
             postgres; current user: {user:?}"
        );
    }
}

/// Polls `f` every 200 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
