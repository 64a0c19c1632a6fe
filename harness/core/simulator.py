"""Run a trace through the domain core and a hardware model.

Python work here is per batch (validation, device -> domain numbering, pool
growth); every per-event step runs in the compiled kernel.
"""

from collections import namedtuple

import numpy as np

from harness import metrics
from harness.core import checks, kernel, state, translate
from harness.core import layout as L
from harness.errors import HarnessError, TraceError

MAX_DOMAINS = 1 << 16

_ERRORS = {
    L.ST_UNMAP_UNKNOWN: "unmap of handle {h}, which has no live mapping",
    L.ST_MAP_LIVE: "map of handle {h}, which is still mapped (handles are reusable only after unmap)",
    L.ST_UNMAP_SIZE: "unmap of handle {h} with size {size}, expected the mapped size",
    L.ST_ACCESS_UNKNOWN: "access through handle {h}, which was never mapped",
}


Params = namedtuple("Params", "P resv flush why")


def kernel_version(spec):
    text = spec.params["kernel"]
    try:
        major, minor = (int(x) for x in text.split(".")[:2])
    except ValueError:
        raise HarnessError(f"model parameter kernel = {text!r}: expected a version like \"6.12\"") from None
    return major, minor


def _regions(p, key, direct, shift):
    out = []
    for r in p[key]:
        if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r)
                and 0 < r[0] <= r[1]):
            raise HarnessError(f"model parameter {key}: {r!r} is not [start, end] with 0 < start <= end")
        out.append((r[0] >> shift, r[1] >> shift, direct))
    return out


def build_params(spec, flush, gfp, num_cpus):
    """Parameter vector, reserved regions and effective flush mode of a run."""
    if flush not in L.FLUSH_MODES:
        raise HarnessError(f"--flush {flush}: expected one of {', '.join(L.FLUSH_MODES)}")
    if gfp not in L.GFP_POLICIES:
        raise HarnessError(f"--gfp {gfp}: expected one of {', '.join(L.GFP_POLICIES)}")
    p = spec.params
    kernel = kernel_version(spec)
    P = np.zeros(L.NUM_PARAMS, np.int64)
    aperture_end = spec.vendor.hardware_params(p, P, kernel)
    effective, why = spec.vendor.effective_flush(p, flush, kernel)
    fq_size, mag_size = p["fq.size"], p["iova.mag_size"]
    if fq_size < 2:
        raise HarnessError(f"model parameter fq.size = {fq_size}: expected >= 2")
    if mag_size < 1:
        raise HarnessError(f"model parameter iova.mag_size = {mag_size}: expected >= 1")
    single = effective == "lazy-single"
    P[L.P_FQ_SIZE] = p["fq.single_size"] if single else fq_size
    P[L.P_FQ_TIMEOUT] = round(p["fq.single_timeout_ms" if single else "fq.timeout_ms"] * 1e6)
    if P[L.P_FQ_SIZE] < 2:
        raise HarnessError(f"model parameter fq.single_size = {P[L.P_FQ_SIZE]}: expected >= 2")
    P[L.P_MAG_SIZE] = mag_size if kernel >= (4, 7) else 0  # no rcache before v4.7
    P[L.P_DEPOT_DELAY] = round(p["iova.depot_delay_ms"] * 1e6)
    P[L.P_PCI32] = int(p["iova.pci_32bit_first"])
    bits = p["iova.dma_mask_bits"]
    if not 32 <= bits <= 64:
        raise HarnessError(f"model parameter iova.dma_mask_bits = {bits}: expected 32..64")
    gs = int(P[L.P_GRANULE_SHIFT])
    P[L.P_DMA_LIMIT_PFN] = min((1 << bits) - 1, aperture_end) >> gs
    P[L.P_DMA32_PFN] = 1 << (32 - gs)
    P[L.P_APERTURE_PFN] = aperture_end >> 12
    P[L.P_FLUSH] = L.FLUSH_MODES[effective]
    P[L.P_GFP] = L.GFP_POLICIES[gfp]
    P[L.P_GFP_IGNORED] = int(spec.vendor.gfp_ignored(kernel))
    P[L.P_MEMCG_LIMIT] = p["memcg.limit_bytes"]
    P[L.P_MEM_FREE] = p["mem.free_bytes"]
    P[L.P_MEM_ATOMIC_FLOOR] = p["mem.min_watermark_bytes"] * 3 // 8
    P[L.P_MEM_JITTER] = p["mem.jitter_bytes"]
    if min(P[L.P_MEM_FREE], P[L.P_MEM_ATOMIC_FLOOR], P[L.P_MEM_JITTER]) < 0:
        raise HarnessError("model parameters mem.*: expected >= 0")
    P[L.P_HW_DOMAINS] = p["iommufd.hw_domains"]
    if not 1 <= P[L.P_HW_DOMAINS] <= 64:
        raise HarnessError(f"model parameter iommufd.hw_domains = {P[L.P_HW_DOMAINS]}: expected 1..64")
    P[L.P_NCPU] = num_cpus
    resv = sorted(_regions(p, "iova.reserved", 0, gs) + _regions(p, "iova.direct", 1, gs))
    for a, b in zip(resv, resv[1:]):
        if b[0] <= a[1]:
            raise HarnessError(f"model parameters iova.reserved/iova.direct: regions at pfn "
                               f"{a[0]:#x} and {b[0]:#x} overlap")
    P[L.P_INIT_TABLES] = 2 * P[L.P_LEVELS] + sum(
        4 * P[L.P_LEVELS] + (hi - lo + 1) // P[L.P_LVL_ENTRIES + 1] for lo, hi, direct in resv if direct)
    return Params(P, resv, effective, why)


class Diverged(Exception):
    """A one-pass size sweep met a lookup its sizes disagree on (translate.py)."""


def size_grid(specs, flush, gfp, num_cpus):
    """IOTLB ways per spec when the specs differ only in IOTLB size at one set
    count and the model's caches allow one pass (translate.py: an LRU IOTLB,
    no micro-TLB in front of it, walk caches that draw no random numbers);
    else a HarnessError saying why not."""
    Ps = [build_params(spec, flush, gfp, num_cpus).P for spec in specs]
    P = Ps[0]
    why = None
    if P[L.P_IOTLB_POLICY] != L.POLICY_LRU:
        why = "the IOTLB is not LRU"
    elif P[L.P_UTLB_ENTRIES]:
        why = "a micro-TLB sits in front of the IOTLB"
    elif P[L.P_PSC_POLICY] == L.POLICY_RANDOM:
        why = "the walk caches replace at random"
    else:
        rest = np.ones(L.NUM_PARAMS, bool)
        rest[L.P_IOTLB_WAYS] = False
        sets = sorted({int(Q[L.P_IOTLB_SETS]) for Q in Ps})
        if len(sets) > 1:
            why = (f"the sizes have {', '.join(map(str, sets))} sets; one pass needs one set count "
                   "(iotlb.ways = 0 makes the IOTLB fully associative)")
        elif any((Q[rest] != P[rest]).any() for Q in Ps) or len({spec.vendor for spec in specs}) > 1:
            why = "the runs differ in more than IOTLB size"
    if why:
        raise HarnessError(f"no one-pass size sweep: {why}")
    return [int(Q[L.P_IOTLB_WAYS]) for Q in Ps]


class Simulator:
    def __init__(self, spec, flush, gfp, num_cpus, grid=()):
        """grid: IOTLB ways per size of a one-pass size sweep (size_grid()),
        ascending."""
        self.spec = spec
        self.flush = flush
        self.gfp = gfp
        self.num_cpus = num_cpus
        params = build_params(spec, flush, gfp, num_cpus)
        self.effective_flush, self.flush_reason = params.flush, params.why
        self.S = state.new(params.P, num_cpus, params.resv, grid)
        self.S.G[L.G_RNG] = spec.params["mem.seed"]
        self.S.G[L.G_CACHE_RNG] = spec.params["cache.seed"]
        self._dev_keys = np.zeros(0, np.uint32)
        self._dev_dom = np.zeros(0, np.int64)

    def run(self, reader, progress=None):
        """Stream every batch of reader through the kernel; returns metrics."""
        if reader.num_cpus != self.num_cpus:
            raise HarnessError(f"{reader.path}: num_cpus {reader.num_cpus} does not match the "
                               f"simulator's {self.num_cpus}")
        for row0, cols in reader.batches():
            self._batch(reader.path, row0, cols)
            if progress:
                progress(row0 + len(cols["op"]))
        return self.result()

    def _add_device(self, path, row, device):
        """Devices get domains in order of first appearance: each its own, plus
        iommufd.hw_domains - 1 mirrors of its IOAS right after it."""
        n = self.S.P[L.P_HW_DOMAINS]
        ndom = (len(self._dev_keys) + 1) * n
        if ndom > MAX_DOMAINS:
            raise TraceError(path, f"row {row}: column 'device' is {device}: expected at most "
                                   f"{MAX_DOMAINS // n} devices (the simulator's limit of {MAX_DOMAINS} domains)")
        if ndom * state.domain_bytes(self.S) > state.DOMAIN_STATE_LIMIT:
            raise TraceError(path, f"row {row}: column 'device' is {device}: the state of {ndom} domains "
                                   f"with num_cpus = {self.num_cpus} would pass the simulator's limit of "
                                   f"{state.DOMAIN_STATE_LIMIT >> 30} GiB")
        keys = np.append(self._dev_keys, np.uint32(device))
        doms = np.append(self._dev_dom, len(self._dev_keys) * n)
        order = np.argsort(keys, kind="stable")
        self._dev_keys, self._dev_dom = keys[order], doms[order]
        self.S = state.ensure_domains(self.S, ndom)
        self.S.P[L.P_MAG_MARGIN] = state.mag_margin(self.S.P, ndom, self.num_cpus)

    def _batch(self, path, row0, c):
        i64 = lambda name: c[name].view(np.int64)  # noqa: E731 (2^63 and up: negative, rejected)
        cols = (i64("ts"), c["op"], c["cpu"], c["device"], c["handle"], i64("iova"),
                i64("paddr"), i64("size"), i64("offset"), c["flags"])
        i = 0
        while True:
            st, i = kernel.run_batch(self.S, *cols, i, self._dev_keys, self._dev_dom)
            if st == L.ST_DONE:
                return
            if st == L.ST_GROW:
                try:
                    self.S = state.grow_pools(self.S)
                except state.PoolLimit as e:
                    raise TraceError(path, f"row {row0 + i}: column 'size' is {c['size'][i]}: the page tables "
                                     f"live with this event (a map counts the most it can need) would pass the "
                                     f"simulator's limit of {e.args[0]:,} tables") from None
            elif st == L.ST_NEW_DEVICE:
                self._add_device(path, row0 + i, int(c["device"][i]))
            elif st == L.ST_GROW_HANDLES:
                self.S = state.ensure_handles(self.S, int(c["handle"][i]) + 1)
            elif st == L.ST_DIVERGED:
                raise Diverged(f"{path}: row {row0 + i}")
            elif st >= L.ST_BAD:
                col, what = checks.CHECKS[st - L.ST_BAD]
                raise TraceError(path, f"row {row0 + i}: column '{col}' is {c[col][i]}, " + what.format(
                    ncpu=self.num_cpus, prev=int(self.S.G[L.G_LAST_TS])))
            else:
                raise TraceError(path, f"row {row0 + i}: " + _ERRORS[st].format(
                    h=int(c["handle"][i]), size=int(c["size"][i])))

    def gauges(self):
        S = self.S
        pool_used = (S.pt.shape[0] - 1) - S.G[L.G_PT_FREE]
        return {
            "pt_pages_live": int(pool_used + S.G[L.G_PT_PENDING]),
            "pt_pages_pending": int(S.G[L.G_PT_PENDING]),
            "pt_bytes_live": int(S.G[L.G_PT_BYTES]),
            "memcg_charged_bytes": int(S.G[L.G_CHARGED]),
            "fq_pending_pages": int(S.D[:, L.D_PEND_PAGES].sum()),
        }

    def result(self):
        """Counters, gauges and derived metrics (a list of them, one per size,
        in a one-pass size sweep). Pages still awaiting invalidation count
        their stale time up to the last event."""
        S = self.S
        if len(S.grid):
            return [self._result(S.C + ck) for ck in translate.size_counters(S)]
        return self._result(S.C)

    def _result(self, C):
        S = self.S
        values = {m.name: int(v) for m, v in zip(metrics.COUNTERS, C)}
        pend = S.D[:, L.D_PEND_PAGES]
        values["stale_page_ns"] += int((S.G[L.G_LAST_TS] * pend - S.D[:, L.D_PEND_PAGETS]).sum())
        values.update(self.gauges())
        return metrics.derive(values, self.spec.vendor.cost_params(self.spec.params))


def run_sizes(specs, flush, gfp, reader):
    """Results of specs that differ only in IOTLB size (size_grid()), from one
    pass over the trace, or one per state.GRID_MAX sizes in ascending order;
    from one run per spec for a pass whose sizes diverge. Returns (results,
    one_pass: no pass diverged)."""
    grid = size_grid(specs, flush, gfp, reader.num_cpus)
    order = sorted(range(len(grid)), key=grid.__getitem__)  # the kernel wants ways ascending
    results, one_pass = [None] * len(specs), True
    for k in range(0, len(order), state.GRID_MAX):
        part = order[k:k + state.GRID_MAX]
        try:
            values = Simulator(specs[part[0]], flush, gfp, reader.num_cpus, [grid[i] for i in part]).run(reader)
        except Diverged:
            values, one_pass = [Simulator(specs[i], flush, gfp, reader.num_cpus).run(reader) for i in part], False
        for i, v in zip(part, values):
            results[i] = v
    return results, one_pass
