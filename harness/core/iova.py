"""IOVA allocator: drivers/iommu/iova.c (v6.7+) as dma-iommu uses it.

The rbtree of allocated ranges is kept as a list ordered by pfn (nodes[n] =
pfn_lo, pfn_hi, prev, next), which supports every step the kernel takes:
__alloc_and_insert_iova_range() walks rb_prev() from the cached node,
top-down and size-aligned, with the retry from iova_find_limit(); the
cached_node/cached32_node and max32_alloc_size updates; free by node.
The anchor node (IOVA_ANCHOR) ends every list.

Kernels before v4.7 have no rcache ("iommu/iova: introduce per-cpu caching
to iova allocation"): every allocation and free takes the tree.

rcache (iova_rcache_get/insert): per size class (1..32 pages) and CPU, a
loaded and a prev magazine of IOVA_MAG_SIZE entries (127 since v6.0), and a
depot of full magazines (a LIFO list since v6.7) that a delayed worker trims
one magazine per IOVA_DEPOT_DELAY (100 ms) while it holds more than
num_online_cpus(). A magazine entry is (node, pfn_lo): the kernel stores the
pfn and finds the node again when it frees to the tree; iova_magazine_pop()
compares pfns, so a pop reads no node.
"""

from harness.core.compiled import njit
from harness.core import bits
from harness.core import layout as L
from harness.core import timers

LO, HI, PREV, NEXT = 0, 1, 2, 3


@njit(cache=True)
def _new_node(S, lo, hi):
    top = S.G[L.G_NODE_FREE] - 1
    S.G[L.G_NODE_FREE] = top
    n = S.node_free[top]
    S.nodes[n, LO] = lo
    S.nodes[n, HI] = hi
    return n


@njit(cache=True)
def init_domain(S, d):
    """init_iova_domain(): anchor node, cached nodes, max32_alloc_size."""
    a = _new_node(S, L.NEVER, L.NEVER)
    S.nodes[a, PREV] = -1
    S.nodes[a, NEXT] = -1
    S.D[d, L.D_ANCHOR] = a
    S.D[d, L.D_CACHED] = a
    S.D[d, L.D_CACHED32] = a
    S.D[d, L.D_MAX32] = S.P[L.P_DMA32_PFN]
    S.D[d, L.D_PCI32] = S.P[L.P_PCI32]
    for k in range(L.IOVA_RANGE_CACHE_MAX_SIZE):
        S.D[d, L.D_DEPOT + k] = -1
        S.D[d, L.D_DEPOT_SIZE + k] = 0
        S.D[d, L.D_DEPOT_TIMER + k] = L.NEVER
        for cpu in range(S.rc.shape[1]):
            S.rc[d, cpu, k, 0] = _new_mag(S)
            S.rc[d, cpu, k, 1] = _new_mag(S)


@njit(cache=True)
def reserve(S, d, lo, hi):
    """reserve_iova() of [lo, hi] in a fresh domain: a node nothing allocates
    over (the regions are disjoint; the cached nodes stay on the anchor)."""
    n = _new_node(S, lo, hi)
    above = S.D[d, L.D_ANCHOR]
    while S.nodes[above, PREV] != -1 and S.nodes[S.nodes[above, PREV], LO] > lo:
        above = S.nodes[above, PREV]
    below = S.nodes[above, PREV]
    S.nodes[n, PREV] = below
    S.nodes[n, NEXT] = above
    S.nodes[above, PREV] = n
    if below != -1:
        S.nodes[below, NEXT] = n


@njit(cache=True)
def _find_limit(S, d, limit_pfn):
    """iova_find_limit(): the anchor above the 32-bit window, else the lowest
    node with pfn_lo >= limit_pfn (the tree search's answer whenever no node
    straddles the limit; with one, the kernel's answer depends on tree shape)."""
    n = S.D[d, L.D_ANCHOR]
    if limit_pfn > S.P[L.P_DMA32_PFN]:
        return n
    while S.nodes[n, PREV] != -1 and S.nodes[S.nodes[n, PREV], LO] >= limit_pfn:
        n = S.nodes[n, PREV]
    return n


@njit(cache=True)
def alloc_iova(S, d, size, limit_pfn):
    """alloc_iova(size_aligned=true) / __alloc_and_insert_iova_range(): node or -1.
    limit_pfn is inclusive; alloc_iova() passes limit_pfn + 1 to the walk."""
    nodes = S.nodes
    limit_pfn += 1
    align_mask = -1 << bits.fls_long(size - 1)
    high_pfn = limit_pfn
    low_pfn = 1  # start_pfn: dma-iommu never hands out IOVA 0
    if limit_pfn <= S.P[L.P_DMA32_PFN] and size >= S.D[d, L.D_MAX32]:
        return -1
    curr = S.D[d, L.D_CACHED32] if limit_pfn <= S.P[L.P_DMA32_PFN] else S.D[d, L.D_CACHED]
    retry_pfn = nodes[curr, HI]
    while True:
        while True:
            high_pfn = min(high_pfn, nodes[curr, LO])
            new_pfn = (high_pfn - size) & align_mask
            prev = curr
            curr = nodes[curr, PREV]
            S.C[L.C_IOVA_TREE_WALK_STEPS] += 1
            if not (curr != -1 and new_pfn <= nodes[curr, HI] and new_pfn >= low_pfn):
                break
        if high_pfn < size or new_pfn < low_pfn:
            if low_pfn == 1 and retry_pfn < limit_pfn:
                high_pfn = limit_pfn
                low_pfn = retry_pfn + 1
                curr = _find_limit(S, d, limit_pfn)
                continue
            S.D[d, L.D_MAX32] = size
            return -1
        break
    n = _new_node(S, new_pfn, new_pfn + size - 1)
    # between curr (below, may be none) and prev (above)
    nodes[n, NEXT] = prev
    nodes[n, PREV] = nodes[prev, PREV]
    if nodes[prev, PREV] != -1:
        nodes[nodes[prev, PREV], NEXT] = n
    nodes[prev, PREV] = n
    if nodes[n, HI] < S.P[L.P_DMA32_PFN]:
        S.D[d, L.D_CACHED32] = n
    else:
        S.D[d, L.D_CACHED] = n
    return n


@njit(cache=True)
def free_iova(S, d, n):
    """__cached_rbnode_delete_update() then remove_iova()."""
    nodes = S.nodes
    nxt = nodes[n, NEXT]
    c32 = S.D[d, L.D_CACHED32]
    if n == c32 or (nodes[n, HI] < S.P[L.P_DMA32_PFN] and nodes[n, LO] >= nodes[c32, LO]):
        S.D[d, L.D_CACHED32] = nxt
    if nodes[n, LO] < S.P[L.P_DMA32_PFN]:
        S.D[d, L.D_MAX32] = S.P[L.P_DMA32_PFN]
    if nodes[n, LO] >= nodes[S.D[d, L.D_CACHED], LO]:
        S.D[d, L.D_CACHED] = nxt
    prv = nodes[n, PREV]
    if prv != -1:
        nodes[prv, NEXT] = nxt
    nodes[nxt, PREV] = prv
    S.node_free[S.G[L.G_NODE_FREE]] = n
    S.G[L.G_NODE_FREE] += 1
    S.C[L.C_IOVA_TREE_FREES] += 1


# --- magazines -----------------------------------------------------------

@njit(cache=True)
def _new_mag(S):
    top = S.G[L.G_MAG_FREE] - 1
    S.G[L.G_MAG_FREE] = top
    m = S.mag_free[top]
    S.mag_len[m] = 0
    return m


@njit(cache=True)
def _free_mag(S, m):
    S.mag_free[S.G[L.G_MAG_FREE]] = m
    S.G[L.G_MAG_FREE] += 1


@njit(cache=True)
def _mag_free_pfns(S, d, m):
    """iova_magazine_free_pfns(): every IOVA in the magazine back to the tree."""
    for i in range(S.mag_len[m]):
        free_iova(S, d, S.mags[m, i, 0])
    S.mag_len[m] = 0


@njit(cache=True, inline="always")
def _rcache_get(S, d, cpu, size, limit_pfn):
    """iova_rcache_get() / __iova_rcache_get() / iova_magazine_pop():
    (node, pfn_lo), or (-1, 0)."""
    k = bits.order_base_2(size)
    if k >= L.IOVA_RANGE_CACHE_MAX_SIZE:
        return -1, 0
    limit = limit_pfn - size
    rc = S.rc
    if S.mag_len[rc[d, cpu, k, 0]] == 0:
        if S.mag_len[rc[d, cpu, k, 1]] != 0:
            m = rc[d, cpu, k, 0]
            rc[d, cpu, k, 0] = rc[d, cpu, k, 1]
            rc[d, cpu, k, 1] = m
        elif S.D[d, L.D_DEPOT + k] != -1:
            _free_mag(S, rc[d, cpu, k, 0])
            m = S.D[d, L.D_DEPOT + k]
            S.D[d, L.D_DEPOT + k] = S.mag_next[m]
            S.D[d, L.D_DEPOT_SIZE + k] -= 1
            rc[d, cpu, k, 0] = m
        else:
            return -1, 0
    m = rc[d, cpu, k, 0]
    i = S.mag_len[m] - 1
    while S.mags[m, i, 1] > limit:
        if i == 0:
            return -1, 0
        i -= 1
    n, lo = S.mags[m, i, 0], S.mags[m, i, 1]
    j = S.mag_len[m] - 1
    S.mag_len[m] = j
    S.mags[m, i, 0], S.mags[m, i, 1] = S.mags[m, j, 0], S.mags[m, j, 1]
    return n, lo


@njit(cache=True, inline="always")
def _rcache_insert(S, d, cpu, n, pfn, pages):
    """iova_rcache_insert() / __iova_rcache_insert()."""
    k = bits.order_base_2(pages)
    if k >= L.IOVA_RANGE_CACHE_MAX_SIZE:
        return False
    rc = S.rc
    full = S.P[L.P_MAG_SIZE]
    if S.mag_len[rc[d, cpu, k, 0]] == full:
        if S.mag_len[rc[d, cpu, k, 1]] != full:
            m = rc[d, cpu, k, 0]
            rc[d, cpu, k, 0] = rc[d, cpu, k, 1]
            rc[d, cpu, k, 1] = m
        else:
            m = rc[d, cpu, k, 0]
            S.mag_next[m] = S.D[d, L.D_DEPOT + k]
            S.D[d, L.D_DEPOT + k] = m
            S.D[d, L.D_DEPOT_SIZE + k] += 1
            timers.arm(S, d, L.D_DEPOT_TIMER + k, S.G[L.G_NOW] + S.P[L.P_DEPOT_DELAY])
            rc[d, cpu, k, 0] = _new_mag(S)
    m = rc[d, cpu, k, 0]
    S.mags[m, S.mag_len[m], 0] = n
    S.mags[m, S.mag_len[m], 1] = pfn
    S.mag_len[m] += 1
    return True


@njit(cache=True)
def depot_work(S, d, k):
    """iova_depot_work_func(): trim one magazine while the depot is large."""
    S.D[d, L.D_DEPOT_TIMER + k] = L.NEVER
    if S.D[d, L.D_DEPOT_SIZE + k] > S.P[L.P_NCPU]:
        m = S.D[d, L.D_DEPOT + k]
        S.D[d, L.D_DEPOT + k] = S.mag_next[m]
        S.D[d, L.D_DEPOT_SIZE + k] -= 1
        _mag_free_pfns(S, d, m)
        _free_mag(S, m)
        S.C[L.C_IOVA_DEPOT_TRIMS] += 1
        timers.arm(S, d, L.D_DEPOT_TIMER + k, S.G[L.G_NOW] + S.P[L.P_DEPOT_DELAY])


@njit(cache=True)
def _flush_rcaches(S, d):
    """free_cpu_cached_iovas() for every CPU, then free_global_cached_iovas()."""
    for cpu in range(S.rc.shape[1]):
        for k in range(L.IOVA_RANGE_CACHE_MAX_SIZE):
            _mag_free_pfns(S, d, S.rc[d, cpu, k, 0])
            _mag_free_pfns(S, d, S.rc[d, cpu, k, 1])
    for k in range(L.IOVA_RANGE_CACHE_MAX_SIZE):
        while S.D[d, L.D_DEPOT + k] != -1:
            m = S.D[d, L.D_DEPOT + k]
            S.D[d, L.D_DEPOT + k] = S.mag_next[m]
            S.D[d, L.D_DEPOT_SIZE + k] -= 1
            _mag_free_pfns(S, d, m)
            _free_mag(S, m)


@njit(cache=True, inline="always")
def alloc_iova_fast(S, d, cpu, size, limit_pfn, flush_rcache):
    """alloc_iova_fast(): rcache first, then the tree, then flush and retry;
    (node, pfn_lo) or (-1, 0). Without an rcache (P_MAG_SIZE = 0: before
    v4.7) only the tree."""
    if size < (1 << (L.IOVA_RANGE_CACHE_MAX_SIZE - 1)):
        size = 1 << bits.order_base_2(size)
    if S.P[L.P_MAG_SIZE]:
        n, lo = _rcache_get(S, d, cpu, size, limit_pfn + 1)
        if n != -1:
            S.C[L.C_IOVA_RCACHE_HITS] += 1
            return n, lo
    else:
        flush_rcache = False
    while True:
        n = alloc_iova(S, d, size, limit_pfn)
        if n != -1:
            S.C[L.C_IOVA_TREE_ALLOCS] += 1
            return n, S.nodes[n, LO]
        if not flush_rcache:
            return -1, 0
        flush_rcache = False
        S.C[L.C_IOVA_RCACHE_FLUSHES] += 1
        _flush_rcaches(S, d)


@njit(cache=True, inline="always")
def dma_alloc_iova(S, d, cpu, pages):
    """iommu_dma_alloc_iova(): 32-bit window first for PCI devices; (node,
    pfn_lo) or (-1, 0)."""
    if pages < (1 << (L.IOVA_RANGE_CACHE_MAX_SIZE - 1)):
        pages = 1 << bits.order_base_2(pages)
    limit = S.P[L.P_DMA_LIMIT_PFN]
    if limit > S.P[L.P_DMA32_PFN] - 1 and S.D[d, L.D_PCI32]:
        n, lo = alloc_iova_fast(S, d, cpu, pages, S.P[L.P_DMA32_PFN] - 1, False)
        if n != -1:
            S.C[L.C_IOVA_ALLOCS] += 1
            return n, lo
        S.D[d, L.D_PCI32] = 0
        S.C[L.C_IOVA_32BIT_FALLBACKS] += 1
    n, lo = alloc_iova_fast(S, d, cpu, pages, limit, True)
    if n == -1:
        S.C[L.C_IOVA_ALLOC_FAILURES] += 1
    else:
        S.C[L.C_IOVA_ALLOCS] += 1
    return n, lo


@njit(cache=True, inline="always")
def free_iova_fast(S, d, cpu, n, pfn, pages):
    """free_iova_fast(iovad, pfn, size): into the CPU's rcache, else back to
    the tree. The caller passes node n with its pfn_lo, which it holds (as
    the kernel's callers hold the pfn): the rcache keeps pfns, and only a
    free to the tree needs the node."""
    S.C[L.C_IOVA_FREES] += 1
    if S.P[L.P_MAG_SIZE] and _rcache_insert(S, d, cpu, n, pfn, pages):
        S.C[L.C_IOVA_RCACHE_INSERTS] += 1
    else:
        free_iova(S, d, n)
