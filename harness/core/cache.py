"""Set-associative caches (IOTLB, walk caches) over numpy arrays.

A cache is (tag[rows, ways], dom[rows, ways], stamp[rows, ways + 2]), a row
per set (the walk caches of all levels share arrays, each level its rows): an
entry matches on tag and domain id; tag -1 is an invalid way;
stamp orders ways by last use (LRU) or by fill (round-robin). A fill takes the
lowest invalid way, else the victim of the replacement policy: least recently
used, oldest fill, or a seeded random way. Set index: low bits of the page
number.

A row's newest stamp is held back in its last two columns (way, stamp) and
written to its way at the row's next lookup hit or fill, so a hit stores at an
address known before the tag compares end. Stored at once, to the way the
compares select, the store held up the loads after it: on the build machine
(AMD EPYC, KVM) a bare 8-way hit loop ran at 56 M lookups/s stamping the way
hit, 113 stamping a fixed way and 87-99 with the stamp held back.
"""

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from harness.core.compiled import njit
from harness.core import bits
from harness.core import layout as L
from harness.core.pages import splitmix64


@njit(cache=True, inline="always")
def find(tag, dom, s, ways, t, d, first=0):
    """Lowest way holding (tag t, domain d) in row s (ways wide), or -1. A
    row of a few ways is compared without an early exit, whose branch a hit
    at a varying way would mispredict: 8 ways at a time in one vector
    compare (_match8) when the array is that wide, else a select per way,
    downwards. A wide row (a fully associative cache) is compared 8 ways at
    a time, with an early exit, for its first `first` ways rounded up to 8
    (where a recency-ordered row most often hits), then 64 ways at a time:
    on the build machine a 4,096-way miss took 0.35 us against 0.9 way by
    way. A row of more than 16 ways reads its domains only where a tag
    matched (_tag_first)."""
    width = tag.shape[1]
    if ways <= 8 <= width:
        m = _match8(tag, dom, s, 0, t, d) & ((1 << ways) - 1)
        return bits.ffs0(m) if m else -1
    if 8 < ways <= 16 <= width:
        m = (_match8(tag, dom, s, 0, t, d) | _match8(tag, dom, s, 8, t, d) << 8) & ((1 << ways) - 1)
        return bits.ffs0(m) if m else -1
    hit = -1
    if ways <= 16:
        for w in range(ways - 1, -1, -1):
            hit = w if (tag[s, w] == t) & (dom[s, w] == d) else hit
        return hit
    lo = 0
    while lo < min(first, ways) and lo + 8 <= width:
        m = _tag_first(tag, dom, s, lo, min(8, ways - lo), t, d, True)
        if m:
            return lo + bits.ffs0(m)
        lo += 8
    while ways - lo > 64:
        m = _tag_first(tag, dom, s, lo, 64, t, d, False)
        if m:
            return lo + bits.ffs0(m)
        lo += 64
    m = _tag_first(tag, dom, s, lo, ways - lo, t, d, False)
    return lo + bits.ffs0(m) if m else -1


@njit(cache=True, inline="always")
def _tag_first(tag, dom, s, lo, n, t, d, eight):
    """_matches() (_match8() when eight, n <= 8) comparing the tags first
    and the domains only when a tag matched: a scan past ways that do not
    hold the tag reads half the bytes. One-pass 9-size sweeps over
    vfio-guest took 1-3% less, within the spread of single rounds (medians
    of two sets of 3 interleaved rounds: 0.156 to 0.152-0.153 s at 64 sets,
    0.670-0.695 to 0.650-0.680 s fully associative). Comparing the tags
    with themselves is a tag-only compare: LLVM loads them once."""
    if eight:
        m = _match8(tag, tag, s, lo, t, t) & ((1 << n) - 1)
        return m & _match8(tag, dom, s, lo, t, d) if m else 0
    m = _matches(tag, tag, s, lo, n, t, t)
    return m & _matches(tag, dom, s, lo, n, t, d) if m else 0


@njit(cache=True, inline="always")
def _matches(tag, dom, s, lo, n, t, d):
    """Bit w set when way lo + w of row s holds (tag t, domain d), w < n <= 64;
    branch-free, which LLVM compiles to vector compares (AVX-512 on the build
    machine)."""
    m = 0
    for w in range(n):
        m |= np.int64((tag[s, lo + w] == t) & (dom[s, lo + w] == d)) << w
    return m


@intrinsic
def _match8(typingctx, tag, dom, s, w, t, d):
    """Bit i set when way w + i of row s holds (tag t, domain d), i < 8: one
    <8 x i64> compare of each array (C-contiguous int64, rows at least
    w + 8 wide). LLVM did not turn the compares of find()'s select loop into
    vector compares; on the build machine a bare 8-way hit loop ran at 69 M
    lookups/s with this against 60 with the selects. With the held-back
    stamps, a 9-size one-pass sweep over vfio-guest (64 sets) took 0.20 s
    against 0.225 s."""
    def is_rows(a):
        return isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C" and a.dtype == types.int64
    if not (is_rows(tag) and is_rows(dom)):
        return None

    def codegen(context, builder, sig, args):
        vec = ir.VectorType(ir.IntType(64), 8)
        tagv, domv, row, way, tv, dv = args

        def load(aty, aval):
            a = context.make_array(aty)(context, builder, aval)
            ptr = cgutils.get_item_pointer2(context, builder, a.data, cgutils.unpack_tuple(builder, a.shape),
                                            cgutils.unpack_tuple(builder, a.strides), aty.layout, [row, way])
            return builder.load(builder.bitcast(ptr, vec.as_pointer()), align=8)

        def splat(x):
            one = builder.insert_element(ir.Constant(vec, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                          ir.Constant(ir.VectorType(ir.IntType(32), 8), [0] * 8))
        both = builder.and_(builder.icmp_signed("==", load(sig.args[0], tagv), splat(tv)),
                            builder.icmp_signed("==", load(sig.args[1], domv), splat(dv)))
        return builder.zext(builder.bitcast(both, ir.IntType(8)), ir.IntType(64))
    return types.int64(tag, dom, types.int64, types.int64, types.int64, types.int64), codegen


@njit(cache=True, inline="always")
def settle(stamp, s):
    """Write row s's held-back stamp to its way."""
    p = stamp.shape[1] - 2
    stamp[s, stamp[s, p]] = stamp[s, p + 1]


@njit(cache=True, inline="always")
def touch(stamp, s, w, clock):
    """Stamp way w of row s with clock: the row's held-back stamp goes to its
    way and this one is held back in its place."""
    settle(stamp, s)
    p = stamp.shape[1] - 2
    stamp[s, p] = w
    stamp[s, p + 1] = clock


@njit(cache=True, inline="always")
def lookup(tag, dom, stamp, s, ways, t, d, G, policy):
    """find(); LRU stamps the way it found as most recent."""
    hit = find(tag, dom, s, ways, t, d)
    if hit >= 0 and policy == L.POLICY_LRU:
        G[L.G_CLOCK] += 1
        touch(stamp, s, hit, G[L.G_CLOCK])
    return hit


@njit(cache=True, inline="always")
def fill(tag, dom, stamp, s, ways, t, d, G, policy):
    """Insert (tag t, domain d) into row s (ways wide); returns (way, evicted
    tag or -1)."""
    settle(stamp, s)  # the victim search reads every stamp
    victim = find(tag, tag, s, ways, -1, -1)  # the lowest invalid way
    if victim < 0:  # a full row (a lazy micro-TLB full of stale entries): the oldest, without branches
        victim, oldest = 0, stamp[s, 0]
        for w in range(1, ways):
            older = stamp[s, w] < oldest
            victim = w if older else victim
            oldest = stamp[s, w] if older else oldest
    if policy == L.POLICY_RANDOM and tag[s, victim] != -1:
        victim = np.int64(splitmix64(G, L.G_CACHE_RNG) % np.uint64(ways))
    evicted = tag[s, victim]
    tag[s, victim] = t
    dom[s, victim] = d
    G[L.G_CLOCK] += 1
    touch(stamp, s, victim, G[L.G_CLOCK])
    return victim, evicted
