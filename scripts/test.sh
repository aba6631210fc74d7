#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root:
#   bash scripts/test.sh
# Installs the build and test dependencies, starts PostgreSQL, then runs
# formatting, lints and every test (the root-only enforcement suites included).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh must run as root: the enforcement tests use fanotify and BPF LSM" >&2
  exit 1
fi

bash scripts/deps.sh clang llvm postgresql gcc libc6-dev
source scripts/postgres.sh   # exports PALISADE_TEST_POSTGRES

# securityfs tells the tests whether BPF LSM is active.
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security || true

echo "== fmt";    cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests";  cargo test --workspace --locked -- --test-threads="${PALISADE_TEST_THREADS:-2}"
echo "== all tests passed"
