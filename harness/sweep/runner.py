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


def execute(task):
    """One run in a worker: its result row (or its error row); never raises."""
    from harness.core.simulator import Simulator
    try:
        spec = models.resolve(task["model"]).with_overrides(task["overrides"])
        with TraceReader(task["trace_path"]) as reader:
            sim = Simulator(spec, task["flush"], task["gfp"], reader.num_cpus)
            values = sim.run(reader)
            cfg = results.config(reader.path, task["trace_sha256"], reader.provenance, spec,
                                 task["overrides"], task["flush"], sim.effective_flush, task["gfp"])
        row = results.row(cfg, values, counter_view(spec, values))
        row.update(status="ok", error=None)
    except Exception as e:  # recorded in the dataset; the sweep goes on
        return _error_row(task, str(e) if isinstance(e, HarnessError) else "".join(
            traceback.format_exception_only(type(e), e)).strip())
    row.update(run_key=task["key"], sweep_trace=task["trace"])
    return row


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
        for row in execute_all(todo) if todo else ():
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
    """Runs in this process (jobs 1) or a pool of spawned processes."""
    if jobs == 1:
        for task in todo:
            yield execute(task)
        return
    left = {t["key"]: t for t in todo}
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            for f in as_completed([pool.submit(execute, t) for t in todo]):
                row = f.result()
                del left[row["run_key"]]
                yield row
    except BrokenProcessPool:
        # a worker died (killed, out of memory): the runs it left are retried
        # one per process, so the one that kills its process is recorded
        for task in left.values():
            yield _isolated(task)


def _isolated(task):
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        try:
            return pool.submit(execute, task).result()
        except BrokenProcessPool:
            return _error_row(task, "the run's worker process died (killed, or out of memory)")


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
        by_key = {f"run-{t['key']}": t for t in todo}
        futures = client.map(execute, todo, key=list(by_key), pure=False)
        for f in dask_completed(futures):
            try:
                yield f.result()
            except Exception as e:  # KilledWorker: the run killed its workers
                yield _error_row(by_key[f.key], f"the run's worker died: {type(e).__name__}: {e}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
