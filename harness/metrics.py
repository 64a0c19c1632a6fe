"""The one registry of metrics: name, unit and meaning.

Counters are int64 slots the compiled kernel increments (their order fixes
their index); derived metrics are computed from counters and model parameters
once a run ends. CLI tables, parquet columns and docs all read this registry.
"""

from collections import namedtuple

Metric = namedtuple("Metric", "name unit meaning")

COUNTERS = (
    Metric("events", "events", "trace rows processed"),
    Metric("maps", "events", "map events (dma_map_* or iommu_map)"),
    Metric("unmaps", "events", "unmap events (dma_unmap_* or iommu_unmap)"),
    Metric("accesses", "events", "device access events"),
    Metric("lookups", "translations", "IOTLB lookups: one per 4 KiB IOVA page an access touches"),
    Metric("bytes_mapped", "bytes", "bytes requested by map events"),
    Metric("sg_segments", "segments", "scatterlist segments of dma_map_sg lists (each list is one "
           "map event: one IOVA range, one iotlb_sync_map)"),
    Metric("bytes_accessed", "bytes", "bytes moved by access events"),
    Metric("faults", "translations", "lookups that found no valid PTE (DMA remapping fault)"),
    Metric("late_accesses", "events", "accesses through a handle after its unmap"),
    Metric("stale_hits", "translations", "lookups that hit an IOTLB entry whose PTE was already "
           "cleared (unmapped, invalidation deferred): the exposure lazy mode buys speed with"),
    Metric("stale_page_ns", "page*ns", "sum over unmapped 4 KiB pages of the time from unmap to "
           "IOTLB invalidation (0 in strict mode)"),
    Metric("iotlb_hits", "translations", "IOTLB lookups that hit"),
    Metric("iotlb_misses", "translations", "IOTLB lookups that missed and walked the page table"),
    Metric("utlb_hits", "translations", "lookups served by the device's micro-TLB (utlb.entries > 0; "
           "counted in iotlb_hits too)"),
    Metric("utlb_misses", "translations", "micro-TLB misses that went on to the main IOTLB"),
    Metric("psc_l2_hits", "lookups", "walk-cache hits on level-2 entries (VT-d PDE cache, AMD PDE cache, SMMU level-2 walk cache)"),
    Metric("psc_l2_misses", "lookups", "walk-cache misses on level-2 entries"),
    Metric("psc_l3_hits", "lookups", "walk-cache hits on level-3 entries (VT-d PDPE cache)"),
    Metric("psc_l3_misses", "lookups", "walk-cache misses on level-3 entries"),
    Metric("psc_l4_hits", "lookups", "walk-cache hits on level-4 entries (VT-d PML4E cache)"),
    Metric("psc_l4_misses", "lookups", "walk-cache misses on level-4 entries"),
    Metric("psc_l5_hits", "lookups", "walk-cache hits on level-5 entries (VT-d PML5E cache)"),
    Metric("psc_l5_misses", "lookups", "walk-cache misses on level-5 entries"),
    Metric("psc_l6_hits", "lookups", "walk-cache hits on level-6 entries (AMD 6-level tables)"),
    Metric("psc_l6_misses", "lookups", "walk-cache misses on level-6 entries"),
    Metric("walk_reads", "reads", "page-table entries read by the page walker"),
    Metric("inv_range", "commands", "range IOTLB invalidations: VT-d PSI or PASID-based PSI, AMD "
           "INVALIDATE_IOMMU_PAGES, SMMUv3 TLBI_NH_VA/TLBI_S2_IPA, s390 RPCIT of a range"),
    Metric("inv_all", "commands", "domain-wide IOTLB invalidations: VT-d DSI or PASID-selective, AMD "
           "INVALIDATE_IOMMU_PAGES of all pages, SMMUv3 TLBI_NH_ASID/TLBI_S12_VMALL, s390 global RPCIT"),
    Metric("inv_pages", "pages", "4 KiB pages covered by range invalidations"),
    Metric("inv_dev", "commands", "device-TLB invalidations for ATS devices: VT-d device-TLB "
           "descriptors, AMD INVALIDATE_IOTLB_PAGES, SMMUv3 CMD_ATC_INV"),
    Metric("inv_syncs", "commands", "completion waits: VT-d wait descriptors, AMD COMPLETION_WAIT, "
           "SMMUv3 CMD_SYNC"),
    Metric("inv_submits", "calls", "submissions to the invalidation queue (qi_submit_sync, "
           "command-buffer tail writes, cmdq batches; RPCIT instructions)"),
    Metric("inv_traps", "traps", "invalidation work that traps to the hypervisor (VT-d caching "
           "mode, AMD NpCache, s390 shadowed tables)"),
    Metric("iotlb_sync_maps", "calls", "iotlb_sync_map flushes of new mappings (virtualized IOMMUs)"),
    Metric("iotlb_syncs", "calls", "iommu_iotlb_sync of a gathered range"),
    Metric("flush_all", "calls", "flush_iotlb_all (domain-wide flush)"),
    Metric("fq_queued", "entries", "unmapped IOVA ranges queued on a flush queue"),
    Metric("fq_flush_full", "flushes", "flush-queue flushes because a per-CPU queue was full"),
    Metric("fq_flush_timeout", "flushes", "flush-queue flushes by the flush-queue timer"),
    Metric("iova_allocs", "calls", "IOVA allocations (alloc_iova_fast) that succeeded"),
    Metric("iova_rcache_hits", "calls", "IOVA allocations served by the per-CPU rcache or depot"),
    Metric("iova_tree_allocs", "calls", "IOVA allocations served by the tree (slow path)"),
    Metric("iova_tree_walk_steps", "nodes", "rb_prev steps of __alloc_and_insert_iova_range (slow-path cost)"),
    Metric("iova_32bit_fallbacks", "events", "devices that left the 32-bit-first window (PCI SAC trick)"),
    Metric("iova_rcache_flushes", "calls", "allocation retries after flushing all rcaches"),
    Metric("iova_alloc_failures", "calls", "IOVA allocations that failed (map returns an error)"),
    Metric("iova_frees", "calls", "IOVA ranges freed (free_iova_fast)"),
    Metric("iova_rcache_inserts", "calls", "freed IOVAs kept in the rcache"),
    Metric("iova_tree_frees", "calls", "IOVA ranges returned to the tree"),
    Metric("iova_depot_trims", "magazines", "depot magazines returned to the tree by the depot worker"),
    Metric("pt_pages_alloc", "tables", "page tables allocated (iommu_alloc_pages_sz calls)"),
    Metric("pt_pages_freed", "tables", "page tables freed (after their invalidation)"),
    Metric("pt_pages_peak", "tables", "peak page tables allocated and not yet freed"),
    Metric("pt_pages_pending_peak", "tables", "peak page tables on a freelist awaiting invalidation"),
    Metric("pt_bytes_peak", "bytes", "peak page-table memory (nr_iommu_pages / SecPageTables, in bytes)"),
    Metric("alloc_gfp_atomic", "tables", "page tables allocated with GFP_ATOMIC"),
    Metric("alloc_gfp_kernel", "tables", "page tables allocated with GFP_KERNEL"),
    Metric("alloc_gfp_kernel_account", "tables", "page tables allocated with GFP_KERNEL_ACCOUNT"),
    Metric("memcg_charged_peak_bytes", "bytes", "peak page-table bytes charged to the memory cgroup"),
    Metric("map_enomem", "events", "maps failed with -ENOMEM: a page-table allocation over the "
           "memory-cgroup limit, or a GFP_ATOMIC allocation under memory pressure"),
    Metric("gfp_atomic_failures", "tables", "GFP_ATOMIC page-table allocations that failed (mem.* model)"),
    Metric("map_rejected", "events", "maps the kernel rejects: -EINVAL (misaligned IOMMU-API map, "
           "DMA address not matching the buffer's page offset, forbidden gfp flags), -EFAULT "
           "(beyond the address width)"),
    Metric("gfp_forbidden", "events", "IOMMU-API maps passing __GFP_COMP, __GFP_DMA, __GFP_DMA32 "
           "or __GFP_HIGHMEM (-EINVAL since v6.3)"),
    Metric("gfp_blocking_in_atomic", "tables", "page tables allocated for IOMMU-API maps whose "
           "caller passed a blocking gfp in atomic context (the iommu_suspend bug class)"),
    Metric("map_overlaps", "pages", "pages a map found already mapped (left unchanged)"),
    Metric("superpage_switches", "tables", "page tables freed to make room for a superpage"),
    Metric("domains", "domains", "DMA domains created (one per device)"),
)

# Read from the simulator state when a run ends.
GAUGES = (
    Metric("pt_pages_live", "tables", "page tables allocated and not freed at the end"),
    Metric("pt_pages_pending", "tables", "of those, tables still awaiting invalidation at the end"),
    Metric("pt_bytes_live", "bytes", "page-table memory allocated and not freed at the end"),
    Metric("memcg_charged_bytes", "bytes", "page-table bytes charged to the memory cgroup at the end"),
    Metric("fq_pending_pages", "pages", "unmapped pages still awaiting invalidation at the end"),
)

DERIVED = (
    Metric("iotlb_miss_rate", "ratio", "iotlb_misses / lookups"),
    Metric("iotlb_misses_per_mib", "misses/MiB", "IOTLB misses per MiB accessed"),
    Metric("walk_reads_per_miss", "reads", "page-table reads per IOTLB miss"),
    Metric("inv_cost_ns", "ns", "modelled invalidation cost: inv.cmd_ns per command, inv.sync_ns per "
           "completion wait, inv.page_ns per page covered, inv.trap_ns per trap"),
    Metric("inv_cost_ns_per_mib", "ns/MiB", "modelled invalidation cost per MiB mapped"),
    Metric("inv_cmds_per_mib", "commands/MiB", "invalidation commands (range, all, device) per MiB mapped"),
)

ALL = COUNTERS + GAUGES + DERIVED
BY_NAME = {m.name: m for m in ALL}
COUNTER_INDEX = {m.name: i for i, m in enumerate(COUNTERS)}
NUM_COUNTERS = len(COUNTERS)


def inv_terms(v, params):
    """(count, ns each) of the modelled invalidation cost (inv_cost_ns); a
    model without invalidation parameters (none) pays nothing."""
    ns = lambda k: params.get(k, 0.0)  # noqa: E731
    return [(v["inv_range"] + v["inv_all"] + v["inv_dev"], ns("inv.cmd_ns")),
            (v["inv_syncs"], ns("inv.sync_ns")), (v["inv_pages"], ns("inv.page_ns")),
            (v["inv_traps"], ns("inv.trap_ns"))]


def derive(values, params):
    """Add derived metrics to a dict of counter and gauge values."""
    v = dict(values)
    lookups = v["lookups"]
    mib = v["bytes_accessed"] / 2**20
    v["iotlb_miss_rate"] = v["iotlb_misses"] / lookups if lookups else 0.0
    v["iotlb_misses_per_mib"] = v["iotlb_misses"] / mib if mib else 0.0
    v["walk_reads_per_miss"] = v["walk_reads"] / v["iotlb_misses"] if v["iotlb_misses"] else 0.0
    cmds = v["inv_range"] + v["inv_all"] + v["inv_dev"]
    cost = sum(n * ns for n, ns in inv_terms(v, params))
    v["inv_cost_ns"] = float(cost)
    mapped_mib = v["bytes_mapped"] / 2**20
    v["inv_cost_ns_per_mib"] = cost / mapped_mib if mapped_mib else 0.0
    v["inv_cmds_per_mib"] = cmds / mapped_mib if mapped_mib else 0.0
    return v


def markdown_table():
    """The metric table of results/README.md (`python -m harness.metrics`)."""
    rows = [f"| `{m.name}` | {m.unit} | {m.meaning} |" for m in ALL]
    return "\n".join(["| metric | unit | meaning |", "|---|---|---|"] + rows)


if __name__ == "__main__":
    print(markdown_table())
