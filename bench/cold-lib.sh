# Shared by bench/haltpoll.sh and bench/placement.sh (sourced, not run):
# scenario (b) cold of bench/exec-overhead.sh -- the first exec of each of N
# distinct small approved binaries the agent has never seen, each paired with
# the first exec of a copy on an unwatched tmpfs -- under no enforcement, the
# bare fanotify responder (bench/src/fanfloor.c) and Palisade.
#
# The caller sets REPO (the repository, also the working directory), NAME
# (its script name, for messages and the temp dir), N and SKIP_BUILD, and may
# define:
#   cleanup_hook   run first on exit, failure included (restore what it changed)
#   drv CFG CMD... run the driver (execbench) under CFG; default: as is
#   dmn CFG CMD... run a daemon under CFG; default: as is
# Both wrappers must exec the command, so that `$!` of `dmn ... &` is the
# daemon's pid. Then it calls cold_setup and, per measurement, run_none,
# run_floor or run_palisade with a label CFG and ROUND set; each appends
# "CFG<TAB>CONFIG<TAB>ROUND<TAB>execbench output" to $RES. On exit it stops
# what it started by pid, unmounts what it mounted and removes its temp dir.

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
  declare -F cleanup_hook >/dev/null && cleanup_hook
  [ "$MOUNTED" = 1 ] && { umount "$MNT" 2>/dev/null || umount -l "$MNT"; }
  [ "$CTL_MOUNTED" = 1 ] && { umount "$CTL" 2>/dev/null || umount -l "$CTL"; }
  [ -n "$WORK" ] && rm -rf "$WORK"
  [ "$rc" = 0 ] || echo "bench/$NAME: FAILED (exit $rc); what it changed is restored, mounts removed" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }

declare -F drv >/dev/null || drv() { shift; exec "$@"; }
declare -F dmn >/dev/null || dmn() { shift; exec "$@"; }

# The tools, palisade (release), the watched ramfs and the control tmpfs.
cold_setup() {
  WORK=$(mktemp -d "/tmp/palisade-${NAME%.sh}.XXXXXX")
  chmod 755 "$WORK"
  BIN=$WORK/bin
  mkdir -p "$BIN"
  local src=$REPO/bench/src
  gcc -O2 -Wall -Wextra -o "$BIN/execbench" "$src/execbench.c"
  gcc -O2 -Wall -Wextra -o "$BIN/mkvariants" "$src/mkvariants.c"
  [ -e /usr/include/openssl/evp.h ] || bash "$REPO/scripts/deps.sh" libssl-dev
  gcc -O2 -Wall -Wextra -o "$BIN/fanfloor" "$src/fanfloor.c" -lcrypto
  gcc -O2 -o "$BIN/hello" "$src/hello.c"
  COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates Cargo.lock 2>/dev/null || echo ' + uncommitted changes')"
  if [ "$SKIP_BUILD" != 1 ] || [ ! -x target/release/palisade ]; then
    log "building palisade (release)"
    cargo build --release -p palisade 2>&1 | tail -n 1
  fi
  cp target/release/palisade "$BIN/palisade"
  PAL=$BIN/palisade
  MNT=$WORK/mnt CTL=$WORK/ctl
  mkdir -p "$MNT" "$CTL"
  mount -t ramfs -o mode=755 "palisade-${NAME%.sh}" "$MNT"; MOUNTED=1
  mount -t tmpfs -o mode=755,size=256m "palisade-${NAME%.sh}-ctl" "$CTL"; CTL_MOUNTED=1
  RES=$WORK/results.tsv
  : > "$RES"
}

# fresh TAG: N new small binaries on the watched ramfs, N on the control tmpfs.
fresh() {
  mkdir -p "$MNT/$1" "$CTL/$1"
  "$BIN/mkvariants" "$BIN/hello" "$MNT/$1" v "$N" 16 > "$WORK/$1.list"
  "$BIN/mkvariants" "$BIN/hello" "$CTL/$1" v "$N" 16 > "$WORK/$1.ctl"
}
measure() { # measure CFG CONFIG TAG
  local out
  out=$(drv "$1" "$BIN/execbench" -f "$WORK/$3.list" -C "$WORK/$3.ctl")
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$ROUND" "$out" >> "$RES"
  printf '    %-8s %-9s %s\n' "$1" "$2" "$out"
  rm -rf "${MNT:?}/$3" "${CTL:?}/$3"
}

run_palisade() { # run_palisade CFG
  local tag=p$RANDOM$RANDOM D i cached
  D=$WORK/pal-$tag
  mkdir -p "$D/home"
  fresh "$tag"
  openssl dgst -sha256 -r $(cat "$WORK/$tag.list") | awk '{ print $1 }' > "$D/approve.txt"
  HOME=$D/home dmn "$1" "$PAL" up --data-dir "$D/data" --watch "$MNT" --listen 127.0.0.1:0 --lockdown --no-scan \
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

run_floor() { # run_floor CFG
  local tag=f$RANDOM$RANDOM i
  fresh "$tag"
  dmn "$1" "$BIN/fanfloor" "$MNT" > "$WORK/fanfloor.out" 2>&1 &
  FLOOR_PID=$!
  for i in $(seq 100); do grep -q 'fanfloor: ready' "$WORK/fanfloor.out" && break; sleep 0.05; done
  grep -q 'fanfloor: ready' "$WORK/fanfloor.out" || { cat "$WORK/fanfloor.out" >&2; exit 1; }
  measure "$1" floor "$tag"
  stop_pid "$FLOOR_PID"; FLOOR_PID=""
}

run_none() { # run_none CFG
  local tag=n$RANDOM$RANDOM
  fresh "$tag"
  measure "$1" none "$tag"
}
