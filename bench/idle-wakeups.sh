#!/usr/bin/env bash
# Idle wake-ups of `palisade up` (server and agent in one process), by thread.
# As root:
#
#   bash bench/idle-wakeups.sh
#
# Builds palisade in release mode (or uses PALISADE_BIN), mounts a private
# tmpfs under a fresh temp dir, starts `palisade up --no-scan --lockdown`
# watching only that tmpfs, runs one approved program once so every thread
# has worked, waits past the decision deadline, then counts each thread's
# context switches (/proc/PID/task/TID/status, voluntary + involuntary) over
# SECONDS of idleness. With BASELINE_BIN=/path/to/other/palisade the same is
# measured for that build in the same run (for a before/after comparison).
# Prints a table and writes docs/benchmarks-idle.md.
#
# Why it matters: every wake-up of an idle daemon is a CPU taken out of a low
# power state, and on a VM a halted vCPU woken through the hypervisor; a
# fleet agent should sleep while nothing happens.
#
# Tunables: SECONDS_IDLE=30 PALISADE_BIN= BASELINE_BIN= BASELINE_LABEL= (how the
# page names the baseline) DOC=docs/benchmarks-idle.md
# Safety: marks only its own tmpfs; on any exit stops the daemon by pid and
# unmounts the tmpfs.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
SECONDS_IDLE=${SECONDS_IDLE:-30}
DOC=${DOC:-docs/benchmarks-idle.md}
PALISADE_BIN=${PALISADE_BIN:-}
BASELINE_BIN=${BASELINE_BIN:-}

[ "$(id -u)" = 0 ] || { echo "bench/idle-wakeups.sh must run as root (fanotify, mount)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/palisade-idle.XXXXXX)
MNT="$WORK/mnt" PID="" MOUNTED=0
cleanup() {
  local rc=$?
  set +e
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$PID" 2>/dev/null && kill -KILL "$PID"
    wait "$PID" 2>/dev/null
  fi
  [ "$MOUNTED" = 1 ] && { umount "$MNT" 2>/dev/null || umount -l "$MNT"; }
  rm -rf "$WORK"
  [ "$rc" = 0 ] || echo "bench/idle-wakeups.sh: FAILED (exit $rc); cleaned up" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "$PALISADE_BIN" ]; then
  command -v gcc > /dev/null || bash scripts/deps.sh gcc libc6-dev
  cargo build --release -p palisade >&2
  PALISADE_BIN="$REPO/target/release/palisade"
fi
mkdir -p "$MNT"
mount -t tmpfs -o mode=755,size=64m palisade-idle "$MNT"
MOUNTED=1
gcc -O2 -o "$WORK/hello" bench/src/hello.c

# measure BIN LABEL: prints "thread count" lines to $WORK/LABEL.counts
measure() {
  local bin=$1 label=$2 data="$WORK/data-$2"
  rm -rf "$data"; mkdir -p "$data/home"
  HOME="$data/home" "$bin" up --data-dir "$data" --watch "$MNT" --listen 127.0.0.1:0 \
    --lockdown --no-scan > "$WORK/$label.out" 2> "$WORK/$label.err" &
  PID=$!
  for _ in $(seq 600); do grep -q '^palisade: ready' "$WORK/$label.out" && break; sleep 0.1; done
  grep -q '^palisade: ready' "$WORK/$label.out" || { cat "$WORK/$label.err" >&2; exit 1; }
  cp "$WORK/hello" "$MNT/hello-$label"
  PALISADE_CLI_CONFIG="$data/cli.toml" "$bin" file approve "$WORK/hello" > /dev/null
  for _ in $(seq 50); do "$MNT/hello-$label" 2>/dev/null && break; sleep 0.1; done
  sleep 4 # past the 3 s decision deadline of the last event a worker took
  snap() {
    for t in /proc/"$PID"/task/*; do
      printf '%s %s\n' "$(tr ' ' _ < "$t/comm")" \
        "$(awk '/ctxt_switches:/ {s += $2} END {print s}' "$t/status")"
    done | awk '{n[$1] += $2} END {for (k in n) print k, n[k]}' | sort
  }
  snap > "$WORK/$label.0"
  sleep "$SECONDS_IDLE"
  snap > "$WORK/$label.1"
  join "$WORK/$label.0" "$WORK/$label.1" | awk -v s="$SECONDS_IDLE" '{printf "%s %.1f\n", $1, ($3 - $2) / s}' \
    > "$WORK/$label.counts"
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

measure "$PALISADE_BIN" this
[ -n "$BASELINE_BIN" ] && measure "$BASELINE_BIN" baseline

python3 - "$WORK" "$SECONDS_IDLE" "$DOC" "$(git rev-parse --short HEAD)" "${BASELINE_LABEL:-$BASELINE_BIN}" <<'EOF'
import sys, datetime
work, secs, doc, rev, baseline = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
def load(label):
    try:
        return {l.split()[0]: float(l.split()[1]) for l in open(f"{work}/{label}.counts")}
    except FileNotFoundError:
        return None
this, base = load("this"), load("baseline")
names = sorted(set(this) | set(base or {}))
cols = ["thread", "this build (/s)"] + (["baseline (/s)"] if base else [])
rows = []
for n in names:
    r = [n, f"{this.get(n, 0):.1f}"]
    if base: r.append(f"{base.get(n, 0):.1f}")
    if any(float(x) > 0 for x in r[1:]): rows.append(r)
tot = ["**total**", f"**{sum(this.values()):.1f}**"] + ([f"**{sum(base.values()):.1f}**"] if base else [])
table = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
table += "".join("| " + " | ".join(r) + " |\n" for r in rows + [tot])
print(table)
page = f"""# Idle wake-ups

Written by `bash bench/idle-wakeups.sh` (as root); rerun it to check.
`palisade up --no-scan --lockdown` (server on SQLite and agent, one process)
watching a private tmpfs, after one approved program has run and the
decision deadline has passed: context switches per second of each thread
(names cut at 15 characters by the kernel) over {secs} s of idleness.
Threads that did not run are left out.

- date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; commit {rev}
- baseline: {baseline or "none"}

{table}
What is left (this build): each agent stream's heartbeat (every 5 s)
writes the computer's liveness to the database, which the server's change
feed sees through its inotify watch on the database's directory (how a
commit by another process over the same SQLite file reaches this replica's
agents) and reads; the feed's fallback check every 5 s; the async runtime's
threads wake for these. The agent's enforcement threads (reader, watchdog, workers,
hasher, names, timekeeper) sleep until there is work or a stop.
"""
open(doc, "w").write(page)
EOF
echo "wrote $DOC" >&2
