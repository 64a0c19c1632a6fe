"""Calibration cases: published IOMMU measurements reproduced side by side.

A case file (models/cases/NAME.toml) names project-generated traces, the
runs of the published comparison (model, flush mode, overrides), the host of
the published setup ([host], see throughput.py), the published figures and
the ratios to compare. `reproduce` runs a case as a sweep (the sweep runner:
parallel, resumable, a parquet row per run), prices every run with the
throughput model and checks each modelled ratio against the published one.
Ratios, not absolute figures: the machines differ, the relations should not.
"""

import json
import math
import tomllib
from collections import namedtuple
from pathlib import Path

import polars as pl

from harness import metrics, models
from harness.calibration import throughput
from harness.core.layout import FLUSH_MODES, GFP_POLICIES
from harness.errors import HarnessError
from harness.sweep import runner, store
from harness.sweep import spec as sweep_spec

CASES_DIR = models.BUILTIN_DIR / "cases"
TOP = {"title", "source", "unit", "tolerance", "host", "traces", "runs", "ratios", "sources", "notes"}
# What a run's published figure can be: throughput.model() outputs.
QUANTITIES = {"gbps": "Gbit/s", "line_fraction": "of line rate", "map_us": "us", "unmap_us": "us"}

Case = namedtuple("Case", "name path title source unit tolerance host traces runs ratios sources notes")
CaseRun = namedtuple("CaseRun", "name trace model flush gfp overrides published")
# modelled = (num - minus) / (den - minus) of metric; minus empty for a plain ratio
Ratio = namedtuple("Ratio", "name metric num den minus published published_text")


def available():
    return {p.stem: p for p in sorted(CASES_DIR.glob("*.toml"))}


def load(name):
    """A built-in case by name, or a case file by path."""
    found = available()
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise HarnessError(f"{path}: case file not found")
        name = path.stem
    elif name in found:
        path = found[name]
    else:
        raise HarnessError(f"unknown case {name!r}: expected all, a case file or one of {', '.join(found)}")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise HarnessError(f"{path}: not valid TOML: {e}") from None
    try:
        return _parse(name, path, doc)
    except (KeyError, TypeError, ValueError) as e:
        raise HarnessError(f"{path}: {e!r}: expected the case format of models/cases/README.md") from None


def _need(path, table, key, kind, where=""):
    v = table.get(key)
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise HarnessError(f"{path}: {where}{key}: expected {getattr(kind, '__name__', kind)}")
    return v


def _parse(name, path, doc):
    unknown = set(doc) - TOP
    if unknown:
        raise HarnessError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    host = throughput.host_params(doc.get("host", {}), path)
    traces = {}
    for label, t in _need(path, doc, "traces", dict).items():
        if not isinstance(t, dict):
            raise HarnessError(f"{path}: traces.{label}: expected a table")
        opts = {k: v for k, v in t.items() if k not in ("reduced", "seed")}
        reduced = opts | t.get("reduced", {})
        seed = t.get("seed", 1)
        full = sweep_spec.trace_sources(path, label, opts, [seed])[0]
        small = sweep_spec.trace_sources(path, label, reduced, [seed])[0]
        traces[label] = (full, small)
    runs = []
    for i, r in enumerate(_need(path, doc, "runs", list)):
        where = f"runs[{i}]."
        run = CaseRun(_need(path, r, "name", str, where), _need(path, r, "trace", str, where),
                      _need(path, r, "model", str, where), r.get("flush", "strict"),
                      r.get("gfp", "atomic"), tuple(r.get("set", [])), r.get("published", {}))
        if run.trace not in traces:
            raise HarnessError(f"{path}: {where}trace = {run.trace!r}: expected one of {', '.join(traces)}")
        if run.flush not in FLUSH_MODES or run.gfp not in GFP_POLICIES:
            raise HarnessError(f"{path}: {where}flush/gfp: expected one of {', '.join(FLUSH_MODES)} "
                               f"and {', '.join(GFP_POLICIES)}")
        models.resolve(run.model).with_overrides(list(run.overrides))  # a bad override fails now
        for q in run.published:
            if q not in QUANTITIES:
                raise HarnessError(f"{path}: {where}published.{q}: expected one of {', '.join(QUANTITIES)}")
        runs.append(run)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise HarnessError(f"{path}: two runs have the same name")
    ratios = []
    for i, q in enumerate(_need(path, doc, "ratios", list)):
        where = f"ratios[{i}]."
        metric = _need(path, q, "metric", str, where)
        if metric not in QUANTITIES:
            raise HarnessError(f"{path}: {where}metric = {metric!r}: expected one of {', '.join(QUANTITIES)}")
        ends = [q.get(k) for k in ("num", "den", "minus")]
        for k, v in zip(("num", "den", "minus"), ends):
            if v is not None and v not in names:
                raise HarnessError(f"{path}: {where}{k} = {v!r}: expected a run name ({', '.join(names)})")
        if ends[0] is None or ends[1] is None:
            raise HarnessError(f"{path}: {where}num and den: expected run names")
        pub = q.get("published")
        if pub is None:
            by = {r.name: r.published for r in runs}
            vals = [by[n].get(metric) if n else 0.0 for n in ends]
            if None in vals:
                raise HarnessError(f"{path}: {where}published: not given and not all runs publish {metric}")
            pub = _ratio(*vals)
        ratios.append(Ratio(q.get("name", f"{ends[0]} / {ends[1]}"), metric, *ends, float(pub),
                            q.get("published_text", "")))
    return Case(name, path, _need(path, doc, "title", str), _need(path, doc, "source", str),
                doc.get("unit", "packets"), doc.get("tolerance", 0.15), host, traces, runs, ratios,
                doc.get("sources", {}), doc.get("notes", ""))


def _ratio(num, den, minus=None):
    minus = minus or 0.0
    return (num - minus) / (den - minus) if den != minus else math.nan


def _as_published(metric, value):
    """A modelled figure at the precision the source printed it: dma_map_benchmark
    prints latencies with one decimal (0.1 us), so 0.13 us is compared as 0.1."""
    return round(value, 1) if metric in ("map_us", "unmap_us") else value


def sweep_spec_of(case, reduced=False):
    """The case as a sweep spec with explicit runs."""
    pick = 1 if reduced else 0
    label = {name: pair[pick].label for name, pair in case.traces.items()}
    runs = tuple(sweep_spec.Run(label[r.trace], r.model, r.flush, r.gfp, r.overrides) for r in case.runs)
    return sweep_spec.Spec(case.name, case.path, sorted({r.model for r in case.runs}),
                           sorted({r.flush for r in case.runs}), sorted({r.gfp for r in case.runs}),
                           [1], {}, [pair[pick] for pair in case.traces.values()], runs)


def _units(case, row, where):
    if case.unit in metrics.COUNTER_INDEX:
        return row[case.unit]
    params = json.loads(row["trace_provenance"]).get("params", {})
    if case.unit not in params:
        raise HarnessError(f"{where}: unit {case.unit!r}: the trace has no such parameter or counter")
    return params[case.unit]


def reproduce(case, out, reduced=False, jobs=None, executor="local", scheduler=None):
    """Run a case into out/NAME; returns (run table, ratio table) as polars frames."""
    spec = sweep_spec_of(case, reduced)
    sweep_dir = Path(out) / case.name
    manifest = runner.run(spec, sweep_dir, jobs=jobs, executor=executor, scheduler=scheduler)
    rows = store.scan(sweep_dir).collect()
    by_key = {r["run_key"]: r for r in rows.iter_rows(named=True)}
    key_of = {(m["trace"], m["model"], m["flush"], m["gfp"], tuple(m["overrides"])): m["key"]
              for m in manifest["runs"]}
    modelled, table = {}, []
    for r, run in zip(case.runs, spec.runs):
        row = by_key[key_of[(run.trace, run.model, run.flush, run.gfp, tuple(run.overrides))]]
        if row["status"] != "ok":
            raise HarnessError(f"{case.path}: run {r.name} failed: {row['error']}")
        values = {k: row[k] for k in metrics.BY_NAME}
        params = json.loads(row["params"])
        res = throughput.model(values, params, case.host, _units(case, row, case.path))
        modelled[r.name] = res
        table.append({"case": case.name, "run": r.name, "model": r.model, "flush": row["effective_flush"],
                      "overrides": " ".join(r.overrides), "bound": res["bound"]}
                     | {k: res[k] for k in ("gbps", "line_fraction", "cpu_ns_per_unit",
                                            "iotlb_misses_per_mib", "map_us", "map_sd_us",
                                            "unmap_us", "unmap_sd_us")}
                     | {f"published_{q}": r.published.get(q) for q in QUANTITIES})
    ratios = []
    for q in case.ratios:
        got = _ratio(*(_as_published(q.metric, modelled[n][q.metric]) if n else None
                       for n in (q.num, q.den, q.minus)))
        agreement = got / q.published if q.published else math.nan
        ratios.append({"case": case.name, "ratio": q.name, "metric": q.metric,
                       "published": q.published, "published_text": q.published_text or f"{q.published:.3g}",
                       "modelled": got, "agreement": agreement,
                       "within": bool(abs(agreement - 1) <= case.tolerance), "tolerance": case.tolerance,
                       "reduced": reduced})
    return pl.DataFrame(table), pl.DataFrame(ratios)


def dma_map_benchmark_lines(case, runs):
    """The modelled latencies in the output format of the kernel's
    tools/testing/selftests/dma/dma_map_benchmark.c (the kernel reports
    100 ns units; the tool prints microseconds with one decimal)."""
    out = []
    for r, row in zip(case.runs, runs.iter_rows(named=True)):
        t = case.traces[r.trace][0].options
        span_s = t.get("loops", 100_000) * (t.get("loop_ns", 1000) + t.get("delay_ns", 0)) / 1e9
        direction = ("BIDIRECTIONAL", "TO_DEVICE", "FROM_DEVICE")[t.get("dir", 0)]
        out += [f"# {r.name}: {r.model}, {row['flush']}",
                f"dma mapping benchmark: threads:{t.get('threads', 1)} seconds:{math.ceil(span_s)} "
                f"node:-1 dir:{direction} granule: {t.get('granule', 1)}",
                f"average map latency(us):{row['map_us']:.1f} standard deviation:{row['map_sd_us']:.1f}",
                f"average unmap latency(us):{row['unmap_us']:.1f} standard deviation:{row['unmap_sd_us']:.1f}"]
    return out
