"""IOTLB and paging-structure caches of the IOMMU hardware.

IOTLB entries are tagged by domain id and page size (VT-d spec 6.2.2: IOTLB
entries are tagged with the domain-id; 6.2.3: superpage entries map 2M/1G).
Tag: vpn << 18 | domain << 2 | (level - 1), where vpn is the IOVA page number
at the entry's page size; the set index is the low bits of that vpn.

Paging-structure caches (VT-d spec 6.2.4) hold non-leaf entries per level:
level 2 (PDE), 3 (PDPE), 4 (PML4E), 5 (PML5E). Tag: key << 16 | domain, key =
IOVA >> the entry's span shift.

A lookup that hits an entry whose PTE has been cleared (marked stale at
unmap while its invalidation is deferred) is a stale hit.
"""

from numba import njit

from harness.core import cache
from harness.core import layout as L


@njit(cache=True, inline="always")
def span_shift(level):
    """log2 bytes mapped by one entry at this level (level 1 = 4 KiB PTE)."""
    return L.PAGE_SHIFT + 9 * (level - 1)


@njit(cache=True, inline="always")
def _tlb_tag(d, level, va):
    return ((va >> span_shift(level)) << 18) | (d << 2) | (level - 1)


@njit(cache=True, inline="always")
def lookup(S, d, va):
    """Returns 0 miss, 1 hit, 2 stale hit. Probes 4K, then 2M, then 1G entries."""
    sets = S.tlb_tag.shape[0]
    for level in range(1, 4):
        if level > 1 and S.G[L.G_IOTLB_LVL + level - 1] == 0:
            continue
        t = _tlb_tag(d, level, va)
        s = (va >> span_shift(level)) & (sets - 1)
        w = cache.lookup(S.tlb_tag, S.tlb_stamp, s, t, S.G)
        if w >= 0:
            return 2 if S.tlb_stale[s, w] else 1
    return 0


@njit(cache=True, inline="always")
def fill(S, d, va, level):
    sets = S.tlb_tag.shape[0]
    s = (va >> span_shift(level)) & (sets - 1)
    w, evicted = cache.fill(S.tlb_tag, S.tlb_stamp, s, _tlb_tag(d, level, va), S.G)
    if evicted != -1:
        S.G[L.G_IOTLB_LVL + (evicted & 3)] -= 1
    S.G[L.G_IOTLB_LVL + level - 1] += 1
    S.tlb_stale[s, w] = 0


@njit(cache=True, inline="always")
def _overlaps(t, d, pfn, npages):
    level = (t & 3) + 1
    if t == -1 or ((t >> 2) & 0xFFFF) != d:
        return False
    lo = (t >> 18) << (9 * (level - 1))
    hi = lo + (1 << (9 * (level - 1)))
    return lo < pfn + npages and pfn < hi


@njit(cache=True, inline="always")
def _visit(S, s, w, action):
    """action 0: invalidate the way; 1: mark it stale."""
    if action == 0:
        S.G[L.G_IOTLB_LVL + (S.tlb_tag[s, w] & 3)] -= 1
        S.tlb_tag[s, w] = -1
    else:
        S.tlb_stale[s, w] = 1


@njit(cache=True, inline="always")
def range_apply(S, d, pfn, npages, action):
    """Invalidate (action 0) or mark stale (1) domain d's entries overlapping
    4 KiB pages [pfn, pfn + npages). Probes the sets a range can live in when
    that is cheaper than scanning every way; both give the same result."""
    sets, ways = S.tlb_tag.shape
    if npages > sets:
        for s in range(sets):
            for w in range(ways):
                if _overlaps(S.tlb_tag[s, w], d, pfn, npages):
                    _visit(S, s, w, action)
        return
    for level in range(1, 4):
        if S.G[L.G_IOTLB_LVL + level - 1] == 0:
            continue
        sh = 9 * (level - 1)
        first = pfn >> sh
        last = (pfn + npages - 1) >> sh
        for vpn in range(first, last + 1):
            s = vpn & (sets - 1)
            t = (vpn << 18) | (d << 2) | (level - 1)
            for w in range(ways):
                if S.tlb_tag[s, w] == t:
                    _visit(S, s, w, action)


@njit(cache=True)
def invalidate_domain(S, d):
    sets, ways = S.tlb_tag.shape
    for s in range(sets):
        for w in range(ways):
            t = S.tlb_tag[s, w]
            if t != -1 and ((t >> 2) & 0xFFFF) == d:
                _visit(S, s, w, 0)
    for i in range(len(S.psc_tag)):
        tag = S.psc_tag[i]
        for s in range(tag.shape[0]):
            for w in range(tag.shape[1]):
                if tag[s, w] != -1 and (tag[s, w] & 0xFFFF) == d:
                    tag[s, w] = -1


@njit(cache=True)
def psc_invalidate_range(S, d, pfn, npages):
    """Drop domain d's paging-structure entries whose span overlaps the range."""
    for i in range(len(S.psc_tag)):
        level = i + 2
        sh = 9 * (level - 1)
        tag = S.psc_tag[i]
        for s in range(tag.shape[0]):
            for w in range(tag.shape[1]):
                t = tag[s, w]
                if t != -1 and (t & 0xFFFF) == d:
                    lo = (t >> 16) << sh
                    if lo < pfn + npages and pfn < lo + (1 << sh):
                        tag[s, w] = -1


@njit(cache=True, inline="always")
def psc_lookup(S, d, level, va):
    tag = S.psc_tag[level - 2]
    key = va >> span_shift(level)
    return cache.lookup(tag, S.psc_stamp[level - 2], key & (tag.shape[0] - 1),
                        (key << 16) | d, S.G) >= 0


@njit(cache=True, inline="always")
def psc_fill(S, d, level, va):
    tag = S.psc_tag[level - 2]
    if tag.shape[1] == 0:
        return
    key = va >> span_shift(level)
    cache.fill(tag, S.psc_stamp[level - 2], key & (tag.shape[0] - 1), (key << 16) | d, S.G)
