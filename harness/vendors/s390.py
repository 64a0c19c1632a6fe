"""s390: zPCI DMA translation tables and RPCIT.

Follows drivers/iommu/s390-iommu.c and arch/s390/include/asm/pci_dma.h
(v6.12): a region-third table and segment tables of 2048 entries (16 KiB,
ZPCI_TABLE_SIZE) over page tables of 256 entries (2 KiB, ZPCI_PT_SIZE); 4 KiB
pages only; a 4 TiB aperture (ZPCI_TABLE_SIZE_RT). Unmap only invalidates
PTEs; tables are freed with the domain (dma_cleanup_tables). v6.12 allocated
page tables from a 2 KiB slab ("PCI_DMA_page_tables"); iommu-pages rounds
sub-page tables up to a page (pagetable.subpage_tables = false).

Refreshes go through the RPCIT instruction (zpci_refresh_trans), one per
attached function: iotlb_sync refreshes the gathered range (the gather only
widens, iommu_iotlb_gather_add_range), flush_iotlb_all the whole aperture
(zpci_refresh_all), and iotlb_sync_map the new range when the hypervisor
shadows the tables (zdev->tlb_refresh, z/VM), where every RPCIT is
intercepted; such devices also get shadow_on_flush, i.e. the single flush
queue (lazy-single).
"""

from harness.core.compiled import njit
from harness.core import iotlb
from harness.core import layout as L
from harness.vendors import common

PARAMS = ("pagetable.subpage_tables", *common.CACHE_PARAMS, "psc.l2_entries", "psc.l2_ways",
          "psc.l3_entries", "psc.l3_ways", *common.COST_PARAMS, "s390.tlb_refresh")


@njit(cache=True, inline="always")
def _rpcit(S):
    S.C[L.C_INV_SUBMITS] += 1
    if S.P[L.P_VIRT]:
        S.C[L.C_INV_TRAPS] += 1


@njit(cache=True, inline="always")
def refresh(S, d, start, end):
    """zpci_refresh_trans() of [start, end]."""
    iotlb.range_command(S, d, start >> 12, ((end | 4095) - (start & ~4095) + 1) >> 12, True)
    _rpcit(S)


@njit(cache=True)
def refresh_all(S, d):
    """zpci_refresh_all(): one RPCIT over the aperture."""
    iotlb.all_command(S, d)
    _rpcit(S)


@njit(cache=True)
def iotlb_sync_map(S, d, iova, size):
    S.C[L.C_IOTLB_SYNC_MAPS] += 1
    refresh(S, d, iova, iova + size - 1)


def effective_flush(spec, requested, kernel):
    """Shadowed tables ask for the single queue (s390_iommu_probe_device sets
    shadow_on_flush; iommu_dma_init_fq picks IOMMU_DMA_OPTS_SINGLE_QUEUE)."""
    if requested == "lazy" and spec["s390.tlb_refresh"]:
        return "lazy-single", "shadowed tables use the single flush queue"
    return requested, ""


def hardware_params(spec, P, kernel):
    P[L.P_FAMILY] = L.FAMILY_S390
    common.geometry(P, 3, 12, [8, 11, 11], subpage=spec["pagetable.subpage_tables"])
    P[L.P_PGSIZE_BITMAP] = 4096
    common.caches(spec, P, 3)
    P[L.P_PT_UNMAP] = L.PT_UNMAP_KEEP
    P[L.P_VIRT] = int(spec["s390.tlb_refresh"])
    return (1 << 42) - 1


def gfp_ignored(kernel):
    """Before v6.3 s390_iommu_map_pages() allocated with GFP_ATOMIC whatever
    its gfp ("iommu/s390: Push the gfp parameter to the kmem_cache_alloc()'s",
    v6.3)."""
    return kernel < (6, 3)


cost_params = common.cost_params


def counter_view(v, spec):
    """RPCIT instructions are what s390 users count (zPCI has no public
    translation-cache counters)."""
    return "s390 zPCI", {
        "rpcit": v["inv_range"] + v["inv_all"],
        "rpcit_pages": v["inv_pages"],
        "rpcit_intercepts": v["inv_traps"],
    }
