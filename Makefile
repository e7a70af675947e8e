# walg_ext: the two commands a user needs are `make demo` and `make test`.
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PGRX_TEST_PGDATA ?= /tmp/walg-ext-pgrx-test
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup build install test test-core test-pg test-e2e demo bench bench-codec clean

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --release -p walg-cli

# Release build of the extension into the system PostgreSQL 15, and walg-ext into /usr/local/bin.
install: setup
	$(CARGO) pgrx install -p walg_ext --release --pg-config $(PG_CONFIG)
	# Compiles most dependencies a second time (about 8 of CI's minutes): cargo-pgrx builds the
	# extension alone with rustflags of its own, and walg-cli's dependency features differ
	# (proc-macro2's span-locations, at least). Giving walg-cli the same rustflags did not help.
	$(CARGO) build --release -p walg-cli
	install -m 0755 target/release/walg-ext /usr/local/bin/walg-ext

test-core: setup
	$(CARGO) test -p walg-core -p walg-cli

# A fresh test cluster and storage each run: a storage left by an earlier run holds a backup
# with the name the fresh cluster's first backup gets, which is refused as a conflict.
test-pg: setup
	rm -rf $(PGRX_TEST_PGDATA) /tmp/walg-ext-pgrx-storage
	# The storage prefix must exist: readers report a missing one as unreachable, not empty.
	install -d -m 0700 -o postgres -g postgres /tmp/walg-ext-pgrx-storage
	$(CARGO) pgrx test pg15 -p walg_ext --runas postgres --pgdata $(PGRX_TEST_PGDATA)

test-e2e: install
	$(CARGO) test -p walg-e2e -- --test-threads=1

test: test-core test-pg test-e2e

demo: install
	bash scripts/demo.sh

# Side by side with pgBackRest and pg_basebackup (BENCH_* settings: see bench/bench.py).
bench: install
	bash scripts/setup-bench.sh
	# The helper that starts each backend's test server for the per-backend rows.
	$(CARGO) build --release -p walg-e2e --bin walg-test-storage
	/usr/bin/python3 bench/bench.py

# Codec pipeline throughput per method next to the Debian zstd/lz4 tools (bench/codec.sh).
bench-codec: setup
	bash bench/codec.sh

clean:
	$(CARGO) clean
