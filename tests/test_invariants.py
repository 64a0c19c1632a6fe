"""Invariants that hold for every run, on nic-rx and on generated traces."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.trace import synth

from conftest import write_trace
from helpers import simulate
from test_differential import build


@pytest.fixture(scope="module")
def nic(tmp_path_factory):
    p = tmp_path_factory.mktemp("nic") / "nic.arrow"
    synth.nic_rx(p, packets=30_000, queues=4, ring=128, rate=2e6, seed=7)
    return p


def check(r, flush):
    assert r["iotlb_hits"] + r["iotlb_misses"] == r["lookups"]
    assert r["faults"] <= r["iotlb_misses"]
    assert r["pt_pages_alloc"] - r["pt_pages_freed"] == r["pt_pages_live"]
    assert r["alloc_gfp_atomic"] + r["alloc_gfp_kernel"] + r["alloc_gfp_kernel_account"] == r["pt_pages_alloc"]
    assert r["iova_rcache_hits"] + r["iova_tree_allocs"] == r["iova_allocs"]
    assert r["iova_rcache_inserts"] <= r["iova_frees"]
    if flush == "strict":
        assert r["stale_hits"] == 0 and r["stale_page_ns"] == 0 and r["fq_queued"] == 0
        assert r["pt_pages_pending"] == 0
    else:
        assert r["fq_queued"] <= r["unmaps"]


@pytest.mark.parametrize("flush", ["strict", "lazy"])
@pytest.mark.parametrize("gfp", ["atomic", "kernel", "kernel-account"])
def test_nic_rx_invariants(nic, flush, gfp):
    r = simulate(nic, flush, gfp)
    check(r, flush)
    assert r["maps"] == 30_000 + 4 * 128 and r["unmaps"] == 30_000 and r["accesses"] == 30_000
    assert r["faults"] == 0
    if flush == "lazy":
        assert r["fq_queued"] == r["unmaps"]
    if gfp == "kernel-account":
        assert r["memcg_charged_bytes"] == 4096 * r["pt_pages_live"] > 0
    else:
        assert r["memcg_charged_bytes"] == 0 and r["memcg_charged_peak_bytes"] == 0
    assert simulate(nic, flush, gfp) == r  # deterministic


def test_lazy_trades_invalidations_for_exposure(nic):
    strict, lazy = simulate(nic, "strict"), simulate(nic, "lazy")
    assert strict["inv_range"] == strict["unmaps"] and strict["inv_all"] == 0
    assert lazy["inv_range"] == 0
    assert lazy["inv_all"] == lazy["fq_flush_full"] + lazy["fq_flush_timeout"]
    assert lazy["inv_syncs"] * 50 < strict["inv_syncs"]
    assert lazy["stale_page_ns"] > 0 == strict["stale_page_ns"]
    assert lazy["inv_cost_ns"] * 50 < strict["inv_cost_ns"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), n=st.integers(1, 300), flush=st.sampled_from(["strict", "lazy"]),
       batch=st.integers(1, 50))
def test_generated_invariants_and_batching(tmp_path_factory, seed, n, flush, batch):
    evs = build(seed, n, 16, 0.1, 0.1, 0.2, 2)
    if not evs:
        return
    d = tmp_path_factory.mktemp("inv")
    one = simulate(write_trace(d / "a.arrow", evs), flush, "kernel")
    check(one, flush)
    # results do not depend on how the trace is cut into record batches
    assert simulate(write_trace(d / "b.arrow", evs, batch=batch), flush, "kernel") == one


def test_grown_tables_are_cache_line_aligned_and_keep_their_type():
    """A handle row is one 64-byte line (the event loop prefetches it whole);
    the aligned tables must type as np.zeros ones do, or the kernel recompiles."""
    import numba
    import numpy as np

    from harness import models
    from harness.core import state
    from harness.core.simulator import Simulator

    S = Simulator(models.resolve("intel-vtd-legacy"), "lazy", "atomic", 2).S
    S = state.grow_pools(state.ensure_handles(state.ensure_domains(S, 3), 1000))
    for name in ("H", "D", "fq", "rc", "pt", "nodes", "mags"):
        a = getattr(S, name)
        assert a.ctypes.data % 64 == 0, name
        assert numba.typeof(a) == numba.typeof(np.zeros((1,) * a.ndim, a.dtype)), name
    assert S.H.shape == (1000, 8) and not S.H.any()
    assert (S.mag_next == -1).all()
