"""Summary of a results dataset: per trace, model and overrides, the key
metrics for every flush mode x gfp policy, with ratios against strict (same
gfp) and against the `none` model (same trace, modes and overrides)."""

import polars as pl

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
    none = lf.filter(pl.col("model") == "none").select(
        ["trace", "overrides", "flush", "gfp", "metric", pl.col("value").alias("none")])
    ratio = lambda base: (pl.when(pl.col(base) != 0).then(pl.col("value") / pl.col(base)))  # noqa: E731
    return (lf.join(strict, on=list(GROUP) + ["gfp", "metric"], how="left")
              .join(none, on=["trace", "overrides", "flush", "gfp", "metric"], how="left")
              .with_columns(ratio("strict").alias("vs_strict"), ratio("none").alias("vs_none"))
              .drop("strict", "none")
              .sort(list(GROUP) + ["metric", "flush", "gfp"]))


def pivot(out, metrics=KEY_METRICS):
    """Rows (trace, model, overrides, metric); a column per flush/gfp with the
    value, and one per flush/gfp with its ratio to strict."""
    df = long_frame(out, metrics).collect().with_columns(
        (pl.col("flush") + "/" + pl.col("gfp")).alias("mode"))
    index = list(GROUP) + ["metric"]
    values = df.pivot(on="mode", index=index, values="value", sort_columns=True)
    ratios = df.filter(pl.col("flush") != "strict").pivot(on="mode", index=index, values="vs_strict",
                                                          sort_columns=True)
    ratios = ratios.rename({c: f"{c} vs strict" for c in ratios.columns if c not in index})
    order = {m: i for i, m in enumerate(metrics)}
    return (values.join(ratios, on=index, how="left")
                  .with_columns(pl.col("metric").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
                  .sort(["trace", "model", "overrides", "_o"]).drop("_o"))
