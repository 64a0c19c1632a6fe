"""The kernel's vendor dispatch: invalidation and map-sync commands of the
family the run's model belongs to (P_FAMILY). Vendor differences are data the
compiled loop switches on; each family module encodes its own commands."""

from harness.core.compiled import njit
from harness.core import layout as L
from harness.vendors import amdvi, s390, smmuv3, vtd


@njit(cache=True, inline="always")
def flush_range(S, d, start, end, pgsize, freed):
    """The driver's iotlb_sync for [start, end]: pgsize is the gather's page
    size; freed says page tables were freed under the range."""
    fam = S.P[L.P_FAMILY]
    if fam == L.FAMILY_VTD:
        vtd.flush_range(S, d, start, end, not freed, True)
    elif fam == L.FAMILY_AMDVI:
        amdvi.flush_pages(S, d, start, end)
    elif fam == L.FAMILY_SMMUV3:
        if pgsize:  # arm_smmu_iotlb_sync: nothing gathered, nothing to do
            smmuv3.tlb_inv_range(S, d, start, end, pgsize, True)
    elif fam == L.FAMILY_S390:
        if end:  # s390_iommu_iotlb_sync: if (!gather->end) return
            s390.refresh(S, d, start, end)


@njit(cache=True)
def flush_all(S, d):
    """flush_iotlb_all: the flush-queue flush."""
    S.C[L.C_FLUSH_ALL] += 1
    fam = S.P[L.P_FAMILY]
    if fam == L.FAMILY_VTD:
        vtd.flush_all(S, d)
    elif fam == L.FAMILY_AMDVI:
        amdvi.flush_all(S, d)
    elif fam == L.FAMILY_SMMUV3:
        smmuv3.tlb_inv_context(S, d)
    elif fam == L.FAMILY_S390:
        s390.refresh_all(S, d)


@njit(cache=True)
def device_table_flush(S):
    amdvi.update_and_flush_device_table(S)


@njit(cache=True)
def flush_walk(S, d, start, end):
    """io_pgtable_tlb_flush_walk(): a freed table's span, walk caches included."""
    smmuv3.tlb_inv_range(S, d, start, end, 4096 << S.P[L.P_LVL_PSHIFT + 1], False)


@njit(cache=True, inline="always")
def iotlb_sync_map(S, d, iova, size):
    """The driver's iotlb_sync_map after a map: only virtualized IOMMUs whose
    hypervisor shadows the tables need it."""
    if S.P[L.P_VIRT]:
        _sync_map(S, d, iova, size)


@njit(cache=True)
def _sync_map(S, d, iova, size):
    fam = S.P[L.P_FAMILY]
    if fam == L.FAMILY_VTD:
        vtd.iotlb_sync_map(S, d, iova, size)
    elif fam == L.FAMILY_AMDVI:
        amdvi.iotlb_sync_map(S, d, iova, size)
    elif fam == L.FAMILY_S390:
        s390.iotlb_sync_map(S, d, iova, size)
