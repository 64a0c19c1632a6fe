"""The compiled kernel must agree with the pure-Python reference on every
counter, for generated traces that reach every path of the domain core."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import models, reference
from harness.trace import schema as ts

from conftest import ac, mp, write_trace
from helpers import simulate

SIZES = [1, 100, 2048, 4096, 5000, 3 * 4096, 64 << 10, 2 << 20, (2 << 20) + 4096, 4 << 20,
         1 << 30]
# 0x3fe00000: a 4M superpage map crosses a table; 1 << 48 and just below: the
# edge of a 4-level domain's address width.
API_IOVAS = [0x40000000, 0x40001000, 0x40200000, 0x40400000, 0x80000000, 0x3FE00000,
             (1 << 48) - 4096, 1 << 48]
STEPS = [0, 1, 1000, 30_000, 200_000, 2_000_000, 20_000_000]

SMALL = [1, 100, 2048, 4096, 5000, 3 * 4096]


def build(seed, n, handles, p_api, p_late, big, ncpu):
    """A valid trace of n steps from a seeded generator: maps on free handles
    (DMA API with allocated or recorded IOVAs, IOMMU API at fixed IOVAs that
    overlap and misalign; scatterlists), unmaps of live handles, accesses inside live
    mappings, late accesses after unmap, absolute-IOVA accesses, idle gaps."""
    rng = random.Random(seed)
    t, evs, live, seen = 0, [], {}, {}
    for _ in range(n):
        r = rng.random()
        cpu = rng.randrange(ncpu)
        if r < 0.3:
            free = [h for h in range(handles) if h not in live]
            if not free:
                continue
            h = rng.choice(free)
            size = rng.choice(SIZES if rng.random() < big else SMALL)
            align = rng.randrange(4)
            paddr = (0x1_0000_0000 << align) + (rng.randrange(1, 64) * 0x1234 if align == 0 else 0)
            flags = ts.FLAG_TO_DEVICE | (ts.FLAG_ATOMIC if rng.random() < 0.5 else 0)
            flags |= rng.choice((0, 0, ts.FLAG_GFP_BLOCKING, ts.FLAG_GFP_DMA32))
            iova = 0
            how = rng.random()
            if how < p_api:
                flags |= ts.FLAG_IOMMU_API
                iova = rng.choice(API_IOVAS)
            elif how < p_api + 0.05:
                iova = rng.choice(API_IOVAS) + (paddr & 4095)
            dev = 1 + rng.randrange(2)
            if not flags & ts.FLAG_IOMMU_API and rng.random() < 0.15:
                # dma_map_sg: 2-4 segments, some physically contiguous (merged runs)
                segs = [(size, paddr)]
                for _ in range(rng.randrange(1, 4)):
                    s_size = rng.choice(SMALL + [64 << 10, 2 << 20])
                    prev = segs[-1][1] // 4096 * 4096 + -(-(segs[-1][0] + segs[-1][1] % 4096) // 4096) * 4096
                    segs.append((s_size, prev if rng.random() < 0.5 else
                                 0x2_0000_0000 + rng.randrange(512) * 0x1000 + rng.randrange(2) * 0x800))
                for k, (s_size, s_paddr) in enumerate(segs):
                    more = ts.FLAG_SG_MORE if k < len(segs) - 1 else 0
                    evs.append(dict(ts=t, op=ts.OP_MAP, handle=h, size=s_size, paddr=s_paddr,
                                    cpu=cpu, flags=flags | more, device=dev, iova=iova if k == 0 else 0))
                size = sum(s for s, _ in segs)
            else:
                evs.append(dict(ts=t, op=ts.OP_MAP, handle=h, size=size, paddr=paddr, cpu=cpu,
                                flags=flags, device=dev, iova=iova))
            live[h] = seen[h] = (size, flags & ts.FLAG_IOMMU_API, dev)
        elif r < 0.55:
            if not live:
                continue
            h = rng.choice(sorted(live))
            size, api, dev = live.pop(h)
            evs.append(dict(ts=t, op=ts.OP_UNMAP, handle=h, size=size, cpu=cpu, device=dev,
                            flags=api | ts.FLAG_ATOMIC))
        elif r < 0.9:
            pool = sorted(seen) if rng.random() < p_late else sorted(live)
            if not pool:
                continue
            h = rng.choice(pool)
            size, _, dev = seen[h]
            evs.append(dict(ts=t, op=ts.OP_ACCESS, handle=h, offset=rng.randrange(size),
                            size=rng.randint(1, 9000), device=dev, flags=ts.FLAG_FROM_DEVICE))
        elif r < 0.93:
            evs.append(dict(ts=t, op=ts.OP_ACCESS, handle=ts.NO_HANDLE, iova=rng.choice(API_IOVAS),
                            size=rng.randint(1, 9000), device=1 + rng.randrange(2),
                            flags=ts.FLAG_TO_DEVICE))
        else:
            t += rng.choice(STEPS)
        t += rng.choice((0, 0, 1, 100))
    return evs


VTD = "intel-vtd-legacy"
# name: (model, overrides)
PARAM_SETS = {
    "default": (VTD, []),
    "small": (VTD, ["fq.size=4", "iova.mag_size=1", "iotlb.entries=8", "iotlb.ways=2",
                    "psc.l2_entries=2", "psc.l2_ways=1", "psc.l3_entries=0", "fq.timeout_ms=0.05",
                    "iova.depot_delay_ms=0.1", "inv.mamv=2"]),
    "dma32": (VTD, ["iova.dma_mask_bits=32", "iova.mag_size=3", "fq.size=3",
                    "pagetable.pgsizes=[4096, 2097152]"]),
    "cm": ("intel-vtd-viommu", ["fq.single_size=5", "iova.mag_size=2", "device.ats=true",
                                "iova.direct=[[0x10000000, 0x101fffff]]", "memcg.limit_bytes=40960"]),
    "cm-first-stage": ("intel-vtd-scalable", [
        "vtd.caching_mode=true", "fq.size=3", "fq.single_size=7", "iotlb.policy=\"round-robin\"",
        "iova.reserved=[[0xfee00000, 0xfeefffff], [0xf0000000, 0xf7ffffff]]"]),
    "v2.6.36": (VTD, ["kernel=\"2.6.36\"", "fq.size=5", "iova.dma_mask_bits=36"]),  # no rcache
    "v6.2": (VTD, ["kernel=\"6.2\"", "memcg.limit_bytes=8192", "fq.single_size=9", "device.ats=true"]),
    "pressure": (VTD, ["mem.free_bytes=40960", "mem.min_watermark_bytes=16384",
                       "mem.jitter_bytes=20000", "mem.seed=7", "fq.size=5"]),
    "iommufd": (VTD, ["iommufd.hw_domains=3", "memcg.limit_bytes=65536", "iotlb.entries=16",
                      "iotlb.ways=4", "fq.size=6", "iotlb.policy=\"random\"", "psc.policy=\"random\"",
                      "cache.seed=5"]),
    "no-pci32": (VTD, ["iova.pci_32bit_first=false", "pagetable.levels=5", "psc.l5_entries=2",
                       "psc.l5_ways=2", "iotlb.entries=16", "iotlb.ways=16"]),
    "amd-v1": ("amd-vi-v1", ["pagetable.levels=4", "fq.size=5", "device.ats=true", "iotlb.entries=16"]),
    "amd-v1-grow": ("amd-vi-v1", ["iova.pci_32bit_first=false", "memcg.limit_bytes=49152",
                                  "psc.l4_entries=2", "psc.l4_ways=1", "fq.size=3"]),
    "amd-v2": ("amd-vi-v2", ["memcg.limit_bytes=40960", "iotlb.policy=\"round-robin\""]),
    "amd-npcache": ("amd-vi-viommu", ["pagetable.levels=5", "iotlb.entries=8", "iotlb.ways=8",
                                      "mem.free_bytes=60000", "mem.jitter_bytes=9000"]),
    "smmu": ("arm-smmuv3", ["fq.size=4", "device.ats=true", "iotlb.entries=16"]),
    "smmu-ril-16k": ("arm-smmuv3-ril", ["utlb.entries=0", "pagetable.granule=16384",
                                        "pagetable.pgsizes=[16384, 33554432]", "smmu.cmdq_batch=3",
                                        "iommufd.hw_domains=2"]),
    "smmu-64k": ("arm-smmuv3", ["pagetable.granule=65536", "pagetable.pgsizes=[65536, 536870912]",
                                "pagetable.ias=52", "iotlb.entries=8", "iotlb.ways=2",
                                "utlb.entries=3", "iotlb.policy=\"random\""]),
    "s390": ("s390", ["fq.size=3", "pagetable.subpage_tables=true", "memcg.limit_bytes=90000"]),
    "s390-zvm": ("s390-zvm", ["fq.single_size=4", "iotlb.policy=\"random\""]),
    "none": ("none", []),
}


@pytest.mark.parametrize("params", PARAM_SETS, ids=list(PARAM_SETS))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), n=st.integers(1, 400), handles=st.integers(1, 48),
       ncpu=st.sampled_from([1, 2, 3, 8, 23, 40]),
       p_api=st.sampled_from([0.0, 0.1, 0.5]), p_late=st.sampled_from([0.0, 0.1]),
       big=st.sampled_from([0.0, 0.1, 0.5]), flush=st.sampled_from(["strict", "lazy", "lazy-single", "passthrough"]),
       gfp=st.sampled_from(["atomic", "kernel", "kernel-account"]))
def test_fast_path_equals_reference(tmp_path_factory, params, seed, n, handles, ncpu, p_api,
                                    p_late, big, flush, gfp):
    evs = build(seed, n, handles, p_api, p_late, big, ncpu)
    if not evs:
        return
    path = write_trace(tmp_path_factory.mktemp("d") / "t.arrow", evs, num_cpus=ncpu, batch=17)
    model, overrides = PARAM_SETS[params]
    fast = simulate(path, flush, gfp, overrides, model)
    ref = reference.run(path, models.resolve(model).with_overrides(overrides), flush, gfp)
    assert fast == ref


@pytest.mark.parametrize("pairs", [1, 150])
def test_lru_evicts_the_way_used_least_recently_not_filled_first(tmp_path, pairs):
    """Pages a and b of one 2-way set are filled in that order, then hit
    alternately (b, a) `pairs` times; c then evicts b, used least recently
    though filled last, and a still hits: 2 * pairs + 1 hits, 3 misses, as
    in the reference. Evicting by fill order, the most recent entry or a
    fixed way would take a instead."""
    a, b, c = 0, 2, 4  # pages of the mapping: one set of the 2-set IOTLB
    pages = [a, b] + [b, a] * pairs + [c, a]
    evs = [mp(0, 0, size=16 * 4096)] + [ac(1 + k, 0, offset=p * 4096) for k, p in enumerate(pages)]
    path = write_trace(tmp_path / "t.arrow", evs)
    overrides = ["iotlb.entries=4", "iotlb.ways=2"]
    fast = simulate(path, "strict", "atomic", overrides, VTD)
    assert fast == reference.run(path, models.resolve(VTD).with_overrides(overrides), "strict", "atomic")
    assert (fast["iotlb_hits"], fast["iotlb_misses"]) == (2 * pairs + 1, 3)
