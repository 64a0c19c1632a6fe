"""The results store of a sweep: a hive-partitioned parquet dataset
(model=/flush=/gfp=/<key>.parquet, one row per run) and a manifest.

Every run's row is written by harness.results.write_row (a temporary name,
then a rename), so a file that exists is complete: a restarted sweep skips the runs whose key has a
file. A run's key hashes its trace's sha256, the resolved model parameters
with its overrides, the flush mode, the gfp policy and the harness version.
"""

import hashlib
import json
import os
from pathlib import Path

import polars as pl

from harness import __version__

MANIFEST = "manifest.json"


def run_key(trace_sha256, model, params, flush, gfp):
    blob = json.dumps({"trace_sha256": trace_sha256, "model": model, "params": params,
                       "flush": flush, "gfp": gfp, "harness_version": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def partition(out, model, flush, gfp):
    return Path(out) / f"model={model}" / f"flush={flush}" / f"gfp={gfp}"


def finished(out):
    """Keys of the runs whose row is on disk."""
    return {p.stem for p in Path(out).glob("model=*/flush=*/gfp=*/*.parquet")}


def write_manifest(out, manifest):
    path = Path(out) / MANIFEST
    tmp = path.with_name(f"{MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def scan(out):
    """Lazy frame over the run rows of a results directory: the runs its
    manifest lists when it has one (rows of earlier sweeps into the same
    directory are left out), else every row file."""
    from harness.errors import HarnessError
    out = Path(out)
    manifest = out / MANIFEST
    if manifest.exists():
        try:
            runs = json.loads(manifest.read_text())["runs"]
            files = sorted({str(out / r["path"]) for r in runs})
        except (ValueError, KeyError, TypeError):
            raise HarnessError(f"{manifest}: not a sweep manifest (JSON with a runs list)") from None
        files = [f for f in files if os.path.exists(f)]
    else:
        files = sorted(str(f) for f in out.glob("model=*/flush=*/gfp=*/*.parquet"))
    if not files:
        raise HarnessError(f"{out}: no results (expected model=*/flush=*/gfp=*/*.parquet)")
    return pl.scan_parquet(files, hive_partitioning=False)


class Lock:
    """One sweep at a time writes a results directory (flock on DIR/.lock)."""

    def __init__(self, out):
        self.path = Path(out) / ".lock"

    def __enter__(self):
        import fcntl
        from harness.errors import HarnessError
        self.f = open(self.path, "w")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.close()
            raise HarnessError(f"{self.path.parent}: another sweep is writing here") from None
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False
