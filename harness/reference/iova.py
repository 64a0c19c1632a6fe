"""Reference IOVA allocator: drivers/iommu/iova.c with a sorted Python list
in place of the rbtree. Same algorithm step by step; no arrays, no pools."""

import bisect

ANCHOR = 1 << 62
RANGE_CACHE_MAX_SIZE = 6


def order_base_2(n):
    return (n - 1).bit_length() if n > 1 else 0


class Node:
    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi


class IovaDomain:
    def __init__(self, ncpu, mag_size, pci32, depot_delay, counters, timers, dom, dma32_pfn):
        self.anchor = Node(ANCHOR, ANCHOR)
        self.nodes = [self.anchor]  # sorted by lo
        self.cached = self.cached32 = self.anchor
        self.dma32 = dma32_pfn  # iovad->dma_32bit_pfn
        self.max32 = dma32_pfn
        self.pci32 = pci32
        self.mag_size = mag_size
        self.depot_delay = depot_delay
        self.c = counters
        self.timers = timers
        self.dom = dom
        # rcache[k][cpu] = [loaded, prev]; depot[k] = list of full magazines (LIFO)
        self.rcache = [[[[], []] for _ in range(ncpu)] for _ in range(RANGE_CACHE_MAX_SIZE)]
        self.depot = [[] for _ in range(RANGE_CACHE_MAX_SIZE)]

    def _pos(self, node):
        i = bisect.bisect_left([n.lo for n in self.nodes], node.lo)
        assert self.nodes[i] is node
        return i

    def _prev(self, node):
        i = self._pos(node)
        return self.nodes[i - 1] if i > 0 else None

    def _next(self, node):
        return self.nodes[self._pos(node) + 1]

    def reserve(self, lo, hi):
        """reserve_iova() in a fresh domain (disjoint regions)."""
        bisect.insort(self.nodes, Node(lo, hi), key=lambda n: n.lo)

    def _find_limit(self, limit_pfn):
        if limit_pfn > self.dma32:
            return self.anchor
        return next(n for n in self.nodes if n.lo >= limit_pfn)

    def alloc_iova(self, size, limit_pfn):
        limit_pfn += 1  # alloc_iova() hands the walk an exclusive limit
        align_mask = -1 << (size - 1).bit_length()
        high_pfn, low_pfn = limit_pfn, 1
        if limit_pfn <= self.dma32 and size >= self.max32:
            return None
        curr = self.cached32 if limit_pfn <= self.dma32 else self.cached
        retry_pfn = curr.hi
        while True:
            while True:
                high_pfn = min(high_pfn, curr.lo)
                new_pfn = (high_pfn - size) & align_mask
                curr = self._prev(curr)
                self.c["iova_tree_walk_steps"] += 1
                if not (curr is not None and new_pfn <= curr.hi and new_pfn >= low_pfn):
                    break
            if high_pfn < size or new_pfn < low_pfn:
                if low_pfn == 1 and retry_pfn < limit_pfn:
                    high_pfn, low_pfn = limit_pfn, retry_pfn + 1
                    curr = self._find_limit(limit_pfn)
                    continue
                self.max32 = size
                return None
            break
        node = Node(new_pfn, new_pfn + size - 1)
        bisect.insort(self.nodes, node, key=lambda n: n.lo)
        if node.hi < self.dma32:
            self.cached32 = node
        else:
            self.cached = node
        return node

    def free_iova(self, node):
        nxt = self._next(node)
        if node is self.cached32 or (node.hi < self.dma32 and node.lo >= self.cached32.lo):
            self.cached32 = nxt
        if node.lo < self.dma32:
            self.max32 = self.dma32
        if node.lo >= self.cached.lo:
            self.cached = nxt
        self.nodes.pop(self._pos(node))
        self.c["iova_tree_frees"] += 1

    def _free_mag(self, mag):
        for node in mag:
            self.free_iova(node)
        mag.clear()

    def rcache_get(self, cpu, size, limit_pfn):
        k = order_base_2(size)
        if k >= RANGE_CACHE_MAX_SIZE:
            return None
        pair = self.rcache[k][cpu]
        if not pair[0]:
            if pair[1]:
                pair[0], pair[1] = pair[1], pair[0]
            elif self.depot[k]:
                pair[0] = self.depot[k].pop()
            else:
                return None
        mag = pair[0]
        limit = limit_pfn - size
        i = len(mag) - 1
        while mag[i].lo > limit:
            if i == 0:
                return None
            i -= 1
        node = mag[i]
        mag[i] = mag[-1]
        mag.pop()
        return node

    def rcache_insert(self, cpu, node, pages, now):
        k = order_base_2(pages)
        if k >= RANGE_CACHE_MAX_SIZE:
            return False
        pair = self.rcache[k][cpu]
        if len(pair[0]) == self.mag_size:
            if len(pair[1]) != self.mag_size:
                pair[0], pair[1] = pair[1], pair[0]
            else:
                self.depot[k].append(pair[0])
                self.timers.arm((self.dom, k), now + self.depot_delay)
                pair[0] = []
        pair[0].append(node)
        return True

    def depot_work(self, k, ncpu, now):
        if len(self.depot[k]) > ncpu:
            self._free_mag(self.depot[k].pop())
            self.c["iova_depot_trims"] += 1
            self.timers.arm((self.dom, k), now + self.depot_delay)

    def flush_rcaches(self):
        for cpu in range(len(self.rcache[0])):
            for k in range(RANGE_CACHE_MAX_SIZE):
                self._free_mag(self.rcache[k][cpu][0])
                self._free_mag(self.rcache[k][cpu][1])
        for k in range(RANGE_CACHE_MAX_SIZE):
            while self.depot[k]:
                self._free_mag(self.depot[k].pop())

    def alloc_iova_fast(self, cpu, size, limit_pfn, flush_rcache):
        if size < 1 << (RANGE_CACHE_MAX_SIZE - 1):
            size = 1 << order_base_2(size)
        node = self.rcache_get(cpu, size, limit_pfn + 1) if self.mag_size else None
        if node is not None:
            self.c["iova_rcache_hits"] += 1
            return node
        flush_rcache = flush_rcache and self.mag_size > 0  # no rcache before v4.7
        while True:
            node = self.alloc_iova(size, limit_pfn)
            if node is not None:
                self.c["iova_tree_allocs"] += 1
                return node
            if not flush_rcache:
                return None
            flush_rcache = False
            self.c["iova_rcache_flushes"] += 1
            self.flush_rcaches()

    def dma_alloc_iova(self, cpu, pages, limit_pfn):
        if pages < 1 << (RANGE_CACHE_MAX_SIZE - 1):
            pages = 1 << order_base_2(pages)
        if limit_pfn > self.dma32 - 1 and self.pci32:
            node = self.alloc_iova_fast(cpu, pages, self.dma32 - 1, False)
            if node is not None:
                self.c["iova_allocs"] += 1
                return node
            self.pci32 = False
            self.c["iova_32bit_fallbacks"] += 1
        node = self.alloc_iova_fast(cpu, pages, limit_pfn, True)
        self.c["iova_alloc_failures" if node is None else "iova_allocs"] += 1
        return node

    def free_iova_fast(self, cpu, node, pages, now):
        self.c["iova_frees"] += 1
        if self.mag_size and self.rcache_insert(cpu, node, pages, now):
            self.c["iova_rcache_inserts"] += 1
        else:
            self.free_iova(node)
