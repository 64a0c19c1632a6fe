"""I/O page tables: 512-entry tables of 8-byte entries, 4/2M/1G leaves.

Follows drivers/iommu/intel/iommu.c (v6.12): pfn_to_dma_pte() allocates
missing tables with the caller's gfp; __domain_mapping() writes PTEs and, for
superpages, switch_to_super_page() frees tables already under the range (at
once, then flushes the range with IH=0); intel_iommu_unmap() widens the size
to a superpage and dma_pte_clear_level() clears PTEs, listing on the gather
freelist only tables an unmap covers entirely. Page sizes per chunk come from
iommu_pgsize() (drivers/iommu/iommu.c).

Model encoding: pt[t, i] is 0 (not present), -1 (leaf), or the slot of the
next-level table. Slot 0 is never used.
"""

from numba import njit

from harness.core import bits
from harness.core import layout as L
from harness.core import pages
from harness.vendors import vtd


@njit(cache=True, inline="always")
def _idx(pfn, level):
    return (pfn >> (9 * (level - 1))) & 511


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
def _descend(S, d, pfn, target, gfp, charge):
    """pfn_to_dma_pte() with a target level: the table holding pfn's entry at
    that level, allocating missing tables; -1 if a superpage is in the way,
    -2 if an allocation fails (a charge over the memory-cgroup limit, or a
    GFP_ATOMIC page under memory pressure)."""
    t = S.D[d, L.D_ROOT]
    for level in range(S.P[L.P_LEVELS], target, -1):
        i = _idx(pfn, level)
        e = S.pt[t, i]
        if e == -1:
            return -1
        if e == 0:
            if charge and S.P[L.P_MEMCG_LIMIT] and S.G[L.G_CHARGED] + 4096 > S.P[L.P_MEMCG_LIMIT]:
                return -2
            if gfp == L.GFP_ATOMIC and S.P[L.P_MEM_FREE] and pages.atomic_fails(S):
                S.C[L.C_GFP_ATOMIC_FAILURES] += 1
                return -2
            e = pages.alloc(S, gfp, charge)
            S.pt[t, i] = e
        t = e
    return t


@njit(cache=True)
def _release_subtree(S, t, level, fl, defer, base):
    """Release table t (at level) and every table under it: onto freelist fl
    (dma_pte_list_pagetables) or at once (iommu_free_page). Returns the count.
    A loop over frames in S.stack from row base: numba cannot reliably cache
    recursive functions."""
    st = S.stack
    st[base, 0], st[base, 1], st[base, 2] = level, t, 0
    sp = base + 1
    n = 0
    while sp > base:
        lv, tt, i = st[sp - 1, 0], st[sp - 1, 1], st[sp - 1, 2]
        if lv == 1 or i == 512:
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
    lvl_pages = 1 << (9 * (level - 1))
    t = -1
    while start_pfn <= end_pfn:
        if t == -1:
            t = _descend(S, d, start_pfn, level, L.GFP_ATOMIC, 0)
            if t < 0:
                return
        i = _idx(start_pfn, level)
        e = S.pt[t, i]
        if e != 0:
            if e > 0:
                S.C[L.C_SUPERPAGE_SWITCHES] += _release_subtree(S, e, level - 1, S.gather[3:5], False, 0)
            S.pt[t, i] = 0
            vtd.flush_range(S, d, start_pfn << 12, end_pfn << 12, 0)
        start_pfn += lvl_pages
        if i == 511:
            t = -1


@njit(cache=True, inline="always")
def _domain_mapping(S, d, pfn, nr, level, gfp, charge):
    """__domain_mapping() for nr 4 KiB pages mapped with pages of `level`;
    returns False on -ENOMEM (PTEs already written stay, as in the kernel)."""
    lvl_pages = 1 << (9 * (level - 1))
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
                # pages_to_remove: up to the end of this table page
                left = (512 - _idx(pfn, level)) * lvl_pages
                _switch_to_super_page(S, d, pfn, pfn + min(nr, left) - 1, level)
        i = _idx(pfn, level)
        if S.pt[t, i] != 0:
            S.C[L.C_MAP_OVERLAPS] += lvl_pages
        else:
            S.pt[t, i] = -1
        pfn += lvl_pages
        nr -= lvl_pages
        if i == 511:
            t = -1
    return True


@njit(cache=True, inline="always")
def iommu_map(S, d, iova, paddr, size, gfp, charge):
    """__iommu_map(): split into iommu_pgsize() chunks, map each. Returns the
    bytes of the chunks mapped before a failure, or -1 when all succeeded (the
    caller then unmaps those bytes: iommu_map() does on error)."""
    bitmap = S.P[L.P_PGSIZE_BITMAP]
    done = 0
    while size:
        pgsize, count = iommu_pgsize(bitmap, iova, paddr, size)
        level = 1 + (bits.ffs0(pgsize) - 12) // 9
        chunk = pgsize * count
        if not _domain_mapping(S, d, iova >> 12, chunk >> 12, level, gfp, charge):
            return done
        iova += chunk
        paddr += chunk
        size -= chunk
        done += chunk
    return -1


@njit(cache=True, inline="always")
def _clear_range(S, d, start_pfn, last_pfn, fl):
    """dma_pte_clear_level() from the root, as a loop over a frame stack
    (level, table, pfn, index) visiting entries in the kernel's order."""
    top = S.P[L.P_LEVELS]
    if last_pfn - start_pfn < 511 and start_pfn >> 9 == last_pfn >> 9:
        # Within one leaf table and covering no whole entry above level 1: the
        # walk below only clears level-1 PTEs (a superpage or hole clears nothing).
        t = S.D[d, L.D_ROOT]
        for level in range(top, 1, -1):
            t = S.pt[t, _idx(start_pfn, level)]
            if t <= 0:
                return
        S.pt[t, start_pfn & 511:(last_pfn & 511) + 1] = 0
        return
    st = S.stack
    st[0, 0], st[0, 1], st[0, 2], st[0, 3] = top, S.D[d, L.D_ROOT], start_pfn, _idx(start_pfn, top)
    sp = 1
    while sp:
        level, t, pfn, i = st[sp - 1, 0], st[sp - 1, 1], st[sp - 1, 2], st[sp - 1, 3]
        if i == 512 or pfn > last_pfn:
            sp -= 1
            continue
        span = 1 << (9 * (level - 1))
        level_pfn = pfn & ~(span - 1)
        st[sp - 1, 2] = level_pfn + span
        st[sp - 1, 3] = i + 1
        e = S.pt[t, i]
        if e == 0:
            continue
        if start_pfn <= level_pfn and last_pfn >= level_pfn + span - 1:
            if level > 1 and e > 0:
                _release_subtree(S, e, level - 1, fl, True, sp)
            S.pt[t, i] = 0
        elif level > 1 and e > 0:
            child = max(start_pfn, level_pfn)
            st[sp, 0], st[sp, 1], st[sp, 2], st[sp, 3] = level - 1, e, child, _idx(child, level - 1)
            sp += 1


@njit(cache=True, inline="always")
def leaf_level(S, d, pfn):
    """pfn_to_dma_pte() with target level 0: level where the walk stops (a leaf,
    a superpage or a non-present entry)."""
    t = S.D[d, L.D_ROOT]
    for level in range(S.P[L.P_LEVELS], 0, -1):
        e = S.pt[t, _idx(pfn, level)]
        if e <= 0:
            return level
        t = e
    return 1


@njit(cache=True, inline="always")
def intel_unmap(S, d, iova, size, fl):
    """intel_iommu_unmap(): returns the (possibly widened) size unmapped."""
    level = leaf_level(S, d, iova >> 12)
    lsize = 4096 << (9 * (level - 1))
    if size < lsize:
        size = lsize
    _clear_range(S, d, iova >> 12, (iova + size - 1) >> 12, fl)
    return size


@njit(cache=True, inline="always")
def walk(S, d, va):
    """Hardware page walk: (stop level, leaf level or 0 when not present)."""
    t = S.D[d, L.D_ROOT]
    pfn = va >> 12
    for level in range(S.P[L.P_LEVELS], 0, -1):
        e = S.pt[t, _idx(pfn, level)]
        if e == 0:
            return level, 0
        if e == -1:
            return level, level
        t = e
    return 1, 0
