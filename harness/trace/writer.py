"""Streaming trace writer: record batches appended to an Arrow IPC file.

The file is written under a temporary name and renamed when closed, so an
interrupted writer never leaves a half-written trace behind. A scatterlist's
rows never straddle two record batches: rows of a list left open at the end
of a write are held back and start the next batch. Batches are written by a
background thread (Arrow's encoding and the file writes release the GIL), so
generating the next batch overlaps writing this one.
"""

import io
import os
import queue
import threading

import numpy as np
import pyarrow as pa

from harness.trace import schema as ts


CHUNK = 2 << 20


class _ChunkedFile(io.RawIOBase):
    """A write-only file written in whole CHUNK-sized writes at CHUNK-aligned
    offsets (the last one shorter). A page cache with large folios (xfs;
    ext4 since Linux 6.16) then holds the trace in 2 MiB folios, which a
    reader's mapping maps a PMD at a time: mapping a 1.1 GiB trace took
    0.005 s instead of 0.05-0.12 s page by page (TraceReader)."""

    def __init__(self, path):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self._buf = bytearray(CHUNK)
        self._n = 0

    def writable(self):
        return True

    def _out(self, data):
        view = memoryview(data)
        while len(view):  # a write may take less (and at most 2 GiB - 4 KiB)
            view = view[os.write(self._fd, view[:1 << 30]):]

    def write(self, data):
        data = memoryview(data).cast("B")
        size = len(data)
        if self._n:
            k = min(CHUNK - self._n, len(data))
            self._buf[self._n:self._n + k] = data[:k]
            self._n += k
            data = data[k:]
            if self._n < CHUNK:
                return size
            self._out(self._buf)
            self._n = 0
        whole = len(data) - len(data) % CHUNK
        if whole:
            self._out(data[:whole])
        self._buf[:len(data) - whole] = data[whole:]
        self._n = len(data) - whole
        return size

    def close(self):
        if self.closed:
            return
        try:
            self._out(memoryview(self._buf)[:self._n])
        finally:  # closed even when the tail fails: nothing writes to the fd again
            os.close(self._fd)
            super().close()


class TraceWriter:
    def __init__(self, path, num_cpus, provenance, extra=()):
        self.path = os.fspath(path)
        self.tmp = f"{self.path}.{os.getpid()}.tmp"
        self.schema = ts.schema(num_cpus, provenance, extra)
        self.columns = [(f.name, f.type) for f in self.schema]
        self.rows = 0
        self._held = None
        self._sink = pa.PythonFile(_ChunkedFile(self.tmp), mode="w")
        self._writer = pa.ipc.new_file(self._sink, self.schema)
        self._queue = queue.Queue(maxsize=2)
        self._error = None
        self._done = False
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self):
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._writer.write_batch(batch)
                except BaseException as e:  # re-raised in the producer
                    self._error = e

    def _finish(self):
        if self._done:
            return
        self._done = True
        self._queue.put(None)
        self._thread.join()
        try:
            self._writer.close()
        finally:
            self._sink.close()

    def write(self, columns):
        """Append one record batch; columns maps every column name to an array.
        The batch is written in the background: do not change the arrays after."""
        cols = {}
        n = None
        for name, typ in self.columns:
            col = np.ascontiguousarray(columns[name]).astype(typ.to_pandas_dtype(), copy=False)
            if self._held is not None:
                col = np.concatenate([self._held[name], col])
            n = len(col) if n is None else n
            if len(col) != n:
                raise ValueError(f"column {name} has {len(col)} rows, expected {n}")
            cols[name] = col
        more = (cols["flags"] & ts.FLAG_SG_MORE) != 0
        cut = n
        while cut and more[cut - 1]:
            cut -= 1
        self._held = {k: v[cut:] for k, v in cols.items()} if cut < n else None
        if cut:
            if self._error is not None:
                raise self._error
            arrays = [pa.array(cols[name][:cut], type=typ) for name, typ in self.columns]
            self._queue.put(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
            self.rows += cut

    def close(self):
        if self._held is not None:
            self.abort()
            raise ValueError(f"{self.path}: the trace ends inside a scatterlist (flags bit 9 "
                             "on its last row)")
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        if self._error is not None:
            self.abort()
            raise self._error
        os.replace(self.tmp, self.path)

    def abort(self):
        self._finish()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
