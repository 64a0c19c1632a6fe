"""Summary of a trace: one streaming pass of vectorised numpy per batch."""

import numpy as np

from harness.trace import schema as ts
from harness.trace.reader import TraceReader


def summarize(path):
    with TraceReader(path) as r:
        ops = np.zeros(3, np.int64)
        devices = set()
        cpus = set()
        first = last = None
        live = peak = 0
        mapped = accessed = 0
        size_hist = np.zeros(64, np.int64)
        handles = 0
        for _, c in r.batches():
            op = c["op"]
            if not len(op):
                continue
            ops += np.bincount(op, minlength=3)[:3]
            devices.update(np.unique(c["device"]).tolist())
            cpus.update(np.unique(c["cpu"]).tolist())
            t = c["ts"]
            first = int(t[0]) if first is None else first
            last = int(t[-1])
            size = c["size"].astype(np.int64)
            is_map, is_unmap = op == ts.OP_MAP, op == ts.OP_UNMAP
            delta = np.where(is_map, size, 0) - np.where(is_unmap, size, 0)
            run = live + np.cumsum(delta)
            peak = max(peak, int(run.max()))
            live = int(run[-1])
            mapped += int(size[is_map].sum())
            accessed += int(size[op == ts.OP_ACCESS].sum())
            if is_map.any():
                size_hist += np.bincount(np.log2(size[is_map]).astype(np.int64), minlength=64)[:64]
                handles = max(handles, int(c["handle"][is_map].max()) + 1)
        span = (last - first) if first is not None else 0
        return {
            "path": str(path),
            "rows": r.num_rows,
            "batches": r.num_batches,
            "num_cpus": r.num_cpus,
            "provenance": r.provenance,
            "ops": {ts.OP_NAMES[i]: int(ops[i]) for i in range(3)},
            "devices": [f"{d >> 16:04x}:{(d >> 8) & 0xff:02x}:{(d >> 3) & 0x1f:02x}.{d & 7}"
                        for d in sorted(devices)],
            "cpus_used": len(cpus),
            "time_span_ns": span,
            "event_rate_per_s": r.num_rows / (span / 1e9) if span else 0.0,
            "bytes_mapped": mapped,
            "bytes_accessed": accessed,
            "peak_mapped_bytes": peak,
            "live_mapped_bytes_at_end": live,
            "handles": handles,
            "map_sizes": {f"{1 << k}..{(2 << k) - 1}": int(n)
                          for k, n in enumerate(size_hist) if n},
        }
