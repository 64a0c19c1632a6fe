"""Domain core: the Linux IOMMU layer (dma-iommu, iova, page tables, gather, flush queues).

Compiled kernels are cached on disk. Numba keys a cache entry on the source
file of the entry function only, so a change in a callee elsewhere would
reuse stale machine code; the cache directory is therefore keyed on a hash of
every source the kernel is built from.
"""

import hashlib
import os
from pathlib import Path

import numba

_PKG = Path(__file__).resolve().parent.parent
_KERNEL_SOURCES = ("core/*.py", "vendors/*.py", "trace/schema.py", "metrics.py")


def _cache_dir():
    h = hashlib.sha256(numba.__version__.encode())
    for pattern in _KERNEL_SOURCES:
        for p in sorted(_PKG.glob(pattern)):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return str(base / "iommu-harness" / f"numba-{h.hexdigest()[:16]}")


if "NUMBA_CACHE_DIR" not in os.environ:
    numba.config.CACHE_DIR = _cache_dir()

from harness.core import compiled  # noqa: E402,F401 (before any kernel compiles)


def kernel_cached():
    """Whether the compiled event loop is already in the cache (else the first
    run compiles it, which takes several minutes)."""
    return any(Path(numba.config.CACHE_DIR).glob("*/kernel.run_batch-*.nbi"))
