"""Kernel behaviours checked on hand-written traces, with the values the
kernel code gives (file/function cited in the modules under test)."""

import pytest

from harness import models
from harness.core import layout as L
from harness.core import state
from harness.core.pagetable import iommu_pgsize
from harness.core.simulator import Simulator
from harness.errors import TraceError
from harness.trace import schema as ts
from harness.vendors.vtd import psi_aligned_address

from conftest import ac, mp, um
from helpers import simulate

VTD = 4096 | (1 << 21) | (1 << 30)


@pytest.mark.parametrize("iova, paddr, size, expect", [
    (0x1000, 0x5000, 0x3000, (4096, 3)),
    (0x200000, 0x40200000, 0x400000, (1 << 21, 2)),
    (0x1ff000, 0x1ff000, 0x201000, (4096, 1)),       # up to the 2M boundary first
    (0x200000, 0x201000, 0x200000, (4096, 512)),     # iova and paddr differently offset
    (0x40000000, 0x40000000, 1 << 30, (1 << 30, 1)),
])
def test_iommu_pgsize(iova, paddr, size, expect):
    assert iommu_pgsize(VTD, iova, paddr, size) == expect


@pytest.mark.parametrize("start, end, addr, mask", [
    (0x1000, 0x1fff, 0x1000, 0),
    (0x4000, 0x7fff, 0x4000, 2),
    (0x3000, 0x4fff, 0x0, 3),          # straddles an 8K boundary: widened to 32K block
    (0x1ff000, 0x200fff, 0x0, 10),     # straddles 2M: the 4M block holding both pages
])
def test_psi_aligned_address(start, end, addr, mask):
    assert psi_aligned_address(start, end) == (addr, mask)


def test_iova_top_down_size_aligned_below_4g(trace_file):
    # 4K lands on the top page of the 32-bit window (alloc_iova passes limit + 1);
    # 3 pages round up to 4, size-aligned below it; 5000 bytes at page offset
    # 0x800 span 2 pages, 2-aligned below that (DMA address keeps the offset).
    evs = [mp(0, 0, size=4096), mp(1, 1, size=3 * 4096), mp(2, 2, size=5000, paddr=0x100800)]
    expect = {0xFFFFF000: 1, 0xFFFF8000: 3, 0xFFFF6000: 2, 0xFFFF6800: 2}
    for t, iova in enumerate(expect, 3):
        evs.append(ac(t, 0xFFFFFFFF, iova=iova, size=1))
    evs += [ac(10, 0xFFFFFFFF, iova=0xFFFFE000, size=1), ac(11, 0xFFFFFFFF, iova=0xFFFFB000, size=1)]
    r = simulate(trace_file(evs))
    assert r["iova_tree_allocs"] == 3
    assert r["lookups"] == 6 and r["faults"] == 2  # only the two gaps fault


def test_strict_unmap_invalidates_and_faults_late_access(trace_file):
    evs = [mp(0, 0), ac(1, 0), um(2, 0), ac(3, 0)]
    r = simulate(trace_file(evs), "strict")
    assert (r["inv_range"], r["inv_syncs"], r["late_accesses"], r["faults"], r["stale_hits"]) == (1, 1, 1, 1, 0)


def test_lazy_unmap_leaves_a_stale_translation(trace_file):
    evs = [mp(0, 0), ac(1, 0), um(2, 0), ac(3, 0), ac(20_000_000, 0)]
    r = simulate(trace_file(evs), "lazy")
    assert r["stale_hits"] == 1 and r["fq_queued"] == 1 and r["fq_flush_timeout"] == 1
    assert r["faults"] == 1  # after the 10 ms flush-queue timer
    assert r["stale_page_ns"] == 10_000_000  # unmapped at t=2, flushed by the timer at t=2+10ms
    assert r["inv_all"] == r["flush_all"] == 1 and r["inv_range"] == 0


def test_flush_queue_flushes_when_full(trace_file):
    n = 600
    evs = [mp(i, i) for i in range(n)] + [um(n + i, i) for i in range(n)]
    r = simulate(trace_file(evs), "lazy")
    # 256 slots, one kept empty: a full queue flushes before the 256th entry
    assert r["fq_flush_full"] == 2 and r["fq_queued"] == n


def test_superpage_and_table_freeing(trace_file):
    two_m = 1 << 21
    evs = [mp(0, 0, size=two_m, paddr=0x40000000), ac(1, 0), ac(2, 0, offset=two_m - 64),
           um(3, 0, size=two_m)]
    r = simulate(trace_file(evs))
    # a 2M buffer at a 2M-aligned paddr gets a 2M IOVA block and one superpage
    assert r["iotlb_misses"] == 1 and r["iotlb_hits"] == 1
    assert r["pt_pages_alloc"] == 3 and r["pt_pages_freed"] == 0  # root, L3, L2
    evs = [mp(0, 0, size=two_m, paddr=0x40001000), um(1, 0, size=two_m)]
    r = simulate(trace_file(evs))
    # a misaligned paddr needs 4K pages; the unmap covers the whole leaf table and frees it
    assert r["pt_pages_alloc"] == 4 and r["pt_pages_freed"] == 1


def test_gfp_policies_and_memcg_charge(trace_file):
    evs = [mp(0, 0), mp(1, 1, paddr=0x40000000 << 4, flags=ts.FLAG_FROM_DEVICE | ts.FLAG_ATOMIC)]
    f = trace_file(evs)
    a, k, ka = (simulate(f, gfp=g) for g in ("atomic", "kernel", "kernel-account"))
    assert a["alloc_gfp_atomic"] == 3 and a["alloc_gfp_kernel"] == 1  # root at domain creation
    assert k["alloc_gfp_kernel"] == 4 and k["alloc_gfp_atomic"] == 0
    assert ka["alloc_gfp_kernel_account"] == 4 and ka["memcg_charged_bytes"] == 4 * 4096


def test_iommu_api_misaligned_map_is_einval(trace_file):
    evs = [mp(0, 0, size=4096, iova=0x10000800, flags=ts.FLAG_IOMMU_API), ac(1, 0)]
    r = simulate(trace_file(evs))
    assert r["map_rejected"] == 1 and r["faults"] == 1


@pytest.mark.parametrize("events, message", [
    ([um(0, 5)], "row 0: unmap of handle 5, which has no live mapping"),
    ([mp(0, 1), um(1, 1), um(2, 1)], "row 2: unmap of handle 1"),
    ([mp(0, 1), mp(1, 1)], "row 1: map of handle 1, which is still mapped"),
    ([mp(0, 1), um(1, 1, size=8192)], "row 1: unmap of handle 1 with size 8192"),
    ([ac(0, 3)], "row 0: access through handle 3, which was never mapped"),
    ([mp(0, 1, size=0)], "row 0: column 'size' is 0, expected > 0"),
    ([mp(5, 1), mp(4, 2)], "row 1: column 'ts' is 4, expected non-decreasing"),
    ([mp(0, 1, cpu=7)], "row 0: column 'cpu' is 7, expected < num_cpus = 2"),
    ([dict(op=9, size=1)], "row 0: column 'op' is 9"),
    ([ac(0, 0xFFFFFFFF, size=(1 << 30) + 1)], "row 0: column 'size' is 1073741825, expected at most 1 GiB"),
])
def test_bad_events_name_the_row(trace_file, events, message):
    with pytest.raises(TraceError, match=message.replace("(", r"\(")):
        simulate(trace_file(events))


def test_superpage_switch_stops_at_the_table_end(trace_file):
    # 2M pages from 0x3fe00000 to 0x40200000 cross from one level-2 table into
    # the next: the second table is allocated by the map with the caller's gfp.
    evs = [mp(0, 0, size=4 << 20, iova=0x3FE00000, paddr=0x80000000, flags=ts.FLAG_IOMMU_API)]
    r = simulate(trace_file(evs), gfp="kernel-account")
    assert r["pt_pages_alloc"] == 4 and r["alloc_gfp_kernel_account"] == 4
    assert r["memcg_charged_bytes"] == 4 * 4096 and r["inv_range"] + r["inv_all"] == 0


def test_map_beyond_address_width_is_rejected(trace_file):
    evs = [mp(0, 0, iova=1 << 48, flags=ts.FLAG_IOMMU_API), ac(1, 0xFFFFFFFF, iova=1 << 48),
           ac(2, 0xFFFFFFFF, iova=0)]
    r = simulate(trace_file(evs))
    assert r["map_rejected"] == 1 and r["faults"] == 2 and r["walk_reads"] == 1


def test_page_tables_past_the_pool_limit_stop_the_run(trace_file):
    # 32 TiB in 4 KiB pages needs 2^24 level-1 tables: an error before any is allocated
    evs = [mp(0, 0, size=1 << 45, iova=0x1000, paddr=0x1000, flags=ts.FLAG_IOMMU_API)]
    with pytest.raises(TraceError, match=r"row 0: column 'size' is 35184372088832: the page tables live "
                                         r"with this event \(a map counts the most it can need\) would pass "
                                         r"the simulator's limit of 1,048,576 tables"):
        simulate(trace_file(evs))


def test_the_pool_limit_counts_live_tables(trace_file, monkeypatch):
    # 1 GiB in 4 KiB pages takes 512 level-1 tables; under a 2048-table limit
    # three such maps fit, the fourth does not, and unmapping makes room
    monkeypatch.setattr(state, "PT_POOL_LIMIT", 2048 * 512 * 4)
    gib = [mp(k, k, size=1 << 30, paddr=0x1000) for k in range(3)]
    r = simulate(trace_file(gib + [um(3, 0, size=1 << 30), mp(4, 3, size=1 << 30, paddr=0x1000)]))
    assert r["maps"] == 4 and r["map_enomem"] == 0
    with pytest.raises(TraceError, match="row 3: column 'size' is 1073741824: .* limit of 2,048 tables"):
        simulate(trace_file(gib + [mp(3, 3, size=1 << 30, paddr=0x1000)]))


def test_a_map_in_superpages_counts_the_tables_it_can_need(trace_file):
    # 2 TiB in 1 GiB pages: 2,048 level-3 leaves in one table; counted page by
    # page it would need 2^20 level-1 tables, past the pool's limit
    evs = [mp(0, 0, size=2 << 40, iova=1 << 40, paddr=1 << 40, flags=ts.FLAG_IOMMU_API),
           ac(1, 0, size=4096, offset=(1 << 40) + 0x1000)]
    r = simulate(trace_file(evs))
    assert r["maps"] == 1 and r["pt_pages_alloc"] == 1 + 4 and r["faults"] == 0  # root, 4 level-3 tables


def test_a_stop_for_magazines_at_the_table_limit_grows_the_magazines(monkeypatch):
    S = Simulator(models.resolve("intel-vtd-legacy"), "strict", "atomic", 2).S
    monkeypatch.setattr(state, "PT_POOL_LIMIT", S.pt.nbytes)  # the table pool is at its limit
    S.G[L.G_PT_FREE] = 100  # with over half its tables live
    S.G[L.G_PT_NEED] = 50  # yet enough for the event, which stopped for magazines
    S.G[L.G_MAG_FREE] = 0
    grown = state.grow_pools(S)
    assert grown.pt.shape == S.pt.shape and grown.mags.shape[0] == 2 * S.mags.shape[0]
    S.G[L.G_PT_NEED] = 200
    with pytest.raises(state.PoolLimit):
        state.grow_pools(S)


def test_domain_state_past_the_limit_stops_the_run(trace_file, monkeypatch):
    # each device's domain takes flush queues and magazines per CPU: two fit
    S = Simulator(models.resolve("intel-vtd-legacy"), "strict", "atomic", 2).S
    monkeypatch.setattr(state, "DOMAIN_STATE_LIMIT", 2 * state.domain_bytes(S))
    evs = [mp(k, k, dev=k + 1) for k in range(3)]
    assert simulate(trace_file(evs[:2]))["domains"] == 2
    with pytest.raises(TraceError, match="row 2: column 'device' is 3: the state of 3 domains with "
                                         "num_cpus = 2 would pass the simulator's limit"):
        simulate(trace_file(evs))
