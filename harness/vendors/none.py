"""No IOMMU: DMA addresses are physical (dma-direct). The baseline every
ratio is taken against: the run goes through the identity path whatever the
requested flush mode, so nothing is allocated, translated or invalidated."""

from harness.core import layout as L
from harness.vendors import common

PARAMS = ()


def effective_flush(spec, requested, kernel):
    if requested == "passthrough":
        return requested, ""
    return "passthrough", "no IOMMU: DMA bypasses translation"


def hardware_params(spec, P, kernel):
    P[L.P_FAMILY] = L.FAMILY_NONE
    common.geometry(P, 4, 12, [9] * 4)
    P[L.P_PGSIZE_BITMAP] = 4096 | (1 << 21) | (1 << 30)
    P[L.P_IOTLB_SETS] = P[L.P_IOTLB_WAYS] = 1
    for level in range(2, L.MAX_LEVELS + 1):
        P[L.P_PSC_SETS + level] = 1
    return (1 << 62) - 1  # int64 IOVAs, as amdvi


def gfp_ignored(kernel):
    return False


def cost_params(spec):
    return dict.fromkeys(common.COST_PARAMS, 0.0)
