"""Metric-by-metric differences between two results datasets, matched by
run key (same trace, model parameters, modes and harness version) or, across
versions, by (trace sha256, model, flush, gfp, overrides)."""

import polars as pl

from harness import metrics
from harness.sweep import store

MATCH = ("trace_sha256", "model", "flush", "gfp", "overrides")


def compare(a, b, rtol=0.0):
    """Rows that differ beyond rtol (|b - a| > rtol * max(|a|, |b|)), runs
    only in one of them, and the number of matched runs."""
    names = [m.name for m in metrics.ALL]
    fa = store.scan(a).filter(pl.col("status") == "ok").select(list(MATCH) + names).collect()
    fb = store.scan(b).filter(pl.col("status") == "ok").select(list(MATCH) + names).collect()
    joined = fa.join(fb, on=list(MATCH), how="full", suffix="_b", coalesce=True)
    only = joined.filter(pl.any_horizontal([pl.col(n).is_null() for n in (names[0], names[0] + "_b")]))
    both = joined.filter(pl.col(names[0]).is_not_null() & pl.col(names[0] + "_b").is_not_null())
    diffs = []
    for n in names:
        x, y = pl.col(n).cast(pl.Float64), pl.col(n + "_b").cast(pl.Float64)
        bad = both.filter((y - x).abs() > rtol * pl.max_horizontal(x.abs(), y.abs()))
        if len(bad):
            diffs.append(bad.select(list(MATCH) + [pl.lit(n).alias("metric"), x.alias("a"), y.alias("b")]))
    diff = pl.concat(diffs) if diffs else pl.DataFrame(
        schema={**{k: pl.Utf8 for k in MATCH}, "metric": pl.Utf8, "a": pl.Float64, "b": pl.Float64})
    return diff, only.select(list(MATCH)), len(both)
