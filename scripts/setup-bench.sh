#!/usr/bin/env bash
# What `make bench` needs beyond the build: pgBackRest and pg_basebackup to compare against,
# zstd for the machine's compression limit, matplotlib (Debian's, for /usr/bin/python3) for the chart.
set -euo pipefail
missing=()
for p in pgbackrest zstd python3-matplotlib; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-bench: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
