"""Simulator state: numpy arrays the compiled kernel works on.

Pools (page-table pages, IOVA nodes, magazines) and per-domain, per-handle
tables grow between kernel calls; growing never changes results because no
behaviour depends on which slot an object occupies.
"""

from collections import namedtuple

import numpy as np

from harness.core import layout as L
from harness.metrics import NUM_COUNTERS

State = namedtuple("State", (
    "P C G D H pt pt_bytes pt_charged pt_free nodes node_free mags mag_len mag_next mag_free "
    "rc fq fqh gather stack resv tlb_tag tlb_dom tlb_stamp tlb_stale tlb_used tlb_holes tlb_depth "
    "psc_tag psc_dom psc_stamp utlb_tag utlb_stamp utlb_stale grid CW"))


def _stack(cap, first=0):
    """A free stack whose pops hand out first, first + 1, ... in order."""
    return np.arange(cap - 1, first - 1, -1, dtype=np.int64)


# Sizes a one-pass size sweep takes at once: translate._psc_starts() keeps a
# bit per size in an int64, and (1 << m) - 1 needs m < 64.
GRID_MAX = 63


def new(P, ncpu, resv, grid=()):
    """State for a run; resv: reserved IOVA regions (lo pfn, hi pfn, direct);
    grid: IOTLB ways per size of a one-pass size sweep (translate.py), in
    ascending order; its recency lists are as wide as the widest size."""
    if list(grid) != sorted(grid):
        raise ValueError(f"one-pass grid {list(grid)}: ways must ascend")
    if len(grid) > GRID_MAX:
        raise ValueError(f"one-pass grid of {len(grid)} sizes: at most {GRID_MAX}")
    sets, ways = P[L.P_IOTLB_SETS], max(grid, default=P[L.P_IOTLB_WAYS])
    replicas = max(1, len(grid))
    nq = 1 if P[L.P_FLUSH] == L.FLUSH_LAZY_SINGLE else ncpu
    rows, psc_ways = 0, 1
    for level in range(2, L.MAX_LEVELS + 1):  # walk caches: each level its rows
        P[L.P_PSC_BASE + level] = rows
        rows += P[L.P_PSC_SETS + level]
        psc_ways = max(psc_ways, P[L.P_PSC_WAYS + level])
    G = np.zeros(L.NUM_GLOBALS, np.int64)
    G[L.G_NEXT_TIMER] = L.NEVER
    pt_cap, node_cap, mag_cap = 1024, 1024, 256
    G[L.G_PT_FREE] = pt_cap - 1
    G[L.G_NODE_FREE] = node_cap
    G[L.G_MAG_FREE] = mag_cap
    return State(
        P=P, C=np.zeros(NUM_COUNTERS, np.int64), G=G,
        D=np.zeros((0, L.NUM_DOMAIN_FIELDS), np.int64),
        H=np.zeros((0, L.NUM_HANDLE_FIELDS), np.int64),
        pt=_full((pt_cap, max(P[L.P_LVL_ENTRIES:L.P_LVL_ENTRIES + L.MAX_LEVELS + 1])), 0, np.int32),
        pt_bytes=np.zeros(pt_cap, np.int64), pt_charged=np.zeros(pt_cap, np.int64),
        pt_free=_stack(pt_cap, 1),
        nodes=_full((node_cap, 4), 0, np.int64), node_free=_stack(node_cap),
        mags=np.zeros((mag_cap, P[L.P_MAG_SIZE], 2), np.int64),  # (node, pfn_lo)
        mag_len=np.zeros(mag_cap, np.int64), mag_next=np.full(mag_cap, -1, np.int64),
        mag_free=_stack(mag_cap),
        rc=np.zeros((0, ncpu, L.IOVA_RANGE_CACHE_MAX_SIZE, 2), np.int64),
        fq=np.zeros((0, nq, P[L.P_FQ_SIZE], L.NUM_FQ_FIELDS), np.int64),
        fqh=np.zeros((0, nq, 2), np.int64),
        gather=np.zeros(L.GATHER_LEN, np.int64), stack=np.zeros((12, 4), np.int64),
        resv=np.asarray(resv, np.int64).reshape(-1, 3),
        tlb_tag=np.full((sets, ways), -1, np.int64), tlb_dom=np.zeros((sets, ways), np.int64),
        tlb_stamp=np.zeros((sets, ways + 2), np.int64),  # + the held-back stamp (cache.py)
        tlb_stale=np.zeros((sets, ways), np.uint8),
        tlb_used=np.zeros(sets, np.int64), tlb_holes=np.zeros(sets, np.int64),
        tlb_depth=np.zeros((2, ways + 1), np.int64),
        psc_tag=np.full((replicas, rows, psc_ways), -1, np.int64),
        psc_dom=np.zeros((replicas, rows, psc_ways), np.int64),
        psc_stamp=np.zeros((replicas, rows, psc_ways + 2), np.int64),
        utlb_tag=np.zeros((0, P[L.P_UTLB_ENTRIES]), np.int64),
        utlb_stamp=np.zeros((0, P[L.P_UTLB_ENTRIES] + 2), np.int64),
        utlb_stale=np.zeros((0, P[L.P_UTLB_ENTRIES]), np.uint8),
        grid=np.asarray(grid, np.int64).reshape(-1), CW=np.zeros((len(grid), L.WALK_CODES), np.int64))


def _full(shape, fill, dtype):
    """np.full with the data on a 64-byte boundary: a handle row (8 int64) is
    then one cache line, which the event loop prefetches whole."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buf = np.empty(nbytes + 64, np.uint8)
    off = -buf.ctypes.data % 64
    a = buf[off:off + nbytes].view(dtype).reshape(shape)
    a.fill(fill)
    return a


def _grow_rows(a, rows, fill=0):
    if rows <= a.shape[0]:
        return a
    out = _full((rows,) + a.shape[1:], fill, a.dtype)
    out[: a.shape[0]] = a
    return out


# Bytes the per-domain state may take (flush queues and rcache magazines per
# CPU): a trace of many devices on many CPUs stops with an error instead.
DOMAIN_STATE_LIMIT = 4 << 30


def mag_margin(P, ndom, ncpu):
    """Free magazines the kernel keeps before an event: per domain, 12 per CPU
    at init plus what a flush-queue drain into the rcaches can take."""
    return ndom * ncpu * (P[L.P_FQ_SIZE] // max(1, P[L.P_MAG_SIZE]) + 2 + 2 * L.IOVA_RANGE_CACHE_MAX_SIZE) + 16


def domain_bytes(S):
    """Bytes one domain takes: its rows, the two magazines per CPU and size
    class init_domain() gives it, and its share of the free magazines kept
    (mag_margin). Pools grow by doubling, so allocations reach up to twice it."""
    def row(a):
        return a.itemsize * int(np.prod(a.shape[1:]))
    ncpu = S.rc.shape[1]
    mags = 2 * L.IOVA_RANGE_CACHE_MAX_SIZE * ncpu + mag_margin(S.P, 1, ncpu) - 16
    rows = (S.D, S.rc, S.fq, S.fqh, S.utlb_tag, S.utlb_stamp, S.utlb_stale)
    return sum(row(a) for a in rows) + mags * (row(S.mags) + row(S.mag_len) + row(S.mag_next))


def ensure_domains(S, n):
    if n <= S.D.shape[0]:
        return S
    old = S.D.shape[0]
    D = _grow_rows(S.D, n)
    D[old:, L.D_FQ_TIMER] = L.NEVER
    for k in range(L.IOVA_RANGE_CACHE_MAX_SIZE):
        D[old:, L.D_DEPOT_TIMER + k] = L.NEVER
    return S._replace(D=D, rc=_grow_rows(S.rc, n), fq=_grow_rows(S.fq, n), fqh=_grow_rows(S.fqh, n),
                      utlb_tag=_grow_rows(S.utlb_tag, n, -1), utlb_stamp=_grow_rows(S.utlb_stamp, n),
                      utlb_stale=_grow_rows(S.utlb_stale, n))


def ensure_handles(S, n):
    if n <= S.H.shape[0]:
        return S
    return S._replace(H=_grow_rows(S.H, max(n, 2 * S.H.shape[0])))


# Bytes the page-table pool may take: 2^20 tables of 512 entries, which map
# 2 TiB in 4 KiB pages at once. A trace that needs more stops with an error
# instead of taking the host's memory.
PT_POOL_LIMIT = 2 << 30


class PoolLimit(Exception):
    """The page-table pool would pass PT_POOL_LIMIT; args: the limit in tables."""


def _grow_pool(S, data, free, gkey, new_cap):
    """Grow a pool to new_cap: returns new (data arrays..., free stack)."""
    cap = data[0][0].shape[0]
    grown = [_grow_rows(a, new_cap, fill) for a, fill in data]
    stack = np.empty(new_cap, np.int64)
    top = S.G[gkey]
    stack[:top] = free[:top]
    stack[top:top + new_cap - cap] = np.arange(new_cap - 1, cap - 1, -1)
    S.G[gkey] = top + new_cap - cap
    return grown, stack


def _pt_cap(S):
    """The page-table pool's new size: doubled until it holds what the
    stopped event needs (G_PT_NEED free slots), at most PT_POOL_LIMIT;
    PoolLimit when the limit cannot hold it."""
    cap, free, need = S.pt.shape[0], S.G[L.G_PT_FREE], S.G[L.G_PT_NEED]
    limit = max(cap, PT_POOL_LIMIT // S.pt[0].nbytes)
    new_cap = 2 * cap
    while free + new_cap - cap < need:
        new_cap *= 2
    if new_cap <= limit:
        return new_cap
    if free + limit - cap < need:
        raise PoolLimit(limit)
    return limit


def grow_pools(S):
    """Double every pool under half free (every pool when none is): the kernel
    asked because one fell below what the next event may need. The
    page-table pool grows at once to what that event needs."""
    low_pt = S.G[L.G_PT_FREE] < max(S.pt.shape[0] // 2, S.G[L.G_PT_NEED])
    low_node = S.G[L.G_NODE_FREE] < S.nodes.shape[0] // 2
    low_mag = S.G[L.G_MAG_FREE] < max(S.mags.shape[0] // 2, 2 * S.P[L.P_MAG_MARGIN])
    if not (low_pt or low_node or low_mag):
        low_pt = low_node = low_mag = True
    pt_cap = _pt_cap(S) if low_pt else S.pt.shape[0]
    if pt_cap > S.pt.shape[0]:
        (pt, nb, ch), free = _grow_pool(S, [(S.pt, 0), (S.pt_bytes, 0), (S.pt_charged, 0)],
                                        S.pt_free, L.G_PT_FREE, pt_cap)
        S = S._replace(pt=pt, pt_bytes=nb, pt_charged=ch, pt_free=free)
    if low_node:
        (nodes,), free = _grow_pool(S, [(S.nodes, 0)], S.node_free, L.G_NODE_FREE, 2 * S.nodes.shape[0])
        S = S._replace(nodes=nodes, node_free=free)
    if low_mag:
        (mags, ml, mn), free = _grow_pool(S, [(S.mags, 0), (S.mag_len, 0), (S.mag_next, -1)],
                                          S.mag_free, L.G_MAG_FREE, 2 * S.mags.shape[0])
        S = S._replace(mags=mags, mag_len=ml, mag_next=mn, mag_free=free)
    return S
