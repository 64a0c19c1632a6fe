"""What the importers share: a line report, device ids, handle bookkeeping,
access synthesis and a batched row sink over TraceWriter."""

import heapq
import re
from collections import Counter

import numpy as np

from harness.errors import HarnessError
from harness.trace import schema as ts
from harness.trace.writer import TraceWriter

PAGE = 4096
LINE = 64
BATCH = 1 << 16
SHOW = 10  # line numbers listed per problem in the report

ACCESS_MODES = ("none", "page", "line")
_PCI = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")


# Largest value a row may carry per column: the trace contract (addresses below
# 2^62, sizes at most 2^57) or the column's width.
LIMITS = {"iova": 1 << 62, "paddr": 1 << 62, "size": (1 << 57) + 1, "offset": (1 << 57) + 1,
          "device": 1 << 32, "cpu": 1 << 16, "ts": 1 << 63, "pasid": 1 << 32, "observed": 256}


def out_of_range(rows):
    """The first 'column=value' outside the trace's limits in rows, or None."""
    for row in rows:
        for k, limit in LIMITS.items():
            v = row.get(k, 0)
            if not 0 <= v < limit:
                return f"{k}={v:#x} out of range (expected below {limit:#x})"
    return None


class ImportReport:
    """Counts of what became of each line; problems keep their line numbers.
    With strict, the first problem is an error."""

    def __init__(self, path, strict):
        self.path, self.strict = path, strict
        self.converted = Counter()
        self.ignored = Counter()
        self.problems = {}

    def problem(self, kind, lineno, detail=""):
        if self.strict:
            raise HarnessError(f"{self.path}: line {lineno}: {kind}{': ' + detail if detail else ''}")
        n, lines = self.problems.get(kind, (0, []))
        if len(lines) < SHOW:
            lines.append(lineno)
        self.problems[kind] = (n + 1, lines)

    def summary(self):
        """One line: each problem with its count and first line numbers."""
        return "; ".join(f"{n} x {kind} (lines {', '.join(map(str, lines))})"
                         for kind, (n, lines) in self.problems.items()) or "no problem lines"

    def as_dict(self):
        return {"converted": dict(self.converted), "ignored": dict(self.ignored),
                "problems": {k: {"count": n, "lines": lines} for k, (n, lines) in self.problems.items()}}


class Devices:
    """Requester ids from device names: PCI names give segment << 16 | bus << 8
    | devfn; other names (platform devices) get ids in segment 0xffff in
    order of appearance."""

    def __init__(self):
        self.ids = {}

    def __call__(self, name):
        rid = self.ids.get(name)
        if rid is None:
            m = _PCI.match(name)
            if m:
                seg, bus, dev, fn = m.groups()
                rid = int(seg or "0", 16) << 16 | int(bus, 16) << 8 | int(dev, 16) << 3 | int(fn)
            else:
                rid = 0xFFFF0000 | len([n for n in self.ids if not _PCI.match(n)])
            self.ids[name] = rid
        return rid


def read_lines(src, expected):
    """(lines, whether the last one is cut off) of a text file; an unreadable
    or empty file is an error naming what was expected."""
    try:
        with open(src, "rb") as f:
            data = f.read()
    except OSError as e:
        raise HarnessError(f"{src}: cannot read: {e.strerror}") from None
    if not data.strip():
        raise HarnessError(f"{src}: empty file, expected {expected}")
    text = data.decode("utf-8", errors="replace")
    return text.split("\n"), not text.endswith("\n")


class Handles:
    """Live mappings by key; handles are reused after unmap, lowest first."""

    def __init__(self):
        self.live = {}
        self.free = []  # a heap
        self.next = 0

    def open(self, key, value):
        if self.free:
            h = heapq.heappop(self.free)
        else:
            h = self.next
            self.next += 1
        self.live[key] = (h, value)
        return h

    def close(self, key):
        h, value = self.live.pop(key)
        heapq.heappush(self.free, h)
        return h, value


def access_rows(mode, repeat, dev, h, size, flags, pieces=None):
    """Synthesised device accesses of one mapping: (offset, bytes) per page
    or cache line it covers, repeated; pieces = [(offset, bytes), ...] of a
    scatterlist (default one piece of `size`)."""
    if mode == "none":
        return []
    step = PAGE if mode == "page" else LINE
    out = []
    for off, n in pieces or [(0, size)]:
        cuts = np.arange((off // step + 1) * step, off + n, step)
        starts = np.concatenate([[off], cuts])
        ends = np.concatenate([cuts, [off + n]])
        out.extend(zip(starts.tolist(), (ends - starts).tolist()))
    direction = flags & ts.FLAG_BIDIRECTIONAL or ts.FLAG_FROM_DEVICE
    return [dict(op=ts.OP_ACCESS, device=dev, handle=h, offset=o, size=n, flags=direction)
            for o, n in out] * repeat


class Sink:
    """Rows appended one by one, written as record batches."""

    def __init__(self, path, num_cpus, provenance, extra=()):
        self.w = TraceWriter(path, num_cpus, provenance, extra=extra)
        self.names = ts.COLUMN_NAMES + tuple(n for n, _ in extra)
        self.cols = {n: [] for n in self.names}

    def add(self, t, row):
        for n in self.names:
            self.cols[n].append(row.get(n, 0))
        self.cols["ts"][-1] = t
        if len(self.cols["ts"]) >= BATCH:
            self.flush()

    def flush(self):
        if self.cols["ts"]:
            self.w.write({n: np.array(v, np.int64) for n, v in self.cols.items()})
            self.cols = {n: [] for n in self.names}

    def close(self):
        self.flush()
        self.w.close()

    def abort(self):
        self.w.abort()
