"""Invalidation on unmap: the iotlb gather and the dma-iommu flush queues.

Gather (include/linux/iommu.h, v6.12): iommu_iotlb_gather_add_page() syncs
early when a page is disjoint from the gathered range or of another size;
iommu_iotlb_sync() hands the range to the driver and resets the gather.
Gather array g: layout.GA_* (start, end, pgsize, freelist).

Flush queues (drivers/iommu/dma-iommu.c, v6.7+): per domain and CPU (or one
per domain, the single queue for hypervisors that shadow tables) a ring of
fq_size slots (one kept empty, fq_full()); queue_iova() first releases
entries an earlier flush covered (fq_ring_free_locked), flushes the domain
when the ring is full, and arms the fq timer (fq_timeout) if it is off. The
timer flushes the domain and releases every CPU's ring, on the CPU that armed
it. A flush is flush_iotlb_all between fq_flush_start_cnt and
fq_flush_finish_cnt; an entry is released once its counter is below the
finish count: its IOVA goes to free_iova_fast() and its page-table pages are
freed.
"""

from harness.core.compiled import njit
from harness.core import iova
from harness.core import layout as L
from harness.core import pages
from harness.core import timers
from harness.vendors import hw

G_START, G_END, G_PGSIZE, G_FL = L.GA_START, L.GA_END, L.GA_PGSIZE, L.GA_FL


@njit(cache=True, inline="always")
def gather_init(g):
    g[G_START] = L.NEVER
    g[G_END] = 0
    g[G_PGSIZE] = 0
    g[G_FL] = 0
    g[G_FL + 1] = 0
    g[G_FL + 2] = 0


@njit(cache=True, inline="always")
def iotlb_sync_inline(S, d, g):
    """iommu_iotlb_sync() -> the driver's iotlb_sync: flush the gathered range
    (VT-d: IH when the freelist is empty), then free the freelist. Inlined on
    the strict unmap path; everything else calls iotlb_sync."""
    S.C[L.C_IOTLB_SYNCS] += 1
    hw.flush_range(S, d, g[G_START], g[G_END], g[G_PGSIZE], g[G_FL] != 0)
    pages.put_list(S, g[G_FL:G_FL + 3])
    gather_init(g)


@njit(cache=True)
def iotlb_sync(S, d, g):
    iotlb_sync_inline(S, d, g)


@njit(cache=True, inline="always")
def gather_add_page(S, d, g, iova_, size, pgsize):
    """The driver's gather step for an unmapped chunk. VT-d and Arm:
    iommu_iotlb_gather_add_page() (sync first when the chunk is disjoint or of
    another page size: VT-d passes the chunk, io-pgtable-arm each page); AMD
    (amd_iommu_iotlb_gather_add_page) syncs first only for a disjoint chunk
    under NpCache; s390 only widens the range (iommu_iotlb_gather_add_range)."""
    end = iova_ + size - 1
    fam = S.P[L.P_FAMILY]
    disjoint = g[G_END] != 0 and (end + 1 < g[G_START] or iova_ > g[G_END] + 1)
    if fam == L.FAMILY_AMDVI or fam == L.FAMILY_S390:
        if disjoint and fam == L.FAMILY_AMDVI and S.P[L.P_VIRT]:
            iotlb_sync(S, d, g)
    else:
        if fam == L.FAMILY_VTD:
            pgsize = size
        if (g[G_PGSIZE] and g[G_PGSIZE] != pgsize) or disjoint:
            iotlb_sync(S, d, g)
        g[G_PGSIZE] = pgsize
    g[G_START] = min(g[G_START], iova_)
    g[G_END] = max(g[G_END], end)


@njit(cache=True)
def fq_flush_iotlb(S, d):
    """fq_flush_iotlb(): flush_iotlb_all between the start and finish counts;
    ends the stale window of every page unmapped in this domain so far."""
    S.D[d, L.D_FQ_START] += 1
    hw.flush_all(S, d)
    S.D[d, L.D_FQ_FINISH] += 1
    S.C[L.C_STALE_PAGE_NS] += S.G[L.G_NOW] * S.D[d, L.D_PEND_PAGES] - S.D[d, L.D_PEND_PAGETS]
    S.D[d, L.D_PEND_PAGES] = 0
    S.D[d, L.D_PEND_PAGETS] = 0


@njit(cache=True, inline="always")
def _next(i, size):
    """The ring slot after i: a compare, where % would be a division on
    every queued and released entry."""
    return i + 1 if i + 1 < size else 0


@njit(cache=True, inline="always")
def fq_ring_free(S, d, qcpu, cpu):
    """fq_ring_free_locked() of CPU qcpu's ring, running on CPU cpu."""
    size = S.P[L.P_FQ_SIZE]
    head = S.fqh[d, qcpu, 0]
    tail = S.fqh[d, qcpu, 1]
    while head != tail:
        e = S.fq[d, qcpu, head]
        if e[L.FQ_COUNTER] >= S.D[d, L.D_FQ_FINISH]:
            break
        if e[L.FQ_NODE] != -1:
            iova.free_iova_fast(S, d, cpu, e[L.FQ_NODE], e[L.FQ_PFN], e[L.FQ_PAGES])
        pages.put_list(S, e[L.FQ_PT:L.FQ_PT + 3])
        head = _next(head, size)
    S.fqh[d, qcpu, 0] = head


@njit(cache=True, inline="always")
def queue_iova(S, d, cpu, node, pfn, npages, g):
    """queue_iova(): defer the IOVA and the gather freelist to the flush queue:
    this CPU's, or the domain's single queue (IOMMU_DMA_OPTS_SINGLE_QUEUE)."""
    size = S.P[L.P_FQ_SIZE]
    q = 0 if S.P[L.P_FLUSH] == L.FLUSH_LAZY_SINGLE else cpu
    fq_ring_free(S, d, q, cpu)
    if _next(S.fqh[d, q, 1], size) == S.fqh[d, q, 0]:
        S.C[L.C_FQ_FLUSH_FULL] += 1
        fq_flush_iotlb(S, d)
        fq_ring_free(S, d, q, cpu)
    tail = S.fqh[d, q, 1]
    e = S.fq[d, q, tail]
    e[L.FQ_NODE] = node
    e[L.FQ_PFN] = pfn
    e[L.FQ_PAGES] = npages
    e[L.FQ_COUNTER] = S.D[d, L.D_FQ_START]
    for k in range(3):  # element by element: a slice copy would allocate
        e[L.FQ_PT + k] = g[G_FL + k]
    S.fqh[d, q, 1] = _next(tail, size)
    S.C[L.C_FQ_QUEUED] += 1
    if S.D[d, L.D_FQ_TIMER] == L.NEVER:
        S.D[d, L.D_FQ_TIMER_CPU] = cpu
        timers.arm(S, d, L.D_FQ_TIMER, S.G[L.G_NOW] + S.P[L.P_FQ_TIMEOUT])


@njit(cache=True)
def fq_flush_timeout(S, d):
    """fq_flush_timeout(): flush, then release every CPU's ring."""
    S.D[d, L.D_FQ_TIMER] = L.NEVER
    S.C[L.C_FQ_FLUSH_TIMEOUT] += 1
    fq_flush_iotlb(S, d)
    cpu = S.D[d, L.D_FQ_TIMER_CPU]
    for q in range(S.fqh.shape[1]):
        fq_ring_free(S, d, q, cpu)
