import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 300), max_size=12), most=st.sampled_from([7, 1 << 20]))
def test_writer_writes_whole_aligned_chunks(tmp_path, sizes, most):
    """The trace file gets the bytes in order, in writes of CHUNK at CHUNK
    offsets but the last (its page cache then holds 2 MiB folios), also when
    os.write takes only `most` bytes at a time."""
    import os
    from harness.trace import writer
    writes, real = [], os.write

    def write(fd, b):
        writes.append(len(b))
        return real(fd, b[:most])

    data = np.random.default_rng(len(sizes)).integers(0, 256, sum(sizes), np.uint8).tobytes()
    path = tmp_path / f"c{len(os.listdir(tmp_path))}"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(writer, "CHUNK", 64)
        m.setattr(os, "write", write)
        f = writer._ChunkedFile(path)
        at = 0
        for n in sizes:
            assert f.write(memoryview(data)[at:at + n]) == n
            at += n
        f.close()
    assert path.read_bytes() == data
    if most > 64:  # one write per chunk run, each whole but the last
        assert all(n % 64 == 0 for n in writes[:-1]) and sum(writes) == len(data)
        assert not writes or writes[-1] % 64 == 0 or writes[-1] < 64


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


def _mapped_kib(path):
    """Resident KiB of this process's mappings of path (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = fields[-1] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_reader_keeps_one_batch_mapped(tmp_path):
    """Pages of finished batches are dropped: a 23 MB trace is read with a
    few MiB of it mapped at any time, opening included."""
    evs = [mp(i, i % 1000) if i % 2 == 0 else um(i, (i - 1) % 1000) for i in range(400_000)]
    p = write_trace(tmp_path / "long.arrow", evs, batch=20_000)
    with TraceReader(p) as r:
        peak = _mapped_kib(p)
        for _, cols in r.batches():
            for col in cols.values():  # touch every page of the batch
                col.sum()
            peak = max(peak, _mapped_kib(p))
    assert p.stat().st_size > 20 << 20 and peak < 8 << 10
