"""Synthetic workloads: statistical properties for the seed, validity (every
trace runs), determinism, and the committed samples."""

import filecmp
import re
from pathlib import Path

import numpy as np
import pytest

from harness import models
from harness.errors import HarnessError
from harness.trace import schema as ts
from harness.trace import synth
from harness.trace.info import summarize
from harness.trace.reader import TraceReader
from harness.trace.samples import SAMPLES, build

from helpers import simulate

SAMPLE_DIR = Path(__file__).parent.parent / "traces" / "samples"


def columns(path):
    with TraceReader(path) as r:
        parts = [{k: v.copy() for k, v in c.items()} for _, c in r.batches()]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.fixture
def gen(tmp_path):
    def make(kind, **kw):
        p = tmp_path / f"{kind}-{len(list(tmp_path.iterdir()))}.arrow"
        synth.generate(kind, p, **kw)
        return p
    return make


def test_nic_rx_rate_sizes_and_late_dma(gen):
    p = gen("nic-rx", packets=20_000, queues=4, ring=256, rate=2e6, late_dma=0.1, seed=3)
    c = columns(p)
    acc = c["op"] == ts.OP_ACCESS
    assert (c["op"] == ts.OP_MAP).sum() == 4 * 256 + 20_000
    assert c["size"][acc].max() == 1514  # mtu 1500 + Ethernet header
    span = c["ts"][-1] - c["ts"][0]
    assert abs(span / 1e9 - 20_000 / 2e6) / (20_000 / 2e6) < 0.01
    late = acc.sum() - 20_000
    assert abs(late - 2000) < 4 * np.sqrt(2000)
    assert len(np.unique(c["cpu"])) == 4


def test_nic_rx_page_pool_recycles(gen):
    c = columns(gen("nic-rx", packets=20_000, page_pool=True, recycle=0.9, seed=2))
    unmaps = (c["op"] == ts.OP_UNMAP).sum()
    assert abs(unmaps - 2000) < 4 * np.sqrt(2000)
    assert set(c["size"][c["op"] == ts.OP_MAP]) == {4096}  # pool pages


def test_nic_rx_huge_pages_and_jumbo_frames(gen):
    c = columns(gen("nic-rx", packets=1000, queues=2, ring=1024, huge_pages=True))
    assert (c["op"] == ts.OP_MAP).sum() == 2 and (c["op"] == ts.OP_UNMAP).sum() == 0
    assert (c["paddr"][c["op"] == ts.OP_MAP] % (2 << 20) == 0).all()
    c = columns(gen("nic-rx", packets=1000, mtu=9000, buffer_size=4096, ring=1024, rate=1e5))
    acc = c["size"][c["op"] == ts.OP_ACCESS]
    assert len(acc) == 3 * 1000 and acc.sum() == 1000 * 9014


def test_nic_tx_scatterlists(gen):
    p = gen("nic-tx", packets=2000, packet_size=65536, head_size=128, frag_size=32768)
    c = columns(p)
    m = c["op"] == ts.OP_MAP
    assert m.sum() == 3 * 2000 and ((c["flags"][m] & ts.FLAG_SG_MORE) != 0).sum() == 2 * 2000
    assert c["size"][c["op"] == ts.OP_ACCESS].sum() == 2000 * 65536
    r = simulate(p, "strict")
    assert (r["maps"], r["sg_segments"], r["faults"]) == (2000, 6000, 0)


def test_nvme_sizes_reads_and_segments(gen):
    p = gen("nvme", ios=4000, sizes="4K:50,64K:50", read_fraction=0.7, max_segments=8, seed=4)
    c = columns(p)
    un = c["op"] == ts.OP_UNMAP
    sizes = c["size"][un]
    assert set(sizes) <= {4096, 32768}  # 64K I/Os split into 32K requests
    ios = (sizes == 4096).sum() + (sizes == 32768).sum() / 2
    assert abs((sizes == 4096).sum() / ios - 0.5) < 0.05
    reads = ((c["flags"][un] & ts.FLAG_FROM_DEVICE) != 0).mean()
    assert abs(reads - 0.7) < 0.04
    r = simulate(p, "strict")
    assert r["faults"] == 0 and r["unmaps"] == un.sum()


def test_nvme_huge_pages_merge_segments(gen):
    small = simulate(gen("nvme", ios=2000, sizes="128K"), "strict")
    huge = simulate(gen("nvme", ios=2000, sizes="128K", huge_pages=True, pattern="sequential"), "strict")
    assert huge["sg_segments"] < small["sg_segments"] / 4


def test_gpu_patterns(gen):
    c = columns(gen("gpu", buffers=2, buffer_size="8M", accesses=1000, access_size="4K",
                    pattern="strided", stride="1M"))
    acc = c["op"] == ts.OP_ACCESS
    pos = c["handle"][acc] * (8 << 20) + c["offset"][acc]
    assert (np.diff(pos)[:10] == 1 << 20).all()
    assert (c["paddr"][c["op"] == ts.OP_MAP] % (2 << 20) == 0).all()
    r = simulate(gen("gpu", accesses=5000), "strict")
    assert r["faults"] == 0 and r["iotlb_misses"] < r["lookups"] / 10  # 2 MiB superpages


def test_vfio_guest_layout_gfp_and_balloon(gen):
    p = gen("vfio-guest", guest_ram="4G", ram_below_4g="2G", accesses=20_000, balloon=0.1,
            balloon_events=3, alpha=1.0)
    c = columns(p)
    m = c["op"] == ts.OP_MAP
    assert m.sum() == 2048 + 3 and (c["op"] == ts.OP_UNMAP).sum() == 3
    assert (c["flags"][m] & (ts.FLAG_IOMMU_API | ts.FLAG_GFP_BLOCKING) != 0).all()
    iova = c["iova"][m]
    assert iova.max() < (6 << 30) and not ((iova >= 2 << 30) & (iova < 4 << 30)).any()
    r = simulate(p, "strict", gfp="kernel-account")
    assert r["faults"] == 0 and r["memcg_charged_peak_bytes"] > 0
    page = c["iova"][c["op"] == ts.OP_ACCESS] >> 12
    _, counts = np.unique(page, return_counts=True)
    assert counts.max() > 20 * counts.mean()  # zipf: hot pages


def test_dma_map_benchmark_loop(gen):
    c = columns(gen("dma-map-benchmark", threads=3, loops=500, granule=4, dir=1))
    m = c["op"] == ts.OP_MAP
    assert m.sum() == 1500 and (c["op"] == ts.OP_ACCESS).sum() == 0
    assert set(c["size"][m]) == {16384} and set(c["flags"][m]) == {ts.FLAG_TO_DEVICE}
    for t in range(3):  # each thread maps its one buffer again and again
        assert len(set(c["paddr"][m & (c["handle"] == t)])) == 1
    c = columns(gen("dma-map-benchmark", threads=1, loops=10, granule=4, mode="sg"))
    assert ((c["flags"] & ts.FLAG_SG_MORE) != 0).sum() == 30


def test_random_zipf_and_uniform(gen):
    z = summarize(gen("random", footprint="16M", accesses=50_000, alpha=1.2))
    u = summarize(gen("random", footprint="16M", accesses=50_000, distribution="uniform"))
    assert z["pages_accessed"] < u["pages_accessed"]
    assert u["pages_accessed"] > 0.9 * 4096
    assert z["page_reuse_accesses"]["p50"] < u["page_reuse_accesses"]["p50"]


@pytest.mark.parametrize("kind, bad, message", [
    ("nic-rx", dict(packet_size=9000), "expected 1..mtu + 14"),
    ("nic-tx", dict(packet_size=200_000), "MAX_SKB_FRAGS"),
    ("nvme", dict(sizes="4K:x"), "size:weight"),
    ("nvme", dict(pattern="zigzag"), "random or sequential"),
    ("gpu", dict(page_size="4K"), "expected 2M or 1G"),
    ("vfio-guest", dict(backing="8K"), "expected 4K, 2M or 1G"),
    ("dma-map-benchmark", dict(dir=5), "expected 0, 1 or 2"),
    ("random", dict(footprint="lots"), "expected bytes"),
    ("random", dict(bogus=1), "unknown parameter"),
    ("random", dict(rate=1e-9), "beyond 2^62"),
    ("nic-tx", dict(latency_ns=1), "--latency-ns 1: expected >= 2"),
    ("nvme", dict(latency_ns=0), "--latency-ns 0: expected >= 2"),
    ("nic-rx", dict(latency_ns=-5), "--latency-ns -5: expected >= 0"),
    ("nic-rx", dict(queues=1, ring=2, rate=1.5e6, latency_ns=1333), "longer than a ring wrap"),
    ("dma-map-benchmark", dict(loop_ns=1), "--loop-ns 1: expected >= 2"),
    ("dma-map-benchmark", dict(delay_ns=-1), "--delay-ns -1: expected >= 0"),
    ("vfio-guest", dict(balloon=0.1, balloon_events=2, balloon_ns=-1), "--balloon-ns -1: expected > 0"),
])
def test_bad_parameters(tmp_path, kind, bad, message):
    with pytest.raises(HarnessError, match=re.escape(message)):
        synth.generate(kind, tmp_path / "t.arrow", **bad)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", sorted(synth.KINDS))
def test_every_kind_is_deterministic_and_runs(tmp_path, kind):
    small = {"nic-rx": dict(packets=2000), "nic-tx": dict(packets=1000), "nvme": dict(ios=300),
             "gpu": dict(buffers=2, buffer_size="8M", accesses=3000),
             "vfio-guest": dict(guest_ram="256M", ram_below_4g="128M", accesses=3000),
             "dma-map-benchmark": dict(loops=1000), "random": dict(accesses=3000)}[kind]
    a, b = tmp_path / "a.arrow", tmp_path / "b.arrow"
    synth.generate(kind, a, **small)
    synth.generate(kind, b, **small)
    assert a.read_bytes() == b.read_bytes()
    for model in ("intel-vtd-legacy", "arm-smmuv3"):
        r = simulate(a, "lazy", model=model)
        assert r["events"] == summarize(a)["rows"]


def test_committed_samples_equal_a_rebuild(tmp_path):
    build(SAMPLE_DIR, tmp_path)
    for name, _ in SAMPLES:
        assert filecmp.cmp(SAMPLE_DIR / name, tmp_path / name, shallow=False), name
        assert (SAMPLE_DIR / name).stat().st_size < 1 << 20


@pytest.mark.parametrize("name", [n for n, _ in SAMPLES])
def test_every_sample_runs_through_every_model(name):
    for model in sorted(models.available()):
        r = simulate(SAMPLE_DIR / name, "strict", model=model)
        assert r["events"] > 0


def test_readme_documents_every_kind_and_option():
    doc = (Path(__file__).parent.parent / "traces" / "README.md").read_text()
    assert synth.markdown() in doc


def test_info_rejects_rule_breaking_rows(tmp_path):
    from conftest import mp, write_trace
    from harness.errors import TraceError
    p = write_trace(tmp_path / "t.arrow", [mp(0, 0), dict(mp(1, 1), size=0)])
    with pytest.raises(TraceError, match="row 1: column 'size' is 0"):
        summarize(p)
    p = write_trace(tmp_path / "u.arrow", [mp(0, 0xFFFFFFF0)])
    with pytest.raises(TraceError, match="row 0: column 'handle'"):
        summarize(p)
