"""The trace contract's two forms (core/checks.py): row_ok(), the one-branch
test the event loops run, passes exactly the rows check() passes."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.core import checks
from harness.trace import schema as ts

NCPU = 4


def _near(*bounds):
    """Values at and around each bound, and anywhere in int64."""
    edges = [b + k for b in bounds for k in (-1, 0, 1)]
    return st.one_of(st.sampled_from(edges), st.integers(-(1 << 63), (1 << 63) - 1))


ROWS = st.fixed_dictionaries({
    "ts": _near(0, 10, 1 << 40),
    "op": st.integers(0, 255),
    "cpu": st.integers(0, NCPU + 1) | st.integers(0, 65535),
    "handle": st.sampled_from([0, checks.MAX_HANDLES - 1, checks.MAX_HANDLES, ts.NO_HANDLE, ts.NO_HANDLE - 1])
    | st.integers(0, (1 << 32) - 1),
    "iova": _near(0, checks.MAX_ADDR),
    "paddr": _near(0, checks.MAX_ADDR),
    "size": _near(0, checks.MAX_ACCESS, checks.MAX_MAP),
    "offset": _near(0, checks.MAX_MAP),
    "flags": st.integers(0, 65535) | st.sets(st.sampled_from([1 << b for b in range(11)])).map(sum),
})


@settings(max_examples=3000, deadline=None)
@given(row=ROWS, op=st.sampled_from([None, ts.OP_MAP, ts.OP_UNMAP, ts.OP_ACCESS]), last=_near(0, 10))
def test_row_ok_passes_exactly_the_rows_check_passes(row, op, last):
    row = dict(row, op=row["op"] if op is None else op)
    last = max(last, 0)  # the loops' last timestamp: an accepted row's
    cols = [np.array([row["ts"]], np.int64), np.array([row["op"]], np.uint8),
            np.array([row["cpu"]], np.uint16), np.array([row["handle"]], np.uint32),
            np.array([row["iova"]], np.int64), np.array([row["paddr"]], np.int64),
            np.array([row["size"]], np.int64), np.array([row["offset"]], np.int64),
            np.array([row["flags"]], np.uint16)]
    bad = checks.check(*cols, 0, last, NCPU)
    assert checks.row_ok(*cols, 0, last, NCPU) == (bad == -1), checks.CHECKS[bad] if bad >= 0 else "passed"
