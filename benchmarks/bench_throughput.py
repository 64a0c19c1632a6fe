"""Throughput and memory of the simulator on project-generated traces.

    python -m benchmarks.bench_throughput [--events 10000000] [--models all] [--rss-events 100000000]
        [--sweep sweeps/default.toml] [--page-cache written|disk]

Prints, on one core with the numba cache warm (fastest of --repeat runs):
events/s for a 10 M-event nic-rx trace per model (one per vendor family by
default) in strict and lazy mode, with each model's rate relative to
intel-vtd-legacy; accesses/s of access-only zipf streams over a small and a
large mapped footprint, with their IOTLB hit rates; nic-rx events/s as the
buffers in flight (queues x ring) grow; the generation rate of
every synthetic workload; the time of one-pass 9-size IOTLB sweeps against one
run per size. With --rss-events, the peak RSS of a run over a longer trace,
measured in a child process: anonymous memory (what the run allocates) and
the total with the trace's memory-mapped page cache.

The traces are written by the run and measured as the writer left them
in the page cache (default), or, with --page-cache disk, after dropping
them from it and faulting them back in. On the build machine a trace read
back from disk ran from as fast to a quarter slower, varying by hour, while
traces were mapped page by page; in 2 MiB folios (TraceWriter, TraceReader)
the two were within 5% of each other in one hour.
"""

import argparse
import mmap
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from harness import models
from harness.core.simulator import Simulator
from harness.trace import synth
from harness.trace.reader import TraceReader

CACHE = Path(os.environ.get("IOMMU_HARNESS_BENCH_DIR", ".bench"))
PAGE_CACHE = {"state": None}  # None: reuse traces as they are; "written" or "disk" (main)
_made = set()


def _trace(path, make):
    """The trace at path, made by make(path). Without a page-cache state an
    existing file is reused. With one, the trace is written once per
    process and flushed to disk (so no writeback runs during the timed
    runs); for "disk" its pages are then dropped from the page cache and
    faulted back in through a mapping, as in a run of a trace read from disk."""
    state = PAGE_CACHE["state"]
    if path in _made or (state is None and path.exists()):
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    make(path)
    if state is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            if state == "disk":
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if state == "disk":
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for k in range(0, len(m), mmap.PAGESIZE):  # faulted in as a run maps it
                m[k]
    _made.add(path)
    return path


def nic_trace(events, queues=8, ring=1024):
    """A nic-rx trace of about `events` rows (3 per packet), queues x ring
    buffers in flight."""
    name = f"nic-rx-{events}.arrow" if (queues, ring) == (8, 1024) else f"nic-rx-{queues}x{ring}-{events}.arrow"
    return _trace(CACHE / name, lambda p: synth.nic_rx(
        p, packets=events // 3, queues=queues, ring=ring, rate=8e6, seed=1))


# (queues, ring) beyond the main trace's 8 x 1024: nic-rx buffers in flight,
# the working set of handle rows, PTEs and IOVAs
IN_FLIGHT = [(8, 4096), (16, 4096)]


# about 10 M events each
SYNTH = [("nic-rx", dict(packets=3_333_334, queues=8, ring=1024, rate=8e6)),
         ("nic-tx", dict(packets=2_000_000, ring=1024, rate=4e6)),
         ("nvme", dict(ios=170_000)),
         ("gpu", dict(accesses=10_000_000)),
         ("vfio-guest", dict(accesses=10_000_000)),
         ("dma-map-benchmark", dict(threads=4, loops=1_250_000)),
         ("random", dict(accesses=10_000_000))]

FAMILY_MODELS = ["intel-vtd-legacy", "amd-vi-v1", "arm-smmuv3", "s390", "none"]


# access-only streams: zipf (alpha 0.9) over a mapped footprint, 20 M accesses;
# the 256 KiB footprint fits the 64-entry IOTLB's reach, the 64 MiB one does not
ZIPF = [dict(footprint="256K", map_size="256K"), dict(footprint="64M", map_size="2M")]


def zipf_trace(options, accesses=20_000_000):
    return _trace(CACHE / f"zipf-{options['footprint']}-{options['map_size']}-{accesses}.arrow",
                  lambda p: synth.generate("random", p, accesses=accesses, distribution="zipf", seed=1,
                                           **options))


def run(path, flush, model="intel-vtd-legacy"):
    """(events, seconds, IOTLB hit rate) of one run."""
    spec = models.resolve(model)
    with TraceReader(path) as r:
        sim = Simulator(spec, flush, "atomic", r.num_cpus)
        t = time.perf_counter()
        res = sim.run(r)
        dt = time.perf_counter() - t
        return res["events"], dt, res["iotlb_hits"] / max(1, res["lookups"])


def fastest(path, flush, model, repeat):
    return min((run(path, flush, model) for _ in range(repeat)), key=lambda r: r[1])


# (label, sets: 0 fully associative, entries of a 9-size grid)
SIZE_GRIDS = [("64 sets", 64, [64 << k for k in range(9)]), ("fully assoc.", 0, [16 << k for k in range(9)])]


def size_sweep(kind, options, model="intel-vtd-legacy", flush="strict", rounds=3):
    """One pass over a 9-size IOTLB grid against one run per size, the
    fastest of `rounds` each; a round runs the pass and then every size, so
    a slow spell of a shared machine slows both sides, not one. The
    counters must be equal."""
    from harness.core.simulator import run_sizes
    path = _trace(CACHE / f"sizes-{kind}.arrow", lambda p: synth.generate(kind, p, seed=1, **options))

    def timed(f):
        t = time.perf_counter()
        out = f()
        return out, time.perf_counter() - t

    for label, sets, entries in SIZE_GRIDS:
        specs = [models.resolve(model).with_overrides(
            [f"iotlb.entries={e}", f"iotlb.ways={e // sets if sets else 0}"]) for e in entries]
        t_grid, times = float("inf"), [float("inf")] * len(specs)
        with TraceReader(path) as r:
            for _ in range(rounds):
                (grid, one_pass), dt = timed(lambda: run_sizes(specs, flush, "atomic", r))
                t_grid = min(t_grid, dt)
                alone = [timed(lambda: Simulator(sp, flush, "atomic", r.num_cpus).run(r)) for sp in specs]
                times = [min(t, dt) for t, (_, dt) in zip(times, alone)]
        same = one_pass and grid == [v for v, _ in alone]
        print(f"{kind:<11} {label:<13} {entries[0]:>5}..{entries[-1]:<6} {r.num_rows:>10,} {t_grid:>8.2f} "
              f"{min(times):>8.2f} {max(times):>8.2f} {t_grid / max(times):>8.2f}x "
              f"{t_grid / min(times):>7.2f}x  {'equal' if same else 'DIFFERENT'}")


def sweep_speedup(spec_path):
    """Wall time of a sweep with 1 and 2 jobs, traces made beforehand."""
    import shutil
    from harness.sweep import runner, spec as sweep_spec
    spec = sweep_spec.load(spec_path)
    base = CACHE / f"sweep-{spec.name}"
    traces = base / "traces-only"
    runner.make_traces(spec, traces)
    times = {}
    for jobs in (1, 2):
        out = base / f"jobs{jobs}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(traces / "traces", out / "traces")
        t = time.perf_counter()
        manifest = runner.run(spec, out, jobs=jobs)
        times[jobs] = time.perf_counter() - t
        print(f"sweep {spec.name}: {len(manifest['runs'])} runs, --jobs {jobs}: {times[jobs]:.1f} s")
    print(f"--jobs 2 speedup: {times[1] / times[2]:.2f}x")


class _AnonPeak:
    """Peak RssAnon of this process, sampled every 20 ms: the memory a run
    allocates, without the trace's memory-mapped pages (RssFile), which the
    kernel can drop at any time."""

    def __init__(self):
        import threading
        self.peak, self.done = 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _read(self):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _sample(self):
        while not self.done.wait(0.02):
            self.peak = max(self.peak, self._read())

    def stop(self):
        self.done.set()
        self.thread.join()
        return max(self.peak, self._read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=5, help="runs per mode; the fastest is shown")
    ap.add_argument("--rss-events", type=int, default=0, help="also measure peak RSS on this many events")
    ap.add_argument("--models", default="all",
                    help="comma-separated models (intel-vtd-legacy is always run: the ratios' base), "
                         "or 'all' for one model per family")
    ap.add_argument("--sweep", help="also time this sweep spec with --jobs 1 and 2 (all cores)")
    ap.add_argument("--page-cache", choices=("written", "disk"), default="written",
                    help="traces are written by this run and measured as the writer left them in the "
                         "page cache, or dropped from it and read back from disk")
    ap.add_argument("--child-run", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_run:
        peak = _AnonPeak()
        n, dt, _ = run(Path(args.child_run), "lazy")
        print(f"peak anonymous RSS {peak.stop() / 2**30:.2f} GiB (file-backed trace pages excluded), "
              f"{n:,} events in {dt:.1f} s")
        return
    if args.sweep:
        sweep_speedup(args.sweep)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    PAGE_CACHE["state"] = args.page_cache
    run(nic_trace(3000), "strict")  # load or compile the kernels
    path = nic_trace(args.events)
    print(f"traces written by this run; page cache: "
          f"{'as written' if args.page_cache == 'written' else 'dropped and read back from disk'}\n")
    names = FAMILY_MODELS if args.models == "all" else args.models.split(",")
    names = ["intel-vtd-legacy"] + [m for m in names if m != "intel-vtd-legacy"]  # the ratios' base
    print(f"{'model':<18} {'trace':<24} {'flush':<7} {'events':>12} {'seconds':>8} {'M events/s':>11} "
          f"{'vs intel-vtd':>13}")
    base = {}
    for model in names:
        for flush in ("strict", "lazy"):
            n, dt, _ = fastest(path, flush, model, args.repeat)
            rate = n / dt / 1e6
            base.setdefault(flush, rate)
            base.setdefault("events", n)
            print(f"{model:<18} {path.name:<24} {flush:<7} {n:>12,} {dt:>8.2f} {rate:>11.1f} "
                  f"{rate / base[flush]:>12.2f}x")
    print(f"\n{'access-only zipf':<18} {'footprint':<9} {'events':>12} {'seconds':>8} {'M events/s':>11} "
          f"{'IOTLB hits':>11}   (intel-vtd-legacy strict; events: the accesses and a few maps)")
    for options in ZIPF:
        n, dt, hits = fastest(zipf_trace(options), "strict", "intel-vtd-legacy", args.repeat)
        print(f"{'random':<18} {options['footprint']:<9} {n:>12,} {dt:>8.2f} {n / dt / 1e6:>11.1f} "
              f"{hits:>11.1%}")
    print(f"\n{'buffers in flight':<18} {'queues x ring':<13} {'events':>12} {'strict':>8} {'lazy':>8}"
          f"   (M events/s, intel-vtd-legacy)")
    print(f"{8 * 1024:<18,} {'8 x 1024':<13} {base['events']:>12,} {base['strict']:>8.1f} {base['lazy']:>8.1f}"
          f"   (the table above)")
    for queues, ring in IN_FLIGHT:
        path = nic_trace(args.events, queues, ring)
        (n, strict, _), (_, lazy, _) = (fastest(path, f, "intel-vtd-legacy", args.repeat)
                                        for f in ("strict", "lazy"))
        print(f"{queues * ring:<18,} {f'{queues} x {ring}':<13} {n:>12,} {n / strict / 1e6:>8.1f} "
              f"{n / lazy / 1e6:>8.1f}")
    print(f"\n{'workload':<18} {'events':>12} {'seconds':>8} {'M events/s':>11}   (trace synth)")
    for kind, kw in SYNTH:
        out = CACHE / f"synth-{kind}.arrow"
        t = time.perf_counter()
        n = synth.generate(kind, out, **kw)
        dt = time.perf_counter() - t
        out.unlink()
        print(f"{kind:<18} {n:>12,} {dt:>8.2f} {n / dt / 1e6:>11.1f}")
    print(f"\n{'trace':<11} {'9 sizes':<13} {'entries':<13} {'events':>10} {'1 pass':>8} "
          f"{'min run':>8} {'max run':>8} {'vs max':>9} {'vs min':>8}  (intel-vtd-legacy strict)")
    for kind, options in (("nvme", dict(ios=40_000)), ("vfio-guest", dict(accesses=2_000_000))):
        size_sweep(kind, options, rounds=args.repeat)
    if args.rss_events:
        PAGE_CACHE["state"] = None  # reused if present: peak RSS does not depend on the page-cache state
        big = nic_trace(args.rss_events)
        subprocess.run([sys.executable, "-m", "benchmarks.bench_throughput", "--child-run", str(big)],
                       check=True)
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        print(f"peak RSS over {args.rss_events:,} events ({big.stat().st_size / 2**30:.1f} GiB "
              f"trace): {rss:.2f} GiB including the trace's page cache")


if __name__ == "__main__":
    main()
