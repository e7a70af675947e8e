#!/usr/bin/env bash
# Codec pipeline throughput (walg-core) next to the Debian zstd and lz4 tools on the same data.
#
#   make bench-codec                      # sample: a pgbench database (scale $BENCH_SCALE) as a tar
#   BENCH_INPUT=/path/file make bench-codec
#
# Our numbers: crates/core/examples/codec_bench.rs (1 MiB streaming writes, as tar parts are
# written; "all cores" = one object per thread, as parallel tar parts are). Theirs: `zstd -b`
# and `lz4 -b` (in-memory benchmark of the same file; zstd also with -T0, all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${BENCH_DIR:-/tmp/walg-bench-codec}
SCALE=${BENCH_SCALE:-8}
PGBIN=/usr/lib/postgresql/15/bin
mkdir -p "$WORK"

input=${BENCH_INPUT:-}
if [ -z "$input" ]; then
  input="$WORK/pgdata-scale$SCALE.tar"
  if [ ! -s "$input" ]; then
    echo "bench: making sample data: pgbench scale $SCALE, PGDATA as a tar (without pg_wal)"
    pgdata="$WORK/pgdata"
    rm -rf "$pgdata"
    chown postgres "$WORK"
    as_pg() { if [ "$(id -u)" = 0 ]; then sudo -u postgres "$@"; else "$@"; fi; }
    as_pg "$PGBIN/initdb" -D "$pgdata" -A trust >/dev/null
    as_pg "$PGBIN/pg_ctl" -D "$pgdata" -o "-p 55499 -k $WORK -c listen_addresses=''" -l "$WORK/pg.log" -w start >/dev/null
    trap 'as_pg "$PGBIN/pg_ctl" -D "$pgdata" -m fast stop >/dev/null 2>&1 || true' EXIT
    as_pg "$PGBIN/pgbench" -h "$WORK" -p 55499 -i -s "$SCALE" -q postgres 2>/dev/null
    as_pg "$PGBIN/psql" -h "$WORK" -p 55499 -qc CHECKPOINT postgres
    as_pg "$PGBIN/pg_ctl" -D "$pgdata" -m fast stop >/dev/null
    trap - EXIT
    tar -C "$pgdata" --exclude=./pg_wal -cf "$input" .
    rm -rf "$pgdata"
  fi
fi

cargo build -q --release -p walg-core --example codec_bench
echo
echo "== walg-core pipeline =="
target/release/examples/codec_bench "$input" "${BENCH_THREADS:-$(nproc)}"
echo
# The tools print progress with \r; keep each level's final line: level, size, (ratio), compress, decompress.
results() { tr '\r' '\n' | grep -E '^ *-?[0-9]+#? .*MB/s.*MB/s' | awk '{ last[$1] = $0 } END { for (l in last) print last[l] }' | sort -t- -k2 -n; }
echo "== Debian zstd $(zstd --version | grep -o 'v[0-9.]*'), one thread: level, bytes, (ratio), compress, decompress =="
zstd -q -b1 -e3 -T1 "$input" 2>&1 | results
echo "== Debian zstd, all cores (-T0) =="
zstd -q -b1 -e3 -T0 "$input" 2>&1 | results
echo "== Debian lz4 $(lz4 --version 2>&1 | grep -o 'v[0-9.]*' | head -1), one thread =="
lz4 -q -b1 "$input" 2>&1 | results
# `-b` above is an in-memory benchmark without the frame checksum and I/O; the same tools
# streaming the file to /dev/null (as our pipeline streams) are the like-for-like comparison.
echo "== Debian tools streaming the file (one thread, to /dev/null): MB/s =="
size=$(stat -c %s "$input")
cat "$input" > /dev/null
stream() {
  local label=$1; shift
  local t0 t1
  t0=$(date +%s.%N); "$@" < "$input" > /dev/null; t1=$(date +%s.%N)
  awk -v l="$label" -v s="$size" -v a="$t0" -v b="$t1" 'BEGIN { printf "%-18s %8.0f MB/s\n", l, s / 1e6 / (b - a) }'
}
stream "lz4 -1" lz4 -1 -q -c
stream "zstd -1" zstd -1 -q -c -T1
stream "zstd -3" zstd -3 -q -c -T1
stream "brotli -q 3" brotli -q 3 -c
stream "xz --format=lzma -1" xz --format=lzma -1 -c
