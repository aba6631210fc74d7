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

bash scripts/deps.sh clang llvm postgresql gcc libc6-dev chromium chromium-driver bindfs
source scripts/postgres.sh   # exports PALISADE_TEST_POSTGRES

# securityfs tells the tests whether BPF LSM is active.
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security || true

echo "== fmt";    cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests";  cargo test --workspace --locked -- --test-threads="${PALISADE_TEST_THREADS:-2}"
# This VM refuses BPF LSM programs, so the guard's tests (and the agent's
# enforcement tests through the guard) run again on a stock Debian kernel
# under QEMU. PALISADE_SKIP_VM=1 skips this stage.
if [ "${PALISADE_SKIP_VM:-0}" = 1 ]; then
  echo "== BPF guard under QEMU: skipped (PALISADE_SKIP_VM=1)"
else
  for run in "palisade-kernel:" "palisade:enforcement::"; do
    pkg=${run%%:*}; filter=${run#*:}
    echo "== BPF guard under QEMU: $pkg $filter"
    set +e
    VM_PACKAGE=$pkg bash crates/palisade-kernel/scripts/vm-test.sh $filter > "/tmp/palisade-vm-$pkg.log" 2>&1
    rc=$?
    set -e
    grep -E "^test |test result|vm-test:" "/tmp/palisade-vm-$pkg.log" | sed 's/\x1b\[[0-9;]*m//g' || true
    case $rc in
      0) ;;
      77) echo "WARNING: kernel package unavailable; guard tests under QEMU skipped" ;;
      *) echo "guard tests under QEMU failed (log: /tmp/palisade-vm-$pkg.log)"; tail -50 "/tmp/palisade-vm-$pkg.log"; exit 1 ;;
    esac
  done
fi
echo "== all tests passed"
