#!/usr/bin/env bash
# Where the agent's reader runs, relative to the process it blocks, and what
# that costs: scenario (b) cold of bench/exec-overhead.sh under four
# placements. As root:
#
#   bash bench/placement.sh
#
# Each first exec of a file the agent has never seen blocks the process in
# the kernel until the agent answers. If the agent's reader thread runs on
# the CPU of the blocked process, the switch to it and back is local; if it
# runs on another CPU, each direction is a cross-CPU wake-up (an IPI, and on
# a guest a VM exit and the wake of a halted vCPU). The placements measured,
# for the bare fanotify responder bench/src/fanfloor.c and for Palisade:
#
#   fifo     everything SCHED_FIFO 10, unpinned (what bench/exec-overhead.sh does)
#   normal   everything SCHED_OTHER, unpinned (the machine's default)
#   same     SCHED_FIFO 10; the driver, its programs and the daemon all on CPU 0
#   other    SCHED_FIFO 10; the driver and its programs on CPU 0, the daemon on CPU 1
#
# Each watched exec is paired with the first exec of a copy on an unwatched
# tmpfs under the same placement, so the ratio is the daemon's cost alone.
# It stops what it started by pid, unmounts what it mounted (failure
# included) and writes docs/benchmarks-placement.md.
#
# Tunables: ROUNDS=3 N=500 (files per measurement) SKIP_BUILD=0
# DOC=docs/benchmarks-placement.md
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
# shellcheck source=bench/idle.sh
. "$REPO/bench/idle.sh"
ROUNDS=${ROUNDS:-3}
N=${N:-500}
SKIP_BUILD=${SKIP_BUILD:-0}
DOC=${DOC:-docs/benchmarks-placement.md}

[ "$(id -u)" = 0 ] || { echo "bench/placement.sh must run as root" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "bench/placement.sh needs at least 2 CPUs" >&2; exit 1; }
for t in gcc openssl python3 chrt taskset; do
  command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }
done

NAME=placement.sh

# How the driver and the daemons run, per placement (see the top). Each
# execs the command, so that `$!` of `dmn ... &` is the daemon's pid.
drv() { # drv PLACEMENT CMD...: the driver (and so its programs)
  local p=$1
  shift
  case $p in
    fifo) exec chrt -f 10 "$@" ;;
    normal) exec chrt -o 0 "$@" ;;
    same | other) exec taskset -c 0 chrt -f 10 "$@" ;;
  esac
}
dmn() { # dmn PLACEMENT CMD...: a daemon
  local p=$1
  shift
  case $p in
    fifo) exec chrt -f 10 "$@" ;;
    normal) exec chrt -o 0 "$@" ;;
    same) exec taskset -c 0 chrt -f 10 "$@" ;;
    other) exec taskset -c 1 chrt -f 10 "$@" ;;
  esac
}

# shellcheck source=bench/cold-lib.sh
. "$REPO/bench/cold-lib.sh"
cold_setup

for ROUND in $(seq "$ROUNDS"); do
  for placement in fifo normal same other; do
    log "round $ROUND, placement $placement"
    run_none "$placement"
    run_floor "$placement"
    run_palisade "$placement"
  done
done

case $DOC in /*) ;; *) DOC=$REPO/$DOC ;; esac
PYTHONPATH="$REPO/bench" python3 - "$RES" "$DOC" "$ROUNDS" "$N" "$COMMIT" "$(uname -r)" \
  "$(idle_desc)" <<'EOF'
import sys, datetime
from cold_report import load, cell as cell_of, write
res, doc, rounds, n, commit, kernel, idle = sys.argv[1:]
runs = load(res, "pair_mean_ratio")
def cell(k, c):
    return cell_of(runs, k, c)
L = []
w = L.append
w("## Exec overhead and where the agent runs: (b) cold")
w("")
w("Written by `bash bench/placement.sh` (as root; about 3 minutes). Scenario (b) cold of")
w("`bench/exec-overhead.sh`: the first exec of each of N distinct small approved binaries")
w("the agent has never seen (started with `--no-scan`), each paired with the first exec")
w("of a copy on an unwatched tmpfs under the same placement. Ratio: total time of the")
w("watched execs over that of their pairs (as the paired (b) figure of")
w("`docs/benchmarks.md`); the median over rounds [range].")
w("")
w(f"Kernel {kernel}, cpuidle {idle}, palisade commit {commit}, {rounds} rounds of N = {n},")
w(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Placements alternate within each round.")
w("")
w("| placement | none | fanotify floor (`fanfloor`) | Palisade | Palisade minus floor |")
w("|---|---|---|---|---|")
labels = {
    "fifo": "`fifo`: all SCHED_FIFO 10, unpinned (as `bench/exec-overhead.sh`)",
    "normal": "`normal`: all SCHED_OTHER, unpinned (the default)",
    "same": "`same`: SCHED_FIFO 10, driver and daemon on CPU 0",
    "other": "`other`: SCHED_FIFO 10, driver on CPU 0, daemon on CPU 1",
}
for p in ("fifo", "normal", "same", "other"):
    a, _ = cell(p, "none")
    b, fl = cell(p, "floor")
    c, pa = cell(p, "palisade")
    w(f"| {labels[p]} | {a} | {b} | {c} | {pa - fl:+.3f} |")
w("")
w("`fanfloor` is one thread that answers every permission event with an allow and an")
w("ignore mark and does nothing else. Under `same` its thread runs where the blocked")
w("process waits, so the round trip is two local context switches; under `other` each")
w("direction wakes the other CPU. Under `fifo` a real-time thread woken while a task of")
w("equal priority runs on its CPU is moved to an idle CPU, so the reader and the blocked")
w("process end up apart; under `normal` the scheduler's wake-affine placement mostly")
w("puts them together. When they are together, everything the agent does for an event")
w("(before the answer and after it) runs on the blocked process's CPU before it")
w("resumes; when they are apart, only what comes before the answer delays it.")
write(doc, L)
EOF
log "done: $DOC written"
