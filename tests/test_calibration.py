"""Calibration: the throughput model's arithmetic, each published case at a
reduced size (direction and ordering), the reproduce command and its report.
The full-size tolerance check is `iommu-harness reproduce all`."""

import math

import polars as pl
import pytest
from typer.testing import CliRunner

from harness import metrics, models
from harness.calibration import cases, throughput
from harness.cli import app
from harness.errors import HarnessError


def _counters(**kw):
    v = {m.name: 0 for m in metrics.COUNTERS}
    v.update(kw)
    mib = v["bytes_accessed"] / 2**20
    v["iotlb_misses_per_mib"] = v["iotlb_misses"] / mib if mib else 0.0
    return v


PARAMS = models.resolve("intel-vtd-legacy").params


def test_cpu_bound_rate_is_cores_over_cost_per_unit():
    # 1000 packets of 1000 bytes: 1000 maps (rcache), 1000 unmaps each with a PSI and a wait
    v = _counters(maps=1000, unmaps=1000, iova_rcache_hits=1000, bytes_mapped=1000 * 4096,
                  bytes_accessed=1000 * 1000, inv_range=1000, inv_syncs=1000)
    host = dict(throughput.HOST_DEFAULTS, cores=2, unit_ns=500.0, line_rate_gbps=100.0)
    r = throughput.model(v, PARAMS, host, 1000)
    per_unit = (500 + PARAMS["cpu.map_ns"] + PARAMS["cpu.iova_rcache_ns"] + 2 * PARAMS["cpu.page_ns"]
                + PARAMS["cpu.unmap_ns"] + PARAMS["inv.cmd_ns"] + PARAMS["inv.sync_ns"])
    assert r["cpu_ns_per_unit"] == pytest.approx(per_unit)
    assert r["bound"] == "cpu" and r["rate"] == pytest.approx(2e9 / per_unit)
    assert r["gbps"] == pytest.approx(r["rate"] * 8000 / 1e9)
    assert r["line_fraction"] == pytest.approx(r["rate"] / (100e9 / 8 / 1000))
    # every unmap pays the same: no spread; every map the same too
    assert r["unmap_us"] == pytest.approx((PARAMS["cpu.unmap_ns"] + PARAMS["cpu.page_ns"]
                                          + PARAMS["inv.cmd_ns"] + PARAMS["inv.sync_ns"]) / 1e3)
    assert r["unmap_sd_us"] == 0 and r["map_sd_us"] == 0


def test_dma_rate_follows_outstanding_requests_and_miss_stalls():
    # 1 MiB accessed in 4096 lookups, half of them miss with one page-table read each
    v = _counters(bytes_accessed=2**20, lookups=4096, iotlb_misses=2048, walk_reads=2048)
    host = dict(throughput.HOST_DEFAULTS, outstanding=10, request_bytes=256, latency_ns=200.0,
                line_rate_gbps=1e6)
    r = throughput.model(v, PARAMS, host, 1)
    penalty = PARAMS["walk.miss_ns"] + PARAMS["walk.read_ns"]
    stall = 2048 / (2**20 / 256) * penalty
    assert r["miss_penalty_ns"] == pytest.approx(penalty)
    assert r["bound"] == "dma"
    assert r["rate"] * 2**20 == pytest.approx(10 * 256 * 1e9 / (200 + stall))
    assert r["iotlb_misses_per_mib"] == 2048


def test_rare_work_spreads_the_latency():
    # 4 calls, one of which pays a 1000 ns tree allocation: mean 250, sd sqrt(p(1-p)) * 1000
    mean, sd = throughput.latency(4, [(1, 1000.0), (4, 10.0)])
    assert mean == pytest.approx(260.0)
    assert sd == pytest.approx(math.sqrt(0.25 * 0.75) * 1000)
    assert throughput.latency(0, [(1, 5.0)]) == (0.0, 0.0)


@pytest.fixture(scope="module")
def reduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    got = {}
    for name in cases.available():
        runs, ratios = cases.reproduce(cases.load(name), out, reduced=True, jobs=1)
        got[name] = ({r["run"]: r for r in runs.iter_rows(named=True)}, ratios)
    return out, got


def test_every_case_is_reduced_and_tested(reduced):
    assert set(reduced[1]) == {"viommu-first-stage", "strict-vs-lazy-10g", "lazy-flush-2008",
                               "iotlb-wall-200g", "dma-map-benchmark"}


def test_viommu_first_stage_lazy_beats_strict(reduced):
    runs, _ = reduced[1]["viommu-first-stage"]
    strict, lazy = runs["strict"], runs["lazy"]
    assert lazy["flush"] == "lazy"  # first-stage tables: caching mode no longer forces strict
    assert strict["bound"] == lazy["bound"] == "cpu"
    assert lazy["gbps"] > 1.1 * strict["gbps"]


def test_strict_vs_lazy_10g_orders_strict_deferred_none(reduced):
    runs, _ = reduced[1]["strict-vs-lazy-10g"]
    assert runs["no-iommu"]["bound"] == "link" and runs["no-iommu"]["line_fraction"] == pytest.approx(1)
    assert runs["strict"]["gbps"] < 0.6 * runs["deferred"]["gbps"] < runs["no-iommu"]["gbps"]


def test_lazy_flush_2008_recovers_a_minority_of_the_loss(reduced):
    runs, ratios = reduced[1]["lazy-flush-2008"]
    assert runs["strict"]["gbps"] < runs["deferred"]["gbps"] < runs["no-iommu"]["gbps"]
    assert 0.05 < ratios["modelled"][0] < 0.5


def test_iotlb_wall_loss_and_huge_page_recovery(reduced):
    runs, _ = reduced[1]["iotlb-wall-200g"]
    small, huge, none = runs["4k-buffers"], runs["hugepage-buffers"], runs["no-iommu"]
    assert small["bound"] == "dma" and small["gbps"] < 0.9 * none["gbps"]
    assert huge["gbps"] == pytest.approx(none["gbps"])
    assert small["iotlb_misses_per_mib"] > 100 * max(huge["iotlb_misses_per_mib"], 1)


def test_dma_map_benchmark_latency_grows_with_granule(reduced):
    runs, _ = reduced[1]["dma-map-benchmark"]
    g1, g256 = runs["granule 1 (4 KiB)"], runs["granule 256 (1 MiB)"]
    assert g256["unmap_us"] > 10 * g1["unmap_us"] and g256["map_us"] > 2 * g1["map_us"]


def test_reproduce_cli_prints_tool_format_and_resumes(tmp_path, reduced):
    r = CliRunner().invoke(app, ["reproduce", "dma-map-benchmark", "--reduced", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "dma mapping benchmark: threads:1 seconds:1 node:-1 dir:BIDIRECTIONAL granule: 256" in r.output
    assert "average unmap latency(us):" in r.output and "within" in r.output
    rows = list(tmp_path.glob("dma-map-benchmark/model=*/flush=*/gfp=*/*.parquet"))
    stamps = {p: p.stat().st_mtime_ns for p in rows}
    assert len(rows) == 2
    assert CliRunner().invoke(app, ["reproduce", "dma-map-benchmark", "--reduced", "-o",
                                    str(tmp_path)]).exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in rows} == stamps  # nothing re-run
    cal = pl.read_parquet(tmp_path / "calibration.parquet")
    assert cal["case"].to_list() == ["dma-map-benchmark"] * 2 and cal["reduced"].all()


def test_report_lists_every_case(tmp_path, reduced):
    out, got = reduced
    from harness.calibration import store
    for name in got:
        store.write(out, cases.load(name), got[name][1])
    r = CliRunner().invoke(app, ["report", str(out), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "r.html").read_text()
    assert 'id="calibration"' in text
    for name in got:
        assert name in text


def test_bad_case_file_names_file_and_field(tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text(open(cases.available()["viommu-first-stage"]).read().replace(
        'trace = "rx"', 'trace = "tx"', 1))
    with pytest.raises(HarnessError, match=r"mine.toml: runs\[0\].trace = 'tx': expected one of rx"):
        cases.load(str(bad))
    text = open(cases.available()["viommu-first-stage"]).read()
    for old, new, msg in (('flush = "lazy"', 'flsh = "lazy"', r"runs\[1\]\.flsh: unknown"),
                          ('set = ["pagetable.first_stage=true"]', 'set = "x=1"', r"runs\[0\]\.set: expected list"),
                          ('model = "intel-vtd-viommu"', 'model = "nne"', r"runs\[0\]\.model/set: unknown model"),
                          ('unit = "packets"', 'unit = "frames"', r"unit = 'frames': expected a counter")):
        bad.write_text(text.replace(old, new, 1))
        with pytest.raises(HarnessError, match=r"mine.toml: " + msg):
            cases.load(str(bad))
    r = CliRunner().invoke(app, ["reproduce", "no-such-case"])
    assert r.exit_code == 2 and "unknown case 'no-such-case'" in r.output
