"""The trace contract's two forms (core/checks.py): row_ok(), the one-branch
test the event loops run, passes exactly the rows check() passes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.core import checks
from harness.trace import schema as ts

NCPU, LAST = 4, 10
I64 = (-(1 << 63), (1 << 63) - 1)


def _around(*bounds):
    return sorted({b + k for b in bounds for k in (-1, 0, 1)} | set(I64))


# each column's values at and around the bounds of the rules on it
EDGES = {
    "ts": _around(0, LAST),
    "op": [0, 1, 2, 3, 255],
    "cpu": [0, NCPU - 1, NCPU, NCPU + 1, 65535],
    "handle": [0, checks.MAX_HANDLES - 1, checks.MAX_HANDLES, ts.NO_HANDLE - 1, ts.NO_HANDLE],
    "iova": _around(0, checks.MAX_ADDR),
    "paddr": _around(0, checks.MAX_ADDR),
    "size": _around(0, checks.MAX_ACCESS, checks.MAX_MAP),
    "offset": _around(0, checks.MAX_MAP),
    "flags": [0, ts.KNOWN_FLAGS, ts.KNOWN_FLAGS + 1, 1 << 10, ts.FLAG_SG_MORE,
              ts.FLAG_SG_MORE | ts.FLAG_IOMMU_API, ts.FLAG_IOMMU_API, 65535],
}
DTYPES = dict(ts=np.int64, op=np.uint8, cpu=np.uint16, handle=np.uint32, iova=np.int64,
              paddr=np.int64, size=np.int64, offset=np.int64, flags=np.uint16)


def _valid(op):
    """A row that keeps every rule."""
    return dict(ts=LAST + 5, op=op, cpu=1, handle=7, iova=0x10000, paddr=0x20000, size=4096, offset=64, flags=0)


def _agree(row):
    cols = [np.array([row[name]], DTYPES[name]) for name in DTYPES]  # the v1 column order
    bad = checks.check(*cols, 0, LAST, NCPU)
    assert checks.row_ok(*cols, 0, LAST, NCPU) == (bad == -1), (row, checks.CHECKS[bad] if bad >= 0 else "kept")
    return bad


@pytest.mark.parametrize("op", [ts.OP_MAP, ts.OP_UNMAP, ts.OP_ACCESS])
def test_row_ok_agrees_on_every_edge_of_a_valid_row(op):
    """One column at a time at each of its edges, the rest valid: each
    rule's bound is met exactly, from both sides."""
    assert _agree(_valid(op)) == -1
    broken = set()
    for name, values in EDGES.items():
        for v in values:
            bad = _agree(dict(_valid(op), **{name: v}))
            broken.add(bad)
    assert broken >= {0, 1, 2, 3, 5, 6, 7, 8, 9, 11, 12} | ({10} if op == ts.OP_ACCESS else {4, 13})


@settings(max_examples=2000, deadline=None)
@given(op=st.sampled_from([ts.OP_MAP, ts.OP_UNMAP, ts.OP_ACCESS]),
       changes=st.lists(st.tuples(st.sampled_from(sorted(EDGES)), st.data()), min_size=1, max_size=3))
def test_row_ok_agrees_on_rows_with_several_edges(op, changes):
    """One to three columns at edges or anywhere in their range, the rest valid."""
    row = _valid(op)
    for name, data in changes:
        info = np.iinfo(DTYPES[name])
        row[name] = data.draw(st.sampled_from(EDGES[name]) | st.integers(int(info.min), int(info.max)))
    _agree(row)
