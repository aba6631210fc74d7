#!/usr/bin/env bash
# Build Palisade and run the whole system on this machine, as root:
#   bash scripts/run.sh [palisade up flags, e.g. --watch /srv --lockdown]
# Installs the build dependencies, builds the release binary, installs it as
# /usr/local/bin/palisade and runs `palisade up` in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/run.sh must run as root: the agent uses fanotify and BPF LSM" >&2
  exit 1
fi
bash scripts/deps.sh clang llvm gcc libc6-dev
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security || true
cargo build --release --locked -p palisade
install -m 0755 target/release/palisade /usr/local/bin/palisade
exec /usr/local/bin/palisade up "$@"
