"""Arm SMMUv3: io-pgtable-arm LPAE tables and the command queue.

Follows drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.c and io-pgtable-arm.c
(v6.12). Granules 4K (blocks 2M, 1G), 16K (32M), 64K (512M); levels
DIV_ROUND_UP(ias - pg_shift, pg_shift - 3), the top level holding the bits
left over (arm_lpae_alloc_pgtable). An unmap that removes a table entry
invalidates the table's span with a non-leaf range (io_pgtable_tlb_flush_walk,
granule steps, walk caches included) and frees it at once.

__arm_smmu_tlb_inv_range(): without range invalidation one TLBI_NH_VA (stage
1) or TLBI_S2_IPA (stage 2) per `granule` (the gather's page size for
iotlb_sync); with RIL (ARM_SMMU_FEAT_RANGE_INV) commands of NUM (1..32) <<
(SCALE + TG) bytes. Commands go out in batches of CMDQ_BATCH_ENTRIES = 64
without a sync; arm_smmu_cmdq_batch_submit() closes the call with one
CMD_SYNC. ATS masters get a CMD_ATC_INV over the range, in its own batch
(arm_smmu_atc_inv_domain). flush_iotlb_all: TLBI_NH_ASID / TLBI_S12_VMALL.
__arm_lpae_unmap() gathers every entry it clears, removed tables included
(v6.10 "Optimise non-coherent unmap"; earlier kernels gathered leaves only).
Stage 2 uses TLBI_S2_IPA / TLBI_S12_VMALL and concatenates a top level of at
most 16 entries into the next (arm_64_lpae_alloc_pgtable_s2). A per-device micro-TLB (utlb.entries, gem5's
device-interface uTLB) sits in front of the main TLB.
"""

from harness.core.compiled import njit
from harness.core import bits, iotlb
from harness.core import layout as L
from harness.errors import HarnessError
from harness.vendors import common

PARAMS = ("pagetable.granule", "pagetable.ias", "pagetable.stage", "pagetable.pgsizes",
          *common.CACHE_PARAMS, "psc.l2_entries", "psc.l2_ways", "psc.l3_entries", "psc.l3_ways",
          "utlb.entries", *common.COST_PARAMS, "smmu.ril", "smmu.cmdq_batch", "device.ats")

CMDQ_TLBI_RANGE_NUM_MAX = 31
BLOCKS = {4096: (4096, 1 << 21, 1 << 30), 16384: (16384, 1 << 25), 65536: (65536, 1 << 29)}


@njit(cache=True, inline="always")
def _submit(S, cmds):
    """arm_smmu_cmdq_batch_add/submit: full batches go out unsynced, the last
    with CMD_SYNC."""
    S.C[L.C_INV_SUBMITS] += (cmds + S.P[L.P_CMD_BATCH] - 1) // S.P[L.P_CMD_BATCH]
    S.C[L.C_INV_SYNCS] += 1


@njit(cache=True, inline="always")
def _atc_inv(S):
    """arm_smmu_atc_inv_domain(): one CMD_ATC_INV per ATS master, synced."""
    if iotlb.dev_command(S):
        _submit(S, 1)


@njit(cache=True, inline="always")
def tlb_inv_range(S, d, start, end, granule, leaf):
    """arm_smmu_tlb_inv_range_domain(iova, size, granule, leaf)."""
    size = end - start + 1
    tg = S.P[L.P_GRANULE_SHIFT]
    cmds = 0
    if not S.P[L.P_RIL]:
        cmds = (size + granule - 1) // granule
        S.C[L.C_INV_PAGES] += cmds * (granule >> 12)
    else:
        num_pages = size >> tg
        if not leaf and (num_pages & CMDQ_TLBI_RANGE_NUM_MAX) == 1:
            num_pages += 1  # a range of NUM 1 with TTL 0 is reserved
        while num_pages:
            scale = bits.ffs0(num_pages)
            num = (num_pages >> scale) & CMDQ_TLBI_RANGE_NUM_MAX
            S.C[L.C_INV_PAGES] += (num << (scale + tg)) >> 12
            num_pages -= num << scale
            cmds += 1
    S.C[L.C_INV_RANGE] += cmds
    iotlb.range_apply(S, d, start >> 12, (size + 4095) >> 12, 0)
    if not leaf:
        iotlb.psc_invalidate_range(S, d, start >> 12, (size + 4095) >> 12)
    _submit(S, cmds)
    _atc_inv(S)


@njit(cache=True)
def tlb_inv_context(S, d):
    """arm_smmu_tlb_inv_context(): ASID (stage 1) or VMID (stage 2) wide."""
    iotlb.all_command(S, d)
    _submit(S, 1)
    _atc_inv(S)


def effective_flush(spec, requested, kernel):
    return requested, ""


def hardware_params(spec, P, kernel):
    """arm_lpae_restrict_pgsizes() and the level count of arm_lpae_alloc_pgtable()."""
    granule = common.choice(spec, "pagetable.granule", tuple(BLOCKS))
    ias = spec["pagetable.ias"]
    if not 32 <= ias <= 52 or (ias > 48 and granule != 65536):
        raise HarnessError(f"model parameter pagetable.ias = {ias}: expected 32..48 "
                           "(up to 52 with the 64K granule)")
    common.choice(spec, "pagetable.stage", (1, 2))
    pg_shift = granule.bit_length() - 1
    bpl = pg_shift - 3
    levels = -(-(ias - pg_shift) // bpl)
    top = ias - pg_shift - bpl * (levels - 1)
    if spec["pagetable.stage"] == 2 and levels == 4 and top <= 4:
        levels, top = 3, top + bpl  # PGD concatenation
    P[L.P_FAMILY] = L.FAMILY_SMMUV3
    common.geometry(P, levels, pg_shift, [bpl] * (levels - 1) + [top])
    bitmap = common.pgsize_bitmap(spec, BLOCKS[granule], f"{granule >> 10}K-granule")
    if not bitmap & granule:
        raise HarnessError(f"model parameter pagetable.pgsizes: must include the granule {granule}")
    P[L.P_PGSIZE_BITMAP] = bitmap
    common.caches(spec, P, levels)
    P[L.P_PT_UNMAP] = L.PT_UNMAP_WALK
    P[L.P_RIL] = int(spec["smmu.ril"])
    P[L.P_CMD_BATCH] = spec["smmu.cmdq_batch"]
    if P[L.P_CMD_BATCH] < 1:
        raise HarnessError(f"model parameter smmu.cmdq_batch = {P[L.P_CMD_BATCH]}: expected >= 1")
    P[L.P_ATS] = int(spec["device.ats"])
    P[L.P_UTLB_ENTRIES] = spec["utlb.entries"]
    if P[L.P_UTLB_ENTRIES] < 0:
        raise HarnessError(f"model parameter utlb.entries = {P[L.P_UTLB_ENTRIES]}: expected >= 0")
    return (1 << ias) - 1


def gfp_ignored(kernel):
    """arm_smmu_map_pages() passes gfp to io-pgtable-arm's __arm_lpae_alloc_pages()."""
    return False


cost_params = common.cost_params


def counter_view(v, spec):
    """The run in the SMMUv3 PMCG architected events as Linux names them
    (drivers/perf/arm_smmuv3_pmu.c); the configuration cache is not
    modelled: one miss per device."""
    return "Arm SMMUv3 PMCG", {
        "transaction": v["lookups"],
        "tlb_miss": v["iotlb_misses"],
        "config_cache_miss": min(v["domains"], v["lookups"]),
        "trans_table_walk_access": v["walk_reads"],
        "config_struct_access": min(v["domains"], v["lookups"]),
    }
