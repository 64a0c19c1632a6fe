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
Spec = namedtuple("Spec", "name path models flush gfp seeds grid traces")
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
    grid = data.get("grid", {})
    if not isinstance(grid, dict):
        raise HarnessError(f"{path}: [grid] must be a table of parameter = [values]")
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise HarnessError(f"{path}: grid {k}: expected a non-empty list of values")
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
        traces += _traces(path, i, t, seeds)
    labels = [t.label for t in traces]
    if len(set(labels)) != len(labels):
        raise HarnessError(f"{path}: two [[traces]] entries give the same trace")
    return Spec(data.get("name", path.stem), path, names, flush, gfp, seeds, grid, traces)


def _traces(path, i, t, seeds):
    where = f"{path}: traces[{i}]"
    if not isinstance(t, dict) or ("file" in t) == ("synth" in t):
        raise HarnessError(f"{where}: expected either file = \"...\" or synth = \"KIND\"")
    if "file" in t:
        if set(t) != {"file"}:
            raise HarnessError(f"{where}: a file entry takes no options")
        f = (path.parent / t["file"]).resolve()
        if not f.is_file():
            raise HarnessError(f"{where}: trace file {t['file']} not found")
        return [TraceSource(f.stem, str(f), None, None, None)]
    opts = {k: v for k, v in t.items() if k != "synth"}
    kind = t["synth"]
    if kind not in KINDS:
        raise HarnessError(f"{where}: synth {kind!r}: expected one of {', '.join(KINDS)}")
    known = {p.name for p in KINDS[kind].params}
    bad = set(opts) - known
    if bad:
        raise HarnessError(f"{where}: synth {kind}: unknown option(s) {', '.join(sorted(bad))}")
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


def runs(spec, trace):
    """Every run of one trace: models x flush x gfp x grid, in a fixed order. A
    model runs only the grid parameters it has (the none model ignores an
    IOTLB size grid)."""
    for model, flush, gfp in itertools.product(spec.models, spec.flush, spec.gfp):
        keys = sorted(k for k in spec.grid if _knows(model, k))
        for values in itertools.product(*(spec.grid[k] for k in keys)):
            yield Run(trace, model, flush, gfp, tuple(f"{k}={json.dumps(v)}" for k, v in zip(keys, values)))
