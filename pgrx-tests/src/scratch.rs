//! Scratch directories under /tmp owned by postgres, removed on drop unless WALG_E2E_KEEP=1.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cmd::chown_postgres;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// True when WALG_E2E_KEEP=1: directories are left behind for inspection.
pub fn keep_dirs() -> bool {
    std::env::var("WALG_E2E_KEEP").map(|v| v == "1").unwrap_or(false)
}

/// A fresh directory `/tmp/walg-e2e-<label>-<pid>-<n>` owned by postgres (mode 0700).
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(label: &str) -> ScratchDir {
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .collect();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir()
            .join(format!("walg-e2e-{label}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .unwrap_or_else(|e| panic!("could not remove stale {}: {e}", path.display()));
        }
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("could not create {}: {e}", path.display()));
        set_mode(&path, 0o700);
        chown_postgres(&path);
        ScratchDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates (postgres-owned, 0700) and returns a subdirectory.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::create_dir_all(&p)
            .unwrap_or_else(|e| panic!("could not create {}: {e}", p.display()));
        set_mode(&p, 0o700);
        chown_postgres(&p);
        p
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("could not chmod {:o} {}: {e}", mode, path.display()));
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if keep_dirs() {
            eprintln!("WALG_E2E_KEEP=1: kept {}", self.path.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove {}: {e}", self.path.display());
        }
    }
}
