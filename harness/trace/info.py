"""Summary of a trace, one streaming pass of vectorised numpy per batch:
ops, devices, time, mapped footprint, map lifetimes, page reuse and a
per-device breakdown."""

import numpy as np

from harness.core.checks import MAX_HANDLES, MAX_MAP
from harness.errors import TraceError
from harness.trace import schema as ts
from harness.trace.reader import TraceReader

PCTS = (50, 90, 99)
LIFETIME_BINS = 2 ** np.arange(0, 45)  # ns, log2 histogram up to ~5 hours
REUSE_BINS = 2 ** np.arange(0, 40)     # accesses between uses of a page


def _pcts(hist, bins):
    """Percentiles (upper bin edges) of a log2 histogram."""
    total = hist.sum()
    if not total:
        return {}
    c = np.cumsum(hist)
    return {f"p{p}": int(bins[min(int(np.searchsorted(c, total * p / 100)), len(bins) - 1)])
            for p in PCTS}


class _LastMap:
    """Per handle, a value recorded at its latest map (the map's ts or its
    instance number), carried across batches."""

    def __init__(self):
        self.carry = np.full(1 << 10, -1, np.int64)

    def __call__(self, h, is_map, val):
        """For each row: val of the latest map of its handle at or before it."""
        n = len(h)
        if not n:
            return np.zeros(0, np.int64)
        if h.max() >= len(self.carry):
            grown = np.full(1 << int(h.max()).bit_length(), -1, np.int64)
            grown[:len(self.carry)] = self.carry
            self.carry = grown
        order = np.lexsort((np.arange(n), h))
        hs, m, v = h[order], is_map[order], val[order]
        idx = np.arange(n)
        last = np.maximum.accumulate(np.where(m, idx, -1))
        gstart = np.maximum.accumulate(np.where(np.r_[True, hs[1:] != hs[:-1]], idx, 0))
        got = np.where(last >= gstart, v[np.maximum(last, 0)], self.carry[hs])
        self.carry[hs[m]] = v[m]  # in row order: the latest map wins
        out = np.empty(n, np.int64)
        out[order] = got
        return out


class _Reuse:
    """Accesses between two uses of the same page (reuse interval), exact,
    with the last use of every page seen kept as sorted arrays."""

    def __init__(self):
        self.keys = np.zeros(0, np.uint64)
        self.last = np.zeros(0, np.int64)
        self.hist = np.zeros(len(REUSE_BINS), np.int64)
        self.first_uses = 0

    def add(self, keys, pos):
        if not len(keys):
            return
        order = np.lexsort((pos, keys))
        k, p = keys[order], pos[order]
        same = np.r_[False, k[1:] == k[:-1]]
        prev = np.where(same, np.r_[0, p[:-1]], -1)
        i = np.minimum(np.searchsorted(self.keys, k), max(len(self.keys) - 1, 0))
        seen = (~same) & (self.keys[i] == k) if len(self.keys) else np.zeros(len(k), bool)
        prev[seen] = self.last[i[seen]]
        d = p - prev
        got = prev >= 0
        self.first_uses += int((~got).sum())
        self.hist += np.bincount(np.searchsorted(REUSE_BINS, d[got]), minlength=len(REUSE_BINS))[:len(REUSE_BINS)]
        end = np.r_[k[1:] != k[:-1], True]  # each key's last use in this batch
        allk = np.concatenate([self.keys, k[end]])
        allp = np.concatenate([self.last, p[end]])
        o = np.lexsort((allp, allk))
        allk, allp = allk[o], allp[o]
        keep = np.r_[allk[1:] != allk[:-1], True]
        self.keys, self.last = allk[keep], allp[keep]


def summarize(path):
    with TraceReader(path) as r:
        ops = np.zeros(3, np.int64)
        cpus = set()
        first = last = None
        live = peak = 0
        mapped = accessed = 0
        size_hist = np.zeros(64, np.int64)
        handles = 0
        sg_lists = 0
        life_hist = np.zeros(len(LIFETIME_BINS), np.int64)
        devs = {}
        map_ts, map_inst, reuse = _LastMap(), _LastMap(), _Reuse()
        maps_seen = accesses_seen = 0
        observed = np.zeros(3, np.int64)
        for row0, c in r.batches(extra=["observed"]):
            op = c["op"]
            if not len(op):
                continue
            _check(path, row0, c)
            ops += np.bincount(op, minlength=3)[:3]
            cpus.update(np.unique(c["cpu"]).tolist())
            t = c["ts"].astype(np.int64)
            first = int(t[0]) if first is None else first
            last = int(t[-1])
            size = c["size"].astype(np.int64)
            flags = c["flags"]
            is_map, is_unmap, is_acc = op == ts.OP_MAP, op == ts.OP_UNMAP, op == ts.OP_ACCESS
            delta = np.where(is_map, size, 0) - np.where(is_unmap, size, 0)
            run = live + np.cumsum(delta)
            peak = max(peak, int(run.max()))
            live = int(run[-1])
            mapped += int(size[is_map].sum())
            accessed += int(size[is_acc].sum())
            more = (flags & ts.FLAG_SG_MORE) != 0
            # one map event per list: its first row (the row before has no bit 9)
            head = is_map & ~np.r_[False, more[:-1]]
            sg_lists += int((head & more).sum())
            # bytes per map event: a list's rows summed onto its first row
            msize = np.zeros(len(op), np.int64)
            if is_map.any():
                rows = np.flatnonzero(is_map)
                starts = np.flatnonzero(head[rows])
                msize[rows[starts]] = np.add.reduceat(size[rows], starts)
                size_hist += np.bincount(np.log2(msize[head]).astype(np.int64), minlength=64)[:64]
                handles = max(handles, int(c["handle"][is_map].max()) + 1)
            # map lifetimes and page reuse, through the handle's latest map
            hd = c["handle"].astype(np.int64)
            has = (hd != ts.NO_HANDLE) & ~(is_map & ~head)
            inst = np.where(head, maps_seen + np.cumsum(head) - 1, -1)
            maps_seen += int(head.sum())
            lm_ts = map_ts(hd[has], head[has], t[has])
            lm_inst = map_inst(hd[has], head[has], inst[has])
            un = is_unmap[has]
            life = t[has][un] - lm_ts[un]
            life_hist += np.bincount(np.searchsorted(LIFETIME_BINS, life[lm_ts[un] >= 0]),
                                     minlength=len(LIFETIME_BINS))[:len(LIFETIME_BINS)]
            acc_h = is_acc[has]
            key_h = (np.uint64(1) << np.uint64(63)) | (lm_inst[acc_h].astype(np.uint64) << np.uint64(22)) \
                | (c["offset"][has][acc_h] >> np.uint64(12)).astype(np.uint64) & np.uint64((1 << 22) - 1)
            abs_acc = is_acc & (hd == ts.NO_HANDLE)
            key_a = (c["device"][abs_acc].astype(np.uint64) << np.uint64(40)) | \
                (c["iova"][abs_acc] >> np.uint64(12))
            pos = accesses_seen + np.cumsum(is_acc) - 1
            keys = np.concatenate([key_h, key_a])
            kpos = np.concatenate([pos[has][acc_h], pos[abs_acc]])
            reuse.add(keys, kpos)
            accesses_seen += int(is_acc.sum())
            if "observed" in c:
                observed += np.bincount(c["observed"][is_acc], minlength=3)[:3]
            # per device
            ud, inv = np.unique(c["device"], return_inverse=True)
            for j, d in enumerate(ud.tolist()):
                sel = inv == j
                e = devs.setdefault(d, np.zeros(5, np.int64))
                e += [int((head & sel).sum()), int((is_unmap & sel).sum()),
                      int((is_acc & sel).sum()), int(msize[head & sel].sum()),
                      int(size[is_acc & sel].sum())]
        span = (last - first) if first is not None else 0
        out = {
            "path": str(path),
            "rows": r.num_rows,
            "batches": r.num_batches,
            "num_cpus": r.num_cpus,
            "provenance": r.provenance,
            "ops": {ts.OP_NAMES[i]: int(ops[i]) for i in range(3)},
            "scatterlists": sg_lists,
            "devices": [_bdf(d) for d in sorted(devs)],
            "cpus_used": len(cpus),
            "time_span_ns": span,
            "event_rate_per_s": r.num_rows / (span / 1e9) if span else 0.0,
            "bytes_mapped": mapped,
            "bytes_accessed": accessed,
            "peak_mapped_bytes": peak,
            "live_mapped_bytes_at_end": live,
            "pages_accessed": int(len(reuse.keys)),
            "handles": handles,
            "map_sizes": {f"{1 << k}..{(2 << k) - 1}": int(n) for k, n in enumerate(size_hist) if n},
            "map_lifetime_ns": {"unmapped": int(life_hist.sum()), **_pcts(life_hist, LIFETIME_BINS)},
            "page_reuse_accesses": {"reuses": int(reuse.hist.sum()), "first_uses": reuse.first_uses,
                                    **_pcts(reuse.hist, REUSE_BINS)},
            "per_device": {_bdf(d): dict(zip(("maps", "unmaps", "accesses", "bytes_mapped",
                                              "bytes_accessed"), map(int, v)))
                           for d, v in sorted(devs.items())},
        }
        if "observed" in r.optional:
            out["observed"] = {"hits": int(observed[1]), "misses": int(observed[2])}
        return out


def _check(path, row0, c):
    """The rules a summary relies on (the simulator checks all of them)."""
    for bad, col, what in ((c["op"] > ts.OP_ACCESS, "op", "expected 0, 1 or 2"),
                           (c["size"] == 0, "size", "expected > 0"),
                           (c["size"] > MAX_MAP, "size", "expected at most 2^57"),
                           ((c["handle"] >= MAX_HANDLES) & (c["handle"] != ts.NO_HANDLE), "handle",
                            f"expected < {MAX_HANDLES}")):
        if bad.any():
            i = int(np.argmax(bad))
            raise TraceError(path, f"row {row0 + i}: column '{col}' is {c[col][i]}, {what}")


def _bdf(d):
    return f"{d >> 16:04x}:{(d >> 8) & 0xff:02x}:{(d >> 3) & 0x1f:02x}.{d & 7}"
