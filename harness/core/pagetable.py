"""I/O page tables: radix trees whose geometry comes from the model.

Each level has an entry span (P_LVL_PSHIFT, in 4 KiB pages) and a table size
(P_LVL_ENTRIES entries of 8 bytes; s390 page tables have 256, SMMUv3 64K-granule
tables 8192). A page of size 2^k is a leaf at the highest level whose entry
span does not exceed it, written into 2^k / span consecutive entries (AMD v1
encodes sizes between levels with replicated PTEs, io_pgtable.c
PAGE_SIZE_PTE_COUNT; every other format has count 1).

Map and unmap follow drivers/iommu/intel/iommu.c (v6.12): pfn_to_dma_pte()
allocates missing tables with the caller's gfp; __domain_mapping() writes PTEs
and, for superpages, switch_to_super_page() removes tables already under the
range; intel_iommu_unmap() widens the size to the leaf found and
dma_pte_clear_level() clears PTEs. What an unmap does with a table it empties
is the format's (P_PT_UNMAP): VT-d lists covered tables on the gather freelist;
AMD (io_pgtable.c iommu_v1_unmap_pages) and s390 (s390-iommu.c
s390_iommu_unmap_pages) only clear PTEs and keep tables until the domain dies;
io-pgtable-arm (__arm_lpae_unmap) invalidates walk caches for the table's span
(io_pgtable_tlb_flush_walk) and frees it at once. Page sizes per chunk come
from iommu_pgsize() (drivers/iommu/iommu.c).

Model encoding: pt[t, i] is 0 (not present), -(order + 1) for a leaf of 2^order
4 KiB pages, or the slot of the next-level table. Slot 0 is never used.

Level-1 tables that walks reached are remembered (G_L1_KEY, G_L1_TABLE: a
direct-mapped memo of L1_MEMO tables), so later walks of a map, an access or
an unmap in the same table skip the upper levels. Tables stay where they are
until a slot is released (pages._release_slot), which forgets them all: an
entry above a level-1 table changes only when that table goes. It saves the
simulator work; what a walk counts is the model's and does not change.
"""

from harness.core.compiled import njit
from harness.core import bits
from harness.core import layout as L
from harness.core import pages
from harness.vendors import hw


@njit(cache=True, inline="always")
def _idx(S, pfn, level):
    return (pfn >> S.P[L.P_LVL_PSHIFT + level]) & (S.P[L.P_LVL_ENTRIES + level] - 1)


@njit(cache=True, inline="always")
def span(S, level):
    """4 KiB pages one entry at this level maps."""
    return 1 << S.P[L.P_LVL_PSHIFT + level]


@njit(cache=True, inline="always")
def page_level(S, order):
    """Level holding a leaf of 2^order 4 KiB pages."""
    level = 1
    while level < S.P[L.P_LEVELS] and S.P[L.P_LVL_PSHIFT + level + 1] <= order:
        level += 1
    return level


@njit(cache=True, inline="always")
def iommu_pgsize(bitmap, iova, paddr, size):
    """iommu_pgsize(): (page size, count) for the next chunk of a map/unmap."""
    addr_merge = iova | paddr
    pgsizes = bitmap & ((2 << bits.fls0(size)) - 1)
    if addr_merge:
        pgsizes &= (2 << bits.ffs0(addr_merge)) - 1
    idx = bits.fls0(pgsizes)
    pgsize = 1 << idx
    bigger = bitmap & ~((2 << idx) - 1)
    if bigger:
        nxt = 1 << bits.ffs0(bigger)
        if not ((iova ^ paddr) & (nxt - 1)):
            offset = nxt - (addr_merge & (nxt - 1))
            if offset + nxt <= size:
                size = offset
    return pgsize, size >> idx


@njit(cache=True, inline="always")
def _l1_key(S, d, pfn):
    """(Key of the level-1 table holding pfn's PTE in domain d (never 0), its
    place in the memo)."""
    k = pfn >> S.P[L.P_LVL_PSHIFT + 2]
    return ((d << 44) | k) + 1, (k + d) & (L.L1_MEMO - 1)


@njit(cache=True, inline="always")
def _remembered(S, d, pfn):
    """The remembered level-1 table holding pfn's PTE, or -1."""
    key, k = _l1_key(S, d, pfn)
    return S.G[L.G_L1_TABLE + k] if S.G[L.G_L1_KEY + k] == key else -1


@njit(cache=True, inline="always")
def _remember(S, d, pfn, t):
    key, k = _l1_key(S, d, pfn)
    S.G[L.G_L1_KEY + k] = key
    S.G[L.G_L1_TABLE + k] = t
    S.G[L.G_L1_USED] = 1


@njit(cache=True, inline="always")
def _descend(S, d, pfn, target, gfp, charge):
    """pfn_to_dma_pte() with a target level: the table holding pfn's entry at
    that level, allocating missing tables; -1 if a leaf is in the way, -2 if
    an allocation fails (a charge over the memory-cgroup limit, or a GFP_ATOMIC
    table under memory pressure)."""
    if target == 1:
        t = _remembered(S, d, pfn)
        if t >= 0:
            return t
    t = S.D[d, L.D_ROOT]
    for level in range(S.D[d, L.D_LEVELS], target, -1):
        i = _idx(S, pfn, level)
        e = S.pt[t, i]
        if e < 0:
            return -1
        if e == 0:
            size = S.P[L.P_LVL_BYTES + level - 1]
            if charge and S.P[L.P_MEMCG_LIMIT] and S.G[L.G_CHARGED] + size > S.P[L.P_MEMCG_LIMIT]:
                return -2
            if gfp == L.GFP_ATOMIC and S.P[L.P_MEM_FREE] and pages.atomic_fails(S, size):
                S.C[L.C_GFP_ATOMIC_FAILURES] += 1
                return -2
            e = pages.alloc(S, gfp, charge, level - 1)
            S.pt[t, i] = e
        if level == 2:
            _remember(S, d, pfn, e)
        t = e
    return t


@njit(cache=True)
def _release_subtree(S, t, level, fl, defer, base):
    """Release table t (at level) and every table under it: onto freelist fl
    (dma_pte_list_pagetables) or at once (iommu_free_pages). Returns the count.
    A loop over frames in S.stack from row base: numba cannot reliably cache
    recursive functions."""
    st = S.stack
    st[base, 0], st[base, 1], st[base, 2] = level, t, 0
    sp = base + 1
    n = 0
    while sp > base:
        lv, tt, i = st[sp - 1, 0], st[sp - 1, 1], st[sp - 1, 2]
        if lv == 1 or i == S.P[L.P_LVL_ENTRIES + lv]:
            sp -= 1
            n += 1
            if defer:
                pages.defer(S, tt, fl)
            else:
                pages.free_now(S, tt)
            continue
        st[sp - 1, 2] = i + 1
        e = S.pt[tt, i]
        if e > 0:
            st[sp, 0], st[sp, 1], st[sp, 2] = lv - 1, e, 0
            sp += 1
    return n


@njit(cache=True)
def _switch_to_super_page(S, d, start_pfn, end_pfn, level):
    """Remove what lies under a new superpage. VT-d switch_to_super_page():
    free the tables at once, then flush [start, end] with IH=0. AMD
    (io_pgtable.c alloc_pte -> free_clear_pte): tables onto the map freelist,
    flushed once the map is done. io-pgtable-arm (arm_lpae_init_pte ->
    __arm_lpae_unmap): walk invalidation of the entry's span, then free."""
    fam = S.P[L.P_FAMILY]
    map_fl = S.gather[L.GA_MAP_FL:L.GA_MAP_FL + 3]
    lvl_pages = span(S, level)
    t = -1
    while start_pfn <= end_pfn:
        if t == -1:
            t = _descend(S, d, start_pfn, level, L.GFP_ATOMIC, 0)
            if t < 0:
                return
        i = _idx(S, start_pfn, level)
        e = S.pt[t, i]
        # io-pgtable-arm refuses a leaf in the way (arm_lpae_init_pte: -EEXIST):
        # it stays, and the map counts an overlap
        if e != 0 and not (fam == L.FAMILY_SMMUV3 and e < 0):
            if fam == L.FAMILY_SMMUV3:
                hw.flush_walk(S, d, start_pfn << 12, ((start_pfn + lvl_pages) << 12) - 1)
            if e > 0:  # AMD lists the tables on the map freelist; the others free them at once
                S.C[L.C_SUPERPAGE_SWITCHES] += _release_subtree(S, e, level - 1, map_fl,
                                                                fam == L.FAMILY_AMDVI, 0)
            if fam == L.FAMILY_AMDVI:
                S.gather[L.GA_MAP_UPDATED] = 1  # free_clear_pte of a present entry: flush after the map
            elif fam != L.FAMILY_SMMUV3:
                hw.flush_range(S, d, start_pfn << 12, end_pfn << 12, 4096, True)
            S.pt[t, i] = 0
        start_pfn += lvl_pages
        if i == S.P[L.P_LVL_ENTRIES + level] - 1:
            t = -1


@njit(cache=True, inline="always")
def _domain_mapping(S, d, pfn, nr, order, gfp, charge):
    """__domain_mapping() for nr 4 KiB pages mapped with pages of 2^order;
    returns False on -ENOMEM (PTEs already written stay, as in the kernel)."""
    level = page_level(S, order)
    lvl_pages = span(S, level)
    leaf = -(order + 1)
    last = S.P[L.P_LVL_ENTRIES + level] - 1
    t = -1
    while nr > 0:
        if t == -1:
            t = _descend(S, d, pfn, level, gfp, charge)
            if t == -2:
                return False
            if t == -1:
                S.C[L.C_MAP_OVERLAPS] += lvl_pages
                pfn += lvl_pages
                nr -= lvl_pages
                continue
            if level > 1:
                # pages_to_remove: up to the end of this table
                left = (last + 1 - _idx(S, pfn, level)) * lvl_pages
                _switch_to_super_page(S, d, pfn, pfn + min(nr, left) - 1, level)
        i = _idx(S, pfn, level)
        if S.pt[t, i] != 0:
            S.C[L.C_MAP_OVERLAPS] += lvl_pages
        else:
            S.pt[t, i] = leaf
        pfn += lvl_pages
        nr -= lvl_pages
        if i == last:
            t = -1
    return True


@njit(cache=True, inline="always")
def iommu_map(S, d, iova, paddr, size, gfp, charge):
    """__iommu_map(): split into iommu_pgsize() chunks, map each. Returns the
    bytes of the chunks mapped before a failure, or -1 when all succeeded (the
    caller then unmaps those bytes: iommu_map() does on error)."""
    bitmap = S.P[L.P_PGSIZE_BITMAP]
    done = 0
    top = S.D[d, L.D_LEVELS]
    last_pfn = (iova + size - 1) >> 12
    if last_pfn >> S.P[L.P_LVL_PSHIFT + top] >= S.P[L.P_LVL_ENTRIES + top]:
        if not _grow(S, d, last_pfn, gfp, charge):  # the call only when the table must grow
            return 0
    while size:
        pgsize, count = iommu_pgsize(bitmap, iova, paddr, size)
        chunk = pgsize * count
        ok = _domain_mapping(S, d, iova >> 12, chunk >> 12, bits.ffs0(pgsize) - 12, gfp, charge)
        if S.gather[L.GA_MAP_UPDATED]:
            _amd_map_flush(S, d, iova, chunk)
        if not ok:
            return done
        iova += chunk
        paddr += chunk
        size -= chunk
        done += chunk
    return -1


@njit(cache=True)
def _grow(S, d, last_pfn, gfp, charge):
    """AMD v1 increase_address_space(): while the domain's levels do not reach
    last_pfn, a new root one level up takes the old root as entry 0, and the
    device table is updated and flushed. False when the allocation fails. The
    kernel grows page by page inside alloc_pte(); growing for the whole range
    first differs only when an allocation fails part-way."""
    while S.D[d, L.D_LEVELS] < S.P[L.P_LEVELS]:
        top = S.D[d, L.D_LEVELS]
        if last_pfn >> S.P[L.P_LVL_PSHIFT + top] < S.P[L.P_LVL_ENTRIES + top]:
            return True
        size = S.P[L.P_LVL_BYTES + top + 1]
        if charge and S.P[L.P_MEMCG_LIMIT] and S.G[L.G_CHARGED] + size > S.P[L.P_MEMCG_LIMIT]:
            return False
        if gfp == L.GFP_ATOMIC and S.P[L.P_MEM_FREE] and pages.atomic_fails(S, size):
            S.C[L.C_GFP_ATOMIC_FAILURES] += 1
            return False
        root = pages.alloc(S, gfp, charge, top + 1)
        S.pt[root, 0] = S.D[d, L.D_ROOT]
        S.D[d, L.D_ROOT] = root
        S.D[d, L.D_LEVELS] = top + 1
        hw.device_table_flush(S)
    return True


@njit(cache=True)
def _amd_map_flush(S, d, iova, size):
    """iommu_v1_map_pages(): a map that replaced PTEs flushes its range, then
    frees the replaced tables."""
    S.gather[L.GA_MAP_UPDATED] = 0
    hw.flush_range(S, d, iova, iova + size - 1, 4096, True)
    pages.put_list(S, S.gather[L.GA_MAP_FL:L.GA_MAP_FL + 3])
    for k in range(L.GA_MAP_FL, L.GA_MAP_FL + 3):
        S.gather[k] = 0


@njit(cache=True, inline="always")
def _clear_range(S, d, start_pfn, last_pfn, fl):
    """dma_pte_clear_level() from the root, as a loop over a frame stack
    (level, table, pfn, index) visiting entries in the kernel's order; what
    happens to a table the range covers is the format's (P_PT_UNMAP)."""
    top = S.D[d, L.D_LEVELS]
    policy = S.P[L.P_PT_UNMAP]
    st = S.stack
    st[0, 0], st[0, 1], st[0, 2], st[0, 3] = top, S.D[d, L.D_ROOT], start_pfn, _idx(S, start_pfn, top)
    sp = 1
    while sp:
        level, t, pfn, i = st[sp - 1, 0], st[sp - 1, 1], st[sp - 1, 2], st[sp - 1, 3]
        if i == S.P[L.P_LVL_ENTRIES + level] or pfn > last_pfn:
            sp -= 1
            continue
        span_ = span(S, level)
        level_pfn = pfn & ~(span_ - 1)
        st[sp - 1, 2] = level_pfn + span_
        st[sp - 1, 3] = i + 1
        e = S.pt[t, i]
        if e == 0:
            continue
        covered = start_pfn <= level_pfn and last_pfn >= level_pfn + span_ - 1
        if covered and (e < 0 or policy != L.PT_UNMAP_KEEP):
            if e > 0:
                if policy == L.PT_UNMAP_WALK:
                    hw.flush_walk(S, d, level_pfn << 12, ((level_pfn + span_) << 12) - 1)
                _release_subtree(S, e, level - 1, fl, policy == L.PT_UNMAP_FREELIST, sp)
            S.pt[t, i] = 0
        elif e > 0:
            child = max(start_pfn, level_pfn)
            st[sp, 0], st[sp, 1], st[sp, 2], st[sp, 3] = level - 1, e, child, _idx(S, child, level - 1)
            sp += 1


@njit(cache=True, inline="always")
def unmap_pages(S, d, iova, size, fl):
    """intel_iommu_unmap() (and iommu_v1_unmap_pages: a page is unmapped
    whole): returns the (possibly widened) size unmapped. The size widens to
    the entry where pfn_to_dma_pte() with target level 0 stops (a leaf's
    page, or the span of a non-present entry)."""
    pfn = iova >> 12
    lpages, stop = 1, 1
    t = _remembered(S, d, pfn)
    if t >= 0:
        e = S.pt[t, _idx(S, pfn, 1)]
        lpages = 1 << (-e - 1) if e < 0 else span(S, 1)
    else:
        t = S.D[d, L.D_ROOT]
        for level in range(S.D[d, L.D_LEVELS], 0, -1):
            e = S.pt[t, _idx(S, pfn, level)]
            if e <= 0:
                lpages = 1 << (-e - 1) if e < 0 else span(S, level)
                stop = level
                break
            if level == 2:
                _remember(S, d, pfn, e)
            t = e
    size = max(size, lpages << 12)
    last = (iova + size - 1) >> 12
    tspan = S.P[L.P_LVL_PSHIFT + 2]
    if stop == 1 and last - pfn < (1 << tspan) - 1 and pfn >> tspan == last >> tspan:
        # within one level-1 table, covering no whole entry above level 1:
        # only level-1 PTEs are cleared, in the table the walk reached
        S.pt[t, _idx(S, pfn, 1):_idx(S, last, 1) + 1] = 0
    else:
        _clear_range(S, d, pfn, last, fl)
    return size


@njit(cache=True, inline="always")
def walk(S, d, pfn):
    """Hardware page walk: (stop level, leaf order + 1, or 0 when not present
    or beyond what the domain's levels translate)."""
    t = _remembered(S, d, pfn)
    if t >= 0:  # remembered tables lie within reach; level-1 entries are leaves or absent
        e = S.pt[t, _idx(S, pfn, 1)]
        return 1, -e if e < 0 else 0
    top = S.D[d, L.D_LEVELS]
    if pfn >> S.P[L.P_LVL_PSHIFT + top] >= S.P[L.P_LVL_ENTRIES + top]:
        return top, 0
    t = S.D[d, L.D_ROOT]
    for level in range(top, 0, -1):
        e = S.pt[t, _idx(S, pfn, level)]
        if e == 0:
            return level, 0
        if e < 0:
            return level, -e
        if level == 2:
            _remember(S, d, pfn, e)
        t = e
    return 1, 0
