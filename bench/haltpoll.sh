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
PARAM=/sys/module/haltpoll/parameters/guest_halt_poll_ns

[ "$(id -u)" = 0 ] || { echo "bench/haltpoll.sh must run as root" >&2; exit 1; }
[ -w "$PARAM" ] || { echo "no $PARAM here (not a guest using the haltpoll cpuidle driver): nothing to measure" >&2; exit 1; }
for t in gcc openssl python3 chrt; do
  command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }
done

ORIG=$(cat "$PARAM")
WORK="" MNT="" CTL="" PAL_PID="" FLOOR_PID="" MOUNTED=0 CTL_MOUNTED=0
stop_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  set +e
  stop_pid "$PAL_PID"
  stop_pid "$FLOOR_PID"
  echo "$ORIG" > "$PARAM"
  [ "$MOUNTED" = 1 ] && { umount "$MNT" 2>/dev/null || umount -l "$MNT"; }
  [ "$CTL_MOUNTED" = 1 ] && { umount "$CTL" 2>/dev/null || umount -l "$CTL"; }
  [ -n "$WORK" ] && rm -rf "$WORK"
  [ "$rc" = 0 ] || echo "bench/haltpoll.sh: FAILED (exit $rc); $PARAM restored to $ORIG, mounts removed" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }

WORK=$(mktemp -d /tmp/palisade-haltpoll.XXXXXX)
chmod 755 "$WORK"
BIN=$WORK/bin
mkdir -p "$BIN"
SRC=$REPO/bench/src
gcc -O2 -Wall -Wextra -o "$BIN/execbench" "$SRC/execbench.c"
gcc -O2 -Wall -Wextra -o "$BIN/mkvariants" "$SRC/mkvariants.c"
gcc -O2 -Wall -Wextra -o "$BIN/fanfloor" "$SRC/fanfloor.c"
gcc -O2 -o "$BIN/hello" "$SRC/hello.c"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates Cargo.lock 2>/dev/null || echo ' + uncommitted changes')"
if [ "$SKIP_BUILD" != 1 ] || [ ! -x target/release/palisade ]; then
  log "building palisade (release)"
  cargo build --release -p palisade 2>&1 | tail -n 1
fi
cp target/release/palisade "$BIN/palisade"
PAL=$BIN/palisade

# As bench/exec-overhead.sh: everything measured runs SCHED_FIFO 10.
chrt -f -p 10 $$ >/dev/null

MNT=$WORK/mnt CTL=$WORK/ctl
mkdir -p "$MNT" "$CTL"
mount -t ramfs -o mode=755 palisade-haltpoll "$MNT"; MOUNTED=1
mount -t tmpfs -o mode=755,size=256m palisade-haltpoll-ctl "$CTL"; CTL_MOUNTED=1
RES=$WORK/results.tsv
: > "$RES"

# fresh TAG: N new small binaries on the watched ramfs, N on the control tmpfs.
fresh() {
  mkdir -p "$MNT/$1" "$CTL/$1"
  "$BIN/mkvariants" "$BIN/hello" "$MNT/$1" v "$N" 16 > "$WORK/$1.list"
  "$BIN/mkvariants" "$BIN/hello" "$CTL/$1" v "$N" 16 > "$WORK/$1.ctl"
}
measure() { # measure SETTING CONFIG TAG
  local out
  out=$("$BIN/execbench" -f "$WORK/$3.list" -C "$WORK/$3.ctl")
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$ROUND" "$out" >> "$RES"
  printf '    %-8s %-9s %s\n' "$1" "$2" "$out"
  rm -rf "${MNT:?}/$3" "${CTL:?}/$3"
}

run_palisade() { # run_palisade SETTING
  local tag=p$RANDOM$RANDOM D i cached
  D=$WORK/pal-$tag
  mkdir -p "$D/home"
  fresh "$tag"
  openssl dgst -sha256 -r $(cat "$WORK/$tag.list") | awk '{ print $1 }' > "$D/approve.txt"
  HOME=$D/home "$PAL" up --data-dir "$D/data" --watch "$MNT" --listen 127.0.0.1:0 --lockdown --no-scan \
    > "$D/up.out" 2> "$D/up.err" &
  PAL_PID=$!
  for i in $(seq 600); do
    grep -q '^palisade: ready' "$D/up.out" && break
    kill -0 "$PAL_PID" 2>/dev/null || { cat "$D/up.err" >&2; exit 1; }
    sleep 0.1
  done
  grep -q '^palisade: ready' "$D/up.out" || { echo "palisade up not ready" >&2; exit 1; }
  # shellcheck disable=SC2046
  PALISADE_CLI_CONFIG=$D/data/cli.toml "$PAL" file approve $(cat "$D/approve.txt") > "$D/approve.out" 2>&1
  for i in $(seq 300); do
    cached=$(PALISADE_CLI_CONFIG=$D/data/cli.toml "$PAL" status --json 2>/dev/null |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["cached_approvals"])' 2>/dev/null || echo 0)
    [ "$cached" -ge "$N" ] && break
    sleep 0.1
  done
  measure "$1" palisade "$tag"
  stop_pid "$PAL_PID"; PAL_PID=""
  rm -rf "$D"
}

run_floor() { # run_floor SETTING
  local tag=f$RANDOM$RANDOM i
  fresh "$tag"
  "$BIN/fanfloor" "$MNT" > "$WORK/fanfloor.out" 2>&1 &
  FLOOR_PID=$!
  for i in $(seq 100); do grep -q 'fanfloor: ready' "$WORK/fanfloor.out" && break; sleep 0.05; done
  grep -q 'fanfloor: ready' "$WORK/fanfloor.out" || { cat "$WORK/fanfloor.out" >&2; exit 1; }
  measure "$1" floor "$tag"
  stop_pid "$FLOOR_PID"; FLOOR_PID=""
}

run_none() { # run_none SETTING
  local tag=n$RANDOM$RANDOM
  fresh "$tag"
  measure "$1" none "$tag"
}

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
python3 - "$RES" "$DOC" "$ORIG" "$POLL_NS" "$ROUNDS" "$N" "$COMMIT" "$(uname -r)" \
  "$(cat /sys/devices/system/cpu/cpuidle/current_governor 2>/dev/null || echo '?')" <<'EOF'
import statistics, sys, datetime
res, doc, orig, poll, rounds, n, commit, kernel, gov = sys.argv[1:]
runs = {}
for line in open(res):
    setting, config, rnd, out = line.rstrip("\n").split("\t")
    kv = dict(x.split("=", 1) for x in out.split() if "=" in x)
    runs.setdefault((setting, config), []).append(float(kv["pair_ratio"]))
def cell(s, c):
    v = runs.get((s, c), [])
    if not v:
        return "-", float("nan")
    med = statistics.median(v)
    return f"{med:.3f} [{min(v):.3f} – {max(v):.3f}]", med
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
w(f"Kernel {kernel}, cpuidle governor `{gov}`, palisade commit {commit}, {rounds} rounds of N = {n},")
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
open(doc, "w").write("\n".join(L) + "\n")
print("\n".join(L))
EOF
log "done: $DOC written"
