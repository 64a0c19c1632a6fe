"""Running a sweep: make its traces, then every run not yet on disk, on an
executor; a failing run is recorded with its error and the sweep goes on."""

import json
import os
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

from harness import __version__, models, results
from harness.errors import HarnessError
from harness.sweep import spec as sweep_spec
from harness.sweep import store
from harness.trace import synth
from harness.trace.reader import TraceReader
from harness.vendors import counter_view


def make_traces(spec, out):
    """Path, sha256 and provenance of every trace; synth recipes are written
    once to out/traces/ (atomically, so an existing file is complete)."""
    made = {}
    for t in spec.traces:
        if t.file:
            path = Path(t.file)
        else:
            path = Path(out) / "traces" / f"{t.label}.arrow"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                synth.generate(t.kind, path, seed=t.seed, **t.options)
        with TraceReader(path) as r:
            made[t.label] = {"path": str(path), "sha256": r.sha256(), "provenance": r.provenance,
                             "rows": r.num_rows}
    return made


def plan(spec, traces, out):
    """Every run as a task: its key, where its row goes, what it needs."""
    tasks, seen = [], {}
    shas = {}
    for label, info in traces.items():
        other = shas.setdefault(info["sha256"], label)
        if other != label:
            raise HarnessError(f"{spec.path}: traces {other} and {label} have the same content")
    for t in spec.traces:
        info = traces[t.label]
        for run in sweep_spec.runs(spec, t.label):
            mspec = models.resolve(run.model).with_overrides(list(run.overrides))
            key = store.run_key(info["sha256"], run.model, mspec.params, run.flush, run.gfp)
            if key in seen:
                raise HarnessError(f"{spec.path}: runs {seen[key]} and {run.overrides} of {run.model} "
                                   "have the same parameters")
            seen[key] = run.overrides
            tasks.append({"key": key, "trace": t.label, "trace_path": info["path"],
                          "trace_sha256": info["sha256"], "model": run.model, "flush": run.flush,
                          "gfp": run.gfp, "overrides": list(run.overrides),
                          "path": str(store.partition(out, run.model, run.flush, run.gfp) / f"{key}.parquet")})
    return tasks


GEOMETRY = ("iotlb.entries=", "iotlb.ways=")


def group_runs(tasks):
    """Tasks as jobs: runs that differ only in IOTLB size at one set count
    (simulator.size_grid) form one job, simulated in one pass; the rest run
    alone."""
    from harness.core.simulator import size_grid
    groups = {}
    for t in tasks:
        rest = tuple(o for o in t["overrides"] if not o.startswith(GEOMETRY))
        groups.setdefault((t["trace"], t["model"], t["flush"], t["gfp"], rest), []).append(t)
    out = []
    for group in groups.values():
        by_sets = {}
        for t in group:
            p = models.resolve(t["model"]).with_overrides(t["overrides"]).params
            if "iotlb.entries" in p:
                sets = p["iotlb.entries"] // (p["iotlb.ways"] or p["iotlb.entries"])
                by_sets.setdefault(sets, []).append(t)
            else:  # no IOTLB (none)
                out.append([t])
        for same in by_sets.values():
            try:
                size_grid([models.resolve(t["model"]).with_overrides(t["overrides"]) for t in same],
                          same[0]["flush"], same[0]["gfp"], 1)
                one_pass = len(same) > 1
            except HarnessError:  # not one pass: each run alone (its own errors, if any, there)
                one_pass = False
            out.extend([same] if one_pass else ([t] for t in same))
    return out


def execute(job):
    """The runs of a job in a worker: their result rows (or error rows);
    never raises."""
    from harness.core.simulator import Simulator, build_params, run_sizes
    try:
        specs = [models.resolve(t["model"]).with_overrides(t["overrides"]) for t in job]
        t0 = job[0]
        with TraceReader(t0["trace_path"]) as reader:
            if len(job) > 1:
                values, _ = run_sizes(specs, t0["flush"], t0["gfp"], reader)
            else:
                values = [Simulator(specs[0], t0["flush"], t0["gfp"], reader.num_cpus).run(reader)]
            effective = build_params(specs[0], t0["flush"], t0["gfp"], reader.num_cpus).flush
            rows = []
            for t, spec, v in zip(job, specs, values):
                cfg = results.config(reader.path, t["trace_sha256"], reader.provenance, spec,
                                     t["overrides"], t["flush"], effective, t["gfp"])
                row = results.row(cfg, v, counter_view(spec, v))
                row.update(status="ok", error=None, run_key=t["key"], sweep_trace=t["trace"])
                rows.append(row)
        return rows
    except Exception as e:  # recorded in the dataset; the sweep goes on
        msg = str(e) if isinstance(e, HarnessError) else "".join(
            traceback.format_exception_only(type(e), e)).strip()
        return [_error_row(t, msg) for t in job]


def _error_row(task, msg):
    row = results.failed_row({
        "trace": os.path.basename(task["trace_path"]), "trace_sha256": task["trace_sha256"],
        "model": task["model"], "flush": task["flush"], "gfp": task["gfp"],
        "overrides": json.dumps(dict(o.split("=", 1) for o in task["overrides"]), sort_keys=True),
        "harness_version": __version__}, msg)
    row.update(run_key=task["key"], sweep_trace=task["trace"])
    return row


def run(spec, out, jobs=None, executor="local", scheduler=None, progress=None):
    """Run the sweep into out; returns the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    execute_all = _executor(executor, jobs, scheduler)
    with store.Lock(out):
        for tmp in out.glob("**/*.tmp"):  # left by a run or trace killed mid-write
            tmp.unlink()
        traces = make_traces(spec, out)
        tasks = plan(spec, traces, out)
        manifest = {"sweep": spec.name, "spec": str(spec.path), "harness_version": __version__,
                    "traces": traces,
                    "runs": [{k: t[k] for k in ("key", "trace", "model", "flush", "gfp", "overrides")}
                             | {"path": os.path.relpath(t["path"], out)} for t in tasks]}
        store.write_manifest(out, manifest)  # first: summary and report read the runs it lists
        done = store.finished(out)
        todo = [t for t in tasks if t["key"] not in done]
        if progress:
            progress.start(len(tasks), len(tasks) - len(todo))
        by_key = {t["key"]: t for t in todo}
        for row in execute_all(group_runs(todo)) if todo else ():
            # atomic: a killed sweep loses only the runs in flight
            results.write_row(by_key[row["run_key"]]["path"], row)
            if progress:
                progress.advance(row["status"])
    return manifest


def _executor(name, jobs, scheduler):
    if scheduler and name != "dask":
        raise HarnessError("--scheduler needs --executor dask")
    if name == "local":
        return lambda todo: _local(todo, jobs or os.cpu_count() or 1)
    if name == "dask":
        return lambda todo: _dask(todo, jobs or os.cpu_count() or 1, scheduler)
    raise HarnessError(f"--executor {name}: expected local or dask")


def _local(todo, jobs):
    """Jobs in this process (jobs 1) or a pool of spawned processes; yields rows."""
    if jobs == 1:
        for job in todo:
            yield from execute(job)
        return
    left = dict(enumerate(todo))
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(execute, job): i for i, job in left.items()}
            for f in as_completed(futures):
                rows = f.result()
                del left[futures[f]]
                yield from rows
    except BrokenProcessPool:
        # a worker died (killed, out of memory): the jobs it left are retried
        # one per process, so the one that kills its process is recorded
        for job in left.values():
            yield from _isolated(job)


def _isolated(job):
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        try:
            return pool.submit(execute, job).result()
        except BrokenProcessPool:
            return [_error_row(t, "the run's worker process died (killed, or out of memory)") for t in job]


def _dask(todo, jobs, scheduler):
    """Runs on a Dask cluster: an existing one at `scheduler`, or a LocalCluster
    of `jobs` single-threaded worker processes. Workers read the traces from
    their paths (a filesystem they share with this machine); rows come back
    here and are written by this process."""
    try:
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_completed
    except ImportError:
        raise HarnessError("--executor dask needs the distributed package") from None
    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="30s")
        else:
            cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
    except OSError as e:
        raise HarnessError(f"--scheduler {scheduler}: cannot connect: {e}") from None
    try:
        by_key = {f"run-{job[0]['key']}": job for job in todo}
        futures = client.map(execute, todo, key=list(by_key), pure=False)
        for f in dask_completed(futures):
            try:
                yield from f.result()
            except Exception as e:  # KilledWorker: the job killed its workers
                yield from (_error_row(t, f"the run's worker died: {type(e).__name__}: {e}")
                            for t in by_key[f.key])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
