"""Parameter checks and geometry shared by the vendor families."""

from harness.core import layout as L
from harness.errors import HarnessError

CACHE_PARAMS = ("iotlb.entries", "iotlb.ways", "iotlb.policy", "psc.policy")
COST_PARAMS = ("inv.cmd_ns", "inv.sync_ns", "inv.page_ns", "inv.trap_ns")


def pow2(name, v):
    if v < 1 or v & (v - 1):
        raise HarnessError(f"model parameter {name} = {v}: expected a power of two")
    return v


def choice(spec, key, allowed):
    v = spec[key]
    if v not in allowed:
        raise HarnessError(f"model parameter {key} = {v!r}: expected one of "
                           f"{', '.join(map(str, allowed))}")
    return v


def table_bytes(entries, subpage):
    """iommu_alloc_pages_sz(): power-of-two, size-aligned; sub-page sizes are
    rounded up to a CPU page (v6.16) unless the model allocates true sub-page
    tables (a slab of 2 KiB s390 page tables, v6.12)."""
    size = 1 << (entries * 8 - 1).bit_length()
    return size if subpage else max(size, 4096)


def geometry(P, levels, granule_shift, level_bits, subpage=False):
    """Fill the page-table geometry: level_bits[i] = index bits of level i + 1;
    entry spans follow from the granule and the bits of the levels below."""
    P[L.P_LEVELS] = levels
    P[L.P_INIT_LEVELS] = levels
    P[L.P_GRANULE_SHIFT] = granule_shift
    shift = granule_shift - 12
    for level in range(1, levels + 1):
        entries = 1 << level_bits[level - 1]
        P[L.P_LVL_PSHIFT + level] = shift
        P[L.P_LVL_ENTRIES + level] = entries
        P[L.P_LVL_BYTES + level] = table_bytes(entries, subpage)
        shift += level_bits[level - 1]
    return shift + 12  # input address bits the tables translate


def pgsize_bitmap(spec, allowed, what):
    bitmap = 0
    for size in spec["pagetable.pgsizes"]:
        if size not in allowed:
            raise HarnessError(f"model parameter pagetable.pgsizes: {size} is not a {what} "
                               f"page size ({', '.join(map(str, sorted(allowed)))})")
        bitmap |= size
    return bitmap


def caches(spec, P, levels):
    """IOTLB and walk-cache geometry and replacement policies; iotlb.ways = 0
    makes the IOTLB fully associative at any size."""
    entries, ways = spec["iotlb.entries"], spec["iotlb.ways"]
    if ways == 0:
        ways = entries
    if ways < 1 or entries % ways:
        raise HarnessError(f"model parameters iotlb.entries = {entries}, iotlb.ways = {ways}: "
                           "entries must be a multiple of ways")
    P[L.P_IOTLB_SETS] = pow2("iotlb.entries / iotlb.ways", entries // ways)
    P[L.P_IOTLB_WAYS] = ways
    P[L.P_IOTLB_POLICY] = L.POLICIES[choice(spec, "iotlb.policy", tuple(L.POLICIES))]
    P[L.P_PSC_POLICY] = L.POLICIES[choice(spec, "psc.policy", tuple(L.POLICIES))]
    for level in range(2, L.MAX_LEVELS + 1):
        e = spec.get(f"psc.l{level}_entries", 0) if level <= levels else 0
        w = min(spec.get(f"psc.l{level}_ways", 1), e) if e else 0
        if e and w < 1:
            raise HarnessError(f"model parameter psc.l{level}_ways = {w}: expected >= 1")
        if e and e % w:
            raise HarnessError(f"model parameter psc.l{level}_entries = {e}: "
                               f"expected a multiple of psc.l{level}_ways = {w}")
        P[L.P_PSC_SETS + level] = pow2(f"psc.l{level}_entries / ways", e // w) if e else 1
        P[L.P_PSC_WAYS + level] = w


def cost_params(spec):
    return {k: float(spec[k]) for k in COST_PARAMS}
