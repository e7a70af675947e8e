//! Killing the backup worker mid-way leaves no listed backup, the caller gets an error, and the
//! next backup works. Case 1: pg_terminate_backend. Case 2: kill -9 (crash restart). Case 3: the
//! caller is cancelled (pg_cancel_backend, as Ctrl-C or statement_timeout would), which must stop
//! the backup too.

use std::process::Command;
use std::time::{Duration, Instant};

use walg_e2e::{require_installed, wait_until, Backend, Cluster, Storage};

/// Bytes per second: with pgbench scale 5 (~110 MB of data files) the backup takes ~25 s.
const SLOW_RATE: u64 = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug)]
enum Kill {
    Terminate,
    Sigkill,
    CallerCancel,
}

fn kill_backup(backend: Backend, how: Kill) {
    require_installed();
    let label = format!("kill-{backend:?}-{how:?}").to_lowercase();
    let storage = Storage::with_backend(backend, &label, "lz4", &[]);
    let mut a = Cluster::init(
        &format!("{label}-a"),
        &format!("{}walg.disk_rate_limit = {SLOW_RATE}\n", storage.extension_conf()),
    );
    a.start();
    a.pgbench_init(5);
    a.psql("CREATE EXTENSION walg_ext");
    assert_ne!(a.psql("SHOW walg.disk_rate_limit"), "0", "the rate limit is in effect");

    let mut caller = a.psql_background("SELECT walg_backup_push()");
    let started = Instant::now();
    let pid = wait_until("the 'walg_ext backup' worker in pg_stat_activity", Duration::from_secs(60), || {
        if caller.is_finished() {
            let out = caller.wait_timeout(Duration::from_secs(5)).unwrap();
            panic!(
                "walg_backup_push() finished before the worker could be killed \
                 (is walg.disk_rate_limit honoured?)\n{}",
                out.describe()
            );
        }
        a.backup_worker_pid()
    });
    // Let it upload something: until a part object appears, or 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    while storage.part_objects().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !caller.is_finished(),
        "the backup finished within {:?}: too fast to kill; lower SLOW_RATE",
        started.elapsed()
    );
    assert_eq!(a.backup_worker_pid(), Some(pid), "the worker is still the same process");

    match how {
        Kill::Terminate => {
            assert_eq!(a.psql(&format!("SELECT pg_terminate_backend({pid})")), "t");
        }
        Kill::Sigkill => {
            let st = Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
            assert!(st.success(), "kill -9 {pid}");
        }
        Kill::CallerCancel => {
            let caller_pid = a.psql(
                "SELECT pid FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND query = 'SELECT walg_backup_push()'",
            );
            assert!(!caller_pid.is_empty(), "the waiting caller is visible in pg_stat_activity");
            assert_eq!(a.psql(&format!("SELECT pg_cancel_backend({caller_pid})")), "t");
        }
    }

    let out = caller.wait(Duration::from_secs(120));
    assert!(
        !out.success(),
        "the caller of walg_backup_push() must get an error when its worker dies\n{}",
        out.describe()
    );
    if let Kill::CallerCancel = how {
        assert!(
            out.stderr.contains("cancel"),
            "the cancelled caller says so\n{}",
            out.describe()
        );
    }
    if let Kill::Sigkill = how {
        // The postmaster restarts every backend after a crash; wait for it to be back.
        a.wait_ready(Duration::from_secs(120));
        let log = a.log_text();
        assert!(
            log.contains("terminated by signal 9"),
            "the postmaster should have seen the worker die by signal 9; log tail:\n{}",
            a.log_tail(40)
        );
    }
    wait_until("the backup worker to be gone", Duration::from_secs(60), || {
        a.backup_worker_pid().is_none().then_some(())
    });

    assert_eq!(
        storage.sentinel_backups(),
        Vec::<String>::new(),
        "a killed backup must not leave a sentinel"
    );
    assert_eq!(a.psql("SELECT count(*) FROM walg_backup_list()"), "0", "nothing listed");
    // What the killed worker had stored is whole: an upload cut by the kill never shows as an
    // object (a truncated lz4 stream fails to decode).
    let parts = storage.part_objects();
    for key in &parts {
        let bytes = storage.read(key);
        let mut r = walg_core::codec::decompress_reader(
            walg_core::codec::extension_of(key),
            key,
            Box::new(std::io::Cursor::new(bytes)),
        )
        .unwrap();
        std::io::copy(&mut r, &mut std::io::sink())
            .unwrap_or_else(|e| panic!("{key}, left by the {how:?} backup on {backend:?}, is not whole: {e}"));
    }
    eprintln!("{backend:?} {how:?}: {} part objects left by the killed backup, each whole", parts.len());
    let out = storage.walg_ext(&["backup-list"]);
    assert!(
        !out.stdout.contains("base_"),
        "walg-ext backup-list must not show the killed backup\n{}",
        out.describe()
    );

    // A new backup at full speed works and is the only one listed.
    a.set_and_reload("walg.disk_rate_limit", "0");
    a.wait_for_value("SHOW walg.disk_rate_limit", "0", Duration::from_secs(30));
    let name = a.psql("SELECT walg_backup_push()");
    assert!(name.starts_with("base_"), "walg_backup_push() returned {name:?}");
    assert_eq!(a.psql("SELECT backup_name FROM walg_backup_list()"), name);
    assert_eq!(storage.sentinel_backups(), vec![name.clone()]);

    a.stop();
}

#[test]
fn backup_worker_terminated() {
    kill_backup(Backend::File, Kill::Terminate);
}

#[test]
fn backup_worker_killed_with_sigkill() {
    kill_backup(Backend::File, Kill::Sigkill);
}

#[test]
fn backup_worker_killed_with_sigkill_s3() {
    kill_backup(Backend::S3, Kill::Sigkill);
}

#[test]
fn backup_caller_cancelled() {
    kill_backup(Backend::File, Kill::CallerCancel);
}

// kill -9 on every other remote backend: the killed writer's unfinished upload (Azure's
// uncommitted blocks, GCS's resumable session, Swift's unfinished chunked PUT, SFTP's temp file)
// never shows as an object, and the next backup works.
#[test]
fn backup_worker_killed_with_sigkill_azure() {
    kill_backup(Backend::Azure, Kill::Sigkill);
}

#[test]
fn backup_worker_killed_with_sigkill_gcs() {
    kill_backup(Backend::Gcs, Kill::Sigkill);
}

#[test]
fn backup_worker_killed_with_sigkill_swift() {
    kill_backup(Backend::Swift, Kill::Sigkill);
}

#[test]
fn backup_worker_killed_with_sigkill_sftp() {
    kill_backup(Backend::Sftp, Kill::Sigkill);
}
