import numpy as np
import pytest

from harness.trace import schema as ts
from harness.trace.writer import TraceWriter


def events_to_columns(events):
    """events: list of dicts with any subset of columns (defaults 0)."""
    cols = {name: np.zeros(len(events), np.int64) for name in ts.COLUMN_NAMES}
    for i, ev in enumerate(events):
        for k, v in ev.items():
            cols[k][i] = v
    return cols


def write_trace(path, events, num_cpus=2, batch=None, provenance=None):
    cols = events_to_columns(events)
    n = len(events)
    batch = batch or max(n, 1)
    with TraceWriter(path, num_cpus, provenance or {"generator": "test"}) as w:
        for s in range(0, n, batch):
            w.write({k: v[s:s + batch] for k, v in cols.items()})
    return path


@pytest.fixture
def trace_file(tmp_path):
    counter = iter(range(10**6))

    def make(events, **kw):
        return write_trace(tmp_path / f"t{next(counter)}.arrow", events, **kw)
    return make


def mp(t, h, size=4096, paddr=0x100000, cpu=0, flags=ts.FLAG_FROM_DEVICE, dev=1, iova=0):
    return dict(ts=t, op=ts.OP_MAP, handle=h, size=size, paddr=paddr, cpu=cpu, flags=flags,
                device=dev, iova=iova)


def um(t, h, size=4096, cpu=0, dev=1, flags=ts.FLAG_FROM_DEVICE):
    return dict(ts=t, op=ts.OP_UNMAP, handle=h, size=size, cpu=cpu, device=dev, flags=flags)


def ac(t, h, size=64, offset=0, dev=1, iova=0):
    return dict(ts=t, op=ts.OP_ACCESS, handle=h, size=size, offset=offset, device=dev, iova=iova,
                flags=ts.FLAG_FROM_DEVICE)
