#!/usr/bin/env bash
# walg_ext demo: archive WAL and take a base backup from inside PostgreSQL 15, then restore it
# with the walg-ext CLI into a second server and check that both hold the same data.
#
# Needs `make install` (extension in the system PostgreSQL 15, walg-ext in /usr/local/bin).
# Run as root (servers run as the postgres user through runuser) or as postgres.
#
#   DEMO_DIR=/tmp/walg-demo   where everything goes (wiped at the start; servers there stopped)
#   DEMO_PORT=5440            port of the primary; the restored server uses DEMO_PORT+1
#   DEMO_KEEP=1               leave both servers running at the end
#   WALG_EXT_BIN=...          walg-ext binary (default /usr/local/bin/walg-ext)
set -euo pipefail

DEMO_DIR=${DEMO_DIR:-/tmp/walg-demo}
DEMO_PORT=${DEMO_PORT:-5440}
RESTORED_PORT=$((DEMO_PORT + 1))
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
WALG_EXT=${WALG_EXT_BIN:-/usr/local/bin/walg-ext}
PG_LIBDIR=/usr/lib/postgresql/15/lib

PRIMARY=$DEMO_DIR/primary
RESTORED=$DEMO_DIR/restored
STORAGE=$DEMO_DIR/storage
CONFIG=$DEMO_DIR/walg.yaml
MARKER=$DEMO_DIR/.walg-demo

step() { printf '\n==> %s\n' "$*"; }
die() {
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf '!!! DEMO FAILED: %s\n' "$*" >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    exit 1
}

# Run a command as the postgres OS user.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    elif [ "$(id -un)" = postgres ]; then
        "$@"
    else
        sudo -u postgres -- "$@"
    fi
}

# sql PORT "SQL": unaligned, tuples only; stops at the first error.
sql() { as_pg "$PGBIN/psql" -h "$DEMO_DIR" -p "$1" -d postgres -AtXq -v ON_ERROR_STOP=1 -c "$2"; }
# show PORT "SQL": a readable table.
show() { as_pg "$PGBIN/psql" -h "$DEMO_DIR" -p "$1" -d postgres -X -P pager=off -v ON_ERROR_STOP=1 -c "$2"; }

stop_server() { # DATADIR
    if [ -f "$1/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$1" -m fast -w -t 60 stop >/dev/null 2>&1 ||
            as_pg "$PGBIN/pg_ctl" -D "$1" -m immediate -w stop >/dev/null 2>&1 || true
    fi
}

on_exit() {
    local rc=$?
    if [ "$rc" != 0 ]; then
        for log in "$DEMO_DIR/primary.log" "$DEMO_DIR/restored.log"; do
            if [ -f "$log" ]; then
                echo "--- last lines of $log ---" >&2
                tail -n 25 "$log" >&2 || true
            fi
        done
    fi
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        echo
        echo "DEMO_KEEP=1: servers left running:"
        echo "  primary:  psql -h $DEMO_DIR -p $DEMO_PORT -U postgres"
        echo "  restored: psql -h $DEMO_DIR -p $RESTORED_PORT -U postgres"
        echo "  they are stopped by the next run of this script, or: pg_ctl -D <datadir> stop (as postgres)"
    else
        stop_server "$RESTORED"
        stop_server "$PRIMARY"
    fi
    exit "$rc"
}

# ---------------------------------------------------------------------------------------------
step "Checking the installation"
[ -f "$PG_LIBDIR/walg_ext.so" ] || die "$PG_LIBDIR/walg_ext.so not found: run make install first"
[ -x "$WALG_EXT" ] || die "$WALG_EXT not found: run make install first"
[ -x "$PGBIN/initdb" ] || die "PostgreSQL 15 not found in $PGBIN"
id postgres >/dev/null 2>&1 || die "the postgres OS user does not exist"

step "Preparing $DEMO_DIR"
case "$DEMO_DIR" in
    /|"") die "refusing DEMO_DIR=$DEMO_DIR" ;;
esac
if [ -e "$DEMO_DIR" ]; then
    if [ -n "$(ls -A "$DEMO_DIR" 2>/dev/null)" ] && [ ! -f "$MARKER" ]; then
        die "$DEMO_DIR exists, is not empty and was not made by this demo; choose another DEMO_DIR"
    fi
    echo "    stopping servers of a previous run and wiping it"
    stop_server "$RESTORED"
    stop_server "$PRIMARY"
    rm -rf "$DEMO_DIR"
fi
trap on_exit EXIT
mkdir -p "$DEMO_DIR"
touch "$MARKER"
if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$DEMO_DIR"; fi
as_pg mkdir -p "$STORAGE"
cd "$DEMO_DIR" # a working directory postgres can read

cat <<EOF | as_pg tee "$CONFIG" >/dev/null
# walg-ext configuration (WAL-G key names); the extension uses the same storage via walg.* settings
WALG_FILE_PREFIX: $STORAGE
WALG_COMPRESSION_METHOD: lz4
EOF
echo "    storage: $STORAGE, CLI config: $CONFIG"

step "Creating the primary cluster in $PRIMARY (port $DEMO_PORT)"
as_pg "$PGBIN/initdb" --data-checksums --no-instructions -U postgres --auth=trust -E UTF8 \
    --locale=C -D "$PRIMARY" >"$DEMO_DIR/initdb.log" 2>&1 ||
    { cat "$DEMO_DIR/initdb.log" >&2; die "initdb failed"; }
cat <<EOF | as_pg tee -a "$PRIMARY/postgresql.conf" >/dev/null

# --- walg_ext demo ---
port = $DEMO_PORT
listen_addresses = ''
unix_socket_directories = '$DEMO_DIR'
shared_preload_libraries = 'walg_ext'
archive_mode = on
archive_library = 'walg_ext'
walg.file_prefix = '$STORAGE'
walg.compression_method = 'lz4'
EOF
as_pg "$PGBIN/pg_ctl" -D "$PRIMARY" -l "$DEMO_DIR/primary.log" -w -t 120 start >/dev/null ||
    die "the primary did not start"

step "Loading data: pgbench -i -s 10"
as_pg "$PGBIN/pgbench" -h "$DEMO_DIR" -p "$DEMO_PORT" -U postgres -i -q -s 10 postgres \
    >"$DEMO_DIR/pgbench.log" 2>&1 || { cat "$DEMO_DIR/pgbench.log" >&2; die "pgbench -i failed"; }
echo "    $(sql "$DEMO_PORT" "SELECT count(*) FROM pgbench_accounts") rows in pgbench_accounts"

step "CREATE EXTENSION walg_ext"
sql "$DEMO_PORT" "CREATE EXTENSION walg_ext"

step "SELECT walg_backup_push()  -- a full base backup, taken by a background worker"
BACKUP=$(sql "$DEMO_PORT" "SELECT walg_backup_push()")
echo "    backup: $BACKUP"

step "SELECT * FROM walg_backup_list()"
show "$DEMO_PORT" "SELECT * FROM walg_backup_list()"

step "Writing after the backup: pgbench -t 500 and a new table"
as_pg "$PGBIN/pgbench" -h "$DEMO_DIR" -p "$DEMO_PORT" -U postgres -n -t 500 postgres \
    >>"$DEMO_DIR/pgbench.log" 2>&1 || { tail -n 20 "$DEMO_DIR/pgbench.log" >&2; die "pgbench failed"; }
sql "$DEMO_PORT" "CREATE TABLE demo_after_backup(id int PRIMARY KEY, note text);
                  INSERT INTO demo_after_backup
                      SELECT g, 'written after ' || '$BACKUP' FROM generate_series(1, 10000) g"

step "Switching WAL and waiting until the segment is archived"
SEGMENT=$(sql "$DEMO_PORT" "SELECT pg_walfile_name(pg_switch_wal())")
echo "    waiting for $SEGMENT"
for _ in $(seq 1 600); do
    LAST=$(sql "$DEMO_PORT" "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
    if [[ ${#LAST} == 24 && ! "$LAST" < "$SEGMENT" ]]; then break; fi
    sleep 0.2
done
[[ ${#LAST} == 24 && ! "$LAST" < "$SEGMENT" ]] ||
    die "$SEGMENT not archived after 2 minutes: $(sql "$DEMO_PORT" "SELECT * FROM pg_stat_archiver")"
echo "    archived up to $LAST; storage holds $(ls "$STORAGE/wal_005" 2>/dev/null | wc -l) WAL objects"

step "walg-ext backup-list  (the CLI reads the same storage)"
as_pg "$WALG_EXT" --config "$CONFIG" backup-list

step "Restoring LATEST into $RESTORED with walg-ext backup-fetch"
as_pg mkdir -m 700 "$RESTORED"
as_pg "$WALG_EXT" --config "$CONFIG" backup-fetch "$RESTORED" LATEST

step "Starting the restored server (port $RESTORED_PORT), replaying WAL with walg-ext wal-fetch"
as_pg touch "$RESTORED/recovery.signal"
cat <<EOF | as_pg tee -a "$RESTORED/postgresql.auto.conf" >/dev/null

# --- walg_ext demo: restored server ---
port = $RESTORED_PORT
listen_addresses = ''
unix_socket_directories = '$DEMO_DIR'
archive_mode = off
restore_command = '$WALG_EXT --config $CONFIG wal-fetch %f %p'
recovery_target_timeline = 'latest'
EOF
as_pg "$PGBIN/pg_ctl" -D "$RESTORED" -l "$DEMO_DIR/restored.log" -w -t 300 start >/dev/null ||
    die "the restored server did not start"
for _ in $(seq 1 600); do
    [ "$(sql "$RESTORED_PORT" "SELECT pg_is_in_recovery()" 2>/dev/null || true)" = f ] && break
    sleep 0.5
done
[ "$(sql "$RESTORED_PORT" "SELECT pg_is_in_recovery()")" = f ] ||
    die "the restored server is still in recovery after 5 minutes"
echo "    recovery finished, the restored server was promoted"

step "Comparing row counts"
printf '    %-20s %12s %12s\n' table primary restored
MISMATCH=0
for t in pgbench_accounts pgbench_history demo_after_backup; do
    P=$(sql "$DEMO_PORT" "SELECT count(*) FROM $t")
    R=$(sql "$RESTORED_PORT" "SELECT count(*) FROM $t" 2>&1 || echo "error")
    MARK=""
    if [ "$P" != "$R" ]; then MARK="  <-- DIFFERENT"; MISMATCH=1; fi
    printf '    %-20s %12s %12s%s\n' "$t" "$P" "$R" "$MARK"
done
if [ "$MISMATCH" != 0 ]; then
    die "the restored server does not match the primary (logs: $DEMO_DIR/*.log)"
fi
echo
echo "OK: restored server matches"
