"""Device-side translation of one 4 KiB page: IOTLB, walk caches, page walk.

translate() is one hardware model's lookup. translate_sizes() answers it for
every IOTLB size of a one-pass size sweep at once (S.grid: ways per size,
ascending, one set count). LRU is a stack algorithm (Mattson, Gecsei, Slutz
and Traiger, "Evaluation techniques for storage hierarchies", IBM Systems
Journal 9(2), 1970): a set of c ways holds the c most recently used entries
that map to it. So each set keeps its entries in one recency order, as wide
as the widest size: the ways of tlb_tag/tlb_dom/tlb_stale are places, newest
first, tlb_used[set] of them filled so far. An entry at depth k hits in
every size with more than k ways; tlb_depth counts lookups by the depth of
the entry they found (stale or not), so a size's hits are a prefix sum.

Invalidated entries leave holes in place (tag -1, counted in tlb_holes): a
size whose ways reach a hole has a free way there. Hence the update: a fill,
in every size that missed, takes a free way if it has one and else evicts
its least recently used. In the order, the entry becomes newest and the
topmost hole, when there is one above the entry's old place (or anywhere,
for an entry not held), is used up: the places above it move down one, and
an entry that was held leaves the hole in its old place. The top c places
then hold what a separate c-way cache holds, for every c.

The walk caches see only their own size's misses, so each size has its own
replica of them (psc_* [size]) and counts its misses by walk outcome
(CW[size]: where its walk started and stopped, a fault), from which
size_counters() derives its misses, walk-cache hits and misses, walk reads
and faults; the domain core, page tables and invalidation commands are
shared.

One list cannot hold a lookup after which sizes disagree on the entry they
used: a larger size hits an entry whose PTE has since been cleared (stale,
its invalidation deferred) while a smaller one walks and faults, or sizes hit
different page sizes of the same address. translate_sizes() then returns
False and the caller runs those sizes separately.
"""

import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic

from harness.core.compiled import njit
from harness.core import bits, cache, iotlb, pagetable
from harness.core import layout as L


@njit(cache=True, inline="always")
def _walk_caches(S, d, levels, pfn, stop):
    """An IOTLB miss consults the walk caches from the lowest level up and
    the walk fills the levels it reads below the one that hit (stop: where
    the walk ends); returns the level the walk starts below. A level at a
    time, its key and row computed once for its lookup and its fill; the
    levels have rows of their own, so filling a level before the levels
    above are consulted changes no result. A level of 0 ways is never
    filled, so never hits; a level no fill has reached (G_PSC_LEVELS) holds
    nothing: a miss without a scan."""
    policy = S.P[L.P_PSC_POLICY]
    for level in range(2, levels + 1):
        ways = S.P[L.P_PSC_WAYS + level]
        key = pfn >> S.P[L.P_LVL_PSHIFT + level]
        row = iotlb._psc_row(S, level, key)
        if (S.G[L.G_PSC_LEVELS] >> level) & 1:
            if cache.lookup(S.psc_tag[0], S.psc_dom[0], S.psc_stamp[0], row, ways, key, d, S.G, policy) >= 0:
                return level
        if ways and level > stop:
            S.G[L.G_PSC_LEVELS] |= 1 << level
            cache.fill(S.psc_tag[0], S.psc_dom[0], S.psc_stamp[0], row, ways, key, d, S.G, policy)
    return levels + 1


@njit(cache=True, inline="always")
def count_walk(C, P, levels, start, stop, fault, n):
    """Counters of n IOTLB misses with one walk outcome: the walk caches
    consulted from level 2 up to start (a hit there when start <= levels),
    the walk's reads from start down to stop, a fault. levels 0: a miss
    beyond the address width, which faults without a walk."""
    C[L.C_IOTLB_MISSES] += n
    C[L.C_FAULTS] += n * fault
    if levels == 0:
        return
    for level in range(2, min(start, levels) + 1):
        if P[L.P_PSC_WAYS + level]:
            C[L.C_PSC_L2_HITS + 2 * (level - 2) + (level < start)] += n
    C[L.C_WALK_READS] += n * max(1, start - stop)


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
        count_walk(S.C, S.P, 0, 0, 0, 1, 1)
        return
    levels = S.D[d, L.D_LEVELS]
    stop, leaf = pagetable.walk(S, d, pfn)  # reads the tables only: before the walk caches or after
    start = _walk_caches(S, d, levels, pfn, stop)
    count_walk(S.C, S.P, levels, start, stop, np.int64(leaf == 0), 1)
    if leaf:
        iotlb.fill(S, d, pfn, leaf - 1)


@njit(cache=True, inline="always")
def _scan(S, s, t, d):
    """(Place of (tag t, domain d) in set s, its depth, or -1; the topmost
    hole above it or -1): the places are newest first, so a hit is most
    often near the top."""
    k = cache.find(S.tlb_tag, S.tlb_dom, s, S.tlb_used[s], t, d, 32)
    if k < 0:
        return -1, -1
    return k, (_first_hole(S, s, k) if S.tlb_holes[s] else -1)


@njit(cache=True, inline="always")
def _first_hole(S, s, n):
    """Depth of the topmost hole of set s above depth n, or -1."""
    for p in range(n):
        if S.tlb_tag[s, p] == -1:
            return p
    return -1


@njit(cache=True, inline="always")
def _shift(S, s, p):
    """Places 0..p-1 of set s move down one, over place p: a memmove of
    each array when the move is long (a fully associative list; on the build
    machine 939 places took 0.18 us against 0.4-0.9 way by way), else way
    by way, which is as fast for a few places as the call."""
    if p > 32:
        _move_down(S.tlb_tag, s, p)
        _move_down(S.tlb_dom, s, p)
        _move_down(S.tlb_stale, s, p)
        return
    for q in range(p, 0, -1):
        S.tlb_tag[s, q] = S.tlb_tag[s, q - 1]
        S.tlb_dom[s, q] = S.tlb_dom[s, q - 1]
        S.tlb_stale[s, q] = S.tlb_stale[s, q - 1]


@intrinsic
def _move_down(typingctx, a, s, p):
    """a[s, 1:p + 1] = a[s, :p] for a C-contiguous 2-D array: one memmove
    (numba's slice assignment copies an overlapping source to a new array
    first)."""
    if not (isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"):
        return None

    def codegen(context, builder, sig, args):
        aty = sig.args[0]
        arr = context.make_array(aty)(context, builder, args[0])
        shape, strides = cgutils.unpack_tuple(builder, arr.shape), cgutils.unpack_tuple(builder, arr.strides)
        at = [cgutils.get_item_pointer2(context, builder, arr.data, shape, strides, "C",
                                        [args[1], context.get_constant(types.intp, w)]) for w in (0, 1)]
        cgutils.raw_memmove(builder, at[1], at[0], args[2], context.get_abi_sizeof(context.get_data_type(aty.dtype)))
        return context.get_dummy_value()
    return types.none(a, types.int64, types.int64), codegen


@njit(cache=True, inline="always")
def _promote(S, s, k, hole):
    """The entry at depth k becomes the newest; the topmost hole above it
    (at depth `hole`) moves to its old place."""
    t, d, stale = S.tlb_tag[s, k], S.tlb_dom[s, k], S.tlb_stale[s, k]
    if hole >= 0:
        _shift(S, s, hole)
        S.tlb_tag[s, k] = -1
    else:
        _shift(S, s, k)
    S.tlb_tag[s, 0], S.tlb_dom[s, 0], S.tlb_stale[s, 0] = t, d, stale


@njit(cache=True, inline="always")
def _fill(S, d, pfn, o):
    """Every size that missed fills: into the topmost hole when one is within
    its ways, else over its least recently used entry. In the recency order
    that is the set's topmost hole, else a place not yet used (below every
    other), else the oldest place, an entry."""
    s = (pfn >> o) & (S.tlb_tag.shape[0] - 1)
    n = S.tlb_used[s]
    p = _first_hole(S, s, n) if S.tlb_holes[s] else -1
    if p >= 0:
        S.tlb_holes[s] -= 1
    elif n < S.tlb_tag.shape[1]:
        p = n
        S.tlb_used[s] = n + 1
    else:
        p = n - 1
        iotlb._count(S, S.tlb_tag[s, p] & 63, -1)
    _shift(S, s, p)
    S.tlb_tag[s, 0] = iotlb._tag(o, pfn)
    S.tlb_dom[s, 0] = d
    S.tlb_stale[s, 0] = 0
    iotlb._count(S, o, 1)


@njit(cache=True, inline="always")
def _psc_starts(S, m, d, levels, pfn, stop, code):
    """_walk_caches() of walk-cache replicas 0..m-1, whose sizes
    missed, counted in CW[r, code | start << 4]; a level at a time, its key
    and row computed once for the replicas that look it up and, as the walk
    fills the levels below its start, for the replicas that missed it.
    Replicas are independent (one pass refuses walk caches that draw random
    numbers), and so are a replica's levels (rows of their own): the order
    of their lookups and fills changes no result; a fill's stamp is newer
    than every stamp of its row either way. A level's G_PSC_LEVELS bit,
    tested before its fills, is the one translate() sees."""
    searching = (np.int64(1) << m) - 1
    policy = S.P[L.P_PSC_POLICY]
    for level in range(2, levels + 1):
        if searching == 0:
            break
        ways = S.P[L.P_PSC_WAYS + level]
        key = pfn >> S.P[L.P_LVL_PSHIFT + level]
        row = iotlb._psc_row(S, level, key)
        if (S.G[L.G_PSC_LEVELS] >> level) & 1:  # a replica holds an entry of this level
            left = searching
            while left:
                r = bits.ffs0(left)
                left &= left - 1
                if cache.lookup(S.psc_tag[r], S.psc_dom[r], S.psc_stamp[r], row, ways, key, d, S.G, policy) >= 0:
                    searching &= ~(np.int64(1) << r)
                    S.CW[r, code | level << 4] += 1
        if searching and ways and level > stop:  # the walks of the rest start above: they fill this level
            S.G[L.G_PSC_LEVELS] |= 1 << level
            left = searching
            while left:
                r = bits.ffs0(left)
                left &= left - 1
                cache.fill(S.psc_tag[r], S.psc_dom[r], S.psc_stamp[r], row, ways, key, d, S.G, policy)
    while searching:
        r = bits.ffs0(searching)
        searching &= searching - 1
        S.CW[r, code | (levels + 1) << 4] += 1


@njit(cache=True, inline="always")
def _any_size(S, lo, hi):
    """Does a size of the grid have more than lo and at most hi ways?"""
    for c in S.grid:
        if lo < c <= hi:
            return True
    return False


def size_counters(S):
    """Each size's counters beyond the shared ones (S.C): its hits, from the
    depths of the entries lookups found (tlb_depth), and its misses, from
    their walk outcomes (CW), counted as translate() counts one."""
    CK = np.zeros((S.grid.shape[0], S.C.shape[0]), np.int64)
    for r, c in enumerate(S.grid):
        CK[r, L.C_IOTLB_HITS] = S.tlb_depth[:, :c].sum()
        CK[r, L.C_STALE_HITS] = S.tlb_depth[1, :c].sum()
        for code in np.flatnonzero(S.CW[r]):
            count_walk(CK[r], S.P, code >> 7, (code >> 4) & 7, (code >> 1) & 7, code & 1, S.CW[r, code])
    return CK


@njit(cache=True, inline="always")
def translate_sizes(S, d, pfn):
    """translate() for every size of S.grid; False when the sizes diverge."""
    S.C[L.C_LOOKUPS] += 1
    sets, width = S.tlb_tag.shape
    k1, o1, s1, h1 = width, 0, 0, -1  # the first page size found, probing smallest first
    nearest = width
    orders = S.G[L.G_IOTLB_ORDERS]
    while orders:
        o = bits.ffs0(orders)
        orders &= orders - 1
        s = (pfn >> o) & (sets - 1)
        k, h = _scan(S, s, iotlb._tag(o, pfn), d)
        if k < 0:
            continue
        if k1 == width:
            k1, o1, s1, h1 = k, o, s, h
        elif k < nearest and _any_size(S, k, nearest):
            return False  # a size would hit this page size and not the first found
        nearest = min(nearest, k)
    stale = k1 < width and S.tlb_stale[s1, k1] != 0
    S.tlb_depth[np.int64(stale), k1] += 1  # a hit in every size with more than k1 ways
    # The sizes with at most k1 ways missed (the grid ascends). Each counts
    # its miss as a walk outcome, CW[size, code]: code = levels << 7 |
    # start << 4 | stop << 1 | fault (count_walk()); 1 is a fault beyond
    # the address width.
    m = 0
    for c in S.grid:  # no early exit, whose branch would depend on the depth
        m += c <= k1
    leaf = -1  # no size missed
    if m and pfn > S.P[L.P_APERTURE_PFN]:
        leaf = 0
        for r in range(m):
            S.CW[r, 1] += 1
    elif m:
        levels = S.D[d, L.D_LEVELS]
        stop, leaf = pagetable.walk(S, d, pfn)  # one walk serves every size: the tables are shared
        _psc_starts(S, m, d, levels, pfn, stop, levels << 7 | stop << 1 | np.int64(leaf == 0))
    if k1 < width:
        if leaf >= 0 and (stale or leaf - 1 != o1):
            return False  # the sizes that missed do not refill the entry the others hit
        _promote(S, s1, k1, h1)
    elif leaf > 0:
        _fill(S, d, pfn, leaf - 1)
    return True
