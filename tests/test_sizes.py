"""One-pass IOTLB size sweeps (core/translate.py) must equal one run per size
on every counter."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import models
from harness.core import layout as L
from harness.core import state, translate
from harness.core.compiled import njit
from harness.core.simulator import Diverged, Simulator, run_sizes
from harness.errors import HarnessError
from harness.trace import schema as ts
from harness.trace.reader import TraceReader

from conftest import write_trace
from test_differential import build

# name: (model, base overrides, (entries, ways) per size: one set count)
GRIDS = {
    "vtd-full": ("intel-vtd-legacy", [], [(e, 0) for e in (1, 2, 3, 4, 6, 8, 16, 32, 64)]),
    "vtd-4-sets": ("intel-vtd-legacy", ["psc.l2_entries=2", "psc.l2_ways=1"],
                   [(4 * w, w) for w in (1, 2, 3, 5, 8)]),
    "viommu": ("intel-vtd-viommu", ["fq.single_size=5", "device.ats=true"], [(e, 0) for e in (2, 4, 7, 64)]),
    "amd-v1": ("amd-vi-v1", ["pagetable.levels=4", "fq.size=5"], [(2 * w, w) for w in (1, 2, 4, 16)]),
    "amd-npcache": ("amd-vi-viommu", ["pagetable.levels=5"], [(e, 0) for e in (1, 5, 9)]),
    "s390": ("s390", ["fq.size=3", "pagetable.subpage_tables=true"], [(e, 0) for e in (2, 8, 32)]),
    "smmu-no-utlb": ("arm-smmuv3", ["utlb.entries=0", "iotlb.policy=\"lru\"", "fq.size=4"],
                     [(e, 0) for e in (1, 4, 16)]),
}


def _specs(model, base, grid):
    return [models.resolve(model).with_overrides(base + [f"iotlb.entries={e}", f"iotlb.ways={w}"])
            for e, w in grid]


def _separate(specs, flush, gfp, path):
    with TraceReader(path) as r:
        return [Simulator(spec, flush, gfp, r.num_cpus).run(r) for spec in specs]


def _one_pass(specs, flush, gfp, path):
    with TraceReader(path) as r:
        return run_sizes(specs, flush, gfp, r)


@pytest.mark.parametrize("grid", GRIDS, ids=list(GRIDS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), n=st.integers(1, 400), handles=st.integers(1, 48),
       ncpu=st.sampled_from([1, 2, 8]), p_api=st.sampled_from([0.0, 0.1, 0.5]),
       p_late=st.sampled_from([0.0, 0.1]), big=st.sampled_from([0.0, 0.1, 0.5]),
       flush=st.sampled_from(["strict", "lazy", "lazy-single"]))
def test_one_pass_equals_runs_per_size(tmp_path_factory, grid, seed, n, handles, ncpu, p_api, p_late,
                                       big, flush):
    evs = build(seed, n, handles, p_api, p_late, big, ncpu)
    if not evs:
        return
    path = write_trace(tmp_path_factory.mktemp("g") / "t.arrow", evs, num_cpus=ncpu, batch=23)
    specs = _specs(*GRIDS[grid])
    results, _ = _one_pass(specs, flush, "kernel", path)
    assert results == _separate(specs, flush, "kernel", path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), n=st.integers(1, 300), flush=st.sampled_from(["strict", "lazy"]))
def test_recency_order_invariants(tmp_path_factory, seed, n, flush):
    """After a one-pass run every set holds its used places first, a hole
    count equal to the holes among them, each (tag, domain) once, and the
    per-order entry counts the lookups probe by."""
    evs = build(seed, n, 24, 0.1, 0.1, 0.3, 2)
    if not evs:
        return
    path = write_trace(tmp_path_factory.mktemp("g") / "t.arrow", evs, num_cpus=2, batch=23)
    specs = _specs(*GRIDS["vtd-4-sets"])
    with TraceReader(path) as r:
        sim = Simulator(specs[0], flush, "kernel", r.num_cpus, [w for _, w in GRIDS["vtd-4-sets"][2]])
        try:
            sim.run(r)
        except Diverged:
            return
    S = sim.S
    for s in range(S.tlb_tag.shape[0]):
        used, tags = S.tlb_used[s], S.tlb_tag[s]
        assert (tags[used:] == -1).all()
        assert S.tlb_holes[s] == (tags[:used] == -1).sum()
        held = [(t, d) for t, d in zip(tags[:used], S.tlb_dom[s, :used]) if t != -1]
        assert len(held) == len(set(held))
    held = S.tlb_tag[S.tlb_tag != -1] & 63
    assert [(held == o).sum() for o in range(52)] == list(S.G[L.G_IOTLB_CNT:L.G_IOTLB_CNT + 52])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pages=st.lists(st.integers(0, 299), min_size=200, max_size=900),
       holes=st.lists(st.integers(0, 299), max_size=30, unique=True))
def test_one_pass_equals_runs_per_size_on_wide_lists(tmp_path_factory, pages, holes):
    """Recency lists of up to 300 places, against runs per size of 1 to 300
    ways. A list's search takes its first 32 places 8 at a time, then 64 at
    a time (cache.find), a loop that starts past 96 places, and a move of
    more than 32 places is a memmove (translate._shift): the grids above
    are at most 64 ways wide. 300 one-page mappings are touched in a drawn
    order, some unmapped half way (holes in the lists)."""
    half = len(pages) // 2
    evs = [_map(h, h, 0x1000_0000 + h * 0x1000) for h in range(300)]
    evs += [_touch(h, 300 + i) for i, h in enumerate(pages[:half])]
    evs += [_unmap(h, 2000 + i) for i, h in enumerate(holes)]
    evs += [_touch(h, 3000 + i) for i, h in enumerate(pages[half:])]
    path = write_trace(tmp_path_factory.mktemp("w") / "t.arrow", evs, batch=97)
    specs = _specs("intel-vtd-legacy", [], [(e, 0) for e in (1, 16, 65, 100, 300)])
    results, one_pass = _one_pass(specs, "strict", "atomic", path)
    assert one_pass
    assert results == _separate(specs, "strict", "atomic", path)


def test_grid_beyond_one_pass_runs_in_parts(trace_file):
    """More sizes than a pass takes (state.GRID_MAX): a pass per part, the
    results in the caller's order. 80 pages touched twice in turn: the second
    round hits in an LRU IOTLB of at least 80 entries, in no smaller one."""
    evs = [_map(h, h, 0x1000_0000 + h * 0x1000) for h in range(80)]
    evs += [_touch(h, 100 + i) for i, h in enumerate(list(range(80)) * 2)]
    path = trace_file(evs)
    entries = [300, 80, 79] + list(range(1, 60)) + [128, 81, 256, 100, 90]
    assert len(entries) > state.GRID_MAX
    specs = _specs("intel-vtd-legacy", [], [(e, 0) for e in entries])
    results, one_pass = _one_pass(specs, "strict", "atomic", path)
    assert one_pass
    assert [r["iotlb_hits"] for r in results] == [80 if e >= 80 else 0 for e in entries]
    assert results == _separate(specs, "strict", "atomic", path)


def test_grid_in_any_order(trace_file):
    """run_sizes hands the kernel its sizes ascending and the results back in
    the caller's order."""
    evs = [_map(h, h, 0x1000_0000 + h * 0x1000) for h in range(5)]
    evs += [_touch(h, 10 + i) for i, h in enumerate([0, 1, 2, 3, 0, 1, 4, 0])]
    path = trace_file(evs)
    specs = _specs("intel-vtd-legacy", [], [(e, 0) for e in (8, 1, 3, 2)])
    results, one_pass = _one_pass(specs, "strict", "atomic", path)
    assert one_pass
    assert [r["iotlb_hits"] for r in results] == [3, 0, 1, 0]
    assert results == _separate(specs, "strict", "atomic", path)


def _touch(h, t, dev=1):
    return dict(ts=t, op=ts.OP_ACCESS, handle=h, offset=0, size=64, device=dev, flags=ts.FLAG_FROM_DEVICE)


def _map(h, t, paddr):
    return dict(ts=t, op=ts.OP_MAP, handle=h, size=4096, paddr=paddr, cpu=0, device=1,
                flags=ts.FLAG_TO_DEVICE)


def _unmap(h, t):
    return dict(ts=t, op=ts.OP_UNMAP, handle=h, size=4096, cpu=0, device=1, flags=0)


def test_reuse_distances_by_hand(trace_file):
    """Pages a b c d a b e a, fully associative: a's second use is at depth 3,
    b's at depth 3, a's third at depth 2 (after b, e)."""
    evs = [_map(h, h, 0x1000_0000 + h * 0x1000) for h in range(5)]
    evs += [_touch(h, 10 + i) for i, h in enumerate([0, 1, 2, 3, 0, 1, 4, 0])]
    path = trace_file(evs)
    specs = _specs("intel-vtd-legacy", [], [(e, 0) for e in (1, 2, 3, 4, 8)])
    results, one_pass = _one_pass(specs, "strict", "atomic", path)
    assert one_pass
    assert [r["iotlb_hits"] for r in results] == [0, 0, 1, 3, 3]
    assert results == _separate(specs, "strict", "atomic", path)


def test_invalidation_holes_are_free_ways(trace_file):
    """Unmapping (strict) the most recent of two cached pages frees its way:
    a 2-entry IOTLB then keeps the older page across the next fill."""
    evs = [_map(0, 0, 0x1000_0000), _map(1, 1, 0x1000_1000), _map(2, 2, 0x1000_2000),
           _touch(0, 3), _touch(1, 4), _unmap(1, 5), _touch(2, 6), _touch(0, 7)]
    path = trace_file(evs)
    specs = _specs("intel-vtd-legacy", [], [(1, 0), (2, 0)])
    results, one_pass = _one_pass(specs, "strict", "atomic", path)
    assert one_pass
    assert [r["iotlb_hits"] for r in results] == [0, 1]
    assert results == _separate(specs, "strict", "atomic", path)


def test_stale_hit_in_one_size_only_falls_back(trace_file):
    """Lazy: a page unmapped while cached stays in the larger IOTLB (stale hit)
    but has left the smaller one, which walks and faults. One recency list
    cannot hold both, so the sizes run separately, with the same results."""
    evs = [_map(h, h, 0x1000_0000 + h * 0x1000) for h in range(3)]
    evs += [_touch(0, 10), _unmap(0, 11), _touch(1, 12), _touch(2, 13), _touch(0, 14)]
    path = trace_file(evs)
    specs = _specs("intel-vtd-legacy", [], [(1, 0), (4, 0)])
    results, one_pass = _one_pass(specs, "lazy", "atomic", path)
    assert not one_pass
    assert [(r["stale_hits"], r["faults"]) for r in results] == [(0, 1), (1, 0)]
    assert results == _separate(specs, "lazy", "atomic", path)


@pytest.mark.parametrize("model, base, grid, why", [
    ("arm-smmuv3", [], [(64, 0), (128, 0)], "not LRU"),
    ("arm-smmuv3", ["iotlb.policy=\"lru\""], [(64, 0), (128, 0)], "micro-TLB"),
    ("intel-vtd-legacy", ["psc.policy=\"random\""], [(64, 0), (128, 0)], "at random"),
    ("intel-vtd-legacy", [], [(64, 8), (128, 8)], "one set count"),
])
def test_refused_grids(trace_file, model, base, grid, why):
    path = trace_file([_map(0, 0, 0x1000_0000), _touch(0, 1)])
    with pytest.raises(HarnessError, match=why):
        _one_pass(_specs(model, base, grid), "strict", "atomic", path)


def test_refused_when_more_than_the_size_differs(trace_file):
    path = trace_file([_map(0, 0, 0x1000_0000), _touch(0, 1)])
    a, b = _specs("intel-vtd-legacy", [], [(64, 0), (128, 0)])
    with pytest.raises(HarnessError, match="more than IOTLB size"):
        _one_pass([a, b.with_overrides(["fq.size=8"])], "strict", "atomic", path)


@given(st.integers(0, 299), st.sampled_from([np.int64, np.uint8]))
@settings(max_examples=40, deadline=None)
def test_move_down_is_the_overlapping_slice_move(p, dtype):
    """translate._move_down, the memmove of a long shift, moves places 0..p-1
    of one row down one as numpy's overlapping slice assignment does, and
    touches no other row or place."""
    a = np.arange(3 * 300, dtype=np.int64).reshape(3, 300).astype(dtype)
    want = a.copy()
    want[1, 1:p + 1] = want[1, :p].copy()
    _moved(a, 1, p)
    assert (a == want).all()


@njit
def _moved(a, s, p):
    translate._move_down(a, s, p)
