//! The WAL block-reference parser (walg_core::wal::blocks) against PostgreSQL's own pg_waldump,
//! on the WAL of a real PostgreSQL 15 cluster running a workload mix: for every archived segment,
//! the block references the parser finds must be exactly those pg_waldump prints for that segment
//! (records crossing a segment boundary, which pg_waldump given one segment does not print, are
//! compared once the boundary pieces are joined, against pg_waldump over the whole range).
//!
//! Needs PostgreSQL 15 in /usr/lib/postgresql/15 and root (the cluster runs as `postgres` through
//! runuser); it fails, it does not skip, when they are missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use walg_core::wal::blocks::{
    join, scan_segment, Change, End, FileEvent, Head, SegmentMap, Start, Tail,
};

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// (record LSN, block id, spc, db, rel, fork, block)
type Ref = (u64, u8, u32, u32, u32, u8, u32);

struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
    fn archive(&self) -> PathBuf {
        self.dir.join("archive")
    }
    fn as_postgres(&self, prog: &str, args: &[&str]) -> Output {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{BIN}/{prog}")])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("runuser {prog}: {e}"));
        assert!(
            out.status.success(),
            "{prog} {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
    fn conn<'a>(&'a self, db: &'a str, port: &'a str) -> Vec<&'a str> {
        vec!["-h", self.dir.to_str().unwrap(), "-p", port, "-d", db]
    }
    fn psql(&self, db: &str, sql: &str) -> String {
        let file = self.dir.join("step.sql");
        std::fs::write(&file, sql).unwrap();
        let port = self.port.to_string();
        let mut args = self.conn(db, &port);
        args.extend([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            file.to_str().unwrap(),
        ]);
        String::from_utf8(self.as_postgres("psql", &args).stdout)
            .unwrap()
            .trim()
            .to_string()
    }
    fn pgbench(&self, extra: &[&str]) {
        let port = self.port.to_string();
        let mut args = vec!["-h", self.dir.to_str().unwrap(), "-p", &port];
        args.extend(extra);
        args.push("postgres");
        self.as_postgres("pgbench", &args);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &format!("{BIN}/pg_ctl"),
                "stop",
                "-m",
                "immediate",
                "-D",
            ])
            .arg(self.data())
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_cluster(dir: &Path) -> Cluster {
    assert!(
        Path::new(&format!("{BIN}/initdb")).exists(),
        "PostgreSQL 15 is not installed in {BIN}"
    );
    for sub in ["archive", "ts1"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let st = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "chown to postgres failed (this test runs as root)"
    );
    let c = Cluster {
        dir: dir.to_path_buf(),
        port: free_port(),
    };
    c.as_postgres(
        "initdb",
        &[
            "-D",
            c.data().to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
    );
    let conf = format!(
        "port = {}\nlisten_addresses = ''\nunix_socket_directories = '{}'\narchive_mode = on\n\
         archive_command = 'cp %p {}/%f'\nwal_level = replica\nwal_log_hints = on\n\
         max_prepared_transactions = 5\nfsync = off\nmax_wal_size = 1GB\n",
        c.port,
        dir.display(),
        c.archive().display()
    );
    let mut all = std::fs::read_to_string(c.data().join("postgresql.conf")).unwrap();
    all.push_str(&conf);
    std::fs::write(c.data().join("postgresql.conf"), all).unwrap();
    let log = dir.join("server.log");
    c.as_postgres(
        "pg_ctl",
        &[
            "start",
            "-w",
            "-D",
            c.data().to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
        ],
    );
    c
}

fn set_compression(c: &Cluster, method: &str) {
    c.psql(
        "postgres",
        &format!("ALTER SYSTEM SET wal_compression = '{method}';\nSELECT pg_reload_conf();\n"),
    );
}

fn workload(c: &Cluster) {
    let d = c.dir.display();
    set_compression(c, "off");
    c.pgbench(&["-i", "-s", "3", "-q"]);
    set_compression(c, "pglz");
    c.pgbench(&["-c", "2", "-t", "1500"]);
    set_compression(c, "lz4");
    c.psql(
        "postgres",
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text, p point, arr int[], r int4range);
             INSERT INTO t SELECT g, md5(g::text), point(g, g), ARRAY[g, g + 1], int4range(g, g + 10)
               FROM generate_series(1, 60000) g;
             COPY (SELECT g, md5(g::text) FROM generate_series(1, 40000) g) TO '{d}/copy.csv' CSV;
             CREATE TABLE c (id int, v text);
             COPY c FROM '{d}/copy.csv' CSV;
             UPDATE t SET v = v || 'x' WHERE id % 2 = 0;
             DELETE FROM t WHERE id % 7 = 0;
             VACUUM t;
             VACUUM FULL c;
             DELETE FROM c WHERE id > 20000;
             VACUUM c;
             CLUSTER t USING t_pkey;
             CREATE INDEX t_btree ON t (v);
             CREATE INDEX t_hash ON t USING hash (id);
             CREATE INDEX t_gist ON t USING gist (p);
             CREATE INDEX t_gin ON t USING gin (arr);
             CREATE INDEX t_brin ON t USING brin (id);
             CREATE INDEX t_spgist ON t USING spgist (r);
             CREATE SEQUENCE s;
             SELECT count(nextval('s')) FROM generate_series(1, 2000);
             CREATE UNLOGGED TABLE u AS SELECT g AS id FROM generate_series(1, 20000) g;
             ALTER TABLE u SET LOGGED;
             TRUNCATE pgbench_history;
             CREATE TABLE gone AS SELECT * FROM t LIMIT 500;
             DROP TABLE gone;
             BEGIN; CREATE TABLE aborted AS SELECT 1 AS x; ROLLBACK;
             BEGIN; CREATE TABLE two_phase (x int); INSERT INTO two_phase VALUES (1); PREPARE TRANSACTION 'p1';
             COMMIT PREPARED 'p1';
             BEGIN; DROP TABLE two_phase; PREPARE TRANSACTION 'p2';
             COMMIT PREPARED 'p2';
             "
        ),
    );
    set_compression(c, "zstd");
    c.psql(
        "postgres",
        &format!(
            "CREATE TABLESPACE ts1 LOCATION '{d}/ts1';
             ALTER TABLE t SET TABLESPACE ts1;
             ALTER INDEX t_gist SET TABLESPACE ts1;
             CREATE DATABASE db_wal STRATEGY WAL_LOG;
             CREATE DATABASE db_copy STRATEGY FILE_COPY;
             ALTER DATABASE db_wal SET TABLESPACE ts1;
             DROP DATABASE db_copy;
             UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 10 = 0;
             VACUUM FULL pgbench_branches;
             CHECKPOINT;
             "
        ),
    );
    set_compression(c, "off");
    // A restart with a changed PGC_POSTMASTER setting writes XLOG_PARAMETER_CHANGE.
    c.psql("postgres", "ALTER SYSTEM SET max_connections = 50;");
    let log = c.dir.join("server.log");
    c.as_postgres(
        "pg_ctl",
        &[
            "restart",
            "-w",
            "-m",
            "fast",
            "-D",
            c.data().to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
        ],
    );
    c.psql(
        "db_wal",
        "CREATE TABLE w AS SELECT g FROM generate_series(1, 1000) g; VACUUM w;",
    );
    c.pgbench(&["-c", "2", "-t", "500"]);
    // The segment being written now is the last to check: switch away from it and wait for it.
    let last = c.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn());");
    c.psql("postgres", "SELECT pg_switch_wal();");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c.archive().join(&last).exists() {
        assert!(
            Instant::now() < deadline,
            "segment {last} was not archived within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn fork(name: &str) -> u8 {
    match name {
        "main" => 0,
        "fsm" => 1,
        "vm" => 2,
        "init" => 3,
        _ => panic!("fork {name}"),
    }
}

fn lsn(s: &str) -> u64 {
    let (hi, lo) = s.trim_end_matches(',').split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// pg_waldump -b's records and block references: (record LSNs, refs).
fn waldump(args: &[&str]) -> (Vec<u64>, Vec<Ref>) {
    let out = Command::new(format!("{BIN}/pg_waldump"))
        .arg("-b")
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (mut recs, mut refs) = (Vec::new(), Vec::new());
    let mut cur = 0;
    for line in text.lines() {
        if line.starts_with("rmgr:") {
            let at = line.find(" lsn: ").expect("lsn in pg_waldump line");
            cur = lsn(line[at + 6..].split_whitespace().next().unwrap());
            recs.push(cur);
        } else if let Some(rest) = line.trim_start().strip_prefix("blkref #") {
            // "N: rel S/D/R fork F blk B ..."
            let w: Vec<&str> = rest.split_whitespace().collect();
            assert_eq!(
                (w[1], w[3], w[5]),
                ("rel", "fork", "blk"),
                "unexpected pg_waldump line {line:?}"
            );
            let id: u8 = w[0].trim_end_matches(':').parse().unwrap();
            let n: Vec<u32> = w[2].split('/').map(|x| x.parse().unwrap()).collect();
            refs.push((cur, id, n[0], n[1], n[2], fork(w[4]), w[6].parse().unwrap()));
        }
    }
    assert!(
        !recs.is_empty() || !out.stderr.is_empty(),
        "pg_waldump {args:?} printed nothing"
    );
    (recs, refs)
}

fn to_ref(lsn: u64, c: &Change) -> Option<Ref> {
    match c {
        Change::Block {
            block_id, block, ..
        } => Some((
            lsn,
            *block_id,
            block.rel.spc,
            block.rel.db,
            block.rel.rel,
            block.fork,
            block.block,
        )),
        Change::File(_) => None,
    }
}

#[test]
fn block_references_match_pg_waldump_segment_by_segment() {
    let tmp = tempfile::Builder::new()
        .prefix("walparse-")
        .tempdir_in("/tmp")
        .unwrap();
    let c = start_cluster(tmp.path());
    workload(&c);
    let mut names: Vec<String> = std::fs::read_dir(c.archive())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 24 && n.chars().all(|ch| ch.is_ascii_hexdigit()))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "only {} segments archived", names.len());

    let mut segments = Vec::new();
    let mut all_refs: Vec<Ref> = Vec::new();
    let mut events: Vec<FileEvent> = Vec::new();
    let mut ends: BTreeMap<&'static str, usize> = BTreeMap::new();
    for name in &names {
        let path = c.archive().join(name);
        let bytes = std::fs::read(&path).unwrap();
        // pg_waldump on a copy alone in a directory, so it reads exactly this segment.
        let alone = tmp.path().join("alone");
        let _ = std::fs::remove_dir_all(&alone);
        std::fs::create_dir(&alone).unwrap();
        std::fs::copy(&path, alone.join(name)).unwrap();
        let (dump_recs, mut dump_refs) = waldump(&[alone.join(name).to_str().unwrap()]);

        let mut refs = Vec::new();
        let scan = scan_segment(&bytes, &mut |lsn, ch| {
            refs.extend(to_ref(lsn, &ch));
            if let Change::File(ev) = ch {
                events.push(ev);
            }
        });
        assert!(scan.is_complete(), "{name}: {scan:?}");
        *ends
            .entry(match scan.end {
                End::SegmentEnd => "segment end",
                End::Switch { .. } => "switch",
                End::MidRecord { .. } => "record into the next segment",
                End::InsideRecord => "inside one record",
                End::Invalid { .. } => "invalid",
            })
            .or_default() += 1;
        assert_eq!(
            scan.records as usize,
            dump_recs.len(),
            "{name}: record count"
        );
        refs.sort();
        dump_refs.sort();
        assert_eq!(
            refs.len(),
            dump_refs.len(),
            "{name}: number of block references"
        );
        assert_eq!(
            refs, dump_refs,
            "{name}: block references differ from pg_waldump's"
        );
        let mut distinct: Vec<_> = refs.iter().map(|r| (r.2, r.3, r.4, r.5, r.6)).collect();
        distinct.sort();
        distinct.dedup();
        let map = SegmentMap::build(&bytes);
        let mapped: Vec<_> = map
            .blocks
            .iter()
            .map(|b| (b.rel.spc, b.rel.db, b.rel.rel, b.fork, b.block))
            .collect();
        assert_eq!(
            mapped, distinct,
            "{name}: SegmentMap::build's distinct blocks"
        );
        all_refs.extend(refs);
        segments.push(bytes);
    }

    // Records across segment boundaries: join the pieces, compare with pg_waldump over the range.
    let scans: Vec<_> = segments
        .iter()
        .map(|b| scan_segment(b, &mut |_, _| {}))
        .collect();
    let mut joined = 0;
    for (i, s) in scans.iter().enumerate() {
        let End::MidRecord {
            tail: Some(tail), ..
        } = &s.end
        else {
            continue;
        };
        let mut heads: Vec<&Head> = Vec::new();
        for next in &scans[i + 1..] {
            let Start::MidRecord(Some(h)) = &next.start else {
                panic!("no head after {tail:?}")
            };
            heads.push(h);
            if next.end != End::InsideRecord {
                break;
            }
        }
        join_into(tail, &heads, &mut all_refs);
        joined += 1;
    }
    let first = c.archive().join(&names[0]);
    let last = c.archive().join(names.last().unwrap());
    let (_, mut dump_all) = waldump(&[first.to_str().unwrap(), last.to_str().unwrap()]);
    all_refs.sort();
    dump_all.sort();
    assert_eq!(
        all_refs.len(),
        dump_all.len(),
        "whole range: number of block references"
    );
    assert_eq!(
        all_refs, dump_all,
        "whole range: block references differ from pg_waldump's"
    );

    // The file-level events of the workload are all seen.
    let has = |f: &dyn Fn(&FileEvent) -> bool| events.iter().any(f);
    assert!(
        has(&|e| matches!(e, FileEvent::Create { fork: 0, .. })),
        "smgr create"
    );
    assert!(
        has(&|e| matches!(e, FileEvent::Create { fork: 3, .. })),
        "init fork create (unlogged table)"
    );
    assert!(
        has(&|e| matches!(e, FileEvent::Truncate { .. })),
        "smgr truncate"
    );
    assert!(
        has(&|e| matches!(e, FileEvent::CreateDatabaseWalLog { .. })),
        "CREATE DATABASE WAL_LOG"
    );
    assert!(
        has(&|e| matches!(e, FileEvent::CreateDatabaseCopy { .. })),
        "CREATE DATABASE FILE_COPY"
    );
    assert!(
        has(&|e| matches!(e, FileEvent::DropDatabase { .. })),
        "DROP DATABASE"
    );
    assert!(
        has(&|e| matches!(e, FileEvent::CreateTablespace { .. })),
        "CREATE TABLESPACE"
    );
    assert!(
        has(&|e| matches!(e, FileEvent::RelMapUpdate { .. })),
        "relation map update"
    );
    assert!(
        has(&|e| matches!(e, FileEvent::Drop { commit: true, .. })),
        "relation dropped at commit"
    );
    assert!(
        has(&|e| matches!(e, FileEvent::Drop { commit: false, .. })),
        "relation dropped at abort"
    );
    assert!(
        has(&|e| matches!(e, FileEvent::WalLevel { level: 1 })),
        "parameter change (wal_level replica)"
    );

    // Speed of the parse alone (segments in memory), for the archiver's budget: the scan with
    // nothing collected, then the whole map (collect, sort, dedup).
    let speed = |f: &dyn Fn(&[u8]) -> usize| {
        let t = Instant::now();
        let (mut rounds, mut n) = (0, 0);
        while rounds < 3 || t.elapsed() < Duration::from_secs(2) {
            n += segments.iter().map(|b| f(b)).sum::<usize>();
            rounds += 1;
        }
        let mb = (segments.len() * rounds * (16 << 20)) as f64 / 1e6;
        (mb / t.elapsed().as_secs_f64(), n / rounds)
    };
    let (scan_speed, recs) = speed(&|b| scan_segment(b, &mut |_, _| {}).records as usize);
    let (map_speed, nblocks) = speed(&|b| SegmentMap::build(b).blocks.len());
    println!(
        "walparse: {} segments, ends {ends:?}, {joined} boundary records joined, {} block refs, {} file events",
        segments.len(),
        all_refs.len(),
        events.len()
    );
    println!(
        "walparse speed: scan {scan_speed:.0} MB/s ({recs} records), SegmentMap::build {map_speed:.0} MB/s \
         ({nblocks} distinct blocks); debug assertions {}",
        if cfg!(debug_assertions) { "on" } else { "off" }
    );
    if let Ok(keep) = std::env::var("WALPARSE_KEEP_SEGMENTS") {
        for name in &names {
            std::fs::copy(c.archive().join(name), Path::new(&keep).join(name)).unwrap();
        }
    }
}

fn join_into(tail: &Tail, heads: &[&Head], refs: &mut Vec<Ref>) {
    join(tail, heads, &mut |lsn, ch| refs.extend(to_ref(lsn, &ch)))
        .unwrap_or_else(|e| panic!("join of the record at {:X}: {e}", tail.lsn));
}
