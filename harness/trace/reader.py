"""Memory-mapped trace reader: validates the v1 schema and yields numpy views.

Batches are zero-copy views into the mapped file. Once the caller moves past
a batch its pages are dropped from this process (MADV_DONTNEED on a read-only
file mapping, in whole 2 MiB stretches), so resident memory stays bounded by
one batch and a few MiB, not the trace.

Every run maps its trace afresh: page by page, a 1.1 GiB trace took
0.05-0.12 s to map, against 0.23 s to simulate as an access-only stream. A
page cache that holds the file in 2 MiB folios is mapped a PMD at a time:
TraceWriter writes whole 2 MiB chunks, which fills the cache that way, and
MADV_HUGEPAGE on the mapping makes a trace read from disk come in as 2 MiB
readahead.
"""

import hashlib
import json
import mmap
import os

import pyarrow as pa

from harness.errors import TraceError
from harness.trace import schema as ts

HUGE = 2 << 20  # a PMD mapping (writer.CHUNK)


def _text(value):
    """A metadata value for an error message; a corrupt file's need not be UTF-8."""
    return value.decode(errors="backslashreplace")


class TraceReader:
    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            self._file = open(self.path, "rb")
        except OSError as e:
            raise TraceError(self.path, f"cannot open: {e.strerror}") from None
        size = os.fstat(self._file.fileno()).st_size
        if size == 0:
            raise TraceError(self.path, "empty file, expected an Arrow IPC trace file")
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._mm.madvise(mmap.MADV_HUGEPAGE)
        except (AttributeError, OSError):  # no THP: mapped page by page
            pass
        self._buf = pa.py_buffer(self._mm)
        try:
            self._ipc = pa.ipc.open_file(pa.BufferReader(self._buf))
        except (pa.ArrowException, OSError):
            raise TraceError(self.path, "not an Arrow IPC file, or truncated (expected a .arrow "
                             "trace, format v1)") from None
        self.schema = self._ipc.schema
        self._validate_schema()
        self.num_batches = self._ipc.num_record_batches
        self.num_rows = 0
        for i in range(self.num_batches):
            rb = self._batch(i)
            self.num_rows += rb.num_rows
            self._drop(*self._span(rb))  # reading its header mapped the 2 MiB around it

    def _batch(self, i):
        try:
            rb = self._ipc.get_batch(i)
            rb.validate()
        except (pa.ArrowException, OSError) as e:
            raise TraceError(self.path, f"record batch {i} is corrupt ({str(e).splitlines()[0]})") from None
        return rb

    def _validate_schema(self):
        meta = self.schema.metadata or {}
        fmt = meta.get(ts.META_FORMAT)
        if fmt != ts.FORMAT_NAME.encode():
            raise TraceError(self.path, f"schema metadata {ts.META_FORMAT.decode()} is "
                             f"{_text(fmt) if fmt else 'missing'}, expected {ts.FORMAT_NAME}")
        ver = _text(meta.get(ts.META_VERSION, b""))
        if ver != str(ts.FORMAT_VERSION):
            raise TraceError(self.path, f"trace format version {ver or 'missing'}, "
                             f"expected {ts.FORMAT_VERSION}")
        try:
            self.num_cpus = int(meta[ts.META_NUM_CPUS])
            assert 0 < self.num_cpus <= 1 << 16
        except (KeyError, ValueError, AssertionError):
            raise TraceError(self.path, f"schema metadata {ts.META_NUM_CPUS.decode()} "
                             "missing or not an integer within 1..65536 (cpu is uint16)") from None
        try:
            self.provenance = json.loads(meta.get(ts.META_PROVENANCE, b"{}"))
        except ValueError:
            raise TraceError(self.path, f"schema metadata {ts.META_PROVENANCE.decode()} "
                             "is not JSON") from None
        self.optional = []
        for name, typ in ts.OPTIONAL.items():
            idx = self.schema.get_field_index(name)
            if idx >= 0:
                if self.schema.field(idx).type != typ:
                    raise TraceError(self.path, f"column '{name}' has type "
                                     f"{self.schema.field(idx).type}, expected {typ}")
                self.optional.append(name)
        for name, typ, _ in ts.COLUMNS:
            idx = self.schema.get_field_index(name)
            if idx < 0:
                raise TraceError(self.path, f"missing column '{name}' ({typ})")
            if self.schema.field(idx).type != typ:
                raise TraceError(self.path, f"column '{name}' has type "
                                 f"{self.schema.field(idx).type}, expected {typ}")

    def batches(self, extra=()):
        """Yield (first_row, {column: numpy view}) batch by batch: the v1
        columns plus the optional columns named in extra that the file has."""
        names = [n for n, _, _ in ts.COLUMNS] + [n for n in extra if n in self.optional]
        dropped = 0
        row = 0
        for i in range(self.num_batches):
            rb = self._batch(i)
            cols = {}
            for name in names:
                arr = rb.column(name)
                if arr.null_count:
                    raise TraceError(self.path, f"column '{name}' has nulls in rows "
                                     f"{row}..{row + rb.num_rows - 1}, expected none")
                cols[name] = arr.to_numpy(zero_copy_only=True)
            yield row, cols
            row += rb.num_rows
            del cols
            end = self._span(rb)[1] & ~(HUGE - 1)  # whole 2 MiB stretches: a PMD mapping is not split
            if end > dropped:
                self._mm.madvise(mmap.MADV_DONTNEED, dropped, end - dropped)
                dropped = end

    def _span(self, rb):
        """File offsets [lo, hi) of a record batch's buffers."""
        bufs = [b for col in rb.columns for b in col.buffers() if b is not None]
        base = self._buf.address
        if not bufs:
            return 0, 0
        return min(b.address for b in bufs) - base, max(b.address + b.size for b in bufs) - base

    def _drop(self, lo, hi):
        """Unmap the 2 MiB stretches around [lo, hi) and the header before it."""
        lo = max(0, lo - mmap.PAGESIZE) & ~(HUGE - 1)
        hi = min(len(self._mm), (hi + HUGE - 1) & ~(HUGE - 1))
        if hi > lo:
            self._mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def sha256(self):
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        return h.hexdigest()

    def close(self):
        self._ipc = None
        self._buf = None
        try:
            self._mm.close()
        except BufferError:  # a caller still holds a batch view; the GC unmaps it
            pass
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
