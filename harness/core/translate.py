"""Device-side translation of one 4 KiB page: IOTLB, walk caches, page walk.

translate() is one hardware model's lookup. translate_sizes() answers it for
every IOTLB size of a one-pass size sweep at once (S.grid: ways per size, one
set count). LRU is a stack algorithm (Mattson, Gecsei, Slutz and Traiger,
"Evaluation techniques for storage hierarchies", IBM Systems Journal 9(2),
1970): a set of c ways holds the c most recently used entries that map to it.
So each set keeps one recency order, as wide as the widest size (ways
ordered by stamp, newest first), and an entry at depth k hits in every size
with more than k ways.

Invalidated entries leave holes in place (tag -1, stamp kept): a size whose
ways reach a hole has a free way there. Hence the update: a fill, in every
size that missed, takes a free way if it has one and else evicts its least
recently used. In the order, the entry becomes newest and the topmost hole,
when there is one above the entry's old place (or anywhere, for an entry not
held), is used up: a new entry takes the hole's way, and an entry that was
held leaves a hole in its old place. The top c places then hold what a
separate c-way cache holds, for every c.

The walk caches see only their own size's misses, so each size has its own
replica of them (psc_* [size]) and its own outcome counters (CK[size]); the
domain core, page tables and invalidation commands are shared.

One list cannot hold a lookup after which sizes disagree on the entry they
used: a larger size hits an entry whose PTE has since been cleared (stale,
its invalidation deferred) while a smaller one walks and faults, or sizes hit
different page sizes of the same address. translate_sizes() then returns
False and the caller runs those sizes separately.
"""

import numpy as np

from harness.core.compiled import njit
from harness.core import bits, iotlb, pagetable
from harness.core import layout as L


@njit(cache=True, inline="always")
def _psc(S, C, r, d, pfn):
    """An IOTLB miss consults walk-cache replica r from the lowest level up,
    counted in C; returns the level the page walk starts below."""
    C[L.C_IOTLB_MISSES] += 1
    levels = S.D[d, L.D_LEVELS]
    for level in range(2, levels + 1):
        if S.P[L.P_PSC_WAYS + level] == 0:
            continue
        if iotlb.psc_lookup(S, r, d, level, pfn):
            C[L.C_PSC_L2_HITS + 2 * (level - 2)] += 1
            return level
        C[L.C_PSC_L2_MISSES + 2 * (level - 2)] += 1
    return levels + 1


@njit(cache=True, inline="always")
def _walked(S, C, r, d, pfn, start, stop, leaf):
    """The page walk from start down to stop: its reads, the walk-cache
    entries it fills, a fault when it found no leaf."""
    C[L.C_WALK_READS] += max(1, start - stop)
    for level in range(stop + 1, start):
        iotlb.psc_fill(S, r, d, level, pfn)
    if leaf == 0:
        C[L.C_FAULTS] += 1


@njit(cache=True, inline="always")
def translate(S, d, pfn):
    S.C[L.C_LOOKUPS] += 1
    r = iotlb.lookup(S, d, pfn)
    if r:
        S.C[L.C_IOTLB_HITS] += 1
        if r == 2:
            S.C[L.C_STALE_HITS] += 1
        return
    if pfn > S.P[L.P_APERTURE_PFN]:  # beyond the address width: fault, no walk
        S.C[L.C_IOTLB_MISSES] += 1
        S.C[L.C_FAULTS] += 1
        return
    start = _psc(S, S.C, 0, d, pfn)
    stop, leaf = pagetable.walk(S, d, pfn)
    _walked(S, S.C, 0, d, pfn, start, stop, leaf)
    if leaf:
        iotlb.fill(S, d, pfn, leaf - 1)


@njit(cache=True, inline="always")
def _find(S, s, t, d):
    """Way of set s holding (tag t, domain d), or -1."""
    for w in range(S.tlb_tag.shape[1]):
        if S.tlb_tag[s, w] == t and S.tlb_dom[s, w] == d:
            return w
    return -1


@njit(cache=True, inline="always")
def _topmost_hole(S, s, above):
    """(Way of set s's topmost hole with a stamp over `above`, or -1; the
    number of places with a stamp over `above`). Branch-free, so it
    vectorises: the sets of a wide IOTLB are long."""
    k, top = 0, above
    for j in range(S.tlb_tag.shape[1]):
        sj = S.tlb_stamp[s, j]
        k += sj > above
        top = max(top, sj if S.tlb_tag[s, j] == -1 else above)
    if top == above:
        return -1, k
    for j in range(S.tlb_tag.shape[1]):
        if S.tlb_tag[s, j] == -1 and S.tlb_stamp[s, j] == top:
            return j, k
    return -1, k


@njit(cache=True, inline="always")
def _depth(S, s, w):
    """(Depth of way w in set s's recency order, the topmost hole above it or
    -1): places are ordered by stamp, holes keeping the stamp of the entry
    they replaced."""
    hole, k = _topmost_hole(S, s, S.tlb_stamp[s, w])
    return k, hole


@njit(cache=True, inline="always")
def _promote(S, s, w, hole):
    """Way w becomes most recent; a hole above it moves to its old place."""
    if hole >= 0:
        S.tlb_stamp[s, hole] = S.tlb_stamp[s, w]
    S.G[L.G_CLOCK] += 1
    S.tlb_stamp[s, w] = S.G[L.G_CLOCK]


@njit(cache=True, inline="always")
def _fill(S, d, pfn, o):
    """Every size that missed fills: into the topmost hole when one is within
    its ways, else over its least recently used entry; in the stamp order
    that is the topmost hole of the set, else its oldest entry."""
    s = (pfn >> o) & (S.tlb_tag.shape[0] - 1)
    w, _ = _topmost_hole(S, s, np.int64(-1))
    if w < 0:
        oldest = S.tlb_stamp[s, 0]
        for j in range(1, S.tlb_tag.shape[1]):
            oldest = min(oldest, S.tlb_stamp[s, j])
        w = 0
        while S.tlb_stamp[s, w] != oldest:
            w += 1
        iotlb._count(S, S.tlb_tag[s, w] & 63, -1)
    S.tlb_tag[s, w] = iotlb._tag(o, pfn)
    S.tlb_dom[s, w] = d
    S.tlb_stale[s, w] = 0
    S.G[L.G_CLOCK] += 1
    S.tlb_stamp[s, w] = S.G[L.G_CLOCK]
    iotlb._count(S, o, 1)


@njit(cache=True, inline="always")
def _any_size(S, lo, hi):
    """Does a size of the grid have more than lo and at most hi ways?"""
    for c in S.grid:
        if lo < c <= hi:
            return True
    return False


@njit(cache=True, inline="always")
def translate_sizes(S, d, pfn):
    """translate() for every size of S.grid; False when the sizes diverge."""
    S.C[L.C_LOOKUPS] += 1
    sets, width = S.tlb_tag.shape
    k1, o1, s1, h1 = width, 0, 0, -1  # the first page size found, probing smallest first
    w1 = -1
    nearest = width
    orders = S.G[L.G_IOTLB_ORDERS]
    while orders:
        o = bits.ffs0(orders)
        orders &= orders - 1
        s = (pfn >> o) & (sets - 1)
        w = _find(S, s, iotlb._tag(o, pfn), d)
        if w < 0:
            continue
        k, h = _depth(S, s, w)
        if k1 == width:
            k1, o1, s1, w1, h1 = k, o, s, w, h
        elif k < nearest and _any_size(S, k, nearest):
            return False  # a size would hit this page size and not the first found
        nearest = min(nearest, k)
    stale = k1 < width and S.tlb_stale[s1, w1] != 0
    leaf = -1  # no size missed
    for r in range(S.grid.shape[0]):
        if S.grid[r] > k1:
            S.CK[r, L.C_IOTLB_HITS] += 1
            if stale:
                S.CK[r, L.C_STALE_HITS] += 1
        elif pfn > S.P[L.P_APERTURE_PFN]:
            S.CK[r, L.C_IOTLB_MISSES] += 1
            S.CK[r, L.C_FAULTS] += 1
            leaf = 0
        else:
            start = _psc(S, S.CK[r], r, d, pfn)
            if leaf < 0:  # one walk serves every size: the tables are shared
                stop, leaf = pagetable.walk(S, d, pfn)
            _walked(S, S.CK[r], r, d, pfn, start, stop, leaf)
    if k1 < width:
        if leaf >= 0 and (stale or leaf - 1 != o1):
            return False  # the sizes that missed do not refill the entry the others hit
        _promote(S, s1, w1, h1)
    elif leaf > 0:
        _fill(S, d, pfn, leaf - 1)
    return True
