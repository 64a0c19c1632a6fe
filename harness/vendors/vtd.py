"""Intel VT-d: second- and first-stage page tables and the invalidation queue.

Invalidation follows drivers/iommu/intel/cache.c (v6.12). A domain has an
IOTLB cache tag and, for an ATS device, a device-TLB tag. cache_tag_flush_range()
turns a range into one IOTLB descriptor per tag: first-stage domains a
PASID-based IOTLB invalidation (qi_batch_add_piotlb, no MAMV limit),
second-stage domains page-selective (PSI, the address mask from
calculate_psi_aligned_address()) or domain-selective (DSI) when the mask
exceeds CAP.MAMV; the device-TLB tag adds a device-TLB descriptor with the same
address and mask. cache_tag_flush_all() sends DSI (PASID-selective on first
stage) and a whole-range device-TLB descriptor. Since v6.12 the descriptors of
one flush are batched (qi_batch, up to QI_MAX_BATCHED_DESC_COUNT = 16) and
submitted with one wait descriptor; before, each went through its own
qi_submit_sync() (inv.batch = 1). The invalidation hint IH is set when no
page-table page was freed, so paging-structure caches survive a PSI (VT-d
spec 6.5.2.3). In caching mode (a virtual IOMMU) every submission traps.
"""

from harness.core.compiled import njit
from harness.core import bits, iotlb
from harness.core import layout as L
from harness.errors import HarnessError
from harness.vendors import common

PARAMS = ("pagetable.levels", "pagetable.pgsizes", "pagetable.first_stage", *common.CACHE_PARAMS,
          "psc.l2_entries", "psc.l2_ways", "psc.l3_entries", "psc.l3_ways",
          "psc.l4_entries", "psc.l4_ways", "psc.l5_entries", "psc.l5_ways",
          "inv.mamv", "inv.batch", *common.COST_PARAMS, "vtd.caching_mode", "device.ats")

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
def _submit(S, descs):
    """qi_submit_sync() of `descs` descriptors, in batches of inv.batch, each
    with a wait descriptor; under caching mode the queue is emulated, so every
    submission traps to the host."""
    n = (descs + S.P[L.P_CMD_BATCH] - 1) // S.P[L.P_CMD_BATCH]
    S.C[L.C_INV_SUBMITS] += n
    S.C[L.C_INV_SYNCS] += n
    if S.P[L.P_VIRT]:
        S.C[L.C_INV_TRAPS] += n


@njit(cache=True, inline="always")
def flush_range(S, d, start, end, ih, devtlb):
    """cache_tag_flush_range(domain, start, end, ih); devtlb False for
    cache_tag_flush_range_np(), which skips device-TLB tags."""
    addr, mask = psi_aligned_address(start, end)
    if mask > S.P[L.P_MAX_RANGE] and not S.P[L.P_FIRST_STAGE]:
        iotlb.all_command(S, d)
    else:
        iotlb.range_command(S, d, addr >> 12, 1 << mask, not ih)
    _submit(S, 1 + (iotlb.dev_command(S) if devtlb else 0))


@njit(cache=True)
def flush_all(S, d):
    """cache_tag_flush_all(): domain-selective (second stage) or PASID-selective
    (first stage) IOTLB invalidation, plus the device TLB."""
    iotlb.all_command(S, d)
    _submit(S, 1 + iotlb.dev_command(S))


@njit(cache=True)
def iotlb_sync_map(S, d, iova, size):
    """intel_iommu_iotlb_sync_map() -> cache_tag_flush_range_np(): in caching
    mode a new second-stage mapping must be invalidated (IH=0) so the host
    shadows it; first-stage tables need only a write-buffer flush."""
    if not S.P[L.P_FIRST_STAGE]:
        S.C[L.C_IOTLB_SYNC_MAPS] += 1
        flush_range(S, d, iova, iova + size - 1, False, False)


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


def hardware_params(spec, P, kernel):
    """Fill the hardware part of parameter vector P from a resolved spec;
    returns the last IOVA the domain can translate (its address width).
    Second stage: 3, 4 or 5 levels (39/48/57-bit AGAW), 4K/2M/1G pages;
    first stage: the x86 format, 4 or 5 levels (intel/iommu.c
    intel_iommu_domain_alloc_first_stage)."""
    levels = common.choice(spec, "pagetable.levels", (3, 4, 5))
    first = spec["pagetable.first_stage"]
    if first and levels == 3:
        raise HarnessError("model parameter pagetable.levels = 3: first-stage tables have 4 or 5 levels")
    P[L.P_FAMILY] = L.FAMILY_VTD
    bits_ = common.geometry(P, levels, 12, [9] * levels)
    bitmap = common.pgsize_bitmap(spec, (4096, 1 << 21, 1 << 30), "VT-d")
    if not bitmap & 4096:
        raise HarnessError("model parameter pagetable.pgsizes: must include 4096")
    P[L.P_PGSIZE_BITMAP] = bitmap
    common.caches(spec, P, levels)
    P[L.P_PT_UNMAP] = L.PT_UNMAP_FREELIST
    P[L.P_MAX_RANGE] = spec["inv.mamv"]
    if not 0 <= P[L.P_MAX_RANGE] <= MAX_AGAW_PFN_WIDTH:
        raise HarnessError(f"model parameter inv.mamv = {P[L.P_MAX_RANGE]}: expected 0..52")
    P[L.P_CMD_BATCH] = spec["inv.batch"] if kernel >= (6, 12) else 1
    if P[L.P_CMD_BATCH] < 1:
        raise HarnessError(f"model parameter inv.batch = {P[L.P_CMD_BATCH]}: expected >= 1")
    P[L.P_VIRT] = int(spec["vtd.caching_mode"])
    P[L.P_FIRST_STAGE] = int(first)
    P[L.P_ATS] = int(spec["device.ats"])
    return (1 << bits_) - 1


def gfp_ignored(kernel):
    """Before v6.3 intel_iommu_map() ignored its gfp argument and allocated
    tables with GFP_ATOMIC ("iommu/intel: Support the gfp argument to the
    map_pages op", v6.3), so nothing was charged to a memory cgroup."""
    return kernel < (6, 3)


cost_params = common.cost_params


def counter_view(v, spec):
    """The run in pcm-iio's IOMMU event names (opcm/pcm opCode-143-iommu.txt,
    Sapphire Rapids: the 256T/512G/1G/2M caches are the PML5E/PML4E/PDPE/PDE
    paging-structure caches). The context cache is not modelled: it is taken
    to miss once per device and hit on every other walk."""
    return "Intel pcm-iio", {
        "IOTLB Lookup": v["lookups"],
        "IOTLB Miss": v["iotlb_misses"],
        "Ctxt Cache Hit": max(0, v["iotlb_misses"] - v["domains"]),
        "Ctxt Cache Miss": min(v["domains"], v["iotlb_misses"]),
        "256T Cache Hit": v["psc_l5_hits"],
        "512G Cache Hit": v["psc_l4_hits"],
        "1G Cache Hit": v["psc_l3_hits"],
        "2M Cache Hit": v["psc_l2_hits"],
        "L1 PWC Miss (2M cache)": v["psc_l2_misses"],
        "L2 PWC Miss (1G cache)": v["psc_l3_misses"],
        "L3 PWC Miss (512G cache)": v["psc_l4_misses"],
        "IOMMU Mem Access": v["walk_reads"],
    }
