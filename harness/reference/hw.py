"""Reference IOTLB, walk caches and each family's invalidation commands.

Caches are lists of OrderedDict sets in fill/use order (first = the victim of
LRU and round-robin). Invalidations scan every entry: slow and plainly right.
Kernel citations are in harness.vendors.*."""

from collections import OrderedDict

from harness.core import layout as L

MAX_AGAW_PFN_WIDTH = 52
MASK64 = (1 << 64) - 1


class Rng:
    """splitmix64, as harness.core.pages.splitmix64."""

    def __init__(self, seed=0):
        self.x = seed & MASK64

    def next(self):
        self.x = x = (self.x + 0x9E3779B97F4A7C15) & MASK64
        z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


class Cache:
    """Sets of tag -> stale flag. A set keeps its ways in a fixed order of
    slots for random replacement (slot = way index)."""

    def __init__(self, sets, ways, policy, rng):
        self.nsets, self.ways, self.policy, self.rng = sets, ways, policy, rng
        self.sets = [OrderedDict() for _ in range(sets)]
        self.slots = [[None] * ways for _ in range(sets)]

    def lookup(self, s, tag):
        st = self.sets[s]
        if tag in st:
            if self.policy == L.POLICY_LRU:
                st.move_to_end(tag)
            return True
        return False

    def fill(self, s, tag):
        """Returns the evicted tag or None."""
        st, slots = self.sets[s], self.slots[s]
        evicted = None
        if None in slots:
            way = slots.index(None)
        elif self.policy == L.POLICY_RANDOM:
            way = self.rng.next() % self.ways
            evicted = slots[way]
        else:
            evicted = next(iter(st))
            way = slots.index(evicted)
        if evicted is not None:
            del st[evicted]
        slots[way] = tag
        st[tag] = False  # stale flag
        return evicted

    def remove(self, s, tag):
        del self.sets[s][tag]
        self.slots[s][self.slots[s].index(tag)] = None

    def entries(self):
        for s, st in enumerate(self.sets):
            for tag in list(st):
                yield s, tag


def psi_aligned_address(start, end):
    pages = ((start & 4095) + (end - start + 1) + 4095) >> 12
    aligned = 1 << (pages - 1).bit_length() if pages > 1 else 1
    mask = aligned.bit_length() - 1
    pfn = start >> 12
    if (aligned - 1) & pfn:
        end_pfn = pfn + pages - 1
        shared = ~(pfn ^ end_pfn) & ~(aligned - 1)
        mask = (shared & -shared).bit_length() - 1 if shared else MAX_AGAW_PFN_WIDTH
    return mask


class Hardware:
    """IOTLB tagged (domain, order, vpn); walk caches per level tagged
    (domain, key); the family's commands on top."""

    def __init__(self, P, c, seed):
        self.P, self.c = P, c
        self.family = P[L.P_FAMILY]
        self.levels = P[L.P_LEVELS]
        self.pshift = {lv: P[L.P_LVL_PSHIFT + lv] for lv in range(1, self.levels + 1)}
        self.rng = Rng(seed)
        self.tlb = Cache(P[L.P_IOTLB_SETS], P[L.P_IOTLB_WAYS], P[L.P_IOTLB_POLICY], self.rng)
        self.psc = {lv: Cache(P[L.P_PSC_SETS + lv], P[L.P_PSC_WAYS + lv], P[L.P_PSC_POLICY], self.rng)
                    for lv in range(2, self.levels + 1) if P[L.P_PSC_WAYS + lv]}
        self.orders = {}  # order -> live IOTLB entries
        self.utlb_n = P[L.P_UTLB_ENTRIES]
        self.utlb = {}  # device domain -> its micro-TLB (one fully associative set)
        bitmap = P[L.P_PGSIZE_BITMAP] >> 12
        self.page_orders = [o for o in range(64) if bitmap >> o & 1]

    # -- caches ---------------------------------------------------------------
    def _main_lookup(self, d, pfn):
        for o in sorted(k for k, n in self.orders.items() if n):
            vpn = pfn >> o
            st = self.tlb.sets[vpn % self.tlb.nsets]
            tag = (d, o, vpn)
            if self.tlb.lookup(vpn % self.tlb.nsets, tag):
                return (2 if st[tag] else 1), o
        return 0, 0

    def _utlb(self, d):
        if d not in self.utlb:
            self.utlb[d] = Cache(1, self.utlb_n, self.P[L.P_IOTLB_POLICY], self.rng)
        return self.utlb[d]

    def tlb_lookup(self, d, pfn):
        if not self.utlb_n:
            return self._main_lookup(d, pfn)[0]
        u = self._utlb(d)
        for o in self.page_orders:
            tag = (o, pfn >> o)
            if u.lookup(0, tag):
                self.c["utlb_hits"] += 1
                return 2 if u.sets[0][tag] else 1
        self.c["utlb_misses"] += 1
        r, o = self._main_lookup(d, pfn)
        if r:
            self._utlb_fill(d, o, pfn, r == 2)
        return r

    def _utlb_fill(self, d, o, pfn, stale):
        u = self._utlb(d)
        u.fill(0, (o, pfn >> o))
        u.sets[0][(o, pfn >> o)] = stale

    def tlb_fill(self, d, pfn, o):
        vpn = pfn >> o
        evicted = self.tlb.fill(vpn % self.tlb.nsets, (d, o, vpn))
        if evicted is not None:
            self.orders[evicted[1]] -= 1
        self.orders[o] = self.orders.get(o, 0) + 1
        if self.utlb_n:
            self._utlb_fill(d, o, pfn, False)

    def _utlb_overlapping(self, d, pfn, npages):
        u = self.utlb.get(d)
        for _, (o, vpn) in list(u.entries()) if u else []:
            if vpn << o < pfn + npages and pfn < (vpn << o) + (1 << o):
                yield u, (o, vpn)

    def psc_lookup(self, d, level, pfn):
        key = pfn >> self.pshift[level]
        cache = self.psc[level]
        return cache.lookup(key % cache.nsets, (d, key))

    def psc_fill(self, d, level, pfn):
        if level in self.psc:
            key = pfn >> self.pshift[level]
            cache = self.psc[level]
            cache.fill(key % cache.nsets, (d, key))

    def _tlb_overlapping(self, d, pfn, npages):
        for s, (dd, o, vpn) in self.tlb.entries():
            lo = vpn << o
            if dd == d and lo < pfn + npages and pfn < lo + (1 << o):
                yield s, (dd, o, vpn)

    def mark_stale(self, d, pfn, npages):
        for u, tag in self._utlb_overlapping(d, pfn, npages):
            u.sets[0][tag] = True
        for s, tag in self._tlb_overlapping(d, pfn, npages):
            self.tlb.sets[s][tag] = True

    def invalidate_domain(self, d):
        for u, tag in list(self._utlb_overlapping(d, 0, 1 << 62)):
            u.remove(0, tag)
        for s, tag in list(self.tlb.entries()):
            if tag[0] == d:
                self.tlb.remove(s, tag)
                self.orders[tag[1]] -= 1
        for cache in self.psc.values():
            for s, tag in list(cache.entries()):
                if tag[0] == d:
                    cache.remove(s, tag)

    def invalidate_range(self, d, pfn, npages, walk):
        for u, tag in list(self._utlb_overlapping(d, pfn, npages)):
            u.remove(0, tag)
        for s, tag in list(self._tlb_overlapping(d, pfn, npages)):
            self.tlb.remove(s, tag)
            self.orders[tag[1]] -= 1
        if walk:
            for level, cache in self.psc.items():
                sh = self.pshift[level]
                for s, (dd, key) in list(cache.entries()):
                    if dd == d and key << sh < pfn + npages and pfn < (key << sh) + (1 << sh):
                        cache.remove(s, (dd, key))

    # -- commands -------------------------------------------------------------
    def _count(self, **kw):
        for k, v in kw.items():
            self.c[k] += v

    def flush_range(self, d, start, end, pgsize, freed):
        """The family's iotlb_sync of [start, end]."""
        f = self.family
        if f == L.FAMILY_VTD:
            self.vtd_flush_range(d, start, end, not freed, True)
        elif f == L.FAMILY_AMDVI:
            self.amd_flush_pages(d, start, end)
        elif f == L.FAMILY_SMMUV3 and pgsize:
            self.arm_inv_range(d, start, end, pgsize, True)
        elif f == L.FAMILY_S390 and end:
            self.s390_refresh(d, start, end)

    def flush_all(self, d):
        self.c["flush_all"] += 1
        f = self.family
        if f == L.FAMILY_AMDVI:
            self.amd_flush_pages(d, 0, 0x7FFFFFFFFFFFFFFF - 1)
            return
        self.all_cmd(d)
        if f == L.FAMILY_VTD:
            self.vtd_submit(1 + self.dev_cmd())
        elif f == L.FAMILY_SMMUV3:
            self.arm_submit(1)
            self.arm_atc()
        elif f == L.FAMILY_S390:
            self._count(inv_submits=1, inv_traps=self.virt())

    def flush_walk(self, d, start, end):
        self.arm_inv_range(d, start, end, 4096 << self.pshift[1], False)

    def sync_map(self, d, iova, size):
        if not self.P[L.P_VIRT]:
            return
        f = self.family
        if f == L.FAMILY_VTD and self.P[L.P_FIRST_STAGE]:
            return
        if f in (L.FAMILY_VTD, L.FAMILY_AMDVI, L.FAMILY_S390):
            self.c["iotlb_sync_maps"] += 1
        if f == L.FAMILY_VTD:
            self.vtd_flush_range(d, iova, iova + size - 1, False, False)
        elif f == L.FAMILY_AMDVI:
            self.amd_flush_pages(d, iova, iova + size - 1)
        elif f == L.FAMILY_S390:
            self.s390_refresh(d, iova, iova + size - 1)

    def range_cmd(self, d, pfn, npages, walk):
        self._count(inv_range=1, inv_pages=npages)
        self.invalidate_range(d, pfn, npages, walk)

    def all_cmd(self, d):
        self._count(inv_all=1)
        self.invalidate_domain(d)

    def dev_cmd(self):
        n = int(bool(self.P[L.P_ATS]))
        self._count(inv_dev=n)
        return n

    def virt(self):
        return int(bool(self.P[L.P_VIRT]))

    # VT-d
    def vtd_submit(self, descs):
        n = -(-descs // self.P[L.P_CMD_BATCH])
        self._count(inv_submits=n, inv_syncs=n, inv_traps=n * self.virt())

    def vtd_flush_range(self, d, start, end, ih, devtlb):
        mask = psi_aligned_address(start, end)
        if mask > self.P[L.P_MAX_RANGE] and not self.P[L.P_FIRST_STAGE]:
            self.all_cmd(d)
        else:
            self.range_cmd(d, (start >> (12 + mask)) << mask, 1 << mask, not ih)
        self.vtd_submit(1 + (self.dev_cmd() if devtlb else 0))

    # AMD-Vi
    def amd_queue(self, n):
        self._count(inv_submits=n, inv_traps=n * self.virt())

    def amd_inv_pages(self, d, address, size):
        if (address & 4095) + size <= 4096:
            lo, npages, everything = address >> 12, 1, False
        else:
            msb_diff = ((address + size - 1) ^ address).bit_length() - 1
            everything = msb_diff > 51
            npages = (1 << (msb_diff + 1)) >> 12
            lo = (address >> 12) // npages * npages
        if everything:
            self.all_cmd(d)
        else:
            self.range_cmd(d, lo, npages, True)
        self.amd_queue(1 + self.dev_cmd())

    def amd_flush_pages(self, d, start, end):
        address, size = start, end - start + 1
        if not self.P[L.P_VIRT]:
            self.amd_inv_pages(d, address, size)
        else:
            while size:
                m = size.bit_length() - 1
                if address:
                    m = min(m, (address & -address).bit_length() - 1)
                self.amd_inv_pages(d, address, 1 << m)
                address += 1 << m
                size -= 1 << m
        self._count(inv_syncs=1)
        self.amd_queue(1)

    def amd_dte_flush(self):
        self._count(inv_syncs=1)
        self.amd_queue(2)

    # SMMUv3
    def arm_submit(self, cmds):
        self._count(inv_submits=-(-cmds // self.P[L.P_CMD_BATCH]), inv_syncs=1)

    def arm_atc(self):
        if self.dev_cmd():
            self.arm_submit(1)

    def arm_inv_range(self, d, start, end, granule, leaf):
        size = end - start + 1
        tg = self.P[L.P_GRANULE_SHIFT]
        if not self.P[L.P_RIL]:
            cmds = -(-size // granule)
            self._count(inv_pages=cmds * (granule >> 12))
        else:
            cmds = 0
            num_pages = size >> tg
            if not leaf and num_pages % 32 == 1:
                num_pages += 1
            while num_pages:
                scale = (num_pages & -num_pages).bit_length() - 1
                num = (num_pages >> scale) % 32
                self._count(inv_pages=(num << (scale + tg)) >> 12)
                num_pages -= num << scale
                cmds += 1
        self._count(inv_range=cmds)
        self.invalidate_range(d, start >> 12, (size + 4095) >> 12, not leaf)
        self.arm_submit(cmds)
        self.arm_atc()

    # s390
    def s390_refresh(self, d, start, end):
        self.range_cmd(d, start >> 12, ((end | 4095) - (start & ~4095) + 1) >> 12, True)
        self._count(inv_submits=1, inv_traps=self.virt())
