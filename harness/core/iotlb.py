"""IOTLB and walk (paging-structure) caches of the IOMMU hardware.

IOTLB entries are tagged by domain and page size (VT-d spec 6.2.2/6.2.3;
AMD IOMMU spec 2.2.6: a TLB entry covers the page size its PTE encodes, any
power of two; SMMUv3 spec 3.8: entries are tagged by ASID/VMID and cache
whole blocks). Tag: vpn << 6 | order, where order is log2 of the page in
4 KiB units and vpn the page number at that size, plus the domain id; the set
index is the low bits of vpn. Lookups probe the orders the IOTLB currently holds,
smallest first (G_IOTLB_ORDERS).

Walk caches hold non-leaf entries per level (VT-d spec 6.2.4 PDE/PDPE/PML4E/
PML5E caches; AMD PDE cache; SMMUv3 walk cache). Tag: key = the 4 KiB page
number >> the level's entry span, plus the domain id.

An optional per-device micro-TLB (gem5 src/dev/arm/smmu_v3_deviceifc.cc:
the device interface's fully associative uTLB, consulted before the SMMU's
main TLB and filled from it or from the walk) holds the same entries; every
invalidation reaches it too.

A lookup that hits an entry whose PTE has been cleared (marked stale at
unmap while its invalidation is deferred) is a stale hit.
"""

import numpy as np

from harness.core.compiled import njit
from harness.core import bits, cache
from harness.core import layout as L


@njit(cache=True, inline="always")
def _tag(o, pfn):
    return ((pfn >> o) << 6) | o


@njit(cache=True, inline="always")
def _main_lookup(S, d, pfn):
    """(0 miss, 1 hit, 2 stale hit; order of the entry) in the main IOTLB."""
    sets = S.tlb_tag.shape[0]
    orders = S.G[L.G_IOTLB_ORDERS]
    while orders:
        o = bits.ffs0(orders)
        orders &= orders - 1
        s = (pfn >> o) & (sets - 1)
        w = cache.lookup(S.tlb_tag, S.tlb_dom, S.tlb_stamp, s, S.tlb_tag.shape[1], _tag(o, pfn), d,
                         S.G, S.P[L.P_IOTLB_POLICY])
        if w >= 0:
            return (2 if S.tlb_stale[s, w] else 1), o
    return 0, 0


@njit(cache=True, inline="always")
def lookup(S, d, pfn):
    """Returns 0 miss, 1 hit, 2 stale hit for the 4 KiB page pfn."""
    if S.P[L.P_UTLB_ENTRIES] == 0:
        return _main_lookup(S, d, pfn)[0]
    return _utlb_then_main(S, d, pfn)


@njit(cache=True, inline="always")
def _utlb_then_main(S, d, pfn):
    """Micro-TLB row d (the device's; fully associative, no domain tag: the
    tag array stands in for its own domain column), then the main IOTLB.
    Only the page sizes the micro-TLBs have held are probed."""
    orders = S.G[L.G_UTLB_ORDERS]
    while orders:
        o = bits.ffs0(orders)
        orders &= orders - 1
        w = cache.lookup(S.utlb_tag, S.utlb_tag, S.utlb_stamp, d, S.utlb_tag.shape[1], _tag(o, pfn),
                         _tag(o, pfn), S.G, S.P[L.P_IOTLB_POLICY])
        if w >= 0:
            S.C[L.C_UTLB_HITS] += 1
            return 2 if S.utlb_stale[d, w] else 1
    S.C[L.C_UTLB_MISSES] += 1
    r, o = _main_lookup(S, d, pfn)
    if r:
        _utlb_fill(S, d, pfn, o, r == 2)
    return r


@njit(cache=True, inline="always")
def _utlb_fill(S, d, pfn, o, stale):
    S.G[L.G_UTLB_ORDERS] |= 1 << o
    t = _tag(o, pfn)
    w, _ = cache.fill(S.utlb_tag, S.utlb_tag, S.utlb_stamp, d, S.utlb_tag.shape[1], t, t, S.G,
                      S.P[L.P_IOTLB_POLICY])
    S.utlb_stale[d, w] = stale


@njit(cache=True, inline="always")
def _utlb_apply(S, d, pfn, npages, action):
    """Invalidate (0) or mark stale (1) device d's micro-TLB entries
    overlapping the range; npages < 0: all of them. Without branches: every
    unmap checks every way, and a lazy micro-TLB is full of stale entries
    (with cache.fill()'s branch-free search, arm-smmuv3 lazy on nic-rx went
    from 9.2 to 11.9 M events/s on the build machine)."""
    for w in range(S.utlb_tag.shape[1]):
        t = S.utlb_tag[d, w]
        o = t & 63
        lo = (t >> 6) << o
        hit = (t != -1) & ((npages < 0) | ((lo < pfn + npages) & (pfn < lo + (np.int64(1) << o))))
        if action == 0:
            S.utlb_tag[d, w] = -1 if hit else t
        else:
            S.utlb_stale[d, w] |= np.uint8(hit)


@njit(cache=True, inline="always")
def _count(S, o, delta):
    n = S.G[L.G_IOTLB_CNT + o] + delta
    S.G[L.G_IOTLB_CNT + o] = n
    if n == 0:
        S.G[L.G_IOTLB_ORDERS] &= ~(1 << o)
    else:
        S.G[L.G_IOTLB_ORDERS] |= 1 << o


@njit(cache=True, inline="always")
def fill(S, d, pfn, o):
    """Cache the translation of pfn's page of order o."""
    sets = S.tlb_tag.shape[0]
    s = (pfn >> o) & (sets - 1)
    w, evicted = cache.fill(S.tlb_tag, S.tlb_dom, S.tlb_stamp, s, S.tlb_tag.shape[1], _tag(o, pfn), d,
                            S.G, S.P[L.P_IOTLB_POLICY])
    if evicted == -1 or evicted & 63 != o:  # an entry of the same size: counts unchanged
        if evicted != -1:
            _count(S, evicted & 63, -1)
        _count(S, o, 1)
    S.tlb_stale[s, w] = 0
    if S.P[L.P_UTLB_ENTRIES]:
        _utlb_fill(S, d, pfn, o, False)


@njit(cache=True, inline="always")
def _overlaps(t, td, d, pfn, npages):
    if t == -1 or td != d:
        return False
    o = t & 63
    lo = (t >> 6) << o
    return lo < pfn + npages and pfn < lo + (1 << o)


@njit(cache=True, inline="always")
def _visit(S, s, w, action):
    """action 0: invalidate the way; 1: mark it stale."""
    if action == 0:
        _count(S, S.tlb_tag[s, w] & 63, -1)
        S.tlb_tag[s, w] = -1
        if S.grid.shape[0]:  # a hole in the one-pass recency order (translate.py)
            S.tlb_holes[s] += 1
    else:
        S.tlb_stale[s, w] = 1


@njit(cache=True, inline="always")
def range_apply(S, d, pfn, npages, action):
    """Invalidate (action 0) or mark stale (1) domain d's entries overlapping
    4 KiB pages [pfn, pfn + npages). Probes the sets a range can live in when
    that is cheaper than scanning every way (a set holds an entry once);
    both give the same result."""
    if S.P[L.P_UTLB_ENTRIES]:
        _utlb_apply(S, d, pfn, npages, action)
    sets, ways = S.tlb_tag.shape
    if npages > sets:
        for s in range(sets):
            for w in range(ways):
                if _overlaps(S.tlb_tag[s, w], S.tlb_dom[s, w], d, pfn, npages):
                    _visit(S, s, w, action)
        return
    orders = S.G[L.G_IOTLB_ORDERS]
    while orders:
        o = bits.ffs0(orders)
        orders &= orders - 1
        for vpn in range(pfn >> o, ((pfn + npages - 1) >> o) + 1):
            s = vpn & (sets - 1)
            w = cache.find(S.tlb_tag, S.tlb_dom, s, S.tlb_used[s] if S.grid.shape[0] else ways,
                           (vpn << 6) | o, d)
            if w >= 0:
                _visit(S, s, w, action)


@njit(cache=True)
def invalidate_domain(S, d):
    if S.P[L.P_UTLB_ENTRIES]:
        _utlb_apply(S, d, 0, -1, 0)
    sets, ways = S.tlb_tag.shape
    for s in range(sets):
        for w in range(ways):
            if S.tlb_tag[s, w] != -1 and S.tlb_dom[s, w] == d:
                _visit(S, s, w, 0)
    tag, dom = S.psc_tag, S.psc_dom
    for r in range(tag.shape[0]):
        for s in range(tag.shape[1]):
            for w in range(tag.shape[2]):
                if tag[r, s, w] != -1 and dom[r, s, w] == d:
                    tag[r, s, w] = -1


@njit(cache=True, inline="always")
def psc_invalidate_range(S, d, pfn, npages):
    """Drop domain d's walk-cache entries whose span overlaps the range (in
    every replica: a one-pass size sweep keeps one per IOTLB size)."""
    tag, dom = S.psc_tag, S.psc_dom
    for level in range(2, S.P[L.P_LEVELS] + 1):
        # an entry's span overlaps the range when its key is in [k0, k1]
        sh = S.P[L.P_LVL_PSHIFT + level]
        k0, k1 = pfn >> sh, (pfn + npages - 1) >> sh
        sets = S.P[L.P_PSC_SETS + level]
        base = S.P[L.P_PSC_BASE + level]
        for r in range(tag.shape[0]):
            if k1 - k0 < sets:  # probe only the sets the keys index
                for k in range(k0, k1 + 1):
                    _psc_drop(S, r, base + (k & (sets - 1)), level, d, k, k)
            else:
                for s in range(base, base + sets):
                    _psc_drop(S, r, s, level, d, k0, k1)


@njit(cache=True, inline="always")
def _psc_drop(S, r, s, level, d, k0, k1):
    """Drop domain d's entries of walk-cache row s with keys in [k0, k1];
    without branches: a strict unmap's invalidation most often drops one
    entry of the row, at a way no branch predicts."""
    tag, dom = S.psc_tag, S.psc_dom
    for w in range(S.P[L.P_PSC_WAYS + level]):
        t = tag[r, s, w]
        tag[r, s, w] = -1 if (k0 <= t) & (t <= k1) & (dom[r, s, w] == d) else t


@njit(cache=True, inline="always")
def _psc_row(S, level, key):
    return S.P[L.P_PSC_BASE + level] + (key & (S.P[L.P_PSC_SETS + level] - 1))


@njit(cache=True, inline="always")
def range_command(S, d, pfn, npages, walk):
    """One range invalidation command covering npages 4 KiB pages from pfn:
    the IOTLB entries in it go, and the walk caches' too when walk is set."""
    S.C[L.C_INV_RANGE] += 1
    S.C[L.C_INV_PAGES] += npages
    range_apply(S, d, pfn, npages, 0)
    if walk:
        psc_invalidate_range(S, d, pfn, npages)


@njit(cache=True, inline="always")
def all_command(S, d):
    """One domain-wide invalidation command."""
    S.C[L.C_INV_ALL] += 1
    invalidate_domain(S, d)


@njit(cache=True, inline="always")
def dev_command(S):
    """The device-TLB (ATC) command that follows for an ATS device: returns
    the commands it adds, 0 or 1."""
    if S.P[L.P_ATS]:
        S.C[L.C_INV_DEV] += 1
        return 1
    return 0
