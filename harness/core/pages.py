"""Page-table page allocation and freeing, with gfp kinds and memcg charges.

Follows iommu-pages (drivers/iommu/iommu-pages.h, v6.11+): zeroed pages
counted in nr_iommu_pages/SecPageTables; pages a table walk unlinks go on the
gather freelist and are freed only after their IOTLB invalidation
(iommu_put_pages_list after iotlb_sync, or when the flush-queue entry that
carries them is released). GFP_KERNEL_ACCOUNT pages are charged to the
caller's memory cgroup (iommufd, v6.3 "Let iommufd charge IOPTE allocations").
"""

import numpy as np

from harness.core.compiled import njit
from harness.core import layout as L


@njit(cache=True, inline="always")
def alloc(S, gfp, charge, level):
    """A zeroed table for `level` from the pool, of the format's size for that
    level (P_LVL_BYTES: iommu_alloc_pages_sz() rounds to a power of two, at
    least a page unless the model allows sub-page tables); counted under gfp
    kind (GFP_*), charged to the memory cgroup when charge is set."""
    top = S.G[L.G_PT_FREE] - 1
    S.G[L.G_PT_FREE] = top
    t = S.pt_free[top]
    S.pt[t, :] = 0
    size = S.P[L.P_LVL_BYTES + level]
    S.pt_bytes[t] = size
    S.pt_charged[t] = size if charge else 0
    S.C[L.C_PT_PAGES_ALLOC] += 1
    S.C[L.C_ALLOC_GFP_ATOMIC + gfp] += 1
    S.G[L.G_PT_LIVE] += 1
    S.G[L.G_PT_BYTES] += size
    if S.G[L.G_PT_LIVE] > S.C[L.C_PT_PAGES_PEAK]:
        S.C[L.C_PT_PAGES_PEAK] = S.G[L.G_PT_LIVE]
    if S.G[L.G_PT_BYTES] > S.C[L.C_PT_BYTES_PEAK]:
        S.C[L.C_PT_BYTES_PEAK] = S.G[L.G_PT_BYTES]
    if charge:
        S.G[L.G_CHARGED] += size
        if S.G[L.G_CHARGED] > S.C[L.C_MEMCG_CHARGED_PEAK_BYTES]:
            S.C[L.C_MEMCG_CHARGED_PEAK_BYTES] = S.G[L.G_CHARGED]
    return t


@njit(cache=True, inline="always")
def splitmix64(G, slot):
    """Next draw of the splitmix64 generator whose state is G[slot]."""
    x = np.uint64(G[slot]) + np.uint64(0x9E3779B97F4A7C15)
    G[slot] = np.int64(x)
    z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def atomic_fails(S, size):
    """Memory-pressure model for a GFP_ATOMIC page: it cannot reclaim, so it
    fails once free memory (less this IOMMU's tables and a seeded jitter for
    the rest of the system) would fall below the atomic floor. Blocking
    allocations reclaim and are taken to succeed."""
    free = S.P[L.P_MEM_FREE] - S.G[L.G_PT_BYTES]
    if S.P[L.P_MEM_JITTER]:
        free -= np.int64(splitmix64(S.G, L.G_RNG) % np.uint64(S.P[L.P_MEM_JITTER]))
    return free - size < S.P[L.P_MEM_ATOMIC_FLOOR]


@njit(cache=True, inline="always")
def _release_slot(S, t):
    if S.G[L.G_L1_USED]:  # the slot may be a remembered level-1 table
        S.G[L.G_L1_USED] = 0
        S.G[L.G_L1_KEY:L.G_L1_KEY + L.L1_MEMO] = 0
    S.pt_free[S.G[L.G_PT_FREE]] = t
    S.G[L.G_PT_FREE] += 1


@njit(cache=True)
def free_now(S, t):
    """iommu_free_pages: freed at once (no invalidation pending on it)."""
    S.C[L.C_PT_PAGES_FREED] += 1
    S.G[L.G_PT_LIVE] -= 1
    S.G[L.G_PT_BYTES] -= S.pt_bytes[t]
    S.G[L.G_CHARGED] -= S.pt_charged[t]
    _release_slot(S, t)


@njit(cache=True, inline="always")
def defer(S, t, fl):
    """Put a table on freelist fl = [tables, bytes, charged bytes]. Its slot can
    be reused by the model at once; the memory stays allocated until put_list."""
    fl[0] += 1
    fl[1] += S.pt_bytes[t]
    fl[2] += S.pt_charged[t]
    S.G[L.G_PT_PENDING] += 1
    if S.G[L.G_PT_PENDING] > S.C[L.C_PT_PAGES_PENDING_PEAK]:
        S.C[L.C_PT_PAGES_PENDING_PEAK] = S.G[L.G_PT_PENDING]
    _release_slot(S, t)


@njit(cache=True, inline="always")
def put_list(S, fl):
    """iommu_put_pages_list: free the tables of a freelist after invalidation."""
    S.C[L.C_PT_PAGES_FREED] += fl[0]
    S.G[L.G_PT_LIVE] -= fl[0]
    S.G[L.G_PT_PENDING] -= fl[0]
    S.G[L.G_PT_BYTES] -= fl[1]
    S.G[L.G_CHARGED] -= fl[2]
