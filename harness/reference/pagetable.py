"""Reference I/O page table (drivers/iommu/intel/iommu.c semantics) as nested
Python objects, with page accounting kept by a Pages ledger."""

from harness.core.layout import GFP_ATOMIC

LEAF = "leaf"
ENOMEM = "enomem"


class Table:
    __slots__ = ("e", "charged")

    def __init__(self, charged):
        self.e = [None] * 512
        self.charged = charged


def idx(pfn, level):
    return (pfn >> (9 * (level - 1))) & 511


def subtables(t, level):
    """t and every table under it."""
    out = [t]
    if level > 1:
        for e in t.e:
            if isinstance(e, Table):
                out += subtables(e, level - 1)
    return out


MASK64 = (1 << 64) - 1


class Pages:
    """Page-table page ledger: live, pending (on a freelist), charged bytes;
    and the memory-pressure model for GFP_ATOMIC pages."""

    def __init__(self, c, free=0, floor=0, jitter=0, seed=1):
        self.c = c
        self.live = self.pending = self.charged = 0
        self.free, self.floor, self.jitter, self.rng = free, floor, jitter, seed & MASK64

    def _splitmix64(self):
        self.rng = x = (self.rng + 0x9E3779B97F4A7C15) & MASK64
        z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def atomic_fails(self):
        if not self.free:
            return False
        free = self.free - 4096 * self.live
        if self.jitter:
            free -= self._splitmix64() % self.jitter
        return free - 4096 < self.floor

    def alloc(self, gfp, charged):
        self.c["pt_pages_alloc"] += 1
        self.c[("alloc_gfp_atomic", "alloc_gfp_kernel", "alloc_gfp_kernel_account")[gfp]] += 1
        self.live += 1
        self.c["pt_pages_peak"] = max(self.c["pt_pages_peak"], self.live)
        if charged:
            self.charged += 4096
            self.c["memcg_charged_peak_bytes"] = max(self.c["memcg_charged_peak_bytes"], self.charged)
        return Table(charged)

    def free_now(self, t):
        self.c["pt_pages_freed"] += 1
        self.live -= 1
        self.charged -= 4096 * t.charged

    def defer(self, t, fl):
        fl.append(t)
        self.pending += 1
        self.c["pt_pages_pending_peak"] = max(self.c["pt_pages_pending_peak"], self.pending)

    def put_list(self, fl):
        self.c["pt_pages_freed"] += len(fl)
        self.live -= len(fl)
        self.pending -= len(fl)
        self.charged -= 4096 * sum(t.charged for t in fl)


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
    def __init__(self, levels, pages, root_gfp, root_charged):
        self.levels = levels
        self.pages = pages
        self.root = pages.alloc(root_gfp, root_charged)

    def descend(self, pfn, target, gfp, charged, limit=0):
        """Table holding pfn's entry at target level; None if a superpage is in
        the way; ENOMEM if a charge would pass the memory-cgroup limit."""
        t = self.root
        for level in range(self.levels, target, -1):
            e = t.e[idx(pfn, level)]
            if e == LEAF:
                return None
            if e is None:
                if charged and limit and self.pages.charged + 4096 > limit:
                    return ENOMEM
                if gfp == GFP_ATOMIC and self.pages.atomic_fails():
                    self.pages.c["gfp_atomic_failures"] += 1
                    return ENOMEM
                e = t.e[idx(pfn, level)] = self.pages.alloc(gfp, charged)
            t = e
        return t

    def walk(self, pfn):
        """(stop level, leaf level or 0)."""
        t = self.root
        for level in range(self.levels, 0, -1):
            e = t.e[idx(pfn, level)]
            if e is None:
                return level, 0
            if e == LEAF:
                return level, level
            t = e
        raise AssertionError("level-1 entries are leaves")

    def leaf_level(self, pfn):
        stop, _ = self.walk(pfn)
        return stop

    def clear_range(self, t, level, pfn, start, last, fl):
        """dma_pte_clear_level()."""
        pfn = max(start, pfn)
        span = 1 << (9 * (level - 1))
        i = idx(pfn, level)
        while True:
            level_pfn = pfn & ~(span - 1)
            e = t.e[i]
            if e is not None:
                if start <= level_pfn and last >= level_pfn + span - 1:
                    if level > 1 and isinstance(e, Table):
                        for sub in subtables(e, level - 1):
                            self.pages.defer(sub, fl)
                    t.e[i] = None
                elif level > 1 and isinstance(e, Table):
                    self.clear_range(e, level - 1, level_pfn, start, last, fl)
            pfn = level_pfn + span
            i += 1
            if i == 512 or pfn > last:
                return
