#!/usr/bin/env bash
# What `make bench` needs beyond the build: pgBackRest and pg_basebackup to compare against,
# zstd for the machine's compression limit, matplotlib (Debian's, for /usr/bin/python3) for the chart.
# openssl makes the certificate of the S3 replay step's TLS proxy (pgBackRest speaks only https).
set -euo pipefail
. "$(dirname "$0")/apt.sh"
apt_install_missing pgbackrest zstd python3-matplotlib openssl
