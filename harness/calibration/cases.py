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
from harness.trace.synth import KINDS

CASES_DIR = models.BUILTIN_DIR / "cases"
TOP = {"title", "source", "unit", "tolerance", "host", "traces", "runs", "ratios", "sources", "notes"}
# What a run's published figure can be: throughput.model() outputs.
QUANTITIES = {"gbps": "Gbit/s", "line_fraction": "of line rate", "map_us": "us", "unmap_us": "us"}

Case = namedtuple("Case", "name path title source unit tolerance host traces runs ratios notes")
CaseRun = namedtuple("CaseRun", "name trace model flush gfp overrides published")
# modelled = (num - minus) / (den - minus) of metric; minus empty for a plain ratio
Ratio = namedtuple("Ratio", "name metric num den minus published span published_text")


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


def _need(path, table, key, kind, where="", default=None):
    v = table.get(key, default)
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise HarnessError(f"{path}: {where}{key}: expected {getattr(kind, '__name__', kind)}")
    return v


def _keys(path, table, allowed, where):
    if not isinstance(table, dict):
        raise HarnessError(f"{path}: {where.rstrip('.')}: expected a table")
    unknown = set(table) - set(allowed)
    if unknown:
        raise HarnessError(f"{path}: {where}{', '.join(sorted(unknown))}: unknown; expected "
                           f"{', '.join(sorted(allowed))}")


RUN_KEYS = {"name", "trace", "model", "flush", "gfp", "set", "published"}
RATIO_KEYS = {"name", "metric", "num", "den", "minus", "published", "published_text"}
# dma_map_benchmark prints latencies with one decimal: a printed p means p +- 0.05 us.
PRINTED = {"map_us": 0.05, "unmap_us": 0.05}


def _parse(name, path, doc):
    _keys(path, doc, TOP, "")
    host = throughput.host_params(_need(path, doc, "host", dict, default={}), path)
    unit = _need(path, doc, "unit", str, default="packets")
    tolerance = _need(path, doc, "tolerance", (int, float), default=0.15)
    if not 0 <= tolerance < 1:
        raise HarnessError(f"{path}: tolerance = {tolerance}: expected 0 <= tolerance < 1")
    traces = {}
    for label, t in _need(path, doc, "traces", dict).items():
        where = f"traces.{label}."
        _keys(path, t, set(t), where)  # a table; trace_sources checks its options
        opts = {k: v for k, v in t.items() if k not in ("reduced", "seed")}
        reduced = opts | _need(path, t, "reduced", dict, where, {})
        seed = _need(path, t, "seed", int, where, 1)
        full = sweep_spec.trace_sources(path, label, opts, [seed])[0]
        small = sweep_spec.trace_sources(path, label, reduced, [seed])[0]
        if unit not in metrics.COUNTER_INDEX and (full.kind is None or unit not in _defaults(full.kind)):
            raise HarnessError(f"{path}: unit = {unit!r}: expected a counter or a parameter of "
                               f"the synth kind of traces.{label}")
        traces[label] = (full, small)
    runs = []
    for i, r in enumerate(_need(path, doc, "runs", list)):
        where = f"runs[{i}]."
        _keys(path, r, RUN_KEYS, where)
        overrides = _need(path, r, "set", list, where, [])
        if not all(isinstance(o, str) for o in overrides):
            raise HarnessError(f"{path}: {where}set: expected a list of \"key=value\" strings")
        run = CaseRun(_need(path, r, "name", str, where), _need(path, r, "trace", str, where),
                      _need(path, r, "model", str, where), _need(path, r, "flush", str, where, "strict"),
                      _need(path, r, "gfp", str, where, "atomic"), tuple(overrides),
                      _need(path, r, "published", dict, where, {}))
        if run.trace not in traces:
            raise HarnessError(f"{path}: {where}trace = {run.trace!r}: expected one of {', '.join(traces)}")
        if run.flush not in FLUSH_MODES:
            raise HarnessError(f"{path}: {where}flush = {run.flush!r}: expected one of {', '.join(FLUSH_MODES)}")
        if run.gfp not in GFP_POLICIES:
            raise HarnessError(f"{path}: {where}gfp = {run.gfp!r}: expected one of {', '.join(GFP_POLICIES)}")
        try:
            models.resolve(run.model).with_overrides(list(run.overrides))
        except HarnessError as e:
            raise HarnessError(f"{path}: {where}model/set: {e}") from None
        for q, v in run.published.items():
            if q not in QUANTITIES or isinstance(v, bool) or not isinstance(v, (int, float)):
                raise HarnessError(f"{path}: {where}published.{q}: expected a number for one of "
                                   f"{', '.join(QUANTITIES)}")
        runs.append(run)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise HarnessError(f"{path}: two runs have the same name")
    ratios = []
    for i, q in enumerate(_need(path, doc, "ratios", list)):
        where = f"ratios[{i}]."
        _keys(path, q, RATIO_KEYS, where)
        metric = _need(path, q, "metric", str, where)
        if metric not in QUANTITIES:
            raise HarnessError(f"{path}: {where}metric = {metric!r}: expected one of {', '.join(QUANTITIES)}")
        ends = [_need(path, q, k, str, where) for k in ("num", "den")] + [
            _need(path, q, "minus", str, where, "") or None]
        for k, v in zip(("num", "den", "minus"), ends):
            if v is not None and v not in names:
                raise HarnessError(f"{path}: {where}{k} = {v!r}: expected a run name ({', '.join(names)})")
        pub = q.get("published")
        if pub is None:
            by = {r.name: r.published for r in runs}
            vals = [by[n].get(metric) if n else None for n in ends]
            if None in vals[:2] or ends[2] and vals[2] is None:
                raise HarnessError(f"{path}: {where}published: not given and not all runs publish {metric}")
            pub, span = _ratio(*vals), _printed_span(metric, *vals)
        elif isinstance(pub, bool) or not isinstance(pub, (int, float)):
            raise HarnessError(f"{path}: {where}published: expected a number")
        else:
            span = (pub, pub)
        ratios.append(Ratio(_need(path, q, "name", str, where, f"{ends[0]} / {ends[1]}"), metric, *ends,
                            float(pub), span, _need(path, q, "published_text", str, where, "")))
    _need(path, doc, "sources", dict, default={})
    return Case(name, path, _need(path, doc, "title", str), _need(path, doc, "source", str),
                unit, tolerance, host, traces, runs, ratios, _need(path, doc, "notes", str, default=""))


def _defaults(kind):
    return {p.name: p.default for p in KINDS[kind].params}


def _printed_span(metric, num, den, minus=None):
    """Lowest and highest ratio the published figures allow at the precision
    they were printed with (a latency printed 0.1 us may be 0.05..0.15)."""
    e = PRINTED.get(metric, 0.0)
    if not e:
        return (_ratio(num, den, minus),) * 2
    lo = _ratio(num - e, den + e, minus) if minus is None else _ratio(num, den, minus)
    hi = _ratio(num + e, max(den - e, 1e-9), minus) if minus is None else lo
    return lo, hi


def _ratio(num, den, minus=None):
    minus = minus or 0.0
    return (num - minus) / (den - minus) if den != minus else math.nan


def sweep_spec_of(case, reduced=False):
    """The case as a sweep spec with explicit runs."""
    pick = 1 if reduced else 0
    label = {name: pair[pick].label for name, pair in case.traces.items()}
    runs = tuple(sweep_spec.Run(label[r.trace], r.model, r.flush, r.gfp, r.overrides) for r in case.runs)
    return sweep_spec.Spec(case.name, case.path, sorted({r.model for r in case.runs}),
                           sorted({r.flush for r in case.runs}), sorted({r.gfp for r in case.runs}),
                           [1], {}, [pair[pick] for pair in case.traces.values()], runs)


def _units(case, run, row):
    """Work units of a run: a counter, or a parameter of its synthetic trace."""
    if case.unit in metrics.COUNTER_INDEX:
        n = row[case.unit]
    else:
        n = json.loads(row["trace_provenance"]).get("params", {}).get(case.unit)
    if not n:
        raise HarnessError(f"{case.path}: unit = {case.unit!r}: run {run.name} has none")
    return n


def reproduce(case, out, reduced=False, jobs=None, executor="local", scheduler=None):
    """Run a case into out/NAME; returns (run table, ratio table) as polars frames."""
    spec = sweep_spec_of(case, reduced)
    sweep_dir = Path(out) / case.name
    for f in sweep_dir.glob("model=*/flush=*/gfp=*/*.parquet"):  # failed runs run again
        if pl.read_parquet(f, columns=["status"])["status"][0] != "ok":
            f.unlink()
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
        res = throughput.model(values, params, case.host, _units(case, r, row))
        modelled[r.name] = res
        table.append({"case": case.name, "run": r.name, "model": r.model, "flush": row["effective_flush"],
                      "overrides": " ".join(r.overrides), "bound": res["bound"]}
                     | {k: res[k] for k in ("gbps", "line_fraction", "cpu_ns_per_unit",
                                            "iotlb_misses_per_mib", "map_us", "map_sd_us",
                                            "unmap_us", "unmap_sd_us")}
                     | {f"published_{q}": r.published.get(q) for q in QUANTITIES})
    ratios = []
    for q in case.ratios:
        got = _ratio(*(modelled[n][q.metric] if n else None for n in (q.num, q.den, q.minus)))
        agreement = got / q.published if q.published else math.nan
        lo, hi = q.span
        text = q.published_text or (f"{q.published:.3g}" if lo == hi else
                                    f"{q.published:.3g} ({lo:.3g}-{hi:.3g} as printed)")
        ratios.append({"case": case.name, "ratio": q.name, "metric": q.metric,
                       "published": q.published, "published_text": text,
                       "modelled": got, "agreement": agreement,
                       "within": bool(lo * (1 - case.tolerance) <= got <= hi * (1 + case.tolerance)),
                       "tolerance": case.tolerance,
                       "reduced": reduced})
    return pl.DataFrame(table), pl.DataFrame(ratios)


def dma_map_benchmark_lines(case, runs, reduced=False):
    """The modelled latencies in the output format of the kernel's
    tools/testing/selftests/dma/dma_map_benchmark.c (the kernel reports
    100 ns units; the tool prints microseconds with one decimal)."""
    out = []
    for r, row in zip(case.runs, runs.iter_rows(named=True)):
        t = case.traces[r.trace][int(reduced)].options
        span_s = t.get("loops", 100_000) * (t.get("loop_ns", 1000) + t.get("delay_ns", 0)) / 1e9
        direction = ("BIDIRECTIONAL", "TO_DEVICE", "FROM_DEVICE")[t.get("dir", 0)]
        out += [f"# {r.name}: {r.model}, {row['flush']}",
                f"dma mapping benchmark: threads:{t.get('threads', 1)} seconds:{math.ceil(span_s)} "
                f"node:-1 dir:{direction} granule: {t.get('granule', 1)}",
                f"average map latency(us):{row['map_us']:.1f} standard deviation:{row['map_sd_us']:.1f}",
                f"average unmap latency(us):{row['unmap_us']:.1f} standard deviation:{row['unmap_sd_us']:.1f}"]
    return out
