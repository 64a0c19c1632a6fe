"""Intel VT-d: second-stage page tables and the invalidation queue.

Invalidation follows drivers/iommu/intel/cache.c (v6.12):
cache_tag_flush_range() turns a range into one IOTLB descriptor, page-selective
(PSI) with the address mask from calculate_psi_aligned_address(), or
domain-selective (DSI) when the mask exceeds CAP.MAMV; cache_tag_flush_all()
sends DSI. A domain here has one cache tag (one IOMMU, no device TLB), so a
flush is one descriptor and one wait descriptor (qi_submit_sync); merging the
descriptors of several tags into a qi_batch (v6.12) comes with multi-tag models.
The invalidation hint IH is set when no page-table page was freed, so
paging-structure caches survive a PSI (VT-d spec 6.5.2.3).
"""

from numba import njit

from harness.core import bits, iotlb
from harness.core import layout as L
from harness.errors import HarnessError

PARAMS = ("pagetable.levels", "pagetable.pgsizes", "iotlb.entries", "iotlb.ways",
          "psc.l2_entries", "psc.l2_ways", "psc.l3_entries", "psc.l3_ways",
          "psc.l4_entries", "psc.l4_ways", "psc.l5_entries", "psc.l5_ways",
          "inv.mamv", "inv.desc_ns", "inv.wait_ns", "inv.trap_ns",
          "vtd.caching_mode", "pagetable.first_stage")

MAX_AGAW_PFN_WIDTH = 52  # intel/iommu.h: MAX_AGAW_WIDTH 64 - VTD_PAGE_SHIFT


@njit(cache=True, inline="always")
def psi_aligned_address(start, end):
    """calculate_psi_aligned_address(): (aligned address, mask) of the smallest
    naturally aligned power-of-two block of 4 KiB pages covering [start, end]."""
    pages = ((start & 4095) + (end - start + 1) + 4095) >> 12
    mask = bits.order_base_2(pages)
    bitmask = (1 << mask) - 1
    pfn = start >> 12
    if bitmask & pfn:
        shared = ~(pfn ^ (pfn + pages - 1)) & ~bitmask
        mask = bits.ffs0(shared) if shared else MAX_AGAW_PFN_WIDTH
    return (start >> (12 + mask)) << (12 + mask) if mask < 52 else 0, mask


@njit(cache=True, inline="always")
def _submit(S):
    """qi_submit_sync(): the batch plus a wait descriptor; under caching mode
    the queue is emulated, so every submission traps to the host."""
    S.C[L.C_INV_WAITS] += 1
    if S.P[L.P_CM]:
        S.C[L.C_INV_TRAPS] += 1


@njit(cache=True, inline="always")
def flush_range(S, d, start, end, ih):
    """cache_tag_flush_range(domain, start, end, ih) for one IOTLB cache tag:
    first-stage domains get a PASID-based IOTLB invalidation (qi_batch_add_piotlb,
    no MAMV limit), second-stage domains PSI or DSI beyond MAMV."""
    addr, mask = psi_aligned_address(start, end)
    if S.P[L.P_FIRST_STAGE]:
        S.C[L.C_INV_PIOTLB] += 1
        S.C[L.C_INV_PSI_PAGES] += 1 << mask
        iotlb.range_apply(S, d, addr >> 12, 1 << mask, 0)
        if not ih:
            iotlb.psc_invalidate_range(S, d, addr >> 12, 1 << mask)
    elif mask > S.P[L.P_MAMV]:
        S.C[L.C_INV_DSI] += 1
        iotlb.invalidate_domain(S, d)
    else:
        S.C[L.C_INV_PSI] += 1
        S.C[L.C_INV_PSI_PAGES] += 1 << mask
        iotlb.range_apply(S, d, addr >> 12, 1 << mask, 0)
        if not ih:
            iotlb.psc_invalidate_range(S, d, addr >> 12, 1 << mask)
    _submit(S)


@njit(cache=True)
def flush_all(S, d):
    """cache_tag_flush_all(): domain-selective (second stage) or PASID-selective
    (first stage) IOTLB invalidation."""
    S.C[L.C_FLUSH_ALL] += 1
    S.C[L.C_INV_PIOTLB_ALL if S.P[L.P_FIRST_STAGE] else L.C_INV_DSI] += 1
    iotlb.invalidate_domain(S, d)
    _submit(S)


@njit(cache=True, inline="always")
def iotlb_sync_map(S, d, iova, size):
    """intel_iommu_iotlb_sync_map() -> cache_tag_flush_range_np(): in caching
    mode a new second-stage mapping must be invalidated (IH=0) so the host
    shadows it; otherwise only a write-buffer flush, which is not modelled."""
    if S.P[L.P_CM] and not S.P[L.P_FIRST_STAGE]:
        S.C[L.C_IOTLB_SYNC_MAPS] += 1
        flush_range(S, d, iova, iova + size - 1, 0)


def effective_flush(spec, requested, kernel):
    """(flush mode, why) after the driver's rules. Caching mode forces strict
    (intel/iommu.c: "IOMMU batching disallowed due to virtualization",
    iommu_set_dma_strict()); since v6.3 only for second-stage tables
    ("iommu/vt-d: Allow to use flush-queue when first level is default")."""
    lazy = requested in ("lazy", "lazy-single")
    if lazy and spec["vtd.caching_mode"]:
        if kernel < (6, 3):
            return "strict", "caching mode forces strict before v6.3"
        if not spec["pagetable.first_stage"]:
            return "strict", "caching mode forces strict for second-stage tables"
    return requested, ""


def _pow2(name, v):
    if v < 1 or v & (v - 1):
        raise HarnessError(f"model parameter {name} = {v}: expected a power of two")
    return v


def hardware_params(spec, P):
    """Fill the hardware part of parameter vector P from a resolved spec;
    returns the last IOVA the domain can translate (its address width)."""
    levels = spec["pagetable.levels"]
    if levels not in (3, 4, 5):
        raise HarnessError(f"model parameter pagetable.levels = {levels}: expected 3, 4 or 5")
    P[L.P_LEVELS] = levels
    bitmap = 0
    for size in spec["pagetable.pgsizes"]:
        if size not in (4096, 1 << 21, 1 << 30):
            raise HarnessError(f"model parameter pagetable.pgsizes: {size} is not a VT-d "
                               "second-stage page size (4096, 2097152, 1073741824)")
        bitmap |= size
    if not bitmap & 4096:
        raise HarnessError("model parameter pagetable.pgsizes: must include 4096")
    P[L.P_PGSIZE_BITMAP] = bitmap
    entries, ways = spec["iotlb.entries"], spec["iotlb.ways"]
    if ways < 1 or entries % ways:
        raise HarnessError(f"model parameters iotlb.entries = {entries}, iotlb.ways = {ways}: "
                           "entries must be a multiple of ways")
    P[L.P_IOTLB_SETS] = _pow2("iotlb.entries / iotlb.ways", entries // ways)
    P[L.P_IOTLB_WAYS] = ways
    for level in range(2, 6):
        e = spec[f"psc.l{level}_entries"] if level <= levels else 0
        w = min(spec[f"psc.l{level}_ways"], e) if e else 0
        if e and e % w:
            raise HarnessError(f"model parameter psc.l{level}_entries = {e}: "
                               f"expected a multiple of psc.l{level}_ways = {w}")
        P[L.P_PSC_SETS + level] = _pow2(f"psc.l{level}_entries / ways", e // w) if e else 1
        P[L.P_PSC_WAYS + level] = w
    P[L.P_MAMV] = spec["inv.mamv"]
    P[L.P_CM] = int(spec["vtd.caching_mode"])
    P[L.P_FIRST_STAGE] = int(spec["pagetable.first_stage"])
    aperture_bits = 12 + 9 * levels
    return (1 << aperture_bits) - 1


def gfp_ignored(kernel):
    """Before v6.3 intel_iommu_map() ignored its gfp argument and allocated
    tables with GFP_ATOMIC ("iommu/intel: Support the gfp argument to the
    map_pages op", v6.3), so nothing was charged to a memory cgroup."""
    return kernel < (6, 3)


def cost_params(spec):
    return {k: float(spec[k]) for k in ("inv.desc_ns", "inv.wait_ns", "inv.trap_ns")}

