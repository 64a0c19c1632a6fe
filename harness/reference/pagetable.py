"""Reference I/O page table (drivers/iommu/intel/iommu.c semantics) as nested
Python objects, with page accounting kept by a Pages ledger."""

from harness.core import layout as L
from harness.core.layout import GFP_ATOMIC
from harness.reference.hw import Rng

ENOMEM = "enomem"


class Leaf:
    """A leaf entry mapping a page of 2^order 4 KiB pages."""
    __slots__ = ("order",)

    def __init__(self, order):
        self.order = order


class Table:
    __slots__ = ("e", "size", "charged")

    def __init__(self, entries, size, charged):
        self.e = [None] * entries
        self.size = size
        self.charged = size if charged else 0


class Geometry:
    """Per level: entry span (log2 4 KiB pages), entries, table bytes."""

    def __init__(self, P):
        self.levels = P[L.P_LEVELS]
        self.pshift = [0] + [P[L.P_LVL_PSHIFT + lv] for lv in range(1, self.levels + 1)]
        self.entries = [0] + [P[L.P_LVL_ENTRIES + lv] for lv in range(1, self.levels + 1)]
        self.bytes = [0] + [P[L.P_LVL_BYTES + lv] for lv in range(1, self.levels + 1)]

    def idx(self, pfn, level):
        return (pfn >> self.pshift[level]) % self.entries[level]

    def span(self, level):
        return 1 << self.pshift[level]

    def page_level(self, order):
        level = 1
        while level < self.levels and self.pshift[level + 1] <= order:
            level += 1
        return level


def subtables(t, level):
    """t and every table under it, in the kernel's freeing order (children first)."""
    out = []
    if level > 1:
        for e in t.e:
            if isinstance(e, Table):
                out += subtables(e, level - 1)
    return out + [t]


MASK64 = (1 << 64) - 1


class Pages:
    """Page-table ledger: tables live and pending (on a freelist), their bytes,
    charged bytes; and the memory-pressure model for GFP_ATOMIC tables."""

    def __init__(self, c, free=0, floor=0, jitter=0, seed=1):
        self.c = c
        self.live = self.pending = self.bytes = self.charged = 0
        self.free, self.floor, self.jitter, self.rng = free, floor, jitter, Rng(seed)

    def atomic_fails(self, size):
        if not self.free:
            return False
        free = self.free - self.bytes
        if self.jitter:
            free -= self.rng.next() % self.jitter
        return free - size < self.floor

    def alloc(self, gfp, charged, entries, size):
        self.c["pt_pages_alloc"] += 1
        self.c[("alloc_gfp_atomic", "alloc_gfp_kernel", "alloc_gfp_kernel_account")[gfp]] += 1
        self.live += 1
        self.bytes += size
        self.c["pt_pages_peak"] = max(self.c["pt_pages_peak"], self.live)
        self.c["pt_bytes_peak"] = max(self.c["pt_bytes_peak"], self.bytes)
        t = Table(entries, size, charged)
        self.charged += t.charged
        self.c["memcg_charged_peak_bytes"] = max(self.c["memcg_charged_peak_bytes"], self.charged)
        return t

    def free_now(self, t):
        self.c["pt_pages_freed"] += 1
        self.live -= 1
        self.bytes -= t.size
        self.charged -= t.charged

    def defer(self, t, fl):
        fl.append(t)
        self.pending += 1
        self.c["pt_pages_pending_peak"] = max(self.c["pt_pages_pending_peak"], self.pending)

    def put_list(self, fl):
        for t in fl:
            self.free_now(t)
        self.pending -= len(fl)


def iommu_pgsize(bitmap, iova, paddr, size):
    addr_merge = iova | paddr
    pgsizes = bitmap & ((2 << (size.bit_length() - 1)) - 1)
    if addr_merge:
        pgsizes &= (2 << ((addr_merge & -addr_merge).bit_length() - 1)) - 1
    idx_ = pgsizes.bit_length() - 1
    bigger = bitmap & ~((2 << idx_) - 1)
    if bigger:
        nxt = bigger & -bigger
        if not (iova ^ paddr) & (nxt - 1):
            offset = nxt - (addr_merge & (nxt - 1))
            if offset + nxt <= size:
                size = offset
    return 1 << idx_, size >> idx_


class PageTable:
    def __init__(self, geo, pages, root_gfp, root_charged, unmap_policy, levels):
        self.geo = geo
        self.levels = levels  # grows up to geo.levels (AMD v1)
        self.pages = pages
        self.policy = unmap_policy
        self.root = self.alloc(levels, root_gfp, root_charged)

    def reaches(self, pfn):
        return pfn >> self.geo.pshift[self.levels] < self.geo.entries[self.levels]

    def grow(self, last_pfn, gfp, charged, limit, dte_flush):
        """increase_address_space(): False when the new root cannot be had."""
        while self.levels < self.geo.levels and not self.reaches(last_pfn):
            size = self.geo.bytes[self.levels + 1]
            if charged and limit and self.pages.charged + size > limit:
                return False
            if gfp == GFP_ATOMIC and self.pages.atomic_fails(size):
                self.pages.c["gfp_atomic_failures"] += 1
                return False
            root = self.alloc(self.levels + 1, gfp, charged)
            root.e[0] = self.root
            self.root = root
            self.levels += 1
            dte_flush()
        return True

    def alloc(self, level, gfp, charged):
        return self.pages.alloc(gfp, charged, self.geo.entries[level], self.geo.bytes[level])

    def descend(self, pfn, target, gfp, charged, limit=0):
        """Table holding pfn's entry at target level; None if a leaf is in the
        way; ENOMEM if a charge would pass the memory-cgroup limit or a
        GFP_ATOMIC allocation fails under memory pressure."""
        t = self.root
        for level in range(self.levels, target, -1):
            i = self.geo.idx(pfn, level)
            e = t.e[i]
            if isinstance(e, Leaf):
                return None
            if e is None:
                size = self.geo.bytes[level - 1]
                if charged and limit and self.pages.charged + size > limit:
                    return ENOMEM
                if gfp == GFP_ATOMIC and self.pages.atomic_fails(size):
                    self.pages.c["gfp_atomic_failures"] += 1
                    return ENOMEM
                e = t.e[i] = self.alloc(level - 1, gfp, charged)
            t = e
        return t

    def walk(self, pfn):
        """(stop level, leaf order + 1 or 0)."""
        if not self.reaches(pfn):
            return self.levels, 0
        t = self.root
        for level in range(self.levels, 0, -1):
            e = t.e[self.geo.idx(pfn, level)]
            if e is None:
                return level, 0
            if isinstance(e, Leaf):
                return level, e.order + 1
            t = e
        raise AssertionError("level-1 entries are leaves")

    def leaf_span(self, pfn):
        """4 KiB pages of the entry where a walk stops."""
        level, leaf = self.walk(pfn)
        return 1 << (leaf - 1) if leaf else self.geo.span(level)

    def clear_range(self, t, level, pfn, start, last, fl, flush_walk):
        """dma_pte_clear_level(), with the format's treatment of covered tables."""
        geo = self.geo
        pfn = max(start, pfn)
        span = geo.span(level)
        i = geo.idx(pfn, level)
        while True:
            level_pfn = pfn & ~(span - 1)
            e = t.e[i]
            if e is not None:
                covered = start <= level_pfn and last >= level_pfn + span - 1
                if covered and (isinstance(e, Leaf) or self.policy != L.PT_UNMAP_KEEP):
                    if isinstance(e, Table):
                        if self.policy == L.PT_UNMAP_WALK:
                            flush_walk(level_pfn << 12, ((level_pfn + span) << 12) - 1)
                        for sub in subtables(e, level - 1):
                            if self.policy == L.PT_UNMAP_FREELIST:
                                self.pages.defer(sub, fl)
                            else:
                                self.pages.free_now(sub)
                    t.e[i] = None
                elif isinstance(e, Table):
                    self.clear_range(e, level - 1, level_pfn, start, last, fl, flush_walk)
            pfn = level_pfn + span
            i += 1
            if i == geo.entries[level] or pfn > last:
                return
