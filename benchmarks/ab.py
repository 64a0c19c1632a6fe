"""Interleaved A/B timing of two revisions of the simulator on one machine.

    python -m benchmarks.ab A B [--trace nic-rx] [--trace zipf-256K] [--model intel-vtd-legacy]
        [--flush strict] [--flush lazy] [--rounds 3] [--repeat 3] [--events 10000000]

A and B are git revisions (anything `git rev-parse` takes) or directories
holding a checkout. A revision is checked out once, detached, into a git
worktree under --worktrees (default .ab/); its kernels compile into the
numba cache at its first run there and load from it afterwards.

Each timed run is a child process that imports the harness of its side,
runs one trace --repeat times on one core and reports the fastest run and a
digest of the run's counters. The sides alternate within a round and the
order flips from round to round (A B, B A, ...), so a slow spell of a
shared machine slows both sides, not one. On the 2-core build machine the
rates of one build drift by up to 2x between hours, while A against
itself interleaved this way agreed within about 3%: `asv compare` measures one
commit after the other, so only a comparison like this one resolves a
change of a few percent. --trace takes nic-rx, zipf-256K or zipf-64M (the
traces of benchmarks.bench_throughput, made in IOMMU_HARNESS_BENCH_DIR or
.bench/ by this checkout's generator) or a trace file.
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness.errors import HarnessError

# The child needs only the harness API every revision since the foundation has.
CHILD = """
import hashlib, json, os, sys, time
os.sched_setaffinity(0, {int(sys.argv[5])})
from harness import models
from harness.core.simulator import Simulator
from harness.trace.reader import TraceReader
path, model, flush, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
best, res = float("inf"), None
with TraceReader(path) as r:
    for _ in range(repeat):
        sim = Simulator(models.resolve(model), flush, "atomic", r.num_cpus)
        t = time.perf_counter()
        res = sim.run(r)
        best = min(best, time.perf_counter() - t)
digest = hashlib.sha256(json.dumps(res, sort_keys=True, default=str).encode()).hexdigest()[:16]
print(json.dumps({"events": int(res["events"]), "seconds": best, "counters": digest}))
"""

NAMED_TRACES = ("nic-rx", "zipf-256K", "zipf-64M")


def tree(rev, worktrees):
    """The checkout of rev: a directory with a harness/ package, or a git
    worktree of the revision under worktrees, added on first use."""
    path = Path(rev)
    if (path / "harness").is_dir():
        return path.resolve()
    got = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                         capture_output=True, text=True)
    if got.returncode:
        raise HarnessError(f"ab: '{rev}' is neither a checkout directory nor a git revision")
    sha = got.stdout.strip()
    path = Path(worktrees) / sha[:12]
    if not (path / "harness").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(path), sha],
                       check=True, capture_output=True)
    return path.resolve()


def trace_path(name, events):
    if name not in NAMED_TRACES:
        path = Path(name)
        if not path.is_file():
            raise HarnessError(f"ab: --trace '{name}': expected {', '.join(NAMED_TRACES)} or a trace file")
        return path.resolve()
    from benchmarks import bench_throughput as bench
    if name == "nic-rx":
        return bench.nic_trace(events).resolve()
    footprint = name.split("-")[1]
    return bench.zipf_trace(next(o for o in bench.ZIPF if o["footprint"] == footprint), 2 * events).resolve()


def child(root, path, model, flush, repeat, core):
    """(events, fastest seconds, counter digest) of repeat runs in a child
    that imports the harness at root."""
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), model, flush, str(repeat), str(core)],
                         cwd=root, env=env, capture_output=True, text=True)
    if out.returncode:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise HarnessError(f"ab: {root}: run of {path.name} {model} {flush} failed: {tail}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["events"], r["seconds"], r["counters"]


def compare(sides, cases, rounds, repeat, core, log=functools.partial(print, flush=True)):
    """{case: {side: [(events, seconds, digest) per round]}}; the order of
    the sides flips every round."""
    runs = {case: {s: [] for s in sides} for case in cases}
    for k in range(rounds):
        order = list(sides) if k % 2 == 0 else list(sides)[::-1]
        for case in cases:
            for s in order:
                runs[case][s].append(child(sides[s], *case, repeat, core))
                ev, sec, _ = runs[case][s][-1]
                log(f"  round {k + 1}/{rounds} {case[0].name} {case[1]} {case[2]} {s}: "
                    f"{ev / sec / 1e6:.2f} M events/s")
    return runs


def table(runs):
    """Rows of M events/s per side (fastest round, then the median) and B
    against A: the ratio of the fastest rounds, and the range of the
    per-round ratios, which says whether the difference outlasts the noise."""
    head = (f"{'trace':<30} {'model':<18} {'flush':<7} {'A best':>7} {'A med':>7} {'B best':>7} {'B med':>7} "
            f"{'B/A':>6} {'per round':>12}  counters")
    lines = [head]
    for (path, model, flush), by in runs.items():
        a, b = by["A"], by["B"]
        rate = {s: [ev / sec / 1e6 for ev, sec, _ in by[s]] for s in by}
        ratios = [rb / ra for ra, rb in zip(rate["A"], rate["B"])]
        same = len({d for _, _, d in a + b}) == 1
        verdict = "within noise" if min(ratios) <= 1 <= max(ratios) else ("B faster" if ratios[0] > 1 else "B slower")
        lines.append(f"{path.name:<30} {model:<18} {flush:<7} {max(rate['A']):>7.2f} "
                     f"{statistics.median(rate['A']):>7.2f} {max(rate['B']):>7.2f} "
                     f"{statistics.median(rate['B']):>7.2f} {max(rate['B']) / max(rate['A']):>6.3f} "
                     f"{min(ratios):>5.3f}-{max(ratios):<6.3f}  {'equal' if same else 'DIFFERENT'}, {verdict}")
    return lines


def warm(sides, case):
    """Load (or compile) each side's kernels, the sides in parallel on the
    cores this process may use."""
    path, model, flush = case
    cores = sorted(os.sched_getaffinity(0))
    t = time.perf_counter()
    print("loading the kernels of both sides (a revision's first run compiles them: minutes)")
    procs = {root: subprocess.Popen([sys.executable, "-c", CHILD, str(path), model, flush, "1",
                                     str(cores[k % len(cores)])],
                                    cwd=root, env=dict(os.environ, PYTHONPATH=str(root)),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for k, root in enumerate(dict.fromkeys(sides.values()))}
    for root, p in procs.items():
        _, err = p.communicate()
        if p.returncode:
            tail = (err.strip().splitlines() or ["(no output)"])[-1]
            raise HarnessError(f"ab: {root}: the warm-up run failed: {tail}")
    print(f"  ready in {time.perf_counter() - t:.0f} s")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", metavar="A")
    ap.add_argument("b", metavar="B")
    ap.add_argument("--trace", action="append", help="nic-rx (default), zipf-256K, zipf-64M or a trace file")
    ap.add_argument("--model", action="append", help="default intel-vtd-legacy")
    ap.add_argument("--flush", action="append", help="default strict and lazy")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="runs per child; the fastest counts")
    ap.add_argument("--events", type=int, default=10_000_000, help="events of a named trace")
    ap.add_argument("--core", type=int, default=max(os.sched_getaffinity(0)), help="the core the runs take")
    ap.add_argument("--worktrees", default=".ab", help="where revisions are checked out")
    args = ap.parse_args(argv)
    try:
        sides = {"A": tree(args.a, args.worktrees), "B": tree(args.b, args.worktrees)}
        paths = [trace_path(t, args.events) for t in args.trace or ["nic-rx"]]
        cases = [(p, m, f) for p in paths for m in args.model or ["intel-vtd-legacy"]
                 for f in args.flush or ["strict", "lazy"]]
        for s, root in sides.items():
            print(f"{s}: {root}")
        warm(sides, cases[0])
        runs = compare(sides, cases, args.rounds, args.repeat, args.core)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print("\n".join(table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
