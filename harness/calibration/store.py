"""calibration.parquet: one row per ratio of every case reproduced into a
results directory; a case's rows replace its earlier ones."""

import os
from pathlib import Path

import polars as pl

FILE = "calibration.parquet"


def write(out, case, ratios):
    path = Path(out) / FILE
    rows = ratios.with_columns(pl.lit(case.title).alias("title"), pl.lit(case.source).alias("source"))
    if path.exists():
        old = pl.read_parquet(path).filter(pl.col("case") != case.name)
        rows = pl.concat([old, rows], how="diagonal_relaxed")
    rows = rows.sort("case", maintain_order=True)
    tmp = path.with_name(f"{FILE}.{os.getpid()}.tmp")
    rows.write_parquet(tmp)
    tmp.replace(path)
    return path


def read(out):
    path = Path(out) / FILE
    return pl.read_parquet(path) if path.exists() else None
