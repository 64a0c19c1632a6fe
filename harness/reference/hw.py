"""Reference IOTLB, paging-structure caches and VT-d invalidation commands.

Caches are lists of OrderedDict sets in LRU order (first = least recent).
Invalidations scan every entry: slow and plainly right."""

from collections import OrderedDict

MAX_AGAW_PFN_WIDTH = 52


class Cache:
    def __init__(self, sets, ways):
        self.ways = ways
        self.sets = [OrderedDict() for _ in range(sets)]

    def lookup(self, s, tag):
        st = self.sets[s]
        if tag in st:
            st.move_to_end(tag)
            return True
        return False

    def fill(self, s, tag):
        st = self.sets[s]
        if len(st) == self.ways:
            st.popitem(last=False)
        st[tag] = False  # stale flag

    def entries(self):
        for st in self.sets:
            for tag in list(st):
                yield st, tag


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


class VtdHardware:
    """IOTLB tagged (domain, level, vpn); PSC per level tagged (domain, key)."""

    def __init__(self, P, L, c):
        self.c = c
        self.levels = P[L.P_LEVELS]
        self.cm = P[L.P_CM]
        self.first_stage = P[L.P_FIRST_STAGE]
        self.mamv = P[L.P_MAMV]
        self.tlb = Cache(P[L.P_IOTLB_SETS], P[L.P_IOTLB_WAYS])
        self.psc = {lv: Cache(P[L.P_PSC_SETS + lv], P[L.P_PSC_WAYS + lv])
                    for lv in range(2, self.levels + 1) if P[L.P_PSC_WAYS + lv]}

    @staticmethod
    def shift(level):
        return 12 + 9 * (level - 1)

    def tlb_lookup(self, d, va):
        for level in (1, 2, 3):
            vpn = va >> self.shift(level)
            st = self.tlb.sets[vpn % len(self.tlb.sets)]
            tag = (d, level, vpn)
            if tag in st:
                st.move_to_end(tag)
                return 2 if st[tag] else 1
        return 0

    def tlb_fill(self, d, va, level):
        vpn = va >> self.shift(level)
        self.tlb.fill(vpn % len(self.tlb.sets), (d, level, vpn))

    def psc_lookup(self, d, level, va):
        key = va >> self.shift(level)
        cache = self.psc[level]
        return cache.lookup(key % len(cache.sets), (d, key))

    def psc_fill(self, d, level, va):
        if level in self.psc:
            key = va >> self.shift(level)
            cache = self.psc[level]
            cache.fill(key % len(cache.sets), (d, key))

    def _tlb_overlapping(self, d, pfn, npages):
        for st, (dd, level, vpn) in self.tlb.entries():
            lo = vpn << (9 * (level - 1))
            if dd == d and lo < pfn + npages and pfn < lo + (1 << (9 * (level - 1))):
                yield st, (dd, level, vpn)

    def mark_stale(self, d, pfn, npages):
        for st, tag in self._tlb_overlapping(d, pfn, npages):
            st[tag] = True

    def _invalidate_domain(self, d):
        for cache in [self.tlb] + list(self.psc.values()):
            for st, tag in cache.entries():
                if tag[0] == d:
                    del st[tag]

    def _invalidate_range(self, d, pfn, npages, ih):
        for st, tag in self._tlb_overlapping(d, pfn, npages):
            del st[tag]
        if not ih:
            for level, cache in self.psc.items():
                sh = 9 * (level - 1)
                for st, (dd, key) in cache.entries():
                    if dd == d and key << sh < pfn + npages and pfn < (key << sh) + (1 << sh):
                        del st[(dd, key)]

    def submit(self):
        self.c["inv_waits"] += 1
        self.c["inv_traps"] += bool(self.cm)

    def flush_range(self, d, start, end, ih):
        mask = psi_aligned_address(start, end)
        if self.first_stage:
            self.c["inv_piotlb"] += 1
            self.c["inv_psi_pages"] += 1 << mask
            self._invalidate_range(d, (start >> (12 + mask)) << mask, 1 << mask, ih)
        elif mask > self.mamv:
            self.c["inv_dsi"] += 1
            self._invalidate_domain(d)
        else:
            self.c["inv_psi"] += 1
            self.c["inv_psi_pages"] += 1 << mask
            self._invalidate_range(d, (start >> (12 + mask)) << mask, 1 << mask, ih)
        self.submit()

    def flush_all(self, d):
        self.c["flush_all"] += 1
        self.c["inv_piotlb_all" if self.first_stage else "inv_dsi"] += 1
        self._invalidate_domain(d)
        self.submit()
