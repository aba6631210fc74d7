#!/usr/bin/env bash
# Exec overhead of Palisade, against no enforcement and against fapolicyd
# (in two configurations), on the same machine in the same run. As root:
#
#   bash bench/exec-overhead.sh
#
# Installs what it needs (gcc, fapolicyd, openssl, python3), builds palisade
# in release mode, mounts a private ramfs under a fresh temp dir, and runs
# the workload in alternating phases
#
#   none, [palisade, none, fapolicyd, none, fapolicyd-sha256, none] x ROUNDS
#
# so each enforced phase is compared with the mean of the two unenforced
# phases around it. Prints a table and writes docs/benchmarks.md.
#
# fapolicyd runs with its default `integrity = none` (a trusted path is
# trusted whatever its content; no hashing) and with `integrity = sha256`
# (it hashes a file at first use and compares size and SHA-256 with its
# trust entry). Each enforced phase checks that an untrusted binary is
# refused and what happens when a trusted/approved file is changed in place.
#
# Scenarios (all programs live on the ramfs; /bin/sh and the driver do not):
#   (a) repeated exec of an approved small binary (hello), of an approved
#       shebang script (#!/bin/sh, exit 0), and of a binary (uselib) that
#       loads an approved library (libfoo.so) from the mount;
#   (b) first exec of B_COUNT distinct small approved binaries;
#   (c) first exec of C_COUNT distinct approved C_MIB MiB binaries.
# For (b) and (c) Palisade runs twice:
#   cold: files written before the agent started and never seen by it (it
#         runs with --no-scan): the agent must hash them at their first exec;
#   warm: files written while the agent runs: hashed when closed after
#         writing and, their hash being approved already, put into the
#         kernel-side cache ahead of their first exec (pre-warmed).
# The agent's counters are recorded after every step (raw results, config
# "counters"), so the page shows which path each step took.
#
# Safety: both daemons are told to watch only this ramfs (Palisade with
# --watch, fapolicyd with watch_fs = ramfs after checking that no other ramfs
# is mounted). On exit, even on failure: daemons are stopped by pid, the
# ramfs (and securityfs, if the script mounted it) is unmounted, /etc/fapolicyd, /var/lib/fapolicyd and
# /var/log/fapolicyd-access.log are restored as they were.
#
# Tunables (environment): ROUNDS=8 A_EXECS=2000 A_WARMUP=100 B_COUNT=150
# C_COUNT=5 C_MIB=64 SKIP_FAPOLICYD=0 SKIP_BUILD=0 DOC=docs/benchmarks.md
# KEEP_WORK=0 (keep the temp dir with logs and raw results), BENCH_SCHED=fifo
# (fifo: everything measured runs SCHED_FIFO, see below; normal: as started).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

ROUNDS=${ROUNDS:-8}
A_EXECS=${A_EXECS:-2000}
A_WARMUP=${A_WARMUP:-100}
B_COUNT=${B_COUNT:-150}
C_COUNT=${C_COUNT:-5}
C_MIB=${C_MIB:-64}
SKIP_FAPOLICYD=${SKIP_FAPOLICYD:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
BENCH_SCHED=${BENCH_SCHED:-fifo}
DOC=${DOC:-docs/benchmarks.md}
KEEP_WORK=${KEEP_WORK:-0}
COMMAND="bash bench/exec-overhead.sh"
for v in ROUNDS A_EXECS A_WARMUP B_COUNT C_COUNT C_MIB SKIP_FAPOLICYD BENCH_SCHED; do
  [ -z "$(printenv "$v")" ] || COMMAND="$v=${!v} $COMMAND"
done

if [ "$(id -u)" != 0 ]; then
  echo "bench/exec-overhead.sh must run as root (fanotify, mount, fapolicyd)" >&2
  exit 1
fi

T_START=$(date +%s)
log() { printf '[%4ds] %s\n' $(( $(date +%s) - T_START )) "$*"; }

# ---- state for cleanup ------------------------------------------------------
WORK="" MNT="" CTL="" STAGE="" PAL_PID="" FAPD_PID="" FLOOR_PID="" FAPD_SAVED=0 MOUNTED=0 CTL_MOUNTED=0 SECFS_MOUNTED=0 OK=0

stop_pid() { # stop_pid PID NAME: SIGTERM, wait up to 30 s, then SIGKILL
  local pid=$1 name=$2 i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "warning: $name (pid $pid) ignored SIGTERM for 30 s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

restore_fapolicyd() {
  [ "$FAPD_SAVED" = 1 ] || return 0
  rm -rf /etc/fapolicyd && cp -a "$WORK/saved/etc-fapolicyd" /etc/fapolicyd
  if [ -d "$WORK/saved/var-lib-fapolicyd" ]; then
    rm -rf /var/lib/fapolicyd && cp -a "$WORK/saved/var-lib-fapolicyd" /var/lib/fapolicyd
  fi
  if [ -f "$WORK/saved/fapolicyd-access.log" ]; then
    cp -a "$WORK/saved/fapolicyd-access.log" /var/log/fapolicyd-access.log
  else
    rm -f /var/log/fapolicyd-access.log
  fi
  FAPD_SAVED=0
}

cleanup() {
  local rc=$?
  set +e
  stop_pid "$PAL_PID" palisade; PAL_PID=""
  stop_pid "$FAPD_PID" fapolicyd; FAPD_PID=""
  stop_pid "$FLOOR_PID" fanfloor; FLOOR_PID=""
  restore_fapolicyd
  if [ "$MOUNTED" = 1 ]; then
    rm -rf "${MNT:?}"/* 2>/dev/null
    umount "$MNT" 2>/dev/null || { sleep 1; umount "$MNT"; } || umount -l "$MNT"
    MOUNTED=0
  fi
  if [ "$CTL_MOUNTED" = 1 ]; then
    umount "$CTL" 2>/dev/null || { sleep 1; umount "$CTL"; } || umount -l "$CTL"
    CTL_MOUNTED=0
  fi
  if [ "$SECFS_MOUNTED" = 1 ]; then
    umount /sys/kernel/security 2>/dev/null
    SECFS_MOUNTED=0
  fi
  [ -n "$STAGE" ] && rm -rf "$STAGE"
  if [ -n "$WORK" ]; then
    if [ "$OK" = 1 ] && [ "$KEEP_WORK" != 1 ]; then
      rm -rf "$WORK"
    else
      echo "logs and raw results kept in $WORK" >&2
    fi
  fi
  [ "$rc" = 0 ] || echo "bench/exec-overhead.sh: FAILED (exit $rc); cleaned up (daemons stopped, ramfs unmounted, /etc/fapolicyd restored)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "error: $*" >&2; exit 1; }

# ---- dependencies -------------------------------------------------------------
need=()
for pkg in gcc libc6-dev libssl-dev clang llvm openssl python3 fapolicyd; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # fapolicyd must not start (nor be enabled at boot) with Debian's default
  # configuration: it would watch every ext4/tmpfs/xfs filesystem.
  made_rcd=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_rcd=1
  fi
  fapd_was_installed=0
  dpkg-query -W -f='${Status}' fapolicyd 2>/dev/null | grep -q "install ok installed" && fapd_was_installed=1
  apt-get update -qq || true
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ "$made_rcd" = 1 ] && rm -f /usr/sbin/policy-rc.d
  if [ "$fapd_was_installed" = 0 ]; then
    DPKG_MAINTSCRIPT_PACKAGE=fapolicyd deb-systemd-helper disable fapolicyd.service >/dev/null 2>&1 ||
      systemctl disable fapolicyd.service >/dev/null 2>&1 || true
  fi
fi
command -v cargo >/dev/null || die "cargo is needed to build palisade"

# ---- refuse to run where the results or the host would suffer -----------------
if [ "$SKIP_FAPOLICYD" != 1 ] && pgrep -x fapolicyd >/dev/null; then
  die "a fapolicyd is already running on this host; stop it first (the benchmark runs its own, on its own ramfs)"
fi
if awk '$3 == "ramfs" { found = 1 } END { exit !found }' /proc/mounts; then
  die "a ramfs is already mounted; the benchmark needs the only ramfs (fapolicyd selects mounts by type)"
fi

# ---- workspace, tools, mount ---------------------------------------------------
WORK=$(mktemp -d /tmp/palisade-bench.XXXXXX)
chmod 755 "$WORK"
STAGE=$(mktemp -d /dev/shm/palisade-bench-stage.XXXXXX)
mkdir -p "$WORK/bin" "$WORK/saved" "$WORK/lists" "$WORK/logs"
RES=$WORK/results.tsv
META=$WORK/meta.tsv
: > "$RES"
: > "$META"
meta() { printf '%s\t%s\n' "$1" "$2" >> "$META"; }

SRC=$REPO/bench/src
BIN=$WORK/bin
gcc -O2 -Wall -Wextra -o "$BIN/execbench" "$SRC/execbench.c"
gcc -O2 -Wall -Wextra -o "$BIN/mkvariants" "$SRC/mkvariants.c"
gcc -O2 -Wall -Wextra -o "$BIN/fanfloor" "$SRC/fanfloor.c" -lcrypto
gcc -O2 -Wall -Wextra -o "$BIN/mmapwrite" "$SRC/mmapwrite.c"
gcc -O2 -o "$BIN/hello" "$SRC/hello.c"
gcc -O2 -shared -fPIC -o "$BIN/libfoo.so" "$SRC/libfoo.c"
gcc -O2 -o "$BIN/uselib" "$SRC/uselib.c" -L"$BIN" -lfoo -Wl,-rpath,'$ORIGIN'
EB=$BIN/execbench
MKV=$BIN/mkvariants

# Which source is measured (taken just before the build).
SOURCE_STATE="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates Cargo.lock 2>/dev/null ||
  echo " + uncommitted changes to $(git diff --name-only HEAD -- crates Cargo.lock | wc -l) files in crates/ (diff sha256 $(git diff HEAD -- crates Cargo.lock | sha256sum | cut -c1-12))")"
if [ "$SKIP_BUILD" = 1 ] && [ -x target/release/palisade ]; then
  log "using the existing target/release/palisade (SKIP_BUILD=1)"
else
  log "building palisade (release)"
  T_BUILD=$(date +%s)
  cargo build --release -p palisade 2>&1 | tail -n 3
  meta build_s $(( $(date +%s) - T_BUILD ))
fi
cp target/release/palisade "$BIN/palisade"
PAL=$BIN/palisade
# The agent's own hash of a large file, timed alone (crates/palisade-agent/benches/hash.rs).
HASHB=$(cargo bench -p palisade-agent --bench hash --no-run 2>&1 | sed -n 's/^ *Executable .*(\(.*\))$/\1/p' | tail -n 1)
[ -n "$HASHB" ] && [ -x "$HASHB" ] || die "could not build the hash bench (cargo bench -p palisade-agent --bench hash --no-run)"

# From here on everything measured (driver, programs, both daemons) runs
# under BENCH_SCHED, inherited from this shell: "fifo" (default) is
# SCHED_FIFO priority 10, so that unrelated work on the machine cannot delay
# a wake-up by a scheduler tick in any phase; "normal" leaves the scheduling
# as it is (then expect the load of the machine in the figures).
case $BENCH_SCHED in
  fifo) chrt -f -p 10 $$ >/dev/null ;;
  normal) ;;
  *) die "BENCH_SCHED must be fifo or normal" ;;
esac
meta sched "$(chrt -p $$ | sed -n 's/.*current scheduling policy: //p'), priority $(chrt -p $$ | sed -n 's/.*current scheduling priority: //p'), nice $(ps -o ni= -p $$ | tr -d ' ')"

MNT=$WORK/mnt
mkdir -p "$MNT"
mount -t ramfs -o mode=755 palisade-bench "$MNT"
MOUNTED=1
[ "$(awk '$3 == "ramfs"' /proc/mounts | wc -l)" = 1 ] || die "more than one ramfs mounted"
[ "$(awk '$3 == "ramfs" { print $2 }' /proc/mounts)" = "$MNT" ] || die "the ramfs is not at $MNT"

# securityfs tells the agent whether the BPF LSM is active, as in the test
# suite: without it the guard is not even tried. Unmounted on exit if mounted
# here.
if ! mountpoint -q /sys/kernel/security; then
  mount -t securityfs securityfs /sys/kernel/security && SECFS_MOUNTED=1
fi

# A control for (a): the same programs on a tmpfs that neither daemon watches
# (Palisade watches the ramfs only, fapolicyd watch_fs = ramfs only). Each
# timed exec on the ramfs is paired with one of its copy here.
CTL=$WORK/ctl
mkdir -p "$CTL"
mount -t tmpfs -o mode=755,size=64m palisade-bench-ctl "$CTL"
CTL_MOUNTED=1
cp "$BIN/hello" "$BIN/uselib" "$BIN/libfoo.so" "$CTL/"
printf '#!/bin/sh\nexit 0\n' > "$CTL/script.sh"
chmod 755 "$CTL/script.sh"

# The approved programs, the same files for every configuration.
mkdir -p "$MNT/a" "$MNT/x"
cp "$BIN/hello" "$BIN/uselib" "$BIN/libfoo.so" "$MNT/a/"
printf '#!/bin/sh\nexit 0\n' > "$MNT/a/script.sh"
chmod 755 "$MNT/a/script.sh"
# Never approved nor trusted: the enforcement checks.
"$MKV" "$BIN/hello" "$MNT/x" untrusted 1 16 >/dev/null
UNTRUSTED=$MNT/x/untrusted0
STATIC=("$MNT/a/hello" "$MNT/a/script.sh" "$MNT/a/uselib" "$MNT/a/libfoo.so")
for p in hello script.sh uselib; do
  "$EB" "$MNT/a/$p" >/dev/null || die "$MNT/a/$p does not run without enforcement"
  "$EB" "$CTL/$p" >/dev/null || die "$CTL/$p does not run (is tmpfs noexec here?)"
done

sha_of() { openssl dgst -sha256 -r "$@" | awk '{ print $1 }'; }

# ---- the machine ------------------------------------------------------------------
cpu=$(lscpu 2>/dev/null | awk -F: '/^Model name/ { sub(/^[ \t]+/, "", $2); print $2; exit }')
[ -n "$cpu" ] || cpu=$(awk -F: '/model name/ { sub(/^[ \t]+/, "", $2); print $2; exit }' /proc/cpuinfo)
meta cpu "$cpu"
meta cpu_flags_sha "$(grep -qw sha_ni /proc/cpuinfo && echo 'SHA-NI' || echo 'no SHA-NI')"
meta cores "$(nproc)"
meta mem "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
meta kernel "$(uname -r)"
meta os "$(. /etc/os-release; echo "$PRETTY_NAME")"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta command "$COMMAND"
meta commit "$SOURCE_STATE"
meta fapolicyd_version "$(dpkg-query -W -f='${Version}' fapolicyd 2>/dev/null || echo none)"
meta params "ROUNDS=$ROUNDS A_EXECS=$A_EXECS A_WARMUP=$A_WARMUP B_COUNT=$B_COUNT C_COUNT=$C_COUNT C_MIB=$C_MIB"
meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
# How idle CPUs wait (bench/idle.sh); bench/haltpoll.sh measures (b) cold
# under both haltpoll settings where that driver runs.
# shellcheck source=bench/idle.sh
. "$REPO/bench/idle.sh"
meta idle "$(idle_desc)"
meta c_bytes "$(( $(stat -c %s "$BIN/hello") + C_MIB * 1048576 ))"

log "SHA-256 throughput (openssl speed -evp sha256, 1 MiB blocks, one thread)"
ossl=$(openssl speed -evp sha256 -bytes 1048576 -seconds 3 2>/dev/null | awk '/^sha256/ { print $NF }' | tr -d k)
meta sha256_openssl_kBps "${ossl:-0}"
head -c 1G /dev/zero > "$STAGE/zero"
t0=$(date +%s.%N); sha256sum "$STAGE/zero" >/dev/null; t1=$(date +%s.%N)
rm -f "$STAGE/zero"
meta sha256sum_1GiB_s "$(echo "$t1 - $t0" | bc -l 2>/dev/null || awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
log "SHA-256 of a $C_MIB MiB file by the agent's code (cargo bench -p palisade-agent --bench hash)"
HASH_DIR=$STAGE HASH_MIB=$C_MIB HASH_ROUNDS=11 "$HASHB" > "$WORK/hash-bench.txt" 2>&1 ||
  { cat "$WORK/hash-bench.txt" >&2; die "the hash bench failed"; }
meta agent_hash "$(sed -n 's/^  \(mapped\|pread pipeline\|in cache\) *\([0-9.]*\) ms *\([0-9.]*\) GB\/s *\([0-9.]*\)x.*/\1 \2 ms (\3 GB\/s, \4x)/p' "$WORK/hash-bench.txt" | paste -sd ';' | sed 's/;/; /g')"

# ---- measurement helpers --------------------------------------------------------
PHASE=0
measure() { # measure CONFIG SCEN EXECBENCH-ARGS...
  local config=$1 scen=$2 out
  shift 2
  if ! out=$("$EB" "$@" 2>>"$WORK/logs/execbench.err"); then
    echo "error: $config $scen: some executions failed:" >&2
    tail -n 5 "$WORK/logs/execbench.err" >&2
    echo "  ($out)" >&2
    exit 1
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$PHASE" "$ROUND" "$config" "$scen" "$out" >> "$RES"
  printf '    %-10s %-9s %s\n' "$config" "$scen" "$out"
}

run_a() { # run_a CONFIG: each exec paired with one of the same program on the unwatched tmpfs
  measure "$1" a-hello -r "$A_EXECS" -w "$A_WARMUP" -c "$CTL/hello" "$MNT/a/hello"
  measure "$1" a-script -r "$A_EXECS" -w "$A_WARMUP" -c "$CTL/script.sh" "$MNT/a/script.sh"
  measure "$1" a-uselib -r "$A_EXECS" -w "$A_WARMUP" -c "$CTL/uselib" "$MNT/a/uselib"
}

# fresh DIR TAG: B_COUNT small and C_COUNT big new binaries under DIR, and
# B_COUNT small ones on the unwatched control tmpfs (each first exec in (b) is
# paired with the first exec of one of these); lists in $WORK/lists.
fresh() {
  local dir=$1 tag=$2
  mkdir -p "$dir/b-$tag" "$dir/c-$tag" "$CTL/b-$tag"
  "$MKV" "$BIN/hello" "$dir/b-$tag" v "$B_COUNT" 16 > "$WORK/lists/b-$tag"
  "$MKV" "$BIN/hello" "$dir/c-$tag" v "$C_COUNT" $(( C_MIB * 1048576 )) > "$WORK/lists/c-$tag"
  "$MKV" "$BIN/hello" "$CTL/b-$tag" v "$B_COUNT" 16 > "$WORK/lists/bctl-$tag"
}

check_deny() { # check_deny CONFIG: an untrusted binary must not run
  local out
  if out=$("$EB" -e "$UNTRUSTED" 2>&1 >/dev/null); then
    log "  enforcement check ($1): unapproved $UNTRUSTED refused: ${out#execbench: }"
    meta "check_$1" "exec of a binary that is not approved/trusted on the mount refused: ${out#execbench: $UNTRUSTED: }"
  else
    die "$1 does not enforce: the unapproved $UNTRUSTED ran"
  fi
}

# mk_tamper DIR: four new copies of hello (DIR/tamper0..3), to be
# approved/trusted like the others and then changed by tamper_check.
mk_tamper() {
  mkdir -p "$1"
  "$MKV" "$BIN/hello" "$1" tamper 4 16 >/dev/null
}

exec_outcome() { # exec_outcome PATH: "refused (reason)" or "RAN"
  local out
  if out=$("$EB" -e "$1" 2>&1 >/dev/null); then
    echo "refused (${out##*: })"
  else
    echo "RAN"
  fi
}

# tamper_check CONFIG DIR: the files in DIR are approved/trusted. Run tamper0,
# tamper1 and tamper3 once (allowed, and now in the daemon's caches), then
# change them in place, same inode: tamper0 keeps its size (its 16-byte random
# trailer rewritten with write(2)), tamper1 grows by 16 bytes, tamper3 keeps
# its size and has its last byte flipped through a shared writable mapping
# (bench/src/mmapwrite.c: no write(2), so no FAN_MODIFY); tamper2 grows by 16
# bytes before it ever ran (no cache involved). Half a second later, run each
# again. Content-bound trust must refuse all four. The outcome is recorded,
# not enforced (it is a finding either way).
tamper_check() {
  local config=$1 dir=$2 f same grow unseen mapped size
  for f in "$dir/tamper0" "$dir/tamper1" "$dir/tamper3"; do
    "$EB" "$f" >/dev/null 2>>"$WORK/logs/execbench.err" || die "$config: the approved/trusted $f does not run before it is changed"
  done
  size=$(stat -c %s "$dir/tamper0")
  head -c 16 /dev/urandom | dd of="$dir/tamper0" bs=16 count=1 seek=$(( size - 16 )) oflag=seek_bytes conv=notrunc status=none
  [ "$(stat -c %s "$dir/tamper0")" = "$size" ] || die "tamper0 changed size"
  head -c 16 /dev/urandom >> "$dir/tamper1"
  head -c 16 /dev/urandom >> "$dir/tamper2"
  "$BIN/mmapwrite" "$dir/tamper3" || die "mmapwrite failed on $dir/tamper3"
  sleep 0.5
  same=$(exec_outcome "$dir/tamper0")
  grow=$(exec_outcome "$dir/tamper1")
  unseen=$(exec_outcome "$dir/tamper2")
  mapped=$(exec_outcome "$dir/tamper3")
  log "  content check ($config): trusted file run once, then changed in place: same size -> $same; 16 bytes appended -> $grow; through a shared mapping -> $mapped; never run, 16 bytes appended -> $unseen"
  meta "tamper_$config" "same size: $same; size changed: $grow; same size, through a shared mapping: $mapped; never run, size changed: $unseen"
}

# counters POINT: the agent's counters now, as a raw result row
# (config "counters", scenario POINT), and its answer-time histograms as
# another (config "latency": r<bound>=n for the reader's buckets, w<bound>=n
# for the workers', bound = the bucket's upper bound in ns, "inf" for the
# last; rsum, wsum: their total time in ns; report.py takes the difference
# between two points).
counters() {
  local out kv lat
  out=$(PALISADE_CLI_CONFIG=$PD/data/cli.toml "$PAL" status --json 2>/dev/null |
    python3 -c '
import json, sys
s = json.load(sys.stdin)
print(" ".join(f"{k}={v}" for k, v in s["stats"].items() if isinstance(v, (int, float))))
cells = []
for who, tag in (("reader", "r"), ("workers", "w")):
    h = s.get("latency", {}).get(who, {})
    total = h.get("sum_ns", 0)
    cells.append(f"{tag}sum={total}")
    for bound, n in h.get("buckets", []):
        b = bound if bound < 2**64 - 1 else "inf"
        cells.append(f"{tag}{b}={n}")
print(" ".join(cells))' 2>/dev/null) || out=""
  kv=$(sed -n 1p <<< "$out")
  lat=$(sed -n 2p <<< "$out")
  [ -n "$kv" ] || { log "  warning: no counters from the agent at $1"; return 0; }
  printf '%s\t%s\t%s\t%s\t%s\n' "$PHASE" "$ROUND" counters "$1" "$kv" >> "$RES"
  # (An agent that gives no histograms still gets its row: `none=0`.)
  printf '%s\t%s\t%s\t%s\t%s\n' "$PHASE" "$ROUND" latency "$1" "${lat:-none=0}" >> "$RES"
}

# ---- configurations ---------------------------------------------------------------
phase_none() {
  PHASE=$((PHASE + 1))
  log "phase $PHASE: none"
  fresh "$MNT" "n$PHASE"
  run_a none
  measure none b -f "$WORK/lists/b-n$PHASE" -C "$WORK/lists/bctl-n$PHASE"
  measure none c -f "$WORK/lists/c-n$PHASE"
  rm -rf "$MNT/b-n$PHASE" "$MNT/c-n$PHASE" "$CTL/b-n$PHASE"
  floor_run b-floor b
  floor_run b-floorhash b sha256
  floor_run c-floorhash c sha256
}

# The floor of a user-space decision, measured at the end of every `none`
# phase: (b) again on new files, under bench/src/fanfloor.c (one thread that
# allows everything, setting an ignore mark as it goes); then (b) and (c)
# once more with `fanfloor MOUNT sha256`, which also reads and hashes each
# file before its answer: the floor of a decision bound to content
# (scenarios b-floorhash and c-floorhash).
floor_run() { # floor_run SCEN b|c [sha256]
  local scen=$1 kind=$2 tag=f$1-$PHASE i
  local log=$WORK/logs/fanfloor-$scen-$PHASE.out
  local args=(-f "$WORK/lists/$kind-$tag")
  mkdir -p "$MNT/$kind-$tag"
  if [ "$kind" = b ]; then
    mkdir -p "$CTL/b-$tag"
    "$MKV" "$BIN/hello" "$MNT/b-$tag" v "$B_COUNT" 16 > "$WORK/lists/b-$tag"
    "$MKV" "$BIN/hello" "$CTL/b-$tag" v "$B_COUNT" 16 > "$WORK/lists/bctl-$tag"
    args+=(-C "$WORK/lists/bctl-$tag")
  else
    "$MKV" "$BIN/hello" "$MNT/c-$tag" v "$C_COUNT" $(( C_MIB * 1048576 )) > "$WORK/lists/c-$tag"
  fi
  "$BIN/fanfloor" "$MNT" ${3:+"$3"} > "$log" 2>&1 &
  FLOOR_PID=$!
  for i in $(seq 100); do
    grep -q 'fanfloor: ready' "$log" && break
    kill -0 "$FLOOR_PID" 2>/dev/null || break
    sleep 0.05
  done
  grep -q 'fanfloor: ready' "$log" || { cat "$log" >&2; die "fanfloor did not start"; }
  measure floor "$scen" "${args[@]}"
  stop_pid "$FLOOR_PID" fanfloor
  FLOOR_PID=""
  # Its answer times, printed as it ends (config "floorlat").
  local times
  times=$(grep -m1 '^answers=' "$log" || true)
  [ -z "$times" ] || printf '%s\t%s\t%s\t%s\t%s\n' "$PHASE" "$ROUND" floorlat "$scen" "$times" >> "$RES"
  rm -rf "${MNT:?}/$kind-$tag" "${CTL:?}/b-$tag"
}

pal_status() { # pal_status PYTHON-EXPR over the status JSON `s`
  PALISADE_CLI_CONFIG=$PD/data/cli.toml "$PAL" status --json 2>/dev/null |
    python3 -c "import json, sys; s = json.load(sys.stdin); print($1)" 2>/dev/null || echo ""
}

phase_palisade() {
  PHASE=$((PHASE + 1))
  log "phase $PHASE: palisade (round $ROUND)"
  PD=$WORK/palisade-$PHASE
  mkdir -p "$PD/home"
  local cold=p$PHASE warm=w$PHASE
  # Cold: written before the agent starts (and, with --no-scan, never seen by
  # it). Warm: staged off the mount now, copied onto it while the agent runs.
  fresh "$MNT" "$cold"
  fresh "$STAGE" "$warm"
  mk_tamper "$MNT/t-$cold"
  # Approve by hash: approving by path would make the CLI open the files on
  # the watched mount, and the agent would hash them on that open.
  {
    sha_of $(cat "$WORK/lists/b-$cold" "$WORK/lists/c-$cold" "$WORK/lists/b-$warm" "$WORK/lists/c-$warm")
    sha_of "${STATIC[@]}" "$MNT/t-$cold"/tamper*
  } > "$PD/approve.txt"
  local n_approve
  n_approve=$(sort -u "$PD/approve.txt" | wc -l)

  HOME=$PD/home "$PAL" up --data-dir "$PD/data" --watch "$MNT" --listen 127.0.0.1:0 --lockdown --no-scan \
    > "$PD/up.out" 2> "$PD/up.err" &
  PAL_PID=$!
  local t0 i
  t0=$(date +%s.%N)
  for i in $(seq 600); do
    grep -q '^palisade: ready' "$PD/up.out" && break
    kill -0 "$PAL_PID" 2>/dev/null || { cat "$PD/up.out" "$PD/up.err" >&2; die "palisade up exited"; }
    sleep 0.1
  done
  grep -q '^palisade: ready' "$PD/up.out" || { tail -n 20 "$PD/up.err" >&2; die "palisade up not ready after 60 s"; }
  meta palisade_sched "$(ps -o cls=,rtprio=,ni= -p "$PAL_PID" | xargs)"
  # Per thread (names cut at 15 characters by the kernel): scheduling policy
  # and nice value as the thread set them (/proc/PID/task/TID/stat fields 41
  # and 19; the nice value is shown even under SCHED_FIFO, where it does not
  # order anything).
  meta palisade_threads "$(for t in /proc/"$PAL_PID"/task/*; do
      printf '%s %s\n' "$(cat "$t/comm")" "$(sed 's/^.*) //' "$t/stat" |
        awk '{ split("OTHER FIFO RR BATCH ISO IDLE DEADLINE", p, " "); printf "%s,%s", p[$39 + 1], $17 }')"
    done 2>/dev/null | sort | uniq -c |
    awk '{ split($3, a, ","); printf "%s%s%s: %s nice %s", (NR > 1 ? "; " : ""), $2, ($1 > 1 ? " (x" $1 ")" : ""), a[1], a[2] }')"
  meta palisade_start_s "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
  if grep -q 'BPF LSM guard unavailable' "$PD/up.err"; then
    meta palisade_guard "not loaded: $(sed 's/\x1b\[[0-9;]*m//g' "$PD/up.err" | grep -m1 -o 'BPF LSM guard unavailable.*' |
      sed -e 's/^BPF LSM guard unavailable (guard: //' -e 's/: the BPF_PROG_LOAD syscall failed.*//' | cut -c1-160) (library loads are then controlled by fanotify open events only)"
  else
    meta palisade_guard "loaded"
  fi
  grep -q 'hash-on-write unavailable' "$PD/up.err" && meta palisade_hash_on_write "unavailable: $(grep -m1 -o 'hash-on-write unavailable.*' "$PD/up.err")"

  t0=$(date +%s.%N)
  # shellcheck disable=SC2046
  PALISADE_CLI_CONFIG=$PD/data/cli.toml "$PAL" file approve $(cat "$PD/approve.txt") > "$PD/approve.out" 2>&1 ||
    { tail -n 5 "$PD/approve.out" >&2; die "palisade file approve failed"; }
  meta palisade_approve_s "$(awk -v a="$t0" -v b="$(date +%s.%N)" -v n="$n_approve" 'BEGIN { printf "%.1f s for %d hashes", b - a, n }')"
  # Propagation: the approved hello runs, and the agent holds every approval.
  for i in $(seq 300); do "$EB" "$MNT/a/hello" >/dev/null 2>&1 && break; sleep 0.1; done
  "$EB" "$MNT/a/hello" >/dev/null 2>&1 || die "the approved hello still does not run 30 s after approval"
  local cached=""
  for i in $(seq 300); do
    cached=$(pal_status 's["cached_approvals"]')
    [ -n "$cached" ] && [ "$cached" -ge "$n_approve" ] && break
    sleep 0.1
  done
  [ -n "$cached" ] && [ "$cached" -ge "$n_approve" ] ||
    log "  warning: the agent caches $cached approvals, expected at least $n_approve (first execs may wait for a lookup)"
  meta palisade_propagated_s "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
  check_deny palisade
  tamper_check palisade "$MNT/t-$cold"

  local ev0 ev1
  counters ready
  ev0=$(pal_status 's["stats"]["events"]')
  run_a palisade
  ev1=$(pal_status 's["stats"]["events"]')
  counters a
  meta palisade_a_events "$(( ${ev1:-0} - ${ev0:-0} ))"
  measure palisade b-cold -f "$WORK/lists/b-$cold" -C "$WORK/lists/bctl-$cold"
  counters b-cold
  measure palisade c-cold -f "$WORK/lists/c-$cold"
  counters c-cold

  local before target now pw0 pw
  before=$(pal_status 's["stats"]["hashed_on_write"]')
  pw0=$(pal_status 's["stats"]["prewarmed"]')
  mkdir -p "$MNT/b-$warm" "$MNT/c-$warm"
  cp "$STAGE/b-$warm"/* "$MNT/b-$warm/"
  cp "$STAGE/c-$warm"/* "$MNT/c-$warm/"
  rm -rf "${STAGE:?}/b-$warm" "${STAGE:?}/c-$warm"
  sed "s|^$STAGE/|$MNT/|" "$WORK/lists/b-$warm" > "$WORK/lists/b-$warm.mnt"
  sed "s|^$STAGE/|$MNT/|" "$WORK/lists/c-$warm" > "$WORK/lists/c-$warm.mnt"
  # Wait until the agent has hashed every warm file and pre-warmed it (put it
  # into the kernel-side cache); go on after 30 s with a warning.
  target=$(( ${before:-0} + B_COUNT + C_COUNT ))
  for i in $(seq 300); do
    now=$(pal_status 's["stats"]["hashed_on_write"]')
    pw=$(pal_status 's["stats"].get("prewarmed", 0)')
    [ -n "$now" ] && [ "$now" -ge "$target" ] && [ -n "$pw" ] && [ "$pw" -ge $(( ${pw0:-0} + B_COUNT + C_COUNT )) ] && break
    sleep 0.1
  done
  [ -n "$now" ] && [ "$now" -ge "$target" ] ||
    log "  warning: hashed on write: $(( ${now:-0} - ${before:-0} )) of $(( B_COUNT + C_COUNT )) files after 30 s"
  [ -n "$pw" ] && [ "$pw" -ge $(( ${pw0:-0} + B_COUNT + C_COUNT )) ] ||
    log "  warning: pre-warmed: $(( ${pw:-0} - ${pw0:-0} )) of $(( B_COUNT + C_COUNT )) warm files after 30 s"
  sleep 0.5
  counters written
  measure palisade b-warm -f "$WORK/lists/b-$warm.mnt" -C "$WORK/lists/bctl-$warm"
  counters b-warm
  measure palisade c-warm -f "$WORK/lists/c-$warm.mnt"
  counters c-warm

  PALISADE_CLI_CONFIG=$PD/data/cli.toml "$PAL" status --json > "$PD/status.json" 2>/dev/null || true
  meta palisade_stats "$(python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); print(json.dumps(s["stats"], separators=(",", ":")))' "$PD/status.json" 2>/dev/null || echo '{}')"
  stop_pid "$PAL_PID" palisade
  PAL_PID=""
  # Warnings and errors of the agent, but for the known "guard unavailable".
  sed 's/\x1b\[[0-9;]*m//g' "$PD/up.err" | grep -E '^[^ ]+ +(WARN|ERROR) ' | grep -v 'BPF LSM guard unavailable' |
    sed -E 's/^[^ ]+ +//; s/pid [0-9]+/pid N/g' | cut -c1-200 > "$PD/warnings.txt" || true
  meta palisade_log_warnings "$(wc -l < "$PD/warnings.txt")"
  sort "$PD/warnings.txt" | uniq -c | sort -rn | head -n 5 | sed -E 's/^ +//' > "$PD/warnings-top.txt" || true
  while read -r line; do meta palisade_log_line "$line"; done < "$PD/warnings-top.txt"
  rm -rf "$MNT/b-$cold" "$MNT/c-$cold" "$MNT/t-$cold" "$MNT/b-$warm" "$MNT/c-$warm" "$CTL/b-$cold" "$CTL/b-$warm"
}

setup_fapolicyd() {
  cp -a /etc/fapolicyd "$WORK/saved/etc-fapolicyd"
  [ -d /var/lib/fapolicyd ] && cp -a /var/lib/fapolicyd "$WORK/saved/var-lib-fapolicyd"
  [ -f /var/log/fapolicyd-access.log ] && cp -a /var/log/fapolicyd-access.log "$WORK/saved/fapolicyd-access.log"
  FAPD_SAVED=1
  local conf=/etc/fapolicyd/fapolicyd.conf
  # Watch only ramfs (the benchmark's mount). Trust only the file backend
  # (Debian's build has no rpm backend). Run as root: in this sandbox the
  # bounding set lacks CAP_SYS_RESOURCE, so switching to the fapolicyd user
  # fails ("Cannot change to uid"); 0 is fapolicyd's documented default.
  # Everything else as Debian ships it (nice_val = 14, ...); `integrity` is
  # set by each phase (Debian's default is none).
  sed -i -e 's/^watch_fs *=.*/watch_fs = ramfs/' -e 's/^trust *=.*/trust = file/' "$conf"
  if [ "$(( 0x$(awk '/^CapBnd/ { print $2 }' /proc/self/status) >> 24 & 1 ))" = 0 ]; then
    sed -i -e 's/^uid *=.*/uid = 0/' -e 's/^gid *=.*/gid = 0/' "$conf"
    meta fapolicyd_uid "root (CAP_SYS_RESOURCE missing from the bounding set: fapolicyd cannot switch to its own user here)"
  fi
  grep -q '^watch_fs = ramfs$' "$conf" || die "could not set watch_fs = ramfs in $conf"
  # fapolicyd's default policy ("known-libs": deny execution of anything not
  # trusted). Debian's rules.d ships only 90-deny-execute, which denies every
  # execution on a watched filesystem, trusted or not.
  rm -f /etc/fapolicyd/rules.d/*
  local r
  for r in 10-languages 20-dracut 21-updaters 30-patterns 40-bad-elf 41-shared-obj 42-trusted-elf \
           70-trusted-lang 72-shell 90-deny-execute 95-allow-open; do
    cp "/usr/share/fapolicyd/sample-rules/$r.rules" /etc/fapolicyd/rules.d/
  done
  fagenrules >/dev/null 2>&1 || true
  [ -s /etc/fapolicyd/compiled.rules ] || die "fagenrules did not write /etc/fapolicyd/compiled.rules"
  grep -q '^integrity *=' "$conf" || echo 'integrity = none' >> "$conf"
  meta fapolicyd_conf "$(grep -v '^#' "$conf" | grep . | grep -v '^integrity' | tr '\n' ';' | sed 's/;$//')"
}

phase_fapolicyd() { # phase_fapolicyd INTEGRITY: none (Debian's default) or sha256
  local integ=$1 config=fapolicyd
  [ "$integ" = none ] || config=fapolicyd-$integ
  PHASE=$((PHASE + 1))
  log "phase $PHASE: $config (round $ROUND)"
  local FD=$WORK/$config-$PHASE tag=f$PHASE i conf=/etc/fapolicyd/fapolicyd.conf
  mkdir -p "$FD"
  sed -i "s/^integrity *=.*/integrity = $integ/" "$conf"
  grep -q "^integrity = $integ\$" "$conf" || die "could not set integrity = $integ in $conf"
  fresh "$MNT" "$tag"
  mk_tamper "$MNT/t-$tag"
  # fapolicyd-cli --file add writes one line per file: path, size, SHA-256
  # (the integrity = sha256 check compares both with the file).
  rm -f /etc/fapolicyd/trust.d/bench
  for i in a "b-$tag" "c-$tag" "t-$tag"; do
    fapolicyd-cli --file add "$MNT/$i/" --trust-file bench >/dev/null
  done
  [ "$(grep -c "^$MNT/" /etc/fapolicyd/trust.d/bench)" = $(( 4 + B_COUNT + C_COUNT + 4 )) ] ||
    die "fapolicyd-cli did not trust every benchmark file"
  # Every entry carries the size and SHA-256 of the file: check one against
  # our own figures, and the form of all.
  awk -v m="$MNT/" 'index($0, m) == 1 && !(NF == 3 && $2 ~ /^[0-9]+$/ && $3 ~ /^[0-9a-f]+$/ && length($3) == 64) { bad = 1 } END { exit bad }' \
    /etc/fapolicyd/trust.d/bench || die "a trust entry lacks size or SHA-256: $(grep -m1 "^$MNT/" /etc/fapolicyd/trust.d/bench)"
  grep -qx "$MNT/a/hello $(stat -c %s "$MNT/a/hello") $(sha_of "$MNT/a/hello")" /etc/fapolicyd/trust.d/bench ||
    die "the trust entry of $MNT/a/hello does not match its size and SHA-256"
  meta fapolicyd_trust_entry "$(grep -m1 "^$MNT/a/hello " /etc/fapolicyd/trust.d/bench | sed "s|^$MNT/|<ramfs>/|")"
  [ "$(awk '$3 == "ramfs"' /proc/mounts | wc -l)" = 1 ] || die "another ramfs appeared; not starting fapolicyd"
  /usr/sbin/fapolicyd --debug-deny > "$FD/out" 2> "$FD/err" &
  FAPD_PID=$!
  for i in $(seq 600); do
    grep -q 'Starting to listen for events' "$FD/err" && break
    kill -0 "$FAPD_PID" 2>/dev/null || { tail -n 20 "$FD/err" >&2; die "fapolicyd exited"; }
    sleep 0.1
  done
  grep -q 'Starting to listen for events' "$FD/err" || { tail -n 20 "$FD/err" >&2; die "fapolicyd not ready after 60 s"; }
  grep -qi "integrity.*$integ\|$integ.*integrity" "$FD/err" && meta "${config}_integrity_log" "$(grep -m1 -i 'integrity' "$FD/err")"
  meta fapolicyd_watch "$(grep -m1 'mount point' "$FD/err")"
  meta fapolicyd_sched "$(ps -o cls=,rtprio=,ni= -p "$FAPD_PID" | xargs)"
  check_deny "$config"
  tamper_check "$config" "$MNT/t-$tag"

  run_a "$config"
  measure "$config" b -f "$WORK/lists/b-$tag" -C "$WORK/lists/bctl-$tag"
  measure "$config" c -f "$WORK/lists/c-$tag"

  stop_pid "$FAPD_PID" fapolicyd
  FAPD_PID=""
  meta "${config}_denials" "$(grep -c 'dec=deny' "$FD/err" || true)"
  meta "${config}_report" "$(grep -E '^(Allowed accesses|Denied accesses|Inter-thread max queue depth|Subject misses|Object misses)' /var/log/fapolicyd-access.log 2>/dev/null | tr '\n' ';' | sed 's/;$//')"
  rm -rf "$MNT/b-$tag" "$MNT/c-$tag" "$MNT/t-$tag" "$CTL/b-$tag"
}

# ---- the run ------------------------------------------------------------------------
[ "$SKIP_FAPOLICYD" = 1 ] || setup_fapolicyd
ROUND=0
phase_none
for ROUND in $(seq "$ROUNDS"); do
  phase_palisade
  phase_none
  if [ "$SKIP_FAPOLICYD" != 1 ]; then
    phase_fapolicyd none
    phase_none
    phase_fapolicyd sha256
    phase_none
  fi
done
restore_fapolicyd
meta elapsed_s $(( $(date +%s) - T_START ))
meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)"

log "report"
case $DOC in /*) ;; *) DOC=$REPO/$DOC ;; esac
mkdir -p "$(dirname "$DOC")"
python3 "$REPO/bench/report.py" "$RES" "$META" "$DOC" "$REPO/bench/notes.md"
OK=1
log "done: $DOC written"
