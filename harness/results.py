"""Result rows: config columns plus every metric, written atomically as parquet."""

import hashlib
import json
import os

import polars as pl

from harness import __version__, metrics


def run_id(config):
    """Stable id of a run: hash of its config (trace sha256, model, params, modes)."""
    blob = json.dumps(config, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def row(config, values, hw_view=None):
    out = {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v)
           for k, v in config.items()}
    out["run_id"] = run_id(config)
    out["hw_counters"] = json.dumps(hw_view[1] if hw_view else {}, sort_keys=True)
    for m in metrics.ALL:
        out[m.name] = values[m.name]
    return out


CONFIG_KEYS = ("trace", "trace_sha256", "trace_provenance", "model", "family", "flush",
               "effective_flush", "gfp", "overrides", "params", "seed", "harness_version")


def failed_row(values, error):
    """The row of a run that failed: the config columns it has, null metrics."""
    out = {k: None for k in CONFIG_KEYS} | {"run_id": None, "hw_counters": None}
    out.update({m.name: None for m in metrics.ALL})
    out.update(values, status="error", error=error)
    return out


def config(reader_path, sha256, provenance, spec, overrides, flush, effective_flush, gfp):
    return {
        "trace": os.path.basename(reader_path),
        "trace_sha256": sha256,
        "trace_provenance": provenance,
        "model": spec.name,
        "family": spec.family,
        "flush": flush,
        "effective_flush": effective_flush,
        "gfp": gfp,
        "overrides": dict(o.split("=", 1) for o in overrides),
        "params": spec.params,
        "seed": provenance.get("seed"),
        "harness_version": __version__,
    }


def write_parquet(out_dir, result_row):
    """Write one row to out_dir/<run_id>.parquet."""
    path = os.path.join(out_dir, f"{result_row['run_id']}.parquet")
    write_row(path, result_row)
    return path


def write_row(path, row):
    """One row to path via a temporary name in the same directory and a rename."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        pl.DataFrame([row], schema=row_schema(row)).write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def row_schema(row):
    """Fixed column types, whatever the values: a failed run's null metrics
    and a trace file's null seed keep their types."""
    derived = {m.name for m in metrics.DERIVED}

    def typ(k):
        if k in metrics.BY_NAME:
            return pl.Float64 if k in derived else pl.Int64
        return pl.Int64 if k == "seed" else pl.Utf8
    return {k: typ(k) for k in row}
