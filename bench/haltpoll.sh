#!/usr/bin/env bash
# How much of the (b) cold overhead is the guest's idle policy, not the agent.
# As root:
#
#   bash bench/haltpoll.sh
#
# On a KVM/Firecracker guest whose cpuidle governor is `haltpoll`, an idle
# vCPU polls for up to `guest_halt_poll_ns` before it halts; halting costs a
# VM exit on the next wake-up. Every fanotify permission event wakes the
# agent's thread and then the blocked process, so the cost of a round trip
# depends on that setting. This script measures scenario (b) cold of
# bench/exec-overhead.sh (the first exec of distinct small approved binaries
# the agent has never seen, each paired with the first exec of a copy on an
# unwatched tmpfs) under three configurations -- no enforcement, the
# bare fanotify responder bench/src/fanfloor.c, Palisade -- with the
# parameter as found and at the kernel's default (200000 ns), alternating, for
# ROUNDS rounds. It restores the parameter on exit, failure included, stops
# what it started by pid and unmounts what it mounted. It writes
# docs/benchmarks-haltpoll.md.
#
# Tunables: ROUNDS=4 N=500 (files per measurement) POLL_NS=200000
# SKIP_BUILD=0 DOC=docs/benchmarks-haltpoll.md
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
ROUNDS=${ROUNDS:-4}
N=${N:-500}
POLL_NS=${POLL_NS:-200000}
SKIP_BUILD=${SKIP_BUILD:-0}
DOC=${DOC:-docs/benchmarks-haltpoll.md}
# shellcheck source=bench/idle.sh
. "$REPO/bench/idle.sh"
PARAM=$HALTPOLL_PARAM

[ "$(id -u)" = 0 ] || { echo "bench/haltpoll.sh must run as root" >&2; exit 1; }
[ -w "$PARAM" ] || { echo "no $PARAM here (not a guest using the haltpoll cpuidle driver): nothing to measure" >&2; exit 1; }
# The parameter can exist while another driver (or none) runs idle; it then
# changes nothing, and the page would compare a setting with itself.
DRIVER=$(idle_driver)
[ "$DRIVER" = haltpoll ] || { echo "the cpuidle driver here is '$DRIVER', not haltpoll: $PARAM has no effect, nothing to measure" >&2; exit 1; }
for t in gcc openssl python3 chrt; do
  command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }
done

ORIG=$(cat "$PARAM")
NAME=haltpoll.sh
cleanup_hook() { echo "$ORIG" > "$PARAM"; }
# shellcheck source=bench/cold-lib.sh
. "$REPO/bench/cold-lib.sh"
cold_setup

# As bench/exec-overhead.sh: everything measured runs SCHED_FIFO 10.
chrt -f -p 10 $$ >/dev/null

for ROUND in $(seq "$ROUNDS"); do
  for setting in "$ORIG" "$POLL_NS"; do
    echo "$setting" > "$PARAM"
    log "round $ROUND, guest_halt_poll_ns = $setting"
    run_none "$setting"
    run_floor "$setting"
    run_palisade "$setting"
  done
done
echo "$ORIG" > "$PARAM"

case $DOC in /*) ;; *) DOC=$REPO/$DOC ;; esac
PYTHONPATH="$REPO/bench" python3 - "$RES" "$DOC" "$ORIG" "$POLL_NS" "$ROUNDS" "$N" "$COMMIT" "$(uname -r)" \
  "$(idle_desc)" <<'EOF'
import sys, datetime
from cold_report import load, cell as cell_of, write
res, doc, orig, poll, rounds, n, commit, kernel, idle = sys.argv[1:]
runs = load(res, "pair_ratio")
def cell(k, c):
    return cell_of(runs, k, c)
L = []
w = L.append
w("## Exec overhead and the guest's idle polling: (b) cold")
w("")
w("Written by `bash bench/haltpoll.sh` (as root; about 5 minutes). Scenario (b) cold of")
w("`bench/exec-overhead.sh`: the first exec of each of N distinct small approved binaries")
w("the agent has never seen (started with `--no-scan`), each paired with the first exec")
w("of a copy on an unwatched tmpfs. Paired ratio: median over the N pairs of the watched")
w("exec's time over its pair's; per setting, the median over rounds [range].")
w("")
w(f"Kernel {kernel}, cpuidle {idle}, palisade commit {commit}, {rounds} rounds of N = {n},")
w(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Settings alternate within each round;")
w(f"the parameter was restored to {orig} afterwards.")
w("")
w("| `guest_halt_poll_ns` | none | fanotify floor (`fanfloor`) | Palisade | target ≤ 1.10 |")
w("|---|---|---|---|---|")
for s, label in ((orig, f"{orig} (as found)"), (poll, f"{poll} (the kernel's default)")):
    a, _ = cell(s, "none")
    b, fl = cell(s, "floor")
    c, pa = cell(s, "palisade")
    verdict = "pass" if pa <= 1.10 else "**FAIL**"
    w(f"| {label} | {a} | {b} | {c} | {verdict} |")
w("")
w("`fanfloor` is one thread that answers every permission event with an allow and an")
w("ignore mark and does nothing else: no user-space decision can cost less. Palisade")
w("minus the floor is what the agent adds (hashing the file, checking it did not change,")
w("the caches); the floor itself is the kernel's round trip and the two wake-ups it")
w("needs, which is what the idle setting changes.")
write(doc, L)
EOF
log "done: $DOC written"
