"""Summary of a results dataset: per trace, model and overrides, the key
metrics for every flush mode x gfp policy, with ratios against strict (same
gfp) and against the `none` model (same trace and modes)."""

import polars as pl

from harness.errors import HarnessError
from harness.sweep import store

KEY_METRICS = ("iotlb_miss_rate", "inv_cmds_per_mib", "inv_cost_ns_per_mib", "stale_hits",
               "pt_bytes_peak", "memcg_charged_peak_bytes", "map_enomem")
GROUP = ("trace", "model", "overrides")


def long_frame(out, metrics=KEY_METRICS):
    """One row per (run, metric): value, ratio to strict, ratio to none."""
    lf = store.scan(out).filter(pl.col("status") == "ok")
    cols = list(GROUP) + ["flush", "gfp"]
    lf = lf.select(cols + list(metrics)).unpivot(index=cols, on=list(metrics), variable_name="metric")
    lf = lf.with_columns(pl.col("value").cast(pl.Float64))
    strict = lf.filter(pl.col("flush") == "strict").select(
        list(GROUP) + ["gfp", "metric", pl.col("value").alias("strict")])
    # the none model skips grid parameters it lacks: its baseline is per trace and modes
    none = lf.filter(pl.col("model") == "none").group_by("trace", "flush", "gfp", "metric").agg(
        pl.col("value").mean().alias("none"))
    ratio = lambda base: (pl.when(pl.col(base) != 0).then(pl.col("value") / pl.col(base)))  # noqa: E731
    return (lf.join(strict, on=list(GROUP) + ["gfp", "metric"], how="left")
              .join(none, on=["trace", "flush", "gfp", "metric"], how="left")
              .with_columns(ratio("strict").alias("vs_strict"), ratio("none").alias("vs_none"))
              .drop("strict", "none")
              .sort(list(GROUP) + ["metric", "flush", "gfp"]))


def pivot(out, metrics=KEY_METRICS):
    """Rows (trace, model, overrides, metric); a column per flush/gfp with the
    value, one per flush/gfp with its ratio to strict and one with its ratio
    to the none model (when some ratio exists)."""
    df = long_frame(out, metrics).collect().with_columns(
        (pl.col("flush") + "/" + pl.col("gfp")).alias("mode"))
    if not len(df):
        raise HarnessError(f"{out}: no successful runs to summarise (see the error column)")
    index = list(GROUP) + ["metric"]
    values = df.pivot(on="mode", index=index, values="value", sort_columns=True)
    out = values
    for base, rows in (("strict", df.filter(pl.col("flush") != "strict")),
                       ("none", df.filter(pl.col("model") != "none"))):
        if not len(rows):
            continue
        r = rows.pivot(on="mode", index=index, values=f"vs_{base}", sort_columns=True)
        out = out.join(r.rename({c: f"{c} vs {base}" for c in r.columns if c not in index}),
                       on=index, how="left")
    # a ratio column with no value anywhere (the none model's metrics are all 0) says nothing
    out = out.select([c for c in out.columns if c in index or out[c].null_count() < len(out)])
    order = {m: i for i, m in enumerate(metrics)}
    return (out.with_columns(pl.col("metric").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
               .sort(["trace", "model", "overrides", "_o"]).drop("_o"))
