"""One compiled pass over a batch before simulation: validate every column
against the trace contract and number devices into domains."""

import numpy as np
from numba import njit

from harness.trace import schema as ts

OK = 0
NEW_DEVICE = 1
BAD = 2  # followed by the check that failed: CHECKS[code - BAD]

# (column, what was expected) per check, in the order the pass applies them.
CHECKS = (
    ("op", "expected 0 (map), 1 (unmap) or 2 (access)"),
    ("size", "expected > 0"),
    ("cpu", "expected < num_cpus = {ncpu} (schema metadata)"),
    ("flags", "expected only bits 0-3"),
    ("handle", "expected a handle on a map/unmap"),
    ("handle", "expected < {max_handles}: handles name live mappings and are reused after unmap"),
    ("ts", "expected non-decreasing timestamps (previous row: {prev})"),
    ("ts", "expected < 2^63"),
    ("iova", "expected < 2^63"),
    ("paddr", "expected < 2^63"),
    ("size", "expected < 2^63"),
    ("offset", "expected < 2^63"),
    ("size", "expected at most 1 GiB per access (split larger transfers)"),
    ("size", "expected at most 2^57 bytes (the largest IOVA space)"),
    ("offset", "expected at most 2^57 bytes (the largest IOVA space)"),
)
MAX_ACCESS = 1 << 30
MAX_MAP = 1 << 57


@njit(cache=True)
def prepare(ts_, op, cpu, device, handle, iova, paddr, size, offset, flags, start, last_ts,
            ncpu, max_handles, dev_keys, dev_dom, dom):
    """Returns (status, row, last_ts, max handle). dev_keys is sorted."""
    top = np.uint64(1) << np.uint64(63)
    hmax = -1
    last_dev = np.uint32(0xFFFFFFFF)
    last_dom = -1
    for i in range(start, len(op)):
        bad = -1
        if op[i] > ts.OP_ACCESS:
            bad = 0
        elif size[i] == 0:
            bad = 1
        elif cpu[i] >= ncpu:
            bad = 2
        elif flags[i] & ~ts.KNOWN_FLAGS:
            bad = 3
        elif op[i] != ts.OP_ACCESS and handle[i] == ts.NO_HANDLE:
            bad = 4
        elif handle[i] >= max_handles and handle[i] != ts.NO_HANDLE:
            bad = 5
        elif ts_[i] < last_ts:
            bad = 6
        elif ts_[i] >= top:
            bad = 7
        elif iova[i] >= top:
            bad = 8
        elif paddr[i] >= top:
            bad = 9
        elif size[i] >= top:
            bad = 10
        elif offset[i] >= top:
            bad = 11
        elif op[i] == ts.OP_ACCESS and size[i] > MAX_ACCESS:
            bad = 12
        elif size[i] > MAX_MAP:
            bad = 13
        elif offset[i] > MAX_MAP:
            bad = 14
        if bad >= 0:
            return BAD + bad, i, last_ts, hmax
        last_ts = ts_[i]
        if handle[i] != ts.NO_HANDLE and np.int64(handle[i]) > hmax:
            hmax = np.int64(handle[i])
        if device[i] != last_dev:
            k = np.searchsorted(dev_keys, device[i])
            if k == len(dev_keys) or dev_keys[k] != device[i]:
                return NEW_DEVICE, i, last_ts, hmax
            last_dev = device[i]
            last_dom = dev_dom[k]
        dom[i] = last_dom
    return OK, len(op), last_ts, hmax
