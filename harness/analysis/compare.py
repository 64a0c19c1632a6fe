"""Metric-by-metric differences between two results datasets, runs matched
by (trace sha256, model, flush, gfp, overrides), so across harness versions
too; failed runs take part through their status."""

import polars as pl

from harness import metrics
from harness.errors import HarnessError
from harness.sweep import store

MATCH = ("trace_sha256", "model", "flush", "gfp", "overrides")


def compare(a, b, rtol=0.0):
    """(differences, runs in only one set, matched runs). Differences: a run
    whose status differs, or a metric both sets have that differs beyond
    rtol (|b - a| > rtol * max(|a|, |b|))."""
    if not rtol >= 0:
        raise HarnessError(f"--rtol {rtol}: expected >= 0")
    fa, fb = store.scan(a).collect(), store.scan(b).collect()
    names = [m.name for m in metrics.ALL if m.name in fa.columns and m.name in fb.columns]
    for f, where in ((fa, a), (fb, b)):
        if f.select(MATCH).is_duplicated().any():
            raise HarnessError(f"{where}: two runs of the same trace, model, modes and overrides")
    fa, fb = (f.select(list(MATCH) + ["status"] + names) for f in (fa, fb))
    joined = fa.join(fb, on=list(MATCH), how="full", suffix="_b", coalesce=True)
    only = joined.filter(pl.col("status").is_null() | pl.col("status_b").is_null())
    both = joined.filter(pl.col("status").is_not_null() & pl.col("status_b").is_not_null())
    diffs = [both.filter(pl.col("status") != pl.col("status_b")).select(
        list(MATCH) + [pl.lit("status").alias("metric"), pl.lit(None, pl.Float64).alias("a"),
                       pl.lit(None, pl.Float64).alias("b")])]
    for n in names:
        x, y = pl.col(n).cast(pl.Float64), pl.col(n + "_b").cast(pl.Float64)
        bad = both.filter((y - x).abs() > rtol * pl.max_horizontal(x.abs(), y.abs()))
        diffs.append(bad.select(list(MATCH) + [pl.lit(n).alias("metric"), x.alias("a"), y.alias("b")]))
    return pl.concat(diffs), only.select(list(MATCH)), len(both)
