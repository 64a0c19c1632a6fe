"""Streaming trace writer: record batches appended to an Arrow IPC file.

The file is written under a temporary name and renamed when closed, so an
interrupted writer never leaves a half-written trace behind.
"""

import os

import numpy as np
import pyarrow as pa

from harness.trace import schema as ts


class TraceWriter:
    def __init__(self, path, num_cpus, provenance):
        self.path = os.fspath(path)
        self.tmp = f"{self.path}.{os.getpid()}.tmp"
        self.schema = ts.schema(num_cpus, provenance)
        self.rows = 0
        self._sink = pa.OSFile(self.tmp, "wb")
        self._writer = pa.ipc.new_file(self._sink, self.schema)

    def write(self, columns):
        """Append one record batch; columns maps every column name to an array."""
        arrays = []
        n = None
        for name, typ, _ in ts.COLUMNS:
            col = np.ascontiguousarray(columns[name]).astype(typ.to_pandas_dtype(), copy=False)
            n = len(col) if n is None else n
            if len(col) != n:
                raise ValueError(f"column {name} has {len(col)} rows, expected {n}")
            arrays.append(pa.array(col, type=typ))
        if n:
            self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
            self.rows += n

    def close(self):
        self._writer.close()
        self._sink.close()
        os.replace(self.tmp, self.path)

    def abort(self):
        self._writer.close()
        self._sink.close()
        os.unlink(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
