# walg_ext: the two commands a user needs are `make demo` and `make test`.
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PGRX_TEST_PGDATA ?= /tmp/walg-ext-pgrx-test
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup build install test test-core test-pg test-e2e demo clean

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --release -p walg-cli

# Release build of the extension into the system PostgreSQL 15, and walg-ext into /usr/local/bin.
install: setup
	$(CARGO) pgrx install -p walg_ext --release --pg-config $(PG_CONFIG)
	$(CARGO) build --release -p walg-cli
	install -m 0755 target/release/walg-ext /usr/local/bin/walg-ext

test-core: setup
	$(CARGO) test -p walg-core -p walg-cli

# The test cluster is initdb'd afresh, so its LSNs (and backup names) repeat: start with empty storage.
test-pg: setup
	rm -rf /tmp/walg-ext-pgrx-storage
	$(CARGO) pgrx test pg15 -p walg_ext --runas postgres --pgdata $(PGRX_TEST_PGDATA)

test-e2e: install
	$(CARGO) test -p walg-e2e -- --test-threads=1

test: test-core test-pg test-e2e

demo: install
	bash scripts/demo.sh

clean:
	$(CARGO) clean
