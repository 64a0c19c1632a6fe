"""Flush modes, driver rules, gfp quirks, memory-cgroup limits and reserved
regions, each on a small trace whose counters are worked out by hand."""

import pytest

from harness import models
from harness.core.simulator import Simulator
from harness.trace import schema as ts
from harness.trace.reader import TraceReader

from conftest import ac, mp, um
from helpers import simulate

NOH = ts.NO_HANDLE


def _fq_trace(n=600):
    evs = [mp(i, i, cpu=i % 2) for i in range(n)]
    evs += [um(n + i, i, cpu=i % 2) for i in range(n)]
    return evs + [ac(2_000_000_000, NOH, iova=0x1000)]  # after every timer


def test_lazy_single_flushes_least(trace_file):
    f = trace_file(_fq_trace())
    lazy, single = simulate(f, "lazy"), simulate(f, "lazy-single")
    # per-CPU rings of 255 usable slots: CPU 0's 256th unmap finds its ring full
    # and flushes the domain; CPU 1's next queue_iova() then releases its 254
    # entries, flushed by that same flush, so its ring never fills. The 10 ms
    # timer flushes the rest.
    assert (lazy["fq_flush_full"], lazy["fq_flush_timeout"], lazy["inv_all"]) == (1, 1, 2)
    # one shared ring of 32767 slots: only the 1000 ms timer flushes
    assert (single["fq_flush_full"], single["fq_flush_timeout"], single["inv_all"]) == (0, 1, 1)
    assert single["fq_queued"] == lazy["fq_queued"] == 600


def test_passthrough_translates_nothing(trace_file):
    r = simulate(trace_file([mp(0, 0), ac(1, 0), um(2, 0), ac(3, 0)]), "passthrough")
    assert (r["maps"], r["unmaps"], r["accesses"], r["late_accesses"], r["domains"]) == (1, 1, 2, 1, 1)
    assert r["lookups"] == r["pt_pages_alloc"] == r["iova_allocs"] == r["inv_syncs"] == 0


def _run(path, flush, gfp="atomic", overrides=()):
    spec = models.resolve("intel-vtd-legacy").with_overrides(list(overrides))
    with TraceReader(path) as r:
        sim = Simulator(spec, flush, gfp, r.num_cpus)
        return sim.effective_flush, sim.run(r)


@pytest.mark.parametrize("overrides, flush, effective", [
    (["vtd.caching_mode=true"], "lazy", "strict"),
    (["vtd.caching_mode=true", "pagetable.first_stage=true"], "lazy", "lazy"),
    (["vtd.caching_mode=true", "pagetable.first_stage=true", 'kernel="6.2"'], "lazy", "strict"),
    (["vtd.caching_mode=true"], "lazy-single", "strict"),
    (["vtd.caching_mode=true"], "passthrough", "passthrough"),
    ([], "lazy", "lazy"),
])
def test_caching_mode_forces_strict(trace_file, overrides, flush, effective):
    assert _run(trace_file([mp(0, 0)]), flush, overrides=overrides)[0] == effective


def test_caching_mode_invalidates_maps_and_traps(trace_file):
    f = trace_file([mp(0, 0), ac(1, 0), um(2, 0), mp(3, 1), um(4, 1)])
    _, r = _run(f, "lazy", overrides=["vtd.caching_mode=true"])
    # strict: 2 unmap PSIs, plus a PSI for each new mapping; every submission traps
    assert (r["iotlb_sync_maps"], r["inv_range"], r["inv_syncs"], r["inv_traps"]) == (2, 4, 4, 4)
    _, fs = _run(f, "lazy", overrides=["vtd.caching_mode=true", "pagetable.first_stage=true"])
    # first stage under v6.3+: lazy, no map flush, one PASID-selective flush at... none yet
    assert (fs["iotlb_sync_maps"], fs["inv_range"], fs["fq_queued"]) == (0, 0, 2)
    _, st = _run(f, "strict", overrides=["vtd.caching_mode=true", "pagetable.first_stage=true"])
    assert (st["inv_range"], st["inv_traps"]) == (2, 2)


def test_pre_6_3_intel_ignores_gfp(trace_file):
    f = trace_file([mp(0, 0), mp(1, 1, paddr=1 << 40)])
    new = simulate(f, gfp="kernel-account")
    old = simulate(f, gfp="kernel-account", overrides=['kernel="6.2"'])
    assert new["memcg_charged_bytes"] == 4096 * new["pt_pages_alloc"] == 4 * 4096
    assert old["memcg_charged_bytes"] == old["memcg_charged_peak_bytes"] == 0
    assert old["alloc_gfp_atomic"] == old["pt_pages_alloc"] == 4


def test_memcg_limit_fails_maps_with_enomem(trace_file):
    evs = [mp(0, 0), ac(1, 0), mp(2, 1, paddr=0x200000), um(3, 1), ac(4, 0)]
    r = simulate(trace_file(evs), gfp="kernel-account", overrides=["memcg.limit_bytes=12288"])
    # root, L3 and L2 tables fit the 3-page limit; the leaf table does not
    assert r["map_enomem"] == 2 and r["pt_pages_alloc"] == 3
    assert r["memcg_charged_bytes"] == 12288
    # a failed map leaves DMA address 0: the walk reads the L4 entry and the
    # missing L3 entry; the second time the PML4E cache supplies the L4 entry
    assert r["faults"] == 2 and r["walk_reads"] == 2 + 1 and r["psc_l4_hits"] == 1
    assert r["iova_frees"] == 2 and r["iova_rcache_inserts"] == 2  # dma-iommu frees the IOVA
    assert r["unmaps"] == 1 and r["inv_range"] == 0  # unmap of a failed map does nothing


def test_reserved_regions_are_never_allocated(trace_file):
    evs = [mp(0, 0), ac(1, NOH, iova=0xFFFFE000, size=1), ac(2, NOH, iova=0xFFFFF000, size=1)]
    r = simulate(trace_file(evs), overrides=["iova.reserved=[[0xfffff000, 0xffffffff]]"])
    assert r["faults"] == 1  # the top page is reserved: the map lands one page lower


def test_direct_regions_are_identity_mapped_at_attach(trace_file):
    evs = [ac(0, NOH, iova=0x10000000, size=64), ac(1, NOH, iova=0x101ff000, size=64)]
    r = simulate(trace_file(evs), gfp="kernel-account",
                 overrides=["iova.direct=[[0x10000000, 0x101fffff]]"])
    # one 2M superpage: root, L3, L2 at attach (GFP_KERNEL, not charged)
    assert r["faults"] == 0 and r["iotlb_hits"] == 1 and r["pt_pages_alloc"] == 3
    assert r["alloc_gfp_kernel"] == 2 and r["alloc_gfp_kernel_account"] == 1


@pytest.fixture(scope="module")
def nic_late(tmp_path_factory):
    from harness.trace import synth
    p = tmp_path_factory.mktemp("late") / "nic.arrow"
    synth.nic_rx(p, packets=20_000, queues=4, ring=128, rate=2e6, late_dma=0.05, seed=5)
    return p


def test_flush_mode_by_gfp_matrix_on_nic_rx(nic_late):
    for gfp in ("atomic", "kernel", "kernel-account"):
        r = {f: simulate(nic_late, f, gfp) for f in ("strict", "lazy", "lazy-single")}
        inv = {f: r[f]["inv_range"] + r[f]["inv_all"] for f in r}
        assert inv["lazy"] * 50 < inv["strict"] and inv["lazy-single"] < inv["lazy"]
        flushes = {f: r[f]["fq_flush_full"] + r[f]["fq_flush_timeout"] for f in ("lazy", "lazy-single")}
        assert flushes["lazy-single"] < flushes["lazy"]
        late = r["strict"]["late_accesses"]
        assert late > 500 and r["strict"]["stale_hits"] == 0 and r["strict"]["faults"] == late
        assert r["lazy"]["stale_hits"] > 0 and r["lazy-single"]["stale_hits"] >= r["lazy"]["stale_hits"]
        assert r["lazy"]["stale_hits"] + r["lazy"]["faults"] == late
        charged = r["strict"]["memcg_charged_peak_bytes"]
        assert (charged > 0) == (gfp == "kernel-account")


def test_iommu_map_gfp_flags(trace_file):
    api = ts.FLAG_IOMMU_API | ts.FLAG_TO_DEVICE
    evs = [mp(0, 0, iova=0x40000000, flags=api | ts.FLAG_GFP_DMA32),
           mp(1, 1, iova=0x40000000, flags=api | ts.FLAG_ATOMIC | ts.FLAG_GFP_BLOCKING),
           mp(2, 2, iova=0x40001000, flags=api | ts.FLAG_ATOMIC | ts.FLAG_GFP_BLOCKING),
           mp(3, 3, iova=0x40002000, flags=ts.FLAG_ATOMIC | ts.FLAG_GFP_BLOCKING)]  # DMA API: ignored
    r = simulate(trace_file(evs))
    assert r["gfp_forbidden"] == r["map_rejected"] == 1
    # the first blocking map in atomic context allocates the L3, L2 and leaf tables
    assert r["gfp_blocking_in_atomic"] == 3


def test_iommufd_ioas_mirrors_every_mapping(trace_file):
    api = ts.FLAG_IOMMU_API | ts.FLAG_TO_DEVICE
    evs = [mp(0, 0, size=64 << 10, iova=0x100000, flags=api), ac(1, 0),
           um(2, 0, size=64 << 10, flags=api)]
    f = trace_file(evs)
    one = simulate(f, gfp="kernel-account")
    two = simulate(f, gfp="kernel-account", overrides=["iommufd.hw_domains=2"])
    # one device: root + L3 + L2 + leaf table per hardware domain
    assert (one["domains"], one["pt_pages_alloc"]) == (1, 4)
    assert (two["domains"], two["pt_pages_alloc"]) == (2, 8)
    assert two["memcg_charged_bytes"] == 2 * one["memcg_charged_bytes"] == 2 * 4 * 4096
    assert (one["inv_range"], two["inv_range"]) == (1, 2)  # each domain's unmap is invalidated
    assert two["iotlb_misses"] == one["iotlb_misses"] == 1  # the device translates in its own


def test_gfp_atomic_fails_under_memory_pressure(trace_file):
    # 24 KiB free, atomic floor 3/8 of 32 KiB = 12 KiB: root (GFP_KERNEL), L3
    # and L2 fit; the leaf table would leave 8 KiB, so the atomic map fails.
    # The GFP_KERNEL map that reuses its IOVA reclaims and succeeds.
    evs = [mp(0, 0, flags=ts.FLAG_ATOMIC), ac(1, 0), mp(2, 1, paddr=0x300000), ac(3, 1)]
    over = ["mem.free_bytes=24576", "mem.min_watermark_bytes=32768"]
    r = simulate(trace_file(evs), gfp="kernel", overrides=over)
    assert (r["gfp_atomic_failures"], r["map_enomem"], r["faults"]) == (1, 1, 1)
    assert r["alloc_gfp_atomic"] == 2 and r["alloc_gfp_kernel"] == 2
    # seeded jitter: same seed, same failures; no pressure model, no failures
    api = ts.FLAG_IOMMU_API | ts.FLAG_TO_DEVICE
    big = [mp(i, i, iova=(i + 1) << 21, paddr=i << 22, flags=api) for i in range(200)]  # a leaf table each
    jit = over[:1] + ["mem.min_watermark_bytes=8192", "mem.free_bytes=600000", "mem.jitter_bytes=400000"]
    a = simulate(trace_file(big), overrides=jit + ["mem.seed=3"])
    b = simulate(trace_file(big), overrides=jit + ["mem.seed=3"])
    c = simulate(trace_file(big), overrides=jit + ["mem.seed=4"])
    assert a == b and 0 < a["gfp_atomic_failures"] and a["gfp_atomic_failures"] != c["gfp_atomic_failures"]
    assert simulate(trace_file(big))["gfp_atomic_failures"] == 0
