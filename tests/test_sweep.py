"""Sweeps: spec validation, the results store, resume after SIGKILL, failed
runs recorded, summary and compare."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from harness.analysis.compare import compare
from harness.analysis.summary import pivot
from harness.cli import app
from harness.errors import HarnessError
from harness.sweep import runner, spec as sweep_spec, store

from conftest import mp, um, write_trace

ROOT = Path(__file__).parent.parent
cli = CliRunner()

SPEC = """
name = "t"
models = ["intel-vtd-legacy", "none"]
flush = ["strict", "lazy"]
gfp = ["atomic", "kernel-account"]
[grid]
"iotlb.entries" = [16, 64]
[[traces]]
synth = "nic-rx"
packets = 3000
queues = 2
ring = 64
[[traces]]
file = "bad.arrow"
"""


@pytest.fixture
def spec_file(tmp_path):
    # a trace the simulator refuses at row 1: its run fails, the sweep goes on
    write_trace(tmp_path / "bad.arrow", [mp(0, 0), um(1, 5)])
    p = tmp_path / "t.toml"
    p.write_text(SPEC)
    return p


def frame(out):
    return store.scan(out).collect().sort("run_key")


def test_sweep_store_manifest_and_failures(spec_file, tmp_path):
    out = tmp_path / "res"
    r = cli.invoke(app, ["sweep", str(spec_file), "-o", str(out), "-j", "1"])
    assert r.exit_code == 0, r.output
    # per trace: vtd 2 flush x 2 gfp x 2 sizes + none 2 x 2 (no IOTLB grid) = 12
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["runs"]) == 24 and "24 runs" in r.output and "(12 failed)" in r.output
    df = frame(out)
    assert len(df) == 24 and df["run_key"].n_unique() == 24
    assert sorted(p.relative_to(out).parts[0] for p in out.glob("model=*")) == ["model=intel-vtd-legacy", "model=none"]
    bad = df.filter(pl.col("status") == "error")
    assert len(bad) == 12 and bad["error"].str.contains("row 1: unmap of handle 5").all()
    assert bad["iotlb_misses"].null_count() == 12
    ok = df.filter(pl.col("status") == "ok")
    vtd = ok.filter(pl.col("model") == "intel-vtd-legacy")
    assert (vtd["flush"] == vtd["effective_flush"]).all()
    assert set(vtd["overrides"]) == {'{"iotlb.entries": "16"}', '{"iotlb.entries": "64"}'}
    # a rerun skips every finished run (failed ones included)
    before = {p: p.stat().st_mtime_ns for p in out.glob("model=*/*/*/*.parquet")}
    r = cli.invoke(app, ["sweep", str(spec_file), "-o", str(out), "-j", "1"])
    assert r.exit_code == 0 and before == {p: p.stat().st_mtime_ns for p in out.glob("model=*/*/*/*.parquet")}


def test_spec_errors(tmp_path):
    cases = [
        ('models = ["intel-vtd-legacy"]\nbogus = 1\n[[traces]]\nsynth = "nic-rx"\n', "unknown key(s) bogus"),
        ('models = ["no-such"]\n[[traces]]\nsynth = "nic-rx"\n', "no-such"),
        ('models = ["none"]\nflush = ["eager"]\n[[traces]]\nsynth = "nic-rx"\n', "flush 'eager'"),
        ('models = ["none"]\n[grid]\n"iotlb.entries" = [1]\n[[traces]]\nsynth = "nic-rx"\n', "no model of the sweep"),
        ('models = ["none"]\n[[traces]]\nfile = "missing.arrow"\n', "not found"),
        ('models = ["none"]\n[[traces]]\nsynth = "nic-rx"\nwarp = 9\n', "unknown option(s) warp"),
        ('models = ["none"]\n', "at least one [[traces]]"),
        ('models = [\n', "not valid TOML"),
        ('models = ["none"]\n[[traces]]\nfile = 1\n', "expected file"),
        ('models = ["none"]\n[[traces]]\nsynth = ["nic-rx"]\n', "expected one of"),
        ('models = ["none"]\n[[traces]]\nsynth = "nic-rx"\npackets = "abc"\n', "packets = 'abc': expected int"),
        ('models = ["none"]\n[[traces]]\nsynth = "nic-rx"\npage_pool = "yes"\n', "expected bool"),
        ('models = ["none"]\nseeds = [-1]\n[[traces]]\nsynth = "nic-rx"\n', "seeds: expected integers >= 0"),
        ('name = "../x"\nmodels = ["none"]\n[[traces]]\nsynth = "nic-rx"\n', "expected a plain name"),
        ('models = ["none", "intel-vtd-legacy"]\n[grid]\n"iotlb.entries" = [64, 64]\n'
         '[[traces]]\nsynth = "nic-rx"\n', "listed twice"),
        ('models = ["intel-vtd-legacy"]\n[grid]\n"iotlb.entries" = [1979-05-27]\n'
         '[[traces]]\nsynth = "nic-rx"\n', "non-empty list of values"),
    ]
    for text, message in cases:
        p = tmp_path / "s.toml"
        p.write_text(text)
        with pytest.raises(HarnessError, match=None) as e:
            sweep_spec.load(p)
        assert message in str(e.value) and str(p) in str(e.value)
    p.write_text("models = [\n")
    r = cli.invoke(app, ["sweep", str(p)])
    assert r.exit_code == 2 and "not valid TOML" in r.output


def test_killed_sweep_resumes_to_the_same_dataset(spec_file, tmp_path):
    spec_file.write_text(SPEC.replace("packets = 3000", "packets = 60000"))  # runs long enough to kill
    full = tmp_path / "full"
    runner.run(sweep_spec.load(spec_file), full, jobs=1)
    part = tmp_path / "part"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "sweep", str(spec_file), "-o", str(part),
                             "-j", "2", "-q"], env=env, start_new_session=True)
    deadline = time.time() + 120
    while len(list(part.glob("model=*/*/*/*.parquet"))) < 6 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, mid-run
    proc.wait()
    done = len(list(part.glob("model=*/*/*/*.parquet")))
    assert 6 <= done < 24
    runner.run(sweep_spec.load(spec_file), part, jobs=2)
    assert not list(part.glob("**/*.tmp"))
    a, b = frame(full), frame(part)
    assert a.drop("trace_provenance").equals(b.drop("trace_provenance"))
    assert len(list(part.glob("model=*/*/*/*.parquet"))) == 24


def test_summary_and_compare(spec_file, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    runner.run(sweep_spec.load(spec_file), a, jobs=1)
    s = pivot(a)
    vtd = s.filter((pl.col("model") == "intel-vtd-legacy") & (pl.col("metric") == "inv_cmds_per_mib"))
    assert len(vtd) == 2  # one row per IOTLB size
    assert (vtd["lazy/atomic vs strict"] < 0.1).all() and (vtd["strict/atomic"] > 0).all()
    for fmt in ("table", "csv", "json", "markdown"):
        r = cli.invoke(app, ["summary", str(a), "--format", fmt])
        assert r.exit_code == 0 and "inv_cmds_per_mib" in r.output, fmt
    r = cli.invoke(app, ["compare", str(a), str(a)])
    assert r.exit_code == 0 and "0 metric values differ" in r.output
    runner.run(sweep_spec.load(spec_file), b, jobs=1)
    diff, only, matched = compare(a, b)
    assert len(diff) == 0 and len(only) == 0 and matched == 24
    # perturb one row of B: compare names it and exits 1 beyond rtol, 0 within
    f = next(f for f in b.glob("model=intel-vtd-legacy/flush=lazy/gfp=atomic/*.parquet")
             if pl.read_parquet(f)["status"][0] == "ok")
    df = pl.read_parquet(f)
    df.with_columns(pl.col("walk_reads") + 1, pl.col("iotlb_miss_rate") * 1.001).write_parquet(f)
    r = cli.invoke(app, ["compare", str(a), str(b)])
    assert r.exit_code == 1 and "walk_reads" in r.output and "iotlb_miss_rate" in r.output
    r = cli.invoke(app, ["compare", str(a), str(b), "--rtol", "0.01"])
    assert r.exit_code == 0


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dask_scheduler_and_two_workers_run_the_sweep(spec_file, tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on loopback."""
    from distributed import Client
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for i in range(2):
            procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", addr, "--nthreads", "1",
                                           "--no-dashboard", "--name", f"w{i}"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 60
        while True:  # the scheduler takes a moment to listen
            try:
                with Client(addr, timeout="2s") as c:
                    c.wait_for_workers(2, timeout=60)
                    break
            except OSError:
                assert time.time() < deadline, "dask scheduler did not start"
                time.sleep(0.5)
        out = tmp_path / "dask"
        r = cli.invoke(app, ["sweep", str(spec_file), "-o", str(out), "--executor", "dask",
                             "--scheduler", addr])
        assert r.exit_code == 0, r.output
        local = tmp_path / "local"
        runner.run(sweep_spec.load(spec_file), local, jobs=1)
        assert frame(out).drop("trace_provenance").equals(frame(local).drop("trace_provenance"))
        with Client(addr) as c:  # both workers are still there: none died running the sweep
            assert len(c.scheduler_info()["workers"]) == 2
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_dask_local_cluster(spec_file, tmp_path):
    r = cli.invoke(app, ["sweep", str(spec_file), "-o", str(tmp_path / "o"), "--executor", "dask",
                         "-j", "2"])
    assert r.exit_code == 0 and "24 runs" in r.output, r.output
    r = cli.invoke(app, ["sweep", str(spec_file), "-o", str(tmp_path / "p"), "--scheduler", "tcp://x:1"])
    assert r.exit_code == 2 and "--scheduler needs --executor dask" in r.output


def test_rows_of_an_earlier_sweep_are_not_read(spec_file, tmp_path):
    out = tmp_path / "o"
    runner.run(sweep_spec.load(spec_file), out, jobs=1)
    spec_file.write_text(SPEC.replace('"none"]', '"none"]\nseeds = [2]'))  # other traces, same directory
    runner.run(sweep_spec.load(spec_file), out, jobs=1)
    assert len(list(out.glob("model=*/*/*/*.parquet"))) == 36  # bad.arrow runs are shared
    df = frame(out)
    assert len(df) == 24 and len(pivot(out)) > 0
    with pytest.raises(HarnessError, match="another sweep is writing"):
        with store.Lock(out):
            runner.run(sweep_spec.load(spec_file), out, jobs=1)


def test_same_content_traces_are_refused(tmp_path):
    write_trace(tmp_path / "a.arrow", [mp(0, 0)])
    write_trace(tmp_path / "b.arrow", [mp(0, 0)])
    p = tmp_path / "s.toml"
    p.write_text('models = ["none"]\n[[traces]]\nfile = "a.arrow"\n[[traces]]\nfile = "b.arrow"\n')
    with pytest.raises(HarnessError, match="same content"):
        runner.run(sweep_spec.load(p), tmp_path / "o", jobs=1)


def test_a_killed_worker_process_does_not_stop_the_sweep(spec_file, tmp_path):
    """SIGKILL one pool worker mid-sweep: the runs it left are retried one per
    process and every run ends with a row."""
    spec_file.write_text(SPEC.replace("packets = 3000", "packets = 40000"))
    spec = sweep_spec.load(spec_file)
    out = tmp_path / "o"
    out.mkdir()
    tasks = runner.plan(spec, runner.make_traces(spec, out), out)
    rows = []
    for row in runner._local(runner.group_runs(tasks), 2):
        rows.append(row)
        if len(rows) == 1:
            kids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                    and (p / "stat").exists() and _ppid(p) == os.getpid()]
            os.kill(max(kids), signal.SIGKILL)
    assert sorted(r["run_key"] for r in rows) == sorted(t["key"] for t in tasks)
    assert {r["status"] for r in rows} == {"ok", "error"}  # the bad.arrow runs fail as they should
    assert not any("process died" in (r["error"] or "") for r in rows)


def _ppid(proc):
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_iotlb_size_grid_runs_in_one_pass(tmp_path):
    """A grid over iotlb.entries of a fully associative IOTLB is one job per
    trace, model and modes; its rows equal one run per size."""
    p = tmp_path / "sizes.toml"
    p.write_text('name = "sizes"\nmodels = ["intel-vtd-legacy", "arm-smmuv3"]\nflush = ["strict", "lazy"]\n'
                 'gfp = ["atomic"]\n[grid]\n"iotlb.ways" = [0]\n"iotlb.entries" = [4, 16, 64]\n'
                 '[[traces]]\nsynth = "random"\naccesses = 3000\n')
    spec = sweep_spec.load(p)
    out = tmp_path / "res"
    traces = runner.make_traces(spec, out)
    tasks = runner.plan(spec, traces, out)
    jobs = runner.group_runs(tasks)
    # vtd (LRU): one job of 3 sizes per flush; smmuv3 (round-robin, micro-TLB): alone
    assert sorted(len(j) for j in jobs) == [1] * 6 + [3, 3]
    runner.run(spec, out, jobs=1)
    df = frame(out)
    assert (df["status"] == "ok").all() and len(df) == 12
    alone = {row["run_key"]: row for t in tasks for row in runner.execute([t])}
    cols = [c for c in df.columns if c not in ("run_key",)]
    for row in df.iter_rows(named=True):
        assert {c: row[c] for c in cols} == {c: alone[row["run_key"]][c] for c in cols}
    misses = df.filter(pl.col("model") == "intel-vtd-legacy").sort("overrides")["iotlb_misses"]
    assert misses.n_unique() > 1
