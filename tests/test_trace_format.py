import numpy as np
import pyarrow as pa
import pytest

from harness.errors import TraceError
from harness.trace import schema as ts
from harness.trace.reader import TraceReader

from conftest import events_to_columns, mp, um, write_trace


def test_roundtrip_batches_are_zero_copy_views(tmp_path):
    evs = [mp(i, i) for i in range(10)] + [um(20 + i, i) for i in range(10)]
    p = write_trace(tmp_path / "a.arrow", evs, batch=7, provenance={"generator": "x", "seed": 3})
    with TraceReader(p) as r:
        assert r.num_rows == 20 and r.num_batches == 3 and r.num_cpus == 2
        assert r.provenance == {"generator": "x", "seed": 3}
        rows = []
        for _, cols in r.batches():
            assert set(cols) == set(ts.COLUMN_NAMES)
            assert not cols["ts"].flags.writeable  # a view into the mapped file
            assert cols["ts"].dtype == np.uint64 and cols["op"].dtype == np.uint8
            rows.extend(cols["handle"].tolist())
        assert rows == list(range(10)) * 2


def test_writer_leaves_nothing_on_error(tmp_path):
    from harness.trace.writer import TraceWriter
    with pytest.raises(RuntimeError):
        with TraceWriter(tmp_path / "b.arrow", 1, {}) as w:
            w.write(events_to_columns([mp(0, 0)]))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def _write_table(path, table):
    with pa.ipc.new_file(str(path), table.schema) as w:
        w.write_table(table)


def _table(drop=None, version="1", retype=None):
    cols = events_to_columns([mp(0, 0)])
    sch = ts.schema(1, {})
    meta = dict(sch.metadata)
    meta[ts.META_VERSION] = version.encode()
    fields, arrays = [], []
    for name, typ, _ in ts.COLUMNS:
        if name == drop:
            continue
        if name == retype:
            typ = pa.float64()
        fields.append(pa.field(name, typ))
        arrays.append(pa.array(cols[name]).cast(typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=meta))


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"hello, not arrow"), "not an Arrow IPC file"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: _write_table(p, _table(version="2")), "trace format version 2, expected 1"),
    (lambda p: _write_table(p, _table(drop="handle")), "missing column 'handle'"),
    (lambda p: _write_table(p, _table(retype="size")), "column 'size' has type double, expected uint64"),
])
def test_bad_files_are_named_errors(tmp_path, make, message):
    p = tmp_path / "bad.arrow"
    make(p)
    with pytest.raises(TraceError) as e:
        TraceReader(p)
    assert str(p) in str(e.value) and message in str(e.value)
