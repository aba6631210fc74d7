"""Shared by the reports of bench/haltpoll.sh and bench/placement.sh.

Both measure (b) cold (see bench/cold-lib.sh) for the configurations none,
floor and palisade under several settings, and append one line per run to a
results file: setting, configuration, round, then the driver's key=value
output.
"""
import statistics


def load(res, metric):
    """{(setting, configuration): [metric of each round]} from a results file."""
    runs = {}
    for line in open(res):
        setting, config, _round, out = line.rstrip("\n").split("\t")
        kv = dict(x.split("=", 1) for x in out.split() if "=" in x)
        runs.setdefault((setting, config), []).append(float(kv[metric]))
    return runs


def cell(runs, setting, config):
    """("median [min – max]", median) over rounds; ("-", nan) without runs."""
    v = runs.get((setting, config), [])
    if not v:
        return "-", float("nan")
    med = statistics.median(v)
    return f"{med:.3f} [{min(v):.3f} – {max(v):.3f}]", med


def write(doc, lines):
    """Write the page and print it."""
    open(doc, "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
