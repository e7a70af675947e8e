# walg_ext: the two commands a user needs are `make demo` and `make test`.
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PGRX_TEST_PGDATA ?= /tmp/walg-ext-pgrx-test
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup build install test test-core test-pg test-e2e demo bench bench-codec clean

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) --config scripts/cdylib-link.toml build --release -p walg_ext -p walg-cli \
		--no-default-features --features walg_ext/pg15 --lib --bin walg-ext

# Release build of the extension into the system PostgreSQL 15, and walg-ext into /usr/local/bin.
install: setup
	$(CARGO) pgrx install -p walg_ext --release --pg-config $(PG_CONFIG)
	# walg-cli in one cargo invocation with the extension's library, its features and cargo-pgrx's
	# link flag (scripts/cdylib-link.toml): cargo then unifies the same dependency features and
	# LTO modes as cargo-pgrx's build above and reuses what it compiled. Built alone, walg-cli
	# compiled 343 dependencies again (about 8 minutes of a fresh CI run); this way, 13.
	$(CARGO) --config scripts/cdylib-link.toml build --release -p walg_ext -p walg-cli \
		--no-default-features --features walg_ext/pg15 --lib --bin walg-ext
	install -m 0755 target/release/walg-ext /usr/local/bin/walg-ext

test-core: setup
	$(CARGO) test -p walg-core -p walg-cli

# A fresh test cluster and storage each run: a storage left by an earlier run holds a backup
# with the name the fresh cluster's first backup gets, which is refused as a conflict.
test-pg: setup
	rm -rf $(PGRX_TEST_PGDATA) /tmp/walg-ext-pgrx-storage
	# The storage prefix must exist: readers report a missing one as unreachable, not empty.
	install -d -m 0700 -o postgres -g postgres /tmp/walg-ext-pgrx-storage
	# cargo-pgrx builds the extension it installs for these tests with a link flag of its own
	# (-Wl,--no-gc-sections), unlike its `cargo test` build, so every dependency was compiled
	# twice (5 of CI's minutes). Without it the install reuses the test build's dependencies; the
	# flag guards against a schema section lost on some linkers (aarch64 without LTO), which would
	# fail this step loudly, not silently. Release builds (install) keep it.
	CARGO_PGRX_DISABLE_GC_SECTIONS_WORKAROUND=1 \
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
