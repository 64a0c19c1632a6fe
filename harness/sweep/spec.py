"""Sweep specs (TOML): traces x models x flush modes x gfp policies x grid.

    name = "default"
    models = ["intel-vtd-legacy", "arm-smmuv3"]
    flush = ["strict", "lazy"]
    gfp = ["atomic"]
    seeds = [1]                         # each synth trace once per seed
    [grid]                              # every combination of these overrides
    "iotlb.entries" = [64, 256]
    [[traces]]
    synth = "nic-rx"                    # a generator and its options
    packets = 100000
    [[traces]]
    file = "traces/samples/nvme.arrow"  # or a trace file (relative to the spec)
"""

import hashlib
import itertools
import json
import tomllib
from collections import namedtuple
from pathlib import Path

from harness import models
from harness.core.layout import FLUSH_MODES, GFP_POLICIES
from harness.errors import HarnessError
from harness.trace.synth import KINDS

TOP = {"name", "description", "models", "flush", "gfp", "seeds", "grid", "traces"}
# runs: explicit runs (a calibration case) instead of the product of the lists.
Spec = namedtuple("Spec", "name path models flush gfp seeds grid traces runs", defaults=(None,))
# A trace of the sweep: a file, or a synth recipe (kind, options, seed) made once.
TraceSource = namedtuple("TraceSource", "label file kind options seed")
# One run: which trace, model, modes and overrides ("key=value" strings).
Run = namedtuple("Run", "trace model flush gfp overrides")


def _list(path, data, key, default, kind, choices=None):
    v = data.get(key, default)
    if not isinstance(v, list) or not v or not all(isinstance(x, kind) for x in v):
        raise HarnessError(f"{path}: '{key}' must be a non-empty list of {kind.__name__}")
    if choices is not None:
        for x in v:
            if x not in choices:
                raise HarnessError(f"{path}: {key} {x!r}: expected one of {', '.join(choices)}")
    if len(set(map(str, v))) != len(v):
        raise HarnessError(f"{path}: '{key}' lists a value twice")
    return list(v)


def load(path):
    """The spec at path; any error names the file."""
    path = Path(path)
    try:
        return _load(path)
    except HarnessError as e:
        if str(e).startswith(str(path)):
            raise
        raise HarnessError(f"{path}: {e}") from None


def _load(path):
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise HarnessError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise HarnessError(f"{path}: not valid TOML: {e}") from None
    unknown = set(data) - TOP
    if unknown:
        raise HarnessError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; "
                           f"expected {', '.join(sorted(TOP))}")
    names = _list(path, data, "models", None, str)
    for m in names:
        models.resolve(m)  # an unknown model is an error now, not mid-sweep
    flush = _list(path, data, "flush", ["strict"], str, list(FLUSH_MODES))
    gfp = _list(path, data, "gfp", ["atomic"], str, list(GFP_POLICIES))
    seeds = _list(path, data, "seeds", [1], int)
    if any(isinstance(x, bool) or x < 0 for x in seeds):
        raise HarnessError(f"{path}: seeds: expected integers >= 0")
    grid = data.get("grid", {})
    if not isinstance(grid, dict):
        raise HarnessError(f"{path}: [grid] must be a table of parameter = [values]")
    for k, v in grid.items():
        if not isinstance(v, list) or not v or not all(isinstance(x, (bool, int, float, str, list)) for x in v):
            raise HarnessError(f"{path}: grid {k}: expected a non-empty list of values")
        if len({json.dumps(x) for x in v}) != len(v):
            raise HarnessError(f"{path}: grid {k}: a value is listed twice")
        users = [m for m in names if _knows(m, k)]
        if not users:
            raise HarnessError(f"{path}: grid {k}: no model of the sweep has this parameter")
        for m in users:  # every value must be valid for every model that has the parameter
            for x in v:
                models.resolve(m).with_overrides([f"{k}={json.dumps(x)}"])
    traces = []
    entries = data.get("traces")
    if not isinstance(entries, list) or not entries:
        raise HarnessError(f"{path}: expected at least one [[traces]] entry")
    for i, t in enumerate(entries):
        traces += trace_sources(path, i, t, seeds)
    labels = [t.label for t in traces]
    if len(set(labels)) != len(labels):
        raise HarnessError(f"{path}: two [[traces]] entries give the same trace")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise HarnessError(f"{path}: name {name!r}: expected a plain name (it names results/NAME)")
    return Spec(name, path, names, flush, gfp, seeds, grid, traces)


def trace_sources(path, i, t, seeds):
    where = f"{path}: traces[{i}]"
    if not isinstance(t, dict) or ("file" in t) == ("synth" in t):
        raise HarnessError(f"{where}: expected either file = \"...\" or synth = \"KIND\"")
    if "file" in t:
        if set(t) != {"file"} or not isinstance(t["file"], str):
            raise HarnessError(f"{where}: expected file = \"PATH\" and no options")
        f = (path.parent / t["file"]).resolve()
        if not f.is_file():
            raise HarnessError(f"{where}: trace file {t['file']} not found")
        return [TraceSource(f.stem, str(f), None, None, None)]
    opts = {k: v for k, v in t.items() if k != "synth"}
    kind = t["synth"]
    if not isinstance(kind, str) or kind not in KINDS:
        raise HarnessError(f"{where}: synth {kind!r}: expected one of {', '.join(KINDS)}")
    params = {p.name: p.default for p in KINDS[kind].params}
    bad = set(opts) - set(params)
    if bad:
        raise HarnessError(f"{where}: synth {kind}: unknown option(s) {', '.join(sorted(bad))}")
    for k, v in opts.items():
        if not _fits(params[k], v):
            raise HarnessError(f"{where}: synth {kind}: {k} = {v!r}: expected "
                               f"{'a size like 64K or bytes' if isinstance(params[k], str) else type(params[k]).__name__}")
    out = []
    for seed in seeds:
        digest = hashlib.sha256(json.dumps([kind, opts, seed], sort_keys=True).encode()).hexdigest()[:10]
        out.append(TraceSource(f"{kind}-{digest}", None, kind, opts, seed))
    return out


def _knows(model, key):
    """Whether the model takes parameter key (`none` has no IOTLB, say)."""
    try:
        models.resolve(model).with_overrides([f"{key}={json.dumps(0)}"])
    except HarnessError as e:
        return "unknown parameter" not in str(e)
    return True


def _fits(default, value):
    """A synth option's value has its parameter's type (a size may be text or bytes)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def runs(spec, trace):
    """Every run of one trace: models x flush x gfp x grid, in a fixed order (a
    model runs only the grid parameters it has: the none model ignores an
    IOTLB size grid), or the spec's explicit runs of that trace."""
    if spec.runs is not None:
        yield from (r for r in spec.runs if r.trace == trace)
        return
    for model, flush, gfp in itertools.product(spec.models, spec.flush, spec.gfp):
        keys = sorted(k for k in spec.grid if _knows(model, k))
        for values in itertools.product(*(spec.grid[k] for k in keys)):
            yield Run(trace, model, flush, gfp, tuple(f"{k}={json.dumps(v)}" for k, v in zip(keys, values)))
