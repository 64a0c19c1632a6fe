"""The trace contract, checked per event inside the compiled loop."""

import numpy as np

from harness.core.compiled import njit
from harness.trace import schema as ts

MAX_HANDLES = 1 << 24
MAX_ACCESS = 1 << 30
MAX_MAP = 1 << 57
MAX_ADDR = 1 << 62

# (column, what was expected) per check; check() returns the index.
CHECKS = (
    ("op", "expected 0 (map), 1 (unmap) or 2 (access)"),
    ("size", "expected > 0"),
    ("cpu", "expected < num_cpus = {ncpu} (schema metadata)"),
    ("flags", "expected only bits 0-9"),
    ("handle", "expected a handle on a map/unmap"),
    ("handle", f"expected < {MAX_HANDLES}: handles name live mappings and are reused after unmap"),
    ("ts", "expected non-decreasing timestamps (previous row: {prev})"),
    ("ts", "expected < 2^63"),
    ("iova", "expected < 2^62 (the largest modelled address space)"),
    ("paddr", "expected < 2^62"),
    ("size", "expected at most 1 GiB per access (split larger transfers)"),
    ("size", "expected at most 2^57 bytes (the largest IOVA space)"),
    ("offset", "expected at most 2^57 bytes (the largest IOVA space)"),
    ("flags", "expected bit 9 (scatterlist continues) only on DMA-API maps"),
    ("flags", "expected bit 9 (scatterlist continues) to be followed in the same record batch "
              "by a map of the same handle, ts, cpu, device and flags"),
    ("iova", "expected 0 on a scatterlist segment after the first (the list has one DMA address)"),
    ("size", "expected a scatterlist of at most 2^57 bytes in all"),
)
SG_UNSUPPORTED, SG_BROKEN, SG_IOVA, SG_SIZE = 13, 14, 15, 16


@njit(cache=True, inline="always")
def check(ts_, op, cpu, handle, iova, paddr, size, offset, flags, i, last_ts, ncpu):
    """Index into CHECKS of the first rule row i breaks, or -1. The uint64
    columns arrive as int64 views: values of 2^63 and above are negative."""
    if op[i] > ts.OP_ACCESS:
        return 0
    if size[i] == 0:
        return 1
    if cpu[i] >= ncpu:
        return 2
    if flags[i] & ~ts.KNOWN_FLAGS:
        return 3
    if op[i] != ts.OP_ACCESS and handle[i] == ts.NO_HANDLE:
        return 4
    if handle[i] >= MAX_HANDLES and handle[i] != ts.NO_HANDLE:
        return 5
    if ts_[i] < 0:
        return 7
    if ts_[i] < last_ts:
        return 6
    # below 2^62, iova/paddr plus size and offset (each at most 2^57) stay in int64
    if iova[i] < 0 or iova[i] >= MAX_ADDR:
        return 8
    if paddr[i] < 0 or paddr[i] >= MAX_ADDR:
        return 9
    if op[i] == ts.OP_ACCESS and size[i] > MAX_ACCESS:
        return 10
    if size[i] < 0 or size[i] > MAX_MAP:
        return 11
    if offset[i] < 0 or offset[i] > MAX_MAP:
        return 12
    if flags[i] & ts.FLAG_SG_MORE and (op[i] != ts.OP_MAP or flags[i] & ts.FLAG_IOMMU_API):
        return SG_UNSUPPORTED
    return -1


@njit(cache=True, inline="always")
def row_ok(ts_, op, cpu, handle, iova, paddr, size, offset, flags, i, last_ts, ncpu):
    """Does row i keep every rule check() tests? The same rules in one
    branch where check() takes one per rule: an unsigned compare tests a
    signed column's sign and bound at once, and & does not short-circuit.
    Equal to check(...) == -1 for last_ts >= 0; a row it refuses goes to
    check() to be named."""
    u = np.uint64
    o, sz, f, h = op[i], size[i], flags[i], handle[i]
    access = o == ts.OP_ACCESS  # an access may name no handle; a map or unmap must
    return ((o <= ts.OP_ACCESS) & (u(sz - 1) < u(MAX_MAP)) & (access | (h != ts.NO_HANDLE))
            & (cpu[i] < ncpu) & (f & ~ts.KNOWN_FLAGS == 0) & ((h < MAX_HANDLES) | (h == ts.NO_HANDLE))
            & (ts_[i] >= last_ts) & (u(iova[i]) < u(MAX_ADDR)) & (u(paddr[i]) < u(MAX_ADDR))
            & ((o != ts.OP_ACCESS) | (sz <= MAX_ACCESS)) & (u(offset[i]) <= u(MAX_MAP))
            & ((f & ts.FLAG_SG_MORE == 0) | ((o == ts.OP_MAP) & (f & ts.FLAG_IOMMU_API == 0))))


@njit(cache=True)
def sg_end(ts_, op, cpu, device, handle, iova, size, flags, i):
    """(last row, -1) of the scatterlist starting at row i, or (bad row, check)."""
    same = flags[i] & ~ts.FLAG_SG_MORE
    total = size[i]
    j = i
    while flags[j] & ts.FLAG_SG_MORE:
        j += 1
        if (j == len(op) or op[j] != ts.OP_MAP or handle[j] != handle[i] or ts_[j] != ts_[i]
                or cpu[j] != cpu[i] or device[j] != device[i]
                or flags[j] & ~ts.FLAG_SG_MORE != same):
            return j - 1, SG_BROKEN
        if iova[j] != 0:
            return j, SG_IOVA
        total += size[j]
        if size[j] < 0 or size[j] > MAX_MAP or total > MAX_MAP:
            return j, SG_SIZE
    return j, -1
