"""Reference domain core: dma-iommu map/unmap, gather, flush queues, timers,
device accesses. Mirrors drivers/iommu/dma-iommu.c, iommu.c and intel/iommu.c
as described in harness.core; see there for kernel citations."""

from collections import Counter, deque

from harness import metrics
from harness.core import layout as L
from harness.core.simulator import build_params
from harness.errors import TraceError
from harness.reference.hw import Hardware
from harness.reference.iova import IovaDomain
from harness.reference.pagetable import (ENOMEM, Geometry, Leaf, Pages, PageTable, Table,
                                         iommu_pgsize, subtables)
from harness.trace import schema as ts
from harness.trace.reader import TraceReader


class Timers:
    """Deadlines keyed (domain, 'fq') or (domain, size class); arming an armed
    timer does nothing."""

    def __init__(self):
        self.due = {}

    def arm(self, key, deadline):
        self.due.setdefault(key, deadline)

    def pop_due(self, now):
        if not self.due:
            return None
        key = min(self.due, key=lambda k: (self.due[k], k[0], -1 if k[1] == "fq" else k[1]))
        if self.due[key] > now:
            return None
        return key, self.due.pop(key)


class Mapping:
    def __init__(self, size, api):
        self.size, self.api = size, api
        self.state = "failed"
        self.dma = 0
        self.node = None
        self.pages = 0
        self.base = self.length = 0


class Domain:
    def __init__(self, sim, d):
        P = sim.P
        if P[L.P_GFP_IGNORED]:
            root_gfp = (L.GFP_ATOMIC, False)
        elif P[L.P_GFP] == L.GFP_POLICY_KERNEL_ACCOUNT:
            root_gfp = (L.GFP_KERNEL_ACCOUNT, True)
        else:
            root_gfp = (L.GFP_KERNEL, False)
        self.pt = PageTable(sim.geo, sim.pages, *root_gfp, P[L.P_PT_UNMAP], P[L.P_INIT_LEVELS])
        self.iovad = IovaDomain(sim.ncpu, P[L.P_MAG_SIZE], bool(P[L.P_PCI32]),
                                P[L.P_DEPOT_DELAY], sim.c, sim.timers, d, P[L.P_DMA32_PFN])
        single = P[L.P_FLUSH] == L.FLUSH_LAZY_SINGLE
        self.fq = [deque() for _ in range(1 if single else sim.ncpu)]
        self.fq_start = self.fq_finish = 0
        self.fq_timer_cpu = 0
        self.pend_pages = self.pend_pagets = 0


class Reference:
    def __init__(self, spec, flush, gfp, ncpu):
        params = build_params(spec, flush, gfp, ncpu)
        self.P = P = [int(x) for x in params.P]
        self.resv = params.resv
        self.mode = P[L.P_FLUSH]
        self.spec = spec
        self.ncpu = ncpu
        self.c = Counter({m.name: 0 for m in metrics.COUNTERS})
        self.pages = Pages(self.c, P[L.P_MEM_FREE], P[L.P_MEM_ATOMIC_FLOOR], P[L.P_MEM_JITTER],
                           spec.params["mem.seed"])
        self.timers = Timers()
        self.hw = Hardware(P, self.c, spec.params["cache.seed"])
        self.geo = Geometry(P)
        self.gs = P[L.P_GRANULE_SHIFT]
        self.domains = {}
        self.dom_of = {}
        self.maps = {}
        self.now = 0
        self.bitmap = P[L.P_PGSIZE_BITMAP]

    # -- domains, timers ---------------------------------------------------
    def domain(self, device):
        """The device's domain number; its IOAS mirrors follow it."""
        n = self.P[L.P_HW_DOMAINS]
        if device not in self.dom_of:
            self.dom_of[device] = len(self.dom_of) * n
        d = self.dom_of[device]
        if d not in self.domains:
            for k in range(d, d + n):
                self.new_domain(k)
        return d

    def new_domain(self, d):
        self.c["domains"] += 1
        if self.mode == L.FLUSH_PASSTHROUGH:
            self.domains[d] = None
            return
        dom = self.domains[d] = Domain(self, d)
        for lo, hi, direct in self.resv:
            dom.iovad.reserve(lo, hi)
            if direct:
                gfp = L.GFP_ATOMIC if self.P[L.P_GFP_IGNORED] else L.GFP_KERNEL
                gs = self.gs
                self.iommu_map(d, lo << gs, lo << gs, (hi + 1 - lo) << gs, gfp, False)

    def fire_timers(self, now):
        while (hit := self.timers.pop_due(now)) is not None:
            (d, kind), self.now = hit
            if kind == "fq":
                self.c["fq_flush_timeout"] += 1
                self.fq_flush(d)
                dom = self.domains[d]
                for q in range(len(dom.fq)):
                    self.fq_ring_free(d, q, dom.fq_timer_cpu)
            else:
                self.domains[d].iovad.depot_work(kind, self.ncpu, self.now)

    # -- gfp ------------------------------------------------------------------
    def gfp(self, flags):
        if self.P[L.P_GFP_IGNORED]:
            return L.GFP_ATOMIC, False
        policy = self.P[L.P_GFP]
        account = policy == L.GFP_POLICY_KERNEL_ACCOUNT
        if policy == L.GFP_POLICY_ATOMIC or flags & ts.FLAG_ATOMIC:
            return L.GFP_ATOMIC, account
        return (L.GFP_KERNEL_ACCOUNT, True) if account else (L.GFP_KERNEL, False)

    # -- map --------------------------------------------------------------------
    def switch_to_super_page(self, d, start_pfn, end_pfn, level, amd_fl):
        """Remove what lies under a new superpage, the family's way (see
        harness.core.pagetable._switch_to_super_page). Returns True when AMD
        must flush the mapped range afterwards."""
        pt, geo, fam = self.domains[d].pt, self.geo, self.P[L.P_FAMILY]
        lvl_pages = geo.span(level)
        updated = False
        while start_pfn <= end_pfn:
            t = pt.descend(start_pfn, level, L.GFP_ATOMIC, False)
            if not isinstance(t, Table):
                return updated
            i = geo.idx(start_pfn, level)
            e = t.e[i]
            if e is not None and not (fam == L.FAMILY_SMMUV3 and isinstance(e, Leaf)):
                tables = subtables(e, level - 1) if isinstance(e, Table) else []
                self.c["superpage_switches"] += len(tables)
                if fam == L.FAMILY_AMDVI:
                    for sub in tables:
                        self.pages.defer(sub, amd_fl)
                    updated = True
                elif fam == L.FAMILY_SMMUV3:
                    self.hw.flush_walk(d, start_pfn << 12, ((start_pfn + lvl_pages) << 12) - 1)
                    for sub in tables:
                        self.pages.free_now(sub)
                else:
                    for sub in tables:
                        self.pages.free_now(sub)
                    self.hw.flush_range(d, start_pfn << 12, end_pfn << 12, 4096, True)
                t.e[i] = None
            start_pfn += lvl_pages
        return updated

    def iommu_map(self, d, iova, paddr, size, gfp, charged):
        """Bytes of whole chunks mapped before an -ENOMEM, or -1 on success."""
        pt, geo = self.domains[d].pt, self.geo
        done = 0
        if not pt.grow((iova + size - 1) >> 12, gfp, charged, self.P[L.P_MEMCG_LIMIT], self.hw.amd_dte_flush):
            return 0
        while size:
            pgsize, count = iommu_pgsize(self.bitmap, iova, paddr, size)
            order = pgsize.bit_length() - 13
            level = geo.page_level(order)
            lvl_pages = geo.span(level)
            pfn, nr = iova >> 12, (pgsize * count) >> 12
            t = None
            failed = updated = False
            amd_fl = []
            while nr > 0:
                if t is None:
                    t = pt.descend(pfn, level, gfp, charged, self.P[L.P_MEMCG_LIMIT])
                    if t == ENOMEM:
                        failed = True
                        break
                    if t is None:
                        self.c["map_overlaps"] += lvl_pages
                        pfn += lvl_pages
                        nr -= lvl_pages
                        continue
                    if level > 1:
                        left = (geo.entries[level] - geo.idx(pfn, level)) * lvl_pages
                        updated |= self.switch_to_super_page(d, pfn, pfn + min(nr, left) - 1, level, amd_fl)
                i = geo.idx(pfn, level)
                if t.e[i] is not None:
                    self.c["map_overlaps"] += lvl_pages
                else:
                    t.e[i] = Leaf(order)
                pfn += lvl_pages
                nr -= lvl_pages
                if i == geo.entries[level] - 1:
                    t = None
            if updated:
                self.hw.flush_range(d, iova, iova + pgsize * count - 1, 4096, True)
                self.pages.put_list(amd_fl)
            if failed:
                return done
            iova += pgsize * count
            paddr += pgsize * count
            size -= pgsize * count
            done += pgsize * count
        return -1

    def map(self, d, cpu, h, iova, paddr, size, flags):
        if h in self.maps and self.maps[h].state == "mapped":
            return L.ST_MAP_LIVE
        self.c["maps"] += 1
        self.c["bytes_mapped"] += size
        m = self.maps[h] = Mapping(size, bool(flags & ts.FLAG_IOMMU_API))
        granule = 1 << self.gs
        if m.api:
            off, length, base = 0, size, iova
            if flags & ts.FLAG_GFP_FORBIDDEN:
                self.c["gfp_forbidden"] += 1
                self.c["map_rejected"] += 1
                return L.ST_DONE
            if (iova | paddr | size) % granule:
                self.c["map_rejected"] += 1
                return L.ST_DONE
            if (base + length - 1) >> 12 > self.P[L.P_APERTURE_PFN]:
                self.c["map_rejected"] += 1
                return L.ST_DONE
        else:
            off = paddr % granule
            length = -(-(size + off) // granule) * granule
            base = self.dma_iova(d, cpu, m, iova, off, length)
            if base is None:
                return L.ST_DONE
        before = self.c["pt_pages_alloc"]
        failed = False
        for k in range(self.P[L.P_HW_DOMAINS] if m.api else 1):
            done = self.iommu_map(d + k, base, paddr - off, length, *self.gfp(flags))
            if done >= 0:
                self.c["map_enomem"] += 1
                for j in range(k + 1):
                    self.unroll(d + j, base, length if j < k else done)
                if m.node is not None:
                    self.domains[d].iovad.free_iova_fast(cpu, m.node, m.pages, self.now)
                failed = True
                break
            self.hw.sync_map(d + k, base, length)
        if m.api and flags & ts.FLAG_ATOMIC and flags & ts.FLAG_GFP_BLOCKING:
            self.c["gfp_blocking_in_atomic"] += self.c["pt_pages_alloc"] - before
        if failed:
            return L.ST_DONE
        m.state, m.dma, m.base, m.length = "mapped", base + off, base, length
        return L.ST_DONE

    def dma_iova(self, d, cpu, m, iova, off, length):
        """Base IOVA of a DMA-API map: allocated, or the recorded address; None
        when the allocation fails or the map is rejected."""
        granule = 1 << self.gs
        if iova == 0:
            node = self.domains[d].iovad.dma_alloc_iova(cpu, length // granule, self.P[L.P_DMA_LIMIT_PFN])
            if node is None:
                return None
            m.node, m.pages = node, length // granule
            return node.lo * granule
        base = iova - off
        if iova % granule != off or (base + length - 1) >> 12 > self.P[L.P_APERTURE_PFN]:
            self.c["map_rejected"] += 1
            return None
        return base

    def unroll(self, d, base, length):
        if length:
            g = {"start": L.NEVER, "end": 0, "pgsize": 0, "fl": []}
            self.unmap_range(d, base, length, False, g)
            self.iotlb_sync(d, g)

    def map_sg(self, d, cpu, segs):
        """dma_map_sg(): one IOVA range of aligned segment slots, physically
        contiguous runs mapped together, one iotlb_sync_map (see the kernel)."""
        h = segs[0]["handle"]
        if h in self.maps and self.maps[h].state == "mapped":
            return L.ST_MAP_LIVE
        granule = 1 << self.gs
        slots = [(s["paddr"] - s["paddr"] % granule,
                  -(-(s["size"] + s["paddr"] % granule) // granule) * granule) for s in segs]
        total = sum(s["size"] for s in segs)
        length = sum(n for _, n in slots)
        self.c["maps"] += 1
        self.c["sg_segments"] += len(segs)
        self.c["bytes_mapped"] += total
        m = self.maps[h] = Mapping(total, False)
        off = segs[0]["paddr"] % granule
        base = self.dma_iova(d, cpu, m, segs[0]["iova"], off, length)
        if base is None:
            return L.ST_DONE
        runs = []
        for phys, n in slots:
            if runs and runs[-1][0] + runs[-1][1] == phys:
                runs[-1][1] += n
            else:
                runs.append([phys, n])
        gfp = self.gfp(segs[0]["flags"])
        mapped = 0
        for phys, n in runs:
            done = self.iommu_map(d, base + mapped, phys, n, *gfp)
            if done >= 0:
                self.c["map_enomem"] += 1
                self.unroll(d, base + mapped, done)
                self.unroll(d, base, mapped)
                if m.node is not None:
                    self.domains[d].iovad.free_iova_fast(cpu, m.node, m.pages, self.now)
                return L.ST_DONE
            mapped += n
        self.hw.sync_map(d, base, length)
        m.state, m.dma, m.base, m.length = "mapped", base + off, base, length
        return L.ST_DONE

    # -- unmap ------------------------------------------------------------------
    def iotlb_sync(self, d, g):
        self.c["iotlb_syncs"] += 1
        self.hw.flush_range(d, g["start"], g["end"], g["pgsize"], bool(g["fl"]))
        self.pages.put_list(g["fl"])
        g.update(start=L.NEVER, end=0, pgsize=0, fl=[])

    def gather_add_page(self, d, g, iova, size, pgsize):
        """The family's gather step (see harness.core.flush.gather_add_page)."""
        end = iova + size - 1
        fam = self.P[L.P_FAMILY]
        disjoint = g["end"] != 0 and (end + 1 < g["start"] or iova > g["end"] + 1)
        if fam in (L.FAMILY_AMDVI, L.FAMILY_S390):
            if disjoint and fam == L.FAMILY_AMDVI and self.P[L.P_VIRT]:
                self.iotlb_sync(d, g)
        else:
            if fam == L.FAMILY_VTD:
                pgsize = size
            if (g["pgsize"] and g["pgsize"] != pgsize) or disjoint:
                self.iotlb_sync(d, g)
            g["pgsize"] = pgsize
        g["start"] = min(g["start"], iova)
        g["end"] = max(g["end"], end)

    def fq_flush(self, d):
        dom = self.domains[d]
        dom.fq_start += 1
        self.hw.flush_all(d)
        dom.fq_finish += 1
        self.c["stale_page_ns"] += self.now * dom.pend_pages - dom.pend_pagets
        dom.pend_pages = dom.pend_pagets = 0

    def fq_ring_free(self, d, q, cpu):
        dom = self.domains[d]
        ring = dom.fq[q]
        while ring and ring[0]["counter"] < dom.fq_finish:
            e = ring.popleft()
            if e["node"] is not None:
                dom.iovad.free_iova_fast(cpu, e["node"], e["pages"], self.now)
            self.pages.put_list(e["fl"])

    def queue_iova(self, d, cpu, node, pages, fl):
        dom = self.domains[d]
        q = 0 if self.mode == L.FLUSH_LAZY_SINGLE else cpu
        self.fq_ring_free(d, q, cpu)
        if len(dom.fq[q]) == self.P[L.P_FQ_SIZE] - 1:
            self.c["fq_flush_full"] += 1
            self.fq_flush(d)
            self.fq_ring_free(d, q, cpu)
        dom.fq[q].append({"node": node, "pages": pages, "counter": dom.fq_start, "fl": fl})
        self.c["fq_queued"] += 1
        if (d, "fq") not in self.timers.due:
            dom.fq_timer_cpu = cpu
            self.timers.arm((d, "fq"), self.now + self.P[L.P_FQ_TIMEOUT])

    def unmap_range(self, d, base, length, queued, g):
        pt = self.domains[d].pt
        it = base
        while it - base < length:
            pgsize, count = iommu_pgsize(self.bitmap, it, it, length - (it - base))
            size_ = max(pgsize * count, pt.leaf_span(it >> 12) << 12)
            pt.clear_range(pt.root, pt.levels, 0, it >> 12, (it + size_ - 1) >> 12, g["fl"],
                           lambda a, b: self.hw.flush_walk(d, a, b))
            if not queued:
                self.gather_add_page(d, g, it, size_, pgsize)
            it += size_
        return it

    def identity(self, row):
        """Passthrough: no IOVA, tables, translation or invalidation."""
        op, h, size = row["op"], row["handle"], row["size"]
        m = self.maps.get(h) if h != ts.NO_HANDLE else None
        if op == ts.OP_MAP:
            if m is not None and m.state == "mapped":
                return L.ST_MAP_LIVE
            self.c["maps"] += 1
            self.c["bytes_mapped"] += size
            m = self.maps[h] = Mapping(size, False)
            m.state = "mapped"
        elif op == ts.OP_UNMAP:
            if m is None or m.state == "unmapped":
                return L.ST_UNMAP_UNKNOWN
            if size != m.size:
                return L.ST_UNMAP_SIZE
            self.c["unmaps"] += 1
            m.state = "unmapped"
        else:
            if h != ts.NO_HANDLE and m is None:
                return L.ST_ACCESS_UNKNOWN
            self.c["accesses"] += 1
            self.c["bytes_accessed"] += size
            self.c["late_accesses"] += m is not None and m.state == "unmapped"
        return L.ST_DONE

    def unmap(self, d, cpu, h, size):
        m = self.maps.get(h)
        if m is None or m.state == "unmapped":
            return L.ST_UNMAP_UNKNOWN
        if size != m.size:
            return L.ST_UNMAP_SIZE
        self.c["unmaps"] += 1
        failed = m.state == "failed"
        m.state = "unmapped"
        if failed:
            return L.ST_DONE
        dom = self.domains[d]
        if m.api:
            for k in range(self.P[L.P_HW_DOMAINS]):
                g = {"start": L.NEVER, "end": 0, "pgsize": 0, "fl": []}
                self.unmap_range(d + k, m.base, m.length, False, g)
                self.iotlb_sync(d + k, g)
            return L.ST_DONE
        queued = self.mode != L.FLUSH_STRICT
        g = {"start": L.NEVER, "end": 0, "pgsize": 0, "fl": []}
        it = self.unmap_range(d, m.base, m.length, queued, g)
        if not queued:
            self.iotlb_sync(d, g)
            if m.node is not None:
                dom.iovad.free_iova_fast(cpu, m.node, m.pages, self.now)
            return L.ST_DONE
        npages = (it - m.base) >> 12
        self.hw.mark_stale(d, m.base >> 12, npages)
        dom.pend_pages += npages
        dom.pend_pagets += npages * self.now
        self.queue_iova(d, cpu, m.node, m.pages, g["fl"])
        return L.ST_DONE

    # -- access -----------------------------------------------------------------
    def translate(self, d, pfn):
        self.c["lookups"] += 1
        r = self.hw.tlb_lookup(d, pfn)
        if r:
            self.c["iotlb_hits"] += 1
            self.c["stale_hits"] += r == 2
            return
        self.c["iotlb_misses"] += 1
        if pfn > self.P[L.P_APERTURE_PFN]:
            self.c["faults"] += 1
            return
        levels = self.domains[d].pt.levels
        start = levels + 1
        for level in range(2, levels + 1):
            if level not in self.hw.psc:
                continue
            if self.hw.psc_lookup(d, level, pfn):
                self.c[f"psc_l{level}_hits"] += 1
                start = level
                break
            self.c[f"psc_l{level}_misses"] += 1
        stop, leaf = self.domains[d].pt.walk(pfn)
        self.c["walk_reads"] += max(1, start - stop)
        for level in range(stop + 1, start):
            self.hw.psc_fill(d, level, pfn)
        if leaf == 0:
            self.c["faults"] += 1
        else:
            self.hw.tlb_fill(d, pfn, leaf - 1)

    def access(self, d, h, iova, offset, size):
        self.c["accesses"] += 1
        self.c["bytes_accessed"] += size
        if h != ts.NO_HANDLE:
            m = self.maps.get(h)
            if m is None:
                return L.ST_ACCESS_UNKNOWN
            if m.state == "unmapped":
                self.c["late_accesses"] += 1
            addr = m.dma + offset
        else:
            addr = iova
        gs = self.gs
        for page in range(addr >> gs, ((addr + size - 1) >> gs) + 1):
            self.translate(d, page << (gs - 12))
        return L.ST_DONE

    def event(self, row, segs=()):
        """One event: a row, or the rows segs of a scatterlist (row = segs[0])."""
        t = row["ts"]
        self.fire_timers(t)
        self.now = t
        d = self.domain(row["device"])
        self.c["events"] += max(1, len(segs))
        if self.mode == L.FLUSH_PASSTHROUGH:
            if segs:
                self.c["sg_segments"] += len(segs)
                row = dict(row, size=sum(s["size"] for s in segs))
            return self.identity(row)
        op = row["op"]
        if segs:
            return self.map_sg(d, row["cpu"], segs)
        if op == ts.OP_MAP:
            return self.map(d, row["cpu"], row["handle"], row["iova"], row["paddr"], row["size"], row["flags"])
        if op == ts.OP_UNMAP:
            return self.unmap(d, row["cpu"], row["handle"], row["size"])
        return self.access(d, row["handle"], row["iova"], row["offset"], row["size"])

    def result(self):
        values = dict(self.c)
        doms = [dom for dom in self.domains.values() if dom is not None]
        for dom in doms:
            values["stale_page_ns"] += self.now * dom.pend_pages - dom.pend_pagets
        values["pt_pages_live"] = self.pages.live
        values["pt_pages_pending"] = self.pages.pending
        values["pt_bytes_live"] = self.pages.bytes
        values["memcg_charged_bytes"] = self.pages.charged
        values["fq_pending_pages"] = sum(dom.pend_pages for dom in doms)
        return metrics.derive(values, self.spec.vendor.cost_params(self.spec.params))


def run(path, spec, flush, gfp):
    """Simulate a (small) trace event by event; returns metrics like Simulator."""
    with TraceReader(path) as r:
        ref = Reference(spec, flush, gfp, r.num_cpus)
        segs = []
        for row0, cols in r.batches():
            names = list(cols)
            for i, values in enumerate(zip(*(cols[n].tolist() for n in names))):
                row = dict(zip(names, values))
                if row["flags"] & ts.FLAG_SG_MORE:
                    segs.append(row)
                    continue
                if segs:
                    segs.append(row)
                    st = ref.event(segs[0], segs)
                    segs = []
                else:
                    st = ref.event(row)
                if st != L.ST_DONE:
                    raise TraceError(path, f"row {row0 + i}: status {st}")
        return ref.result()
