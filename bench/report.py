#!/usr/bin/env python3
"""Summarise bench/exec-overhead.sh results: print a table, write docs/benchmarks.md.

    report.py RESULTS.tsv META.tsv OUT.md [NOTES.md]

RESULTS.tsv: phase, round, config, scenario, then execbench's "k=v ..." line;
rows of config `counters` hold the Palisade agent's counters after a step
(scenario = the step), rows of config `latency` its answer-time histograms
at the same moment (`r<bound>=n`: reader, `w<bound>=n`: workers, bound = a
bucket's upper bound in ns), rows of config `floor` the fanfloor measurement
and rows of config `floorlat` fanfloor's own answer times (median, p99).
META.tsv: key, value (a key may repeat). NOTES.md, if present, is appended
to the page verbatim (hand-written analysis that the numbers do not carry).

Each enforced phase is compared with the two `none` phases around it (the
script alternates none / enforced / none ...): ratio = enforced statistic /
mean of the neighbours' statistic. Reported: the median over rounds, and the
range. The statistic is the per-exec median for (a), where every exec is the
same steady-state operation, and the per-exec mean for (b) and (c), where
every exec is a distinct first exec and the total is what a user waits for.
"""
import os
import statistics
import sys
from collections import defaultdict

res_path, meta_path, out_path = sys.argv[1:4]
notes_path = sys.argv[4] if len(sys.argv) > 4 else None

# ---- input --------------------------------------------------------------------
rows = []
for line in open(res_path):
    parts = line.rstrip("\n").split("\t")
    if len(parts) < 5:
        continue
    phase, rnd, config, scen, kv = parts[:5]
    vals = {k: float(v) for k, v in (x.split("=", 1) for x in kv.split())}
    rows.append(dict(phase=int(phase), round=int(rnd), config=config, scen=scen, **vals))

meta = defaultdict(list)
for line in open(meta_path):
    if "\t" in line:
        k, v = line.rstrip("\n").split("\t", 1)
        meta[k].append(v)


def m(key, default=""):
    return meta[key][-1] if meta.get(key) else default


def mf(key, default=0.0):
    try:
        return float(m(key, default))
    except ValueError:
        return default


# `floor` rows (bench/src/fanfloor.c) are measured at the end of `none` phases
# and carry the same phase number: kept apart; so are the agent's counters.
floor_rows = [r for r in rows if r["config"] == "floor"]
counter_rows = [r for r in rows if r["config"] == "counters"]
latency_rows = [r for r in rows if r["config"] == "latency"]
floorlat_rows = [r for r in rows if r["config"] == "floorlat"]
rows = [r for r in rows if r["config"] not in ("floor", "counters", "latency", "floorlat")]
by = {(r["phase"], r["scen"]): r for r in rows}
phase_config = {r["phase"]: r["config"] for r in rows}
c_bytes = mf("c_bytes")
c_mib = c_bytes / 1048576
rounds = max((r["round"] for r in rows), default=0)
has_fapd = any(r["config"].startswith("fapolicyd") for r in rows)
FAPDS = [c for c in ("fapolicyd", "fapolicyd-sha256") if any(r["config"] == c for r in rows)]
NAN = float("nan")

# scenario id, title, program, kind of target, target
SCENARIOS = [
    ("a-hello", "(a) repeated exec of an approved small binary", "`hello`", "ratio", 1.02),
    ("a-script", "(a) repeated exec of an approved shebang script", "`script.sh`: `#!/bin/sh`, `exit 0`", "ratio", 1.02),
    ("a-uselib", "(a) repeated exec of a binary that loads an approved library from the mount",
     "`uselib` + `libfoo.so`", "ratio", 1.02),
    ("b", "(b) first exec of distinct small approved binaries", "copies of `hello`", "ratio", 1.10),
    ("c", f"(c) first exec of an approved {c_mib:.0f} MiB binary", f"`hello` + {c_mib:.0f} MiB", "added_ms", 40.0),
]
# per scenario: the enforced variants (config, scenario id in the results)
VARIANTS = {
    "a-hello": [("palisade", "a-hello")] + [(f, "a-hello") for f in FAPDS],
    "a-script": [("palisade", "a-script")] + [(f, "a-script") for f in FAPDS],
    "a-uselib": [("palisade", "a-uselib")] + [(f, "a-uselib") for f in FAPDS],
    "b": [("palisade", "b-cold"), ("palisade", "b-warm")] + [(f, "b") for f in FAPDS],
    "c": [("palisade", "c-cold"), ("palisade", "c-warm")] + [(f, "c") for f in FAPDS],
}
SUFFIX = {"b-cold": " cold", "b-warm": " warm", "c-cold": " cold", "c-warm": " warm"}
# configuration names on the page
DISPLAY = {"fapolicyd": "fapolicyd (integrity = none)", "fapolicyd-sha256": "fapolicyd (integrity = sha256)"}


def base_of(s):
    return s.split("-")[0] if s[:2] in ("b-", "c-") else s


def stat_key(s):
    return "median_us" if s.startswith("a-") else "mean_us"


def pair_key(s):
    """The in-phase paired statistic matching stat_key: median or mean based."""
    return "pair_ratio" if s.startswith("a-") else "pair_mean_ratio"


def med(xs):
    return statistics.median(xs) if xs else NAN


# ---- cold steps that were not cold ------------------------------------------------
b_count = int(m("params").split("B_COUNT=")[1].split()[0]) if "B_COUNT=" in m("params") else 0
c_count = int(m("params").split("C_COUNT=")[1].split()[0]) if "C_COUNT=" in m("params") else 0
# A cold step measures first execs that reach the agent. If something opened
# the cold copies before the step (another program reading the mount, say),
# the agent knew them and may have pre-warmed them: the step is then not
# cold. The agent's counters tell: every cold first exec is one permission
# event. Such a step is left out of the summary, and the page says so.
def by_phase(point_rows):
    """{phase: {step: row}} of rows recorded after each step."""
    out = defaultdict(dict)
    for r in point_rows:
        out[r["phase"]][r["scen"]] = r
    return out


counters_by_phase = by_phase(counter_rows)
NOT_COLD = {}  # (phase, scenario) -> why
_cold_steps = [("b-cold", "a", b_count), ("c-cold", "b-cold", c_count)]
for _ph, _steps in sorted(counters_by_phase.items()):
    for _step, _before, _n in _cold_steps:
        _cur, _prev = _steps.get(_step), _steps.get(_before)
        if not _n or not _cur or not _prev or "events" not in _cur or "events" not in _prev:
            continue
        _ev = _cur["events"] - _prev["events"]
        if _ev < 0.95 * _n:
            NOT_COLD[(_ph, _step)] = (f"only {_ev:g} of its {_n} first execs reached the agent "
                                      "(the copies had been opened before the step)")

# ---- analysis -----------------------------------------------------------------
results = {}  # (config, scenario id) -> summary


def summarise(config, s, target, kind):
    base, key = base_of(s), stat_key(s)
    ratios, added, mine, paired = [], [], [], []
    for r in rows:
        if r["config"] != config or r["scen"] != s or (r["phase"], s) in NOT_COLD:
            continue
        nbs = [by[(q, base)] for q in (r["phase"] - 1, r["phase"] + 1)
               if phase_config.get(q) == "none" and (q, base) in by]
        if not nbs:
            continue
        mine.append(r)
        ratios.append(r[key] / statistics.mean(n[key] for n in nbs))
        added.append((r["mean_us"] - statistics.mean(n["mean_us"] for n in nbs)) / 1000)
        pk = pair_key(s)
        if pk in r and all(pk in n for n in nbs):
            # in-phase pairs with the unwatched control, normalised by the
            # same pairs without enforcement (ramfs vs tmpfs)
            paired.append(r[pk] / statistics.mean(n[pk] for n in nbs))
    if not mine:
        return None
    d = dict(
        n=int(mine[0]["n"]), rounds=len(mine),
        median=med([r["median_us"] for r in mine]),
        mean=med([r["mean_us"] for r in mine]),
        p95=med([r["p95_us"] for r in mine]),
        ratio=med(ratios), rmin=min(ratios), rmax=max(ratios),
        added=med(added), amin=min(added), amax=max(added),
    )
    if paired:
        d.update(pratio=med(paired), pmin=min(paired), pmax=max(paired))
    if config == "palisade":
        # The paired ratio, where there is one, is the verdict: it compares
        # execs made at the same moment, so it is free of the drift between
        # phases that dominates the neighbouring ratio on a noisy host.
        judged = d.get("pratio", d["ratio"])
        d["pass"] = judged <= target if kind == "ratio" else d["added"] <= target
    return d


for scen, _, _, kind, target in SCENARIOS:
    nones = [r for r in rows if r["config"] == "none" and r["scen"] == scen]
    if nones:
        results[("none", scen)] = dict(
            n=int(nones[0]["n"]), rounds=len(nones),
            median=med([r["median_us"] for r in nones]),
            mean=med([r["mean_us"] for r in nones]),
            p95=med([r["p95_us"] for r in nones]),
        )
        if all(pair_key(scen) in r for r in nones):
            results[("none", scen)]["pair"] = med([r[pair_key(scen)] for r in nones])
    for config, s in VARIANTS[scen]:
        d = summarise(config, s, target, kind)
        if d:
            results[(config, s)] = d


# The floors, against the `none` measurement of their own phase: b-floor
# (fanfloor: fstat, ignore mark, answer) and b-floorhash (the same after
# reading and hashing the file with SHA-256: the floor of a content-bound
# decision about a file never seen).
for fscen in ("b-floor", "b-floorhash", "c-floorhash"):
    base = fscen[0]
    fl = [(r, by[(r["phase"], base)]) for r in floor_rows
          if r["scen"] == fscen and (r["phase"], base) in by]
    if not fl:
        continue
    rat = [r["mean_us"] / n["mean_us"] for r, n in fl]
    add = [(r["mean_us"] - n["mean_us"]) / 1000 for r, n in fl]
    d = dict(n=int(fl[0][0]["n"]), rounds=len(fl),
             median=med([r["median_us"] for r, _ in fl]), mean=med([r["mean_us"] for r, _ in fl]),
             p95=med([r["p95_us"] for r, _ in fl]),
             ratio=med(rat), rmin=min(rat), rmax=max(rat), added=med(add), amin=min(add), amax=max(add))
    pr = [r["pair_mean_ratio"] / n["pair_mean_ratio"] for r, n in fl if "pair_mean_ratio" in r and "pair_mean_ratio" in n]
    if pr:
        d.update(pratio=med(pr), pmin=min(pr), pmax=max(pr))
    results[("floor", fscen)] = d
    VARIANTS[base].append(("floor", fscen))
SUFFIX["b-floor"] = " (fanfloor)"
SUFFIX["b-floorhash"] = " + SHA-256 (fanfloor sha256)"
SUFFIX["c-floorhash"] = " + SHA-256 (fanfloor sha256)"


def R(config, s, field):
    d = results.get((config, s))
    return d[field] if d and field in d else NAN


def fmt_us(x):
    if x != x:
        return "–"
    return f"{x / 1000:.1f} ms" if x >= 10000 else f"{x:.0f} µs"


def verdict(d):
    if not d or "pass" not in d:
        return ""
    return "**pass**" if d["pass"] else "**FAIL**"


# ---- console table ----------------------------------------------------------------
print()
print(f"{'scenario':<9} {'config':<18} {'median':>9} {'mean':>9} {'p95':>9} {'ratio [range]':>22} {'added':>10}  target")
for scen, _, _, kind, target in SCENARIOS:
    for config, s in [("none", scen)] + VARIANTS[scen]:
        d = results.get((config, s))
        if not d:
            continue
        name = config + SUFFIX.get(s, "")
        if config == "none":
            ratio, added, tgt = "1", "", ""
        else:
            ratio = f"{d['ratio']:.3f} [{d['rmin']:.3f}-{d['rmax']:.3f}]"
            if "pratio" in d:
                added = f"paired {d['pratio']:.3f}"
            if "pratio" not in d:
                added = f"{d['added']:+.2f} ms"
            tgt = ""
            if config == "palisade":
                tgt = (f"<= {target:.2f}x" if kind == "ratio" else f"<= {target:.0f} ms added") + \
                      ("  pass" if d["pass"] else "  FAIL")
        print(f"{scen:<9} {name:<18} {fmt_us(d['median']):>9} {fmt_us(d['mean']):>9} "
              f"{fmt_us(d['p95']):>9} {ratio:>22} {added:>10}  {tgt}")
print()

# ---- the agent's counters, per step ---------------------------------------------------
STEPS = [
    ("ready", "from start to ready: approvals, the approved `hello` run until allowed, "
              "the enforcement and content checks (totals, not changes)"),
    ("a", "(a): 3 × (warm-up + timed) execs of `hello`, `script.sh`, `uselib`"),
    ("b-cold", "(b) cold: the first exec of each cold copy"),
    ("c-cold", "(c) cold: the first exec of each cold copy"),
    ("written", "warm copies written onto the mount (`cp`); the script waits until all are hashed and pre-warmed"),
    ("b-warm", "(b) warm: the first exec of each warm copy"),
    ("c-warm", "(c) warm: the first exec of each warm copy"),
]
CKEYS = ["events", "fast_path", "slow_path", "own", "hashed", "hashed_on_write", "prewarmed", "blocked"]


def step_changes(points_by_phase):
    """(step, the point after it, the point before it or None for `ready`,
    whose figures are totals) for every step of every phase that has both
    points and is not left out."""
    for ph, points in sorted(points_by_phase.items()):
        prev = None
        for step, _ in STEPS:
            cur = points.get(step)
            if cur is not None and (step == "ready" or prev is not None) and (ph, step) not in NOT_COLD:
                yield step, cur, (None if step == "ready" else prev)
            prev = cur


deltas = defaultdict(lambda: defaultdict(list))  # step -> counter -> values over phases
for step, cur, prev in step_changes(counters_by_phase):
    for k in CKEYS:
        if k in cur and (prev is None or k in prev):
            deltas[step][k].append(cur[k] - (prev[k] if prev else 0))


# ---- how long the agent took to answer, per step ---------------------------------------
# A `latency` row holds the histograms' buckets at a point; the change
# between two points is the step's answers. Pooled over the Palisade phases
# (but the left-out steps).
def _hist(r, tag):
    """{upper bound in ns (inf for the last bucket): answers} of one decider."""
    out = {}
    for k, v in r.items():
        if k.startswith(tag) and k[1:] and (k[1:].isdigit() or k[1:] == "inf"):
            out[float(k[1:])] = v
    return out


step_hist = defaultdict(lambda: {"r": defaultdict(float), "w": defaultdict(float)})
step_medians = defaultdict(lambda: {"r": [], "w": []})  # per-phase medians, for the range
step_sums = defaultdict(lambda: {"r": 0.0, "w": 0.0})  # total answer time (ns)


def hist_quantile(h, q):
    """Upper bound (ns) of the bucket that holds the q-quantile of h."""
    total = sum(h.values())
    if total <= 0:
        return NAN
    rank, seen = max(1, -(-q * total // 1)), 0
    for bound in sorted(h):
        seen += h[bound]
        if seen >= rank:
            return bound
    return NAN


for step, cur, prev in step_changes(by_phase(latency_rows)):
    for tag in ("r", "w"):
        now, before = _hist(cur, tag), (_hist(prev, tag) if prev else {})
        diff = {b: now[b] - before.get(b, 0) for b in now if now[b] - before.get(b, 0) > 0}
        for b, n in diff.items():
            step_hist[step][tag][b] += n
        step_sums[step][tag] += cur.get(f"{tag}sum", 0) - (prev.get(f"{tag}sum", 0) if prev else 0)
        if diff:
            step_medians[step][tag].append(hist_quantile(diff, 0.5))


def D(step, key):
    """Median over Palisade phases of a counter's change during a step."""
    v = deltas.get(step, {}).get(key)
    return med(v) if v else NAN


def cnt_cell(vals):
    if not vals:
        return "–"
    mid = med(vals)
    txt = f"{mid:g}"
    return txt if min(vals) == max(vals) else f"{txt} [{min(vals):g}–{max(vals):g}]"


def tamper_parts(config):
    """{'same size': 'RAN' / 'refused (...)', ...} from the last phase of `config`."""
    v = m(f"tamper_{config}")
    out = {}
    for part in v.split("; "):
        if ": " in part:
            k, x = part.split(": ", 1)
            out[k] = x
    return out


def tamper_summary(config):
    vals = meta.get(f"tamper_{config}", [])
    if not vals:
        return ""
    uniq = list(dict.fromkeys(vals))
    if len(uniq) == 1:
        return f"{uniq[0]} (the same in all {len(vals)} of its phases)"
    return "; ".join(f"phase {i + 1}: {v}" for i, v in enumerate(vals)) + " (differs between phases)"


def none_trust_words():
    """What fapolicyd with integrity = none binds trust to, from the content checks."""
    t = tamper_parts("fapolicyd")
    if not t:
        return "trusts a file by its path; never hashes"
    ran = {k: x == "RAN" for k, x in t.items()}
    if all(ran.values()):
        return "trusts a file by its path alone: no hash, no size check"
    if ran.get("same size") and not ran.get("size changed", True):
        return "trusts a file by its path and size: no hash"
    return "never hashes (see the content checks)"


# ---- the page -----------------------------------------------------------------------
ossl_GBps = mf("sha256_openssl_kBps") * 1000 / 1e9
sha256sum_s = mf("sha256sum_1GiB_s")
sha256sum_GBps = 2**30 / sha256sum_s / 1e9 if sha256sum_s else NAN
floor_ms = c_bytes / (ossl_GBps * 1e9) * 1000 if ossl_GBps else NAN
need_GBps = c_bytes / 0.040 / 1e9
none_words = none_trust_words()
PHASES_WORDS = ("none, then per round palisade, none, fapolicyd (integrity = none), none, "
                "fapolicyd (integrity = sha256), none" if len(FAPDS) == 2 else
                "none, then per round palisade, none" + "".join(f", {DISPLAY[f]}, none" for f in FAPDS))

L = []
w = L.append
w("# Benchmarks")
w("")
w("Every figure on this page comes from a script in `bench/` that a reader can")
w("rerun; the tables and the discussion under them are written by that script")
w("(`bench/report.py`), the notes at the end by hand (`bench/notes.md`).")
w("")
w("## Exec overhead: Palisade vs no enforcement vs fapolicyd")
w("")
el = int(mf("elapsed_s"))
w(f"Rerun, as root, on a machine you can spare for about {max(10, (el + 119) // 60)} minutes:")
w("")
w("```sh")
w(m("command", "bash bench/exec-overhead.sh"))
w("```")
w("")
w("It installs what it needs (gcc, fapolicyd, openssl, libssl-dev, python3), builds `palisade`")
w("in release mode, mounts a private ramfs under a fresh temp dir (the only ramfs")
w("on the machine, so fapolicyd's `watch_fs = ramfs` selects nothing else), runs")
w("the workload under each configuration, prints a table and rewrites this page.")
w("On exit, failure included, it stops both daemons by pid, unmounts the ramfs and")
w("restores `/etc/fapolicyd`. Knobs: `ROUNDS`, `A_EXECS`, `B_COUNT`, `C_COUNT`,")
w("`C_MIB`, `SKIP_FAPOLICYD=1`, `SKIP_BUILD=1`, `KEEP_WORK=1` (keep raw results and logs).")
w("")
w("### Machine and run")
w("")
w("| | |")
w("|---|---|")
w(f"| CPU | {m('cpu')} ({m('cores')} cores, {m('cpu_flags_sha')}) |")
w(f"| memory | {m('mem')} |")
w(f"| kernel | {m('kernel')} ({m('os')}) |")
if m("idle"):
    hp = " (the haltpoll default is 200000; `bench/haltpoll.sh` measures (b) cold under both)" if "guest_halt_poll_ns" in m("idle") else ""
    w(f"| idle CPUs | cpuidle {m('idle')}{hp} |")
w(f"| date | {m('date')} |")
w(f"| palisade | commit {m('commit')}, release build |")
w(f"| fapolicyd | Debian package {m('fapolicyd_version')} |")
w(f"| parameters | {m('params')}; phases: {PHASES_WORDS} |")
w(f"| SHA-256, one stream | {ossl_GBps:.2f} GB/s (`openssl speed -evp sha256`, 1 MiB blocks); "
  f"{sha256sum_GBps:.2f} GB/s (coreutils `sha256sum`, 1 GiB in tmpfs)"
  + (f"; the agent's own code on a {c_mib:.0f} MiB file in tmpfs, medians of 11 (`cargo bench -p palisade-agent"
     f" --bench hash`; the ratio is to the hash of as many bytes already in cache): {m('agent_hash')}"
     if m("agent_hash") else "") + " |")
b = m("build_s")
build_words = ""
if b and int(b) >= 5:
    build_words = f", of which {b} s building palisade"
elif b:
    build_words = " (cargo found the release build of this tree up to date)"
w(f"| run time | {el // 60} min {el % 60} s{build_words} |")


def sched_fmt(x):
    """`ps -o cls,rtprio,ni` as words."""
    p = x.split()
    if len(p) == 3 and p[0] in ("FF", "RR"):
        return f"SCHED_{'FIFO' if p[0] == 'FF' else 'RR'} {p[1]}"
    if len(p) == 3 and p[0] == "TS":
        return f"normal, nice {p[2]}"
    return x or "?"


w(f"| scheduling | driver and programs: {m('sched').split(', nice')[0] if 'FIFO' in m('sched') else m('sched')}; "
  f"Palisade agent (main thread): {sched_fmt(m('palisade_sched'))}; fapolicyd: {sched_fmt(m('fapolicyd_sched'))} |")
w(f"| load average (1, 5, 15 min) | {m('load_start')} at the start, {m('load_end')} at the end |")
w("")

w("### Summary against the targets")
w("")
hdr = "| scenario | target | Palisade |"
sep = "|---|---|---|"
if "fapolicyd" in FAPDS:
    hdr += f" fapolicyd, `integrity = none` (Debian's default: {none_words}) |"
    sep += "---|"
if "fapolicyd-sha256" in FAPDS:
    hdr += " fapolicyd, `integrity = sha256` (hashes a file at first use, checks SHA-256 and size against its trust entry) |"
    sep += "---|"
w(hdr)
w(sep)
for scen, title, prog, kind, target in SCENARIOS:
    for config, s in VARIANTS[scen]:
        d = results.get((config, s))
        if config != "palisade" or not d:
            continue
        name = f"{title}{SUFFIX.get(s, '')} ({prog})"
        if kind == "ratio":
            pv = f" (paired {d['pratio']:.3f}×)" if "pratio" in d else ""
            cells = [name, f"≤ {target:.2f}×", f"{d['ratio']:.3f}×{pv} {verdict(d)}"]
            for fc in FAPDS:
                f = results.get((fc, scen))
                cells.append(f"{f['ratio']:.3f}×" + (f" (paired {f['pratio']:.3f}×)" if "pratio" in f else "")
                             if f else "–")
        else:
            cells = [name, f"≤ {target:.0f} ms added", f"{d['added']:+.1f} ms {verdict(d)}"]
            for fc in FAPDS:
                f = results.get((fc, scen))
                cells.append(f"{f['added']:+.1f} ms" if f else "–")
        w("| " + " | ".join(cells) + " |")
w("")
w("Ratios are per exec against no enforcement (median over rounds of the ratio to")
w("the neighbouring `none` phases); (a) compares per-exec medians, (b) and (c)")
w("per-exec means. *Paired*, for (a) and (b): every timed exec on the watched")
w("ramfs is paired with an exec of a copy (for (b), a new copy: also a first exec)")
w("on a tmpfs that no daemon watches, at the same moment; the ratio within pairs")
w("(median of pair ratios for (a), ratio of totals for (b)), divided by the same")
w("figure in the neighbouring `none` phases, is free of the drift between phases.")
w("Pass/fail is judged on the paired figure where there is one, otherwise on the first.")
for (_ph, _step), _why in sorted(NOT_COLD.items()):
    _rnd = next((r["round"] for r in counter_rows if r["phase"] == _ph), "?")
    w("")
    w(f"**Left out:** {_step} of phase {_ph} (round {_rnd}): {_why}; it was not a cold step.")
    print(f"warning: {_step} of phase {_ph} (round {_rnd}) left out: {_why}", file=sys.stderr)
w("")
w("*Cold* and *warm* (Palisade, (b) and (c)):")
w("")
w("- **cold**: the file was written before the agent started and the agent has")
w("  never seen it (it runs with `--no-scan`, so no initialization scan hashes it).")
w("  Its first exec reaches the agent, which must read and hash the whole file")
w("  before it can look up the approval.")
w("- **warm**: the file was written while the agent runs. The agent hashed it")
w("  when it was closed after writing (`FAN_CLOSE_WRITE`, counter `hashed_on_write`)")
w("  and, its hash being approved already, put its inode into the kernel-side")
w("  cache at once (an ignore mark, counter `prewarmed`): its first exec need not")
w("  reach the agent at all.")
w("")
w("The agent's counters under *Which path each step took* show what happened.")
w("fapolicyd has no such distinction: its files are written before it starts, and")
w("with `integrity = sha256` it hashes each file at its first use.")
w("")

w("### Per scenario")
w("")
for scen, title, prog, kind, target in SCENARIOS:
    w(f"#### {title} ({prog})")
    w("")
    d0 = results.get(("none", scen))
    if d0:
        what = (f"{d0['n']} timed execs per phase after {m('params').split('A_WARMUP=')[-1].split()[0]} untimed, "
                "each paired with one of the unwatched copy"
                if scen.startswith("a-") else f"{d0['n']} new files per phase, each run once"
                + (", each paired with the first exec of a new unwatched copy" if scen == "b" else ""))
        w(f"{what}; {rounds} round{'s' if rounds != 1 else ''}. Per-exec figures are medians over phases.")
        w("")
    paired_col = scen.startswith(("a-", "b"))
    if kind == "ratio" and paired_col:
        w("| configuration | median / exec | mean / exec | p95 / exec | ratio vs none [range over rounds] | paired ratio [range] | target |")
        w("|---|---|---|---|---|---|---|")
    elif kind == "ratio":
        w("| configuration | median / exec | mean / exec | p95 / exec | ratio vs none [range over rounds] | target |")
        w("|---|---|---|---|---|---|")
    else:
        w("| configuration | median / exec | mean / exec | p95 / exec | added vs none [range over rounds] | target |")
        w("|---|---|---|---|---|---|")
    for config, s in [("none", scen)] + VARIANTS[scen]:
        d = results.get((config, s))
        if not d:
            continue
        cells = [DISPLAY.get(config, config) + SUFFIX.get(s, ""), fmt_us(d["median"]), fmt_us(d["mean"]), fmt_us(d["p95"])]
        if config == "none":
            cells += ["baseline"]
            if paired_col:
                cells += [f"baseline (ramfs/tmpfs {d['pair']:.3f})" if "pair" in d else "baseline"]
            cells += [""]
        elif kind == "ratio":
            cells += [f"{d['ratio']:.3f} [{d['rmin']:.3f} – {d['rmax']:.3f}]"]
            if paired_col:
                cells += [f"{d['pratio']:.3f} [{d['pmin']:.3f} – {d['pmax']:.3f}]" if "pratio" in d else "–"]
            cells += [f"≤ {target:.2f} {verdict(d)}" if config == "palisade" else
                      "floor, see below" if config == "floor" else "reference"]
        else:
            cells += [f"{d['added']:+.2f} ms [{d['amin']:+.2f} – {d['amax']:+.2f}]",
                      f"≤ {target:.0f} ms {verdict(d)}" if config == "palisade" else
                      "floor, see below" if config == "floor" else "reference"]
        w("| " + " | ".join(cells) + " |")
    w("")

# ---- counters ------------------------------------------------------------------------
if counters_by_phase:
    n_pp = len(counters_by_phase)
    w("### Which path each step took: the agent's counters")
    w("")
    w(f"`palisade status --json` after each step of every Palisade phase (raw results,")
    w(f"config `counters`): the change during the step, median over the {n_pp} Palisade")
    w("phases [range, if they differ]. `events`: permission events that reached the")
    w("agent; `fast_path`: answered by its reader thread from caches or after hashing")
    w("a small file itself; `slow_path`: handed to a worker (large files); `own`: the")
    w("agent's own opens (pre-warming opens each file); `hashed`: files hashed on the")
    w("decision path; `hashed_on_write`: hashed after being written; `prewarmed`:")
    w("inodes put into the kernel-side cache ahead of their first exec.")
    w("")
    w("| step | " + " | ".join(f"`{k}`" for k in CKEYS) + " |")
    w("|---|" + "---|" * len(CKEYS))
    for step, label in STEPS:
        if step not in deltas:
            continue
        w(f"| {label} | " + " | ".join(cnt_cell(deltas[step].get(k, [])) for k in CKEYS) + " |")
    w("")
    w("At the end of each Palisade phase (totals since its start):")
    w("")
    ekeys = CKEYS + ["allowed", "lookups", "timeouts", "overload"]
    w("| round | " + " | ".join(f"`{k}`" for k in ekeys) + " |")
    w("|---|" + "---|" * len(ekeys))
    for ph, steps in sorted(counters_by_phase.items()):
        last = steps.get("c-warm") or list(steps.values())[-1]
        w(f"| {int(last['round'])} | " + " | ".join(f"{last[k]:g}" if k in last else "–" for k in ekeys) + " |")
    w("")

# ---- answer times ----------------------------------------------------------------------
def fmt_ns(x):
    if x != x:
        return "–"
    if x == float("inf"):
        return "longer"
    return f"{x / 1e3:.1f} µs" if x < 1e5 else (f"{x / 1e3:.0f} µs" if x < 1e6 else f"{x / 1e6:.1f} ms")


def lat_cells(step, tag):
    h = step_hist.get(step, {}).get(tag, {})
    n = sum(h.values())
    if not n:
        return ["0", "–", "–", "–"]
    meds = step_medians[step][tag]
    rng = f" [{fmt_ns(min(meds))} – {fmt_ns(max(meds))}]" if len(meds) > 1 and min(meds) != max(meds) else ""
    mean = step_sums[step][tag] / n if step_sums[step][tag] > 0 else NAN
    return [f"{n:g}", fmt_ns(mean), f"≤ {fmt_ns(hist_quantile(h, 0.5))}{rng}", f"≤ {fmt_ns(hist_quantile(h, 0.99))}"]


if step_hist:
    w("### How long the agent took to answer")
    w("")
    w("The agent times every answer it gives, from the moment its reader has read the")
    w("permission event to the moment the answer is written (`palisade status`: *answer")
    w("time*; the time an event waits in the kernel before that read is not visible to")
    w("user space). Two histograms: answers given on the reader thread, and answers")
    w("given by a worker (or the watchdog). Recorded with the counters after each step")
    w("(raw results, config `latency`); per step, the answers of all Palisade phases")
    w("pooled, [the range of the per-phase medians]. The mean is exact; a quantile is")
    w("given as the upper bound of its histogram bucket, at most 12.5 % wide.")
    w("")
    w("| step | reader: answers | mean | median | p99 | workers: answers | mean | median | p99 |")
    w("|---|---|---|---|---|---|---|---|---|")
    for step, label in STEPS:
        if step in step_hist:
            w(f"| {label} | " + " | ".join(lat_cells(step, "r") + lat_cells(step, "w")) + " |")
    w("")
    none_b = R("none", "b", "mean")
    pal_b, floor_b = R("palisade", "b-cold", "pratio"), R("floor", "b-floor", "pratio")
    hb = step_hist.get("b-cold", {}).get("r", {})
    if hb and pal_b == pal_b and floor_b == floor_b and none_b == none_b:
        w(f"**Where (b) cold's time goes.** An exec without enforcement took {fmt_us(none_b)}")
        w(f"on average. Palisade added about {fmt_us((pal_b - 1) * none_b)} to it (paired ratio")
        w(f"− 1, times that mean), the bare fanotify round trip (`fanfloor`) about")
        w(f"{fmt_us((floor_b - 1) * none_b)}: Palisade costs about {fmt_us((pal_b - floor_b) * none_b)}")
        mb = step_sums["b-cold"]["r"] / sum(hb.values()) if step_sums["b-cold"]["r"] > 0 else NAN
        mean_words = f"{fmt_ns(mb)} on average, " if mb == mb else ""
        w(f"more per exec. Its reader's answer time was {mean_words}median")
        w(f"≤ {fmt_ns(hist_quantile(hb, 0.5))}")
        fl_lat = [r for r in floorlat_rows if r["scen"] == "b-floor"]
        fl_med = [r["median_ns"] for r in fl_lat if "median_ns" in r]
        if fl_med:
            fl_p99 = [r["p99_ns"] for r in fl_lat if "p99_ns" in r]
            w(f"(p99 ≤ {fmt_ns(hist_quantile(hb, 0.99))}); `fanfloor`'s, measured the same way")
            w(f"(`fstat`, ignore mark, answer), {fmt_ns(med(fl_med))} (p99 {fmt_ns(med(fl_p99))};")
            w(f"medians over its {len(fl_med)} runs). The rest of the difference lies outside the")
            w("answer and is not timed here: the work after it (the path lookup and caching, on")
            w("the reader's CPU while the exec goes on) or the kernel.")
        else:
            w(f"(p99 ≤ {fmt_ns(hist_quantile(hb, 0.99))}).")
        w("")

w("### Checks made during the run")
w("")
if meta.get("check_palisade"):
    w(f"- Palisade enforces, checked in each of its phases: {m('check_palisade')}.")
for fc in FAPDS:
    if meta.get(f"check_{fc}"):
        w(f"- {DISPLAY[fc]} enforces, checked in each of its phases: {m(f'check_{fc}')}.")
if any(meta.get(f"tamper_{c}") for c in ["palisade"] + FAPDS):
    w("- **Content changes.** In each enforced phase four more copies of `hello` are")
    w("  approved (Palisade, by SHA-256) or trusted (fapolicyd, `fapolicyd-cli --file add`).")
    w("  Three are run once (allowed), then changed in place, same inode: one keeps its")
    w("  size (its 16-byte random trailer rewritten with `dd conv=notrunc`), one grows by")
    w("  16 bytes (`>>`), one keeps its size and has its last byte flipped through a")
    w("  shared writable mapping (`bench/src/mmapwrite.c`: no `write(2)`); the fourth")
    w("  grows by 16 bytes before it ever ran. Half a second later each is run again:")
    for c in ["palisade"] + FAPDS:
        if meta.get(f"tamper_{c}"):
            w(f"  - {DISPLAY.get(c, 'Palisade')}: {tamper_summary(c)}.")
    tp = tamper_parts("palisade")
    bad = [k for k, x in tp.items() if x == "RAN"]
    if bad:
        w(f"  **Palisade let an approved file run after its content changed** ({', '.join(bad)}):"
          " see the notes below.")
    if "fapolicyd-sha256" in FAPDS:
        ts = tamper_parts("fapolicyd-sha256")
        ok = ts and all(x.startswith("refused") for x in ts.values())
        w("  " + ("With `integrity = sha256` fapolicyd does bind trust to content: a trusted file"
                  " changed in place is refused, also after it ran once (its cached verdict is dropped)."
                  if ok else "**With `integrity = sha256` fapolicyd let a changed trusted file run**:"
                  " its column is not content-bound trust on this system."))
if m("fapolicyd_trust_entry"):
    w(f"- fapolicyd's trust entries (`/etc/fapolicyd/trust.d/bench`, written by `fapolicyd-cli --file add`)"
      f" carry path, size and SHA-256, checked against the files for every entry's form and for"
      f" `hello`'s values: `{m('fapolicyd_trust_entry')}`.")
w(f"- Palisade's BPF LSM guard: {m('palisade_guard', 'unknown')}.")
if m("palisade_hash_on_write"):
    w(f"- Palisade hash-on-write: {m('palisade_hash_on_write')}.")
if meta.get("palisade_a_events"):
    w(f"- Permission events that reached the agent during the (a) runs "
      f"({3 * (int(m('params').split('A_EXECS=')[1].split()[0]) + int(m('params').split('A_WARMUP=')[1].split()[0]))} execs per phase, "
      f"warm-up included): {', '.join(meta['palisade_a_events'])} per phase.")
if meta.get("palisade_start_s"):
    w(f"- `palisade up` was ready in {med([float(x) for x in meta['palisade_start_s']]):.1f} s (median); "
      f"`palisade file approve`: {m('palisade_approve_s')}; every approval was cached by the agent "
      f"{med([float(x) for x in meta['palisade_propagated_s']]):.1f} s after the approve command started.")
if m("palisade_threads"):
    w(f"- The agent's threads, with the scheduling policy and nice value each has (names cut at 15 "
      f"characters; under SCHED_FIFO a nice value orders nothing; background threads leave a real-time "
      f"policy they inherit): {m('palisade_threads')}.")
if meta.get("palisade_log_warnings"):
    w(f"- Warnings and errors in the agent's log (not counting the guard's), per phase: "
      f"{', '.join(meta['palisade_log_warnings'])}.")
    for line in dict.fromkeys(meta.get("palisade_log_line", [])):
        w(f"  - `{line}`")
if has_fapd:
    w(f"- fapolicyd: {m('fapolicyd_watch')}; configuration `{m('fapolicyd_conf')}`, plus"
      " `integrity = none` or `integrity = sha256` by phase.")
    if m("fapolicyd_uid"):
        w(f"- fapolicyd runs as {m('fapolicyd_uid')}.")
    for fc in FAPDS:
        if m(f"{fc}_report"):
            w(f"- {DISPLAY[fc]}, its own report at the end of its last phase: {m(f'{fc}_report')}.")
w("")

w("### Method")
w("")
w("- **Mount.** All measured programs live on one ramfs mounted for the run; the")
w("  driver, `/bin/sh` and the C library stay on the host filesystem. The same")
w("  mount and the same `hello`, `script.sh`, `uselib` and `libfoo.so` serve every")
w("  configuration, so the only difference between phases is the enforcement.")
w("- **Driver.** `bench/src/execbench.c` starts each program with `posix_spawn` and")
w("  `waitpid`, and times every run (CLOCK_MONOTONIC, from before the spawn to")
w("  after the wait). A run that fails to start or exits non-zero aborts the")
w("  benchmark: every figure is of programs that were allowed and ran.")
w("- **Programs** (`bench/src/`): `hello` returns 0; `script.sh` is `#!/bin/sh` and")
w("  `exit 0`; `uselib` is linked with `-Wl,-rpath,$ORIGIN` against `libfoo.so`")
w("  beside it. For (b) and (c), `bench/src/mkvariants.c` writes new copies of")
w(f"  `hello` with a random trailer (16 bytes for (b), {c_mib:.0f} MiB for (c)), so every")
w("  file has a new SHA-256 and every exec is a real first exec; new files are")
w("  made for every phase and removed after it.")
w("- **Phases.** `none`, then per round `palisade`, `none`"
  + "".join(f", {DISPLAY[f]}, `none`" for f in FAPDS) + ".")
w("  Each enforced phase is divided by the mean of the `none` phases on either")
w("  side, which cancels slow drift of the machine; the tables give the median")
w("  over rounds and the range.")
w("- **Palisade**: `palisade up --data-dir <fresh> --watch <ramfs> --listen")
w("  127.0.0.1:0 --lockdown --no-scan`, a fresh data dir per phase. The benchmark")
w("  files are approved by SHA-256 (`palisade file approve <sha256>...`; by path,")
w("  the CLI would open them on the watched mount and the agent would hash them")
w("  then), and the script waits until the approved `hello` runs and the agent")
w("  caches every approval. *Cold* files are written before the agent starts;")
w("  *warm* files are copied onto the mount while it runs (after the approvals),")
w("  and the script waits until the agent has hashed and pre-warmed every one")
w("  (its `hashed_on_write` and `prewarmed` counters).")
w("- **fapolicyd**: Debian's package in the foreground (`--debug-deny`), with")
w("  `watch_fs = ramfs`, `trust = file` and upstream's default policy")
w("  (`known-libs`: sample rules 10, 20, 21, 30, 40, 41, 42, 70, 72, 90, 95).")
w("  Debian's own `rules.d` holds only `90-deny-execute`, which denies every")
w("  execution on a watched filesystem, trusted or not, so it cannot run the")
w("  workload. The files are trusted with `fapolicyd-cli --file add <dir>")
w("  --trust-file bench` before each phase, which records path, size and SHA-256")
w("  of each. Two configurations alternate, the rest as Debian ships it")
w("  (`nice_val = 14`: fapolicyd raises its own priority):")
w(f"  `integrity = none`, Debian's default, which {none_words} (see the content")
w("  checks); and `integrity = sha256`, where fapolicyd computes a file's SHA-256")
w("  when it first decides about it (and again after the file changes) and")
w("  compares it and the size with the trust entry: trust bound to content, as")
w("  Palisade's approvals are.")
w("- **Scheduling.** After the build the script switches itself to SCHED_FIFO")
w("  (priority 10; `BENCH_SCHED=normal` to keep the normal policy), and the driver,")
w("  the measured programs and both daemons inherit it, in every phase alike:")
w("  unrelated work on the machine then cannot hold a wake-up back for a scheduler")
w("  tick. What a loaded machine at normal priority does to the figures is in the")
w("  notes below.")
w("")

# ---- discussion, from the figures -------------------------------------------------------
w("### Discussion")
w("")
FN, FS = "fapolicyd", "fapolicyd-sha256"
a_pp = [R("palisade", s, "pratio") for s in ("a-hello", "a-script", "a-uselib")]
a_p = [R("palisade", s, "ratio") for s in ("a-hello", "a-script", "a-uselib")]
a_f = [R(FN, s, "ratio") for s in ("a-hello", "a-script", "a-uselib")]
a_s = [R(FS, s, "ratio") for s in ("a-hello", "a-script", "a-uselib")]
a_pass = all(results.get(("palisade", s), {}).get("pass") for s in ("a-hello", "a-script", "a-uselib"))
w(f"- **Repeated execs (a).** Palisade {a_p[0]:.3f}× / {a_p[1]:.3f}× / {a_p[2]:.3f}× "
  f"(binary / script / binary + library; paired {a_pp[0]:.3f}× / {a_pp[1]:.3f}× / {a_pp[2]:.3f}×), "
  f"fapolicyd {a_f[0]:.2f}× / {a_f[1]:.2f}× / {a_f[2]:.2f}× (`integrity = none`) and "
  f"{a_s[0]:.2f}× / {a_s[1]:.2f}× / {a_s[2]:.2f}× (`sha256`)"
  + (" — every Palisade figure within the 1.02× target." if a_pass else
     " — not every Palisade figure is within the 1.02× target (see the ranges: with an ignore mark in place"
     " nothing reaches the agent, so what is left is the kernel's mark lookup plus noise).")
  )
w("  After the first exec of an approved, unchanged file the agent sets an ignore")
w("  mark on its inode, and the kernel stops raising permission events for it: the")
w("  exec, `/bin/sh`'s open of the script and the loader's open of the library no")
w("  longer reach user space (see the event count under *Checks*). fapolicyd has no")
w("  kernel-side cache: every exec raises an `OPEN_EXEC_PERM` and an `OPEN_PERM`")
w("  event, more for a script or a library, each a round trip through the daemon,")
w("  which also builds a new subject for every new process. With `integrity =")
w("  sha256` it hashes a file once, not at every exec (it keeps the verdict on the")
w("  object in its cache: see its object misses under *Checks*), so repeated execs")
w("  cost about what they cost with `integrity = none`.")

bc, bw, bf, bs = (R(c, s, "ratio") for c, s in (("palisade", "b-cold"), ("palisade", "b-warm"), (FN, "b"), (FS, "b")))
bca, bwa = R("palisade", "b-cold", "added"), R("palisade", "b-warm", "added")
w(f"- **First execs of small binaries (b).** Palisade cold {bc:.3f}× ({bca * 1000:+.0f} µs per exec), "
  f"warm {bw:.3f}× ({bwa * 1000:+.0f} µs); fapolicyd {bf:.2f}× (`integrity = none`), {bs:.2f}× (`sha256`). "
  "Against the 1.10× target, cold "
  + ("passes" if results.get(("palisade", "b-cold"), {}).get("pass") else "fails")
  + ", warm " + ("passes." if results.get(("palisade", "b-warm"), {}).get("pass") else "fails."))
ev_bw, pw_wr, how_wr = D("b-warm", "events"), D("written", "prewarmed"), D("written", "hashed_on_write")
ev_bc, h_bc, sl_bc = D("b-cold", "events"), D("b-cold", "hashed"), D("b-cold", "slow_path")
if ev_bc == ev_bc:
    w(f"  Cold: each first exec reaches the agent ({ev_bc:g} events for {b_count} files), which hashes")
    w(f"  the file ({h_bc:g} hashed) and answers "
      + ("on its reader thread, without a hand-off to a worker"
         if sl_bc == sl_bc and sl_bc <= b_count * 0.05 else f"with {sl_bc:g} hand-offs to a worker")
      + f" (slow path {sl_bc:g}).")
if ev_bw == ev_bw:
    if ev_bw <= b_count * 0.05:
        w(f"  Warm: of the {b_count + c_count} warm copies ((b) and (c)), {how_wr:g} were hashed on write and")
        w(f"  {pw_wr:g} pre-warmed while being written, and {ev_bw:g} of the {b_count} first execs in (b) reached")
        w("  the agent: the kernel let them through on the ignore mark, as it does for a repeated exec.")
    else:
        w(f"  Warm: of the {b_count + c_count} warm copies ((b) and (c)), {how_wr:g} were hashed on write and")
        w(f"  {pw_wr:g} pre-warmed, yet {ev_bw:g} of the {b_count} first execs in (b) reached the agent.")
fr, fa = R("floor", "b-floor", "pratio"), R("floor", "b-floor", "added")
if fr == fr:
    pw = R("palisade", "b-warm", "pratio")
    pc = R("palisade", "b-cold", "pratio")
    nb = R("none", "b", "mean")
    w("  The floor row is `bench/src/fanfloor.c`, one thread that answers every event")
    w("  at once (fstat, ignore mark, allow), measured after each `none` phase against")
    w(f"  that phase: {R('floor', 'b-floor', 'ratio'):.3f}× ({fa * 1000:+.0f} µs), paired {fr:.3f}×: what one")
    w(f"  user-space round trip costs on this machine. Paired, Palisade cold is {pc:.3f}×")
    w(f"  ({(pc - fr) * nb:+.0f} µs per exec against that floor) and warm {pw:.3f}×"
      + (f", below the floor ({(pw - fr) * nb:+.0f} µs): no round trip at all." if pw < fr - 0.01 else
         f" ({(pw - fr) * nb:+.0f} µs against the floor)."))
    fh = R("floor", "b-floorhash", "pratio")
    if fh == fh:
        tb = next(t for sc, _, _, _, t in SCENARIOS if sc == "b")
        w(f"  The row below it is the same responder reading each file whole and computing its")
        w(f"  SHA-256 (OpenSSL) before it answers (`fanfloor MOUNT sha256`): the least a decision")
        w(f"  bound to the content of a file never seen can cost here, paired {fh:.3f}×")
        w(f"  ({(fh - fr) * nb:+.0f} µs for the hash). Palisade cold is {(pc - fh) * nb:+.0f} µs against it"
          + (f"; with that floor above {tb:.2f}×, no responder that wakes on the event and hashes the file"
             " before it answers passes (b) cold on this machine." if fh > tb else "."))
cc, cw, cf, cs = (R(c, s, "added") for c, s in (("palisade", "c-cold"), ("palisade", "c-warm"), (FN, "c"), (FS, "c")))
rate = c_bytes / (cc / 1000) / 1e9 if cc == cc and cc > 0 else NAN
srate = c_bytes / (cs / 1000) / 1e9 if cs == cs and cs > 0 else NAN
w(f"- **First exec of a {c_mib:.0f} MiB binary (c).** Palisade cold {cc:+.1f} ms, warm {cw:+.1f} ms; "
  f"fapolicyd {cf:+.1f} ms (`integrity = none`), {cs:+.1f} ms (`sha256`). Without enforcement the exec maps")
w(f"  only the pages it touches, so size barely matters. Cold, Palisade must read and hash all")
w(f"  {c_bytes / 1e6:.1f} MB before it answers, and so must fapolicyd with `integrity = sha256`: both")
w(f"  are bounded by single-stream SHA-256, at {ossl_GBps:.2f} GB/s on this CPU (SHA-NI, openssl)")
w(f"  {floor_ms:.1f} ms for this file. Palisade is {cc - floor_ms:+.1f} ms above that floor ({rate:.2f} GB/s end to")
w(f"  end), fapolicyd (sha256) {cs - floor_ms:+.1f} ms ({srate:.2f} GB/s). The 40 ms target means ≥ {need_GBps:.2f} GB/s for")
w("  this file, " + ("which this CPU's SHA-256 cannot reach: no content-bound check can pass (c) cold here,"
                    " and one SHA-256 stream cannot be split across cores." if floor_ms > 40 else
                    "which this CPU's SHA-256 reaches on data already in its cache."))
ch = R("floor", "c-floorhash", "added")
if ch == ch:
    w(f"  Measured here, a responder that reads each file on one thread, 1 MiB at a time, and hashes it")
    w(f"  (OpenSSL) before answering, `fanfloor MOUNT sha256`, adds {ch:+.1f} ms ({c_bytes / (ch / 1000) / 1e9:.2f} GB/s):"
      " reading and hashing in turn, from memory, against openssl's")
    w(f"  {floor_ms:.1f} ms on one 1 MiB block hashed over and over. Palisade, which hashes the page cache in")
    w(f"  place through a mapping (no copy; the CPU asked for each 4 KiB before the hash reaches it, a second")
    w(f"  thread mapping pages ahead; `cargo bench -p palisade-agent --bench hash` sets it against the `pread`")
    w(f"  pipeline it replaced), is {cc - ch:+.1f} ms against it.")
w("  Warm, the file was hashed when it was written and pre-warmed, and its first exec costs")
w("  what a repeated one does. fapolicyd with `integrity = none` never hashes, so its cost does not")
w("  grow with size; it is also not bound to content (see the content checks).")
w("- **Noise.** The machine is a 2-core VM that other work may share (see the load")
w("  average); p95 and means move more than medians. Alternating phases and")
w("  comparing each with its neighbours keeps slow drift out of the ratios; the")
w("  ranges show what is left.")
w("")

if notes_path and os.path.exists(notes_path):
    w(open(notes_path).read().rstrip("\n"))
    w("")

open(out_path, "w").write("\n".join(L) + "\n")
print(f"wrote {out_path}")
