"""AMD-Vi: v1 and v2 page tables and the command buffer.

Follows drivers/iommu/amd/iommu.c and io_pgtable*.c (v6.12). v1 tables use
every power-of-two page size from 4 KiB except 512 GiB (AMD_IOMMU_PGSIZES);
sizes between levels are replicated PTEs (PAGE_SIZE_PTE_COUNT). v2 tables use
the x86 format (4K/2M/1G, 4 or 5 levels). Neither frees tables on unmap.

amd_iommu_domain_flush_pages(): one INVALIDATE_IOMMU_PAGES per IOMMU with the
range encoded by build_inv_address() (the naturally aligned power-of-two block
holding the range; all pages when bit 51 differs), the PDE bit set so walk
caches go too; INVALIDATE_IOTLB_PAGES for each ATS device with the same
encoding; then one COMPLETION_WAIT (domain_flush_complete). With NpCache (a
virtual IOMMU) the range is flushed as naturally aligned chunks, each its own
commands, new mappings are flushed (amd_iommu_iotlb_sync_map ->
domain_flush_np_cache), and strict mode is forced (init.c iommu_init_pci:
"Using strict mode due to virtualization"). Each command is queued with its
own tail-register write, which traps under virtualization.
"""

from harness.core.compiled import njit
from harness.core import bits, iotlb
from harness.core import layout as L
from harness.errors import HarnessError
from harness.vendors import common

PARAMS = ("pagetable.version", "pagetable.levels", "pagetable.pgsizes", *common.CACHE_PARAMS,
          "psc.l2_entries", "psc.l2_ways", "psc.l3_entries", "psc.l3_ways",
          *common.COST_PARAMS, "amdvi.np_cache", "device.ats")

ALL_PAGES = 0x7FFFFFFFFFFFFFFF  # CMD_INV_IOMMU_ALL_PAGES_ADDRESS, the size flush_all passes


@njit(cache=True, inline="always")
def _queue(S, n):
    """iommu_queue_command(): each command moves the tail register."""
    S.C[L.C_INV_SUBMITS] += n
    if S.P[L.P_VIRT]:
        S.C[L.C_INV_TRAPS] += n


@njit(cache=True, inline="always")
def _flush_pages(S, d, address, size):
    """__domain_flush_pages(): build_inv_address() then the commands."""
    if (address & 4095) + size <= 4096:  # iommu_num_pages() == 1
        lo, npages, everything = address >> 12, 1, False
    else:
        msb_diff = bits.fls0((address + size - 1) ^ address)
        everything = msb_diff > 51
        npages = (1 << (msb_diff + 1)) >> 12
        lo = (address >> 12) & ~(npages - 1)
    if everything:
        iotlb.all_command(S, d)
    else:
        iotlb.range_command(S, d, lo, npages, True)
    _queue(S, 1 + iotlb.dev_command(S))


@njit(cache=True, inline="always")
def flush_pages(S, d, start, end):
    """amd_iommu_domain_flush_pages(domain, start, size) + COMPLETION_WAIT."""
    address = start
    size = end - start + 1
    if not S.P[L.P_VIRT]:
        _flush_pages(S, d, address, size)
    else:
        while size:
            m = bits.fls0(size)
            if address:
                m = min(bits.ffs0(address), m)
            _flush_pages(S, d, address, 1 << m)
            address += 1 << m
            size -= 1 << m
    S.C[L.C_INV_SYNCS] += 1
    _queue(S, 1)


@njit(cache=True)
def update_and_flush_device_table(S):
    """amd_iommu_update_and_flush_device_table() after a table grows a level:
    INVALIDATE_DEVTAB_ENTRY for the device, then COMPLETION_WAIT."""
    S.C[L.C_INV_SYNCS] += 1
    _queue(S, 2)


@njit(cache=True)
def flush_all(S, d):
    """amd_iommu_flush_iotlb_all -> amd_iommu_domain_flush_all()."""
    flush_pages(S, d, 0, ALL_PAGES - 1)


@njit(cache=True)
def iotlb_sync_map(S, d, iova, size):
    S.C[L.C_IOTLB_SYNC_MAPS] += 1
    flush_pages(S, d, iova, iova + size - 1)


def effective_flush(spec, requested, kernel):
    if requested in ("lazy", "lazy-single") and spec["amdvi.np_cache"]:
        return "strict", "NpCache (virtualized IOMMU) forces strict"
    return requested, ""


def hardware_params(spec, P, kernel):
    """v1: a domain starts with 3 levels (v1_alloc_pgtable: PAGE_MODE_3_LEVEL)
    and grows up to pagetable.levels as maps reach higher IOVAs
    (increase_address_space); v2: 4 or 5 levels of the x86 format."""
    version = common.choice(spec, "pagetable.version", (1, 2))
    P[L.P_FAMILY] = L.FAMILY_AMDVI
    if version == 1:
        levels = common.choice(spec, "pagetable.levels", (3, 4, 5, 6))
        allowed = tuple(1 << s for s in range(12, 52) if s != 39)
    else:
        levels = common.choice(spec, "pagetable.levels", (4, 5))
        allowed = (4096, 1 << 21, 1 << 30)
    width = common.geometry(P, levels, 12, [9] * levels)
    if version == 1:
        P[L.P_INIT_LEVELS] = 3
    bitmap = common.pgsize_bitmap(spec, allowed, f"AMD v{version}")
    if not bitmap & 4096:
        raise HarnessError("model parameter pagetable.pgsizes: must include 4096")
    P[L.P_PGSIZE_BITMAP] = bitmap
    common.caches(spec, P, levels)
    P[L.P_PT_UNMAP] = L.PT_UNMAP_KEEP
    P[L.P_VIRT] = int(spec["amdvi.np_cache"])
    P[L.P_ATS] = int(spec["device.ats"])
    # IOVAs are int64 in the kernel loop: the top 2 bits stay clear so an access
    # past a mapping near the top cannot overflow
    return (1 << min(width, 62)) - 1


def gfp_ignored(kernel):
    """amd iommu_v1_map_pages() has passed its gfp to alloc_pte() since the
    map_pages conversion (v5.15)."""
    return False


cost_params = common.cost_params


def counter_view(v, spec):
    """The run in AMD's perf iommu event names (arch/x86/events/amd/iommu.c).
    The device-table cache is not modelled: one miss per device. v1 tables
    are host (nested-stage) reads, v2 tables guest reads."""
    psc_hits = sum(v[f"psc_l{lv}_hits"] for lv in range(2, 7))
    psc_misses = sum(v[f"psc_l{lv}_misses"] for lv in range(2, 7))
    v1 = spec["pagetable.version"] == 1
    inv = v["inv_range"] + v["inv_all"] + v["inv_dev"]
    return "AMD perf iommu", {
        "mem_trans_total": v["lookups"],
        "mem_iommu_tlb_pte_hit": v["iotlb_hits"],
        "mem_iommu_tlb_pte_mis": v["iotlb_misses"],
        "mem_iommu_tlb_pde_hit": psc_hits,
        "mem_iommu_tlb_pde_mis": psc_misses,
        "mem_dte_hit": max(0, v["lookups"] - v["domains"]),
        "mem_dte_mis": min(v["domains"], v["lookups"]),
        "page_tbl_read_tot": v["walk_reads"],
        "page_tbl_read_nst": v["walk_reads"] if v1 else 0,
        "page_tbl_read_gst": 0 if v1 else v["walk_reads"],
        "cmd_processed": inv + v["inv_syncs"],
        "cmd_processed_inv": inv,
        "tlb_inv": v["inv_range"] + v["inv_all"],
    }
