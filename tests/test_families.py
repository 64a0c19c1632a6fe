"""Vendor families on hand-written traces: the commands each driver sends,
with the counts worked out from the kernel code cited in harness.vendors."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness import models
from harness.cli import app
from harness.trace import schema as ts

from conftest import ac, mp, um
from helpers import simulate

API = ts.FLAG_IOMMU_API | ts.FLAG_TO_DEVICE
ROOT = Path(__file__).resolve().parent.parent


def api_map(t, h, iova, size, paddr=None):
    return mp(t, h, size=size, paddr=iova if paddr is None else paddr, iova=iova, flags=API)


def api_unmap(t, h, size):
    return um(t, h, size=size, flags=API)


def test_every_builtin_model_loads_with_a_source_for_every_value():
    names = set(models.available())
    assert {"intel-vtd-legacy", "intel-vtd-scalable", "intel-vtd-viommu", "amd-vi-v1", "amd-vi-v2",
            "amd-vi-viommu", "arm-smmuv3", "arm-smmuv3-ril", "s390", "s390-zvm", "none"} <= names
    for name in names:
        spec = models.resolve(name)
        assert all(spec.sources.get(k) for k in spec.params), name


def test_amd_build_inv_address_covers_the_aligned_block(trace_file):
    # [0x1000, 0x2fff]: msb_diff = fls64(0x2fff ^ 0x1000) - 1 = 13 -> the 16K block at 0
    f = trace_file([api_map(0, 0, 0x1000, 0x2000), api_unmap(1, 0, 0x2000)])
    r = simulate(f, model="amd-vi-v1")
    assert (r["inv_range"], r["inv_pages"], r["inv_syncs"], r["inv_submits"]) == (1, 4, 1, 2)
    assert r["pt_pages_freed"] == 0  # iommu_v1_unmap_pages only clears PTEs


def test_amd_npcache_flushes_maps_in_aligned_chunks_and_forces_strict(trace_file):
    f = trace_file([api_map(0, 0, 0x1000, 0x2000), api_unmap(1, 0, 0x2000)])
    r = simulate(f, "lazy", model="amd-vi-viommu")
    # map and unmap each: chunks 4K@0x1000 and 4K@0x2000, then one COMPLETION_WAIT
    assert (r["iotlb_sync_maps"], r["inv_range"], r["inv_pages"], r["inv_syncs"]) == (1, 4, 4, 2)
    assert r["inv_submits"] == r["inv_traps"] == 6
    spec = models.resolve("amd-vi-viommu")
    assert spec.vendor.effective_flush(spec.params, "lazy", (6, 12))[0] == "strict"


def test_amd_every_power_of_two_page_is_one_tlb_entry(trace_file):
    evs = [api_map(0, 0, 0x10000, 0x10000)] + [ac(1 + i, ts.NO_HANDLE, iova=0x10000 + i * 4096)
                                                 for i in range(16)]
    f = trace_file(evs)
    amd, vtd = simulate(f, model="amd-vi-v1"), simulate(f)
    assert (amd["iotlb_misses"], amd["iotlb_hits"]) == (1, 15)  # one 64K page, 16 replicated PTEs
    assert vtd["iotlb_misses"] == 16


def test_amd_large_page_over_an_empty_table_frees_it_after_a_flush(trace_file):
    f = trace_file([api_map(0, 0, 0x200000, 4096), api_unmap(1, 0, 4096),
                    api_map(2, 1, 0x200000, 1 << 21)])
    r = simulate(f, model="amd-vi-v1")
    # free_clear_pte puts the level-1 table on the freelist; the map flushes, then frees it
    assert (r["superpage_switches"], r["pt_pages_freed"], r["inv_range"]) == (1, 1, 2)


@pytest.mark.parametrize("model, overrides, cmds, submits", [
    ("arm-smmuv3", [], 16, 1),                        # one TLBI per 4K granule, one CMD_SYNC
    ("arm-smmuv3", ["smmu.cmdq_batch=4"], 16, 4),     # full batches go out unsynced
    ("arm-smmuv3-ril", [], 1, 1),                     # NUM 1 << SCALE 4: one range command
])
def test_smmu_tlbi_per_granule_or_range(trace_file, model, overrides, cmds, submits):
    f = trace_file([api_map(0, 0, 0x100000, 0x10000, paddr=0x3001000), api_unmap(1, 0, 0x10000)])
    r = simulate(f, overrides=overrides, model=model)
    assert (r["inv_range"], r["inv_pages"], r["inv_syncs"], r["inv_submits"]) == (cmds, 16, 1, submits)


def test_smmu_ril_splits_ranges_by_scale(trace_file):
    # 33 pages: NUM 1 at SCALE 0, then NUM 1 at SCALE 5
    f = trace_file([api_map(0, 0, 0x100000, 33 * 4096, paddr=0x3001000), api_unmap(1, 0, 33 * 4096)])
    assert simulate(f, model="arm-smmuv3-ril")["inv_range"] == 2


def test_smmu_removing_a_table_flushes_the_walk_and_frees_it_at_once(trace_file):
    # 2M of 4K pages under one table; unmapping the 2M block entry removes the
    # table: a non-leaf flush of 512 granules, and the table freed at once
    f = trace_file([api_map(0, 0, 0x200000, 1 << 21, paddr=0x3001000), api_unmap(1, 0, 1 << 21)])
    r = simulate(f, model="arm-smmuv3")
    # then iotlb_sync: the removed table's entry was gathered too, one 2M TLBI
    assert (r["inv_range"], r["inv_syncs"], r["iotlb_syncs"]) == (512 + 1, 2, 1)
    assert (r["pt_pages_freed"], r["pt_pages_pending_peak"]) == (1, 0)


def test_smmu_granules_set_levels_and_table_sizes(trace_file):
    f = trace_file([mp(0, 0, size=4096), ac(1, 0), um(2, 0)])
    r4 = simulate(f, model="arm-smmuv3")
    r64 = simulate(f, model="arm-smmuv3", overrides=["pagetable.granule=65536",
                                                     "pagetable.pgsizes=[65536, 536870912]"])
    assert r4["pt_bytes_peak"] == 4 * 4096                      # 4 levels of 4K tables
    # 3 levels: 64K tables under a 64-entry top level, rounded up to a page
    assert r64["pt_bytes_peak"] == 2 * 65536 + 4096
    assert (r64["lookups"], r4["walk_reads"], r64["walk_reads"]) == (1, 4, 3)


def test_s390_rpcit_tables_and_shadowing(trace_file):
    f = trace_file([mp(0, 0), ac(1, 0), um(2, 0), mp(3, 1), um(4, 1)])
    r = simulate(f, model="s390")
    assert (r["inv_range"], r["inv_submits"], r["inv_traps"], r["iotlb_sync_maps"]) == (2, 2, 0, 0)
    assert r["pt_pages_freed"] == 0
    assert r["pt_bytes_peak"] == 16384 + 16384 + 4096           # 2K page table rounded to a page
    sub = simulate(f, model="s390", overrides=["pagetable.subpage_tables=true"])
    assert sub["pt_bytes_peak"] == 16384 + 16384 + 2048
    zvm = simulate(f, model="s390-zvm")
    assert (zvm["inv_range"], zvm["inv_traps"], zvm["iotlb_sync_maps"]) == (4, 4, 2)
    spec = models.resolve("s390-zvm")
    assert spec.vendor.effective_flush(spec.params, "lazy", (6, 12))[0] == "lazy-single"


@pytest.mark.parametrize("kernel, submits", [('"6.12"', 1), ('"6.6"', 2)])
def test_vtd_device_tlb_descriptors_batched_since_6_12(trace_file, kernel, submits):
    f = trace_file([mp(0, 0), um(1, 0)])
    r = simulate(f, overrides=["device.ats=true", f"kernel={kernel}"])
    assert (r["inv_range"], r["inv_dev"], r["inv_submits"], r["inv_syncs"]) == (1, 1, submits, submits)


def test_none_is_the_untranslated_baseline(trace_file):
    f = trace_file([mp(0, 0), ac(1, 0), um(2, 0)])
    r = simulate(f, "lazy", model="none")
    assert (r["maps"], r["accesses"], r["lookups"], r["pt_pages_alloc"], r["inv_cost_ns"]) == (1, 1, 0, 0, 0)


@pytest.mark.parametrize("policy", ["lru", "round-robin", "random"])
def test_replacement_policies_are_deterministic(trace_file, policy):
    evs = [mp(0, h, size=4096, paddr=(h + 1) << 12) for h in range(40)]
    evs += [ac(1 + i, (i * 7) % 40) for i in range(400)]
    f = trace_file(evs)
    ov = [f'iotlb.policy="{policy}"', "iotlb.entries=16", "iotlb.ways=16"]
    a, b = simulate(f, overrides=ov), simulate(f, overrides=ov)
    assert a == b and a["iotlb_hits"] + a["iotlb_misses"] == 400
    if policy == "random":
        c = simulate(f, overrides=ov + ["cache.seed=99"])
        assert c["iotlb_hits"] != a["iotlb_hits"]


def test_run_prints_the_hardware_counter_view(trace_file, tmp_path):
    f = trace_file([mp(0, 0), ac(1, 0), um(2, 0)])
    r = CliRunner().invoke(app, ["run", str(f), "--model", "amd-vi-v1", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "AMD perf iommu" in r.output and "mem_iommu_tlb_pte_mis" in r.output
    import polars as pl
    row = pl.read_parquet(next(tmp_path.glob("*.parquet"))).row(0, named=True)
    assert json.loads(row["hw_counters"])["mem_trans_total"] == 1


def test_model_files_must_name_known_parameters(tmp_path):
    (tmp_path / "mine.toml").write_text('inherits = "arm-smmuv3"\nfamily = "smmuv3"\n[smmu]\nril = true\n'
                                        'tlb_entries = 3\n')
    r = CliRunner().invoke(app, ["models", "show", "mine", "--models-dir", str(tmp_path)])
    assert r.exit_code == 2 and "unknown parameter(s) smmu.tlb_entries" in r.output


def test_builtin_models_ship_in_the_wheel(tmp_path):
    """Build the wheel, import harness from it (no checkout models/ next to
    it) and find every built-in model."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path),
                    str(ROOT)], check=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("iommu_harness-*.whl"))
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "harness").rglob("__init__.py")}
    shipped = {str(p.parent.relative_to(site)) for p in (site / "harness").rglob("__init__.py")}
    assert packages <= shipped, packages - shipped  # pyproject lists every package
    code = ("import harness.cli; from harness import models; print(models.BUILTIN_DIR); "
            "print(len(models.available()))")
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path, check=True).stdout.split()
    assert out[0].startswith(str(site)) and int(out[1]) == len(models.available())


def test_third_party_family_plugs_in_through_the_entry_point(tmp_path, trace_file):
    """A family registered under iommu_harness.vendors is found by name."""
    (tmp_path / "myfam.py").write_text(
        "from harness.vendors.vtd import *  # noqa\n"
        "from harness.vendors.vtd import PARAMS, hardware_params, effective_flush, gfp_ignored, cost_params\n")
    dist = tmp_path / "myfam-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myfam\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[iommu_harness.vendors]\nmyfam = myfam\n")
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "my-iommu.toml").write_text('inherits = "intel-vtd-legacy"\nfamily = "myfam"\n')
    f = trace_file([mp(0, 0), um(1, 0)])
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(f), "--model", "my-iommu",
                        "--models-dir", str(models_dir), "-q", "--out", str(tmp_path / "res")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    import polars as pl
    row = pl.read_parquet(next((tmp_path / "res").glob("*.parquet"))).row(0, named=True)
    assert (row["family"], row["inv_range"]) == ("myfam", 1)


@pytest.mark.parametrize("model, iova, pages, cmds, covered", [
    ("intel-vtd-legacy", 0x1000, 3, 1, 4),    # PSI mask 2: the 4-page block at 0
    ("amd-vi-v1", 0x3000, 5, 1, 8),           # msb_diff 14: the 32K block at 0
    ("arm-smmuv3-ril", 0x100000, 35, 2, 35),  # NUM 3 at SCALE 0, then NUM 1 at SCALE 5
    ("arm-smmuv3", 0x100000, 35, 35, 35),     # one TLBI per 4K granule
    ("s390", 0x1000, 3, 1, 3),                # one RPCIT over the range
])
def test_one_unmap_pattern_per_family(trace_file, model, iova, pages, cmds, covered):
    size = pages * 4096
    f = trace_file([api_map(0, 0, iova, size, paddr=0x3001000), api_unmap(1, 0, size)])
    r = simulate(f, model=model)
    assert (r["inv_range"], r["inv_pages"], r["inv_all"]) == (cmds, covered, 0)


@pytest.mark.parametrize("name", sorted(models.available()))
def test_every_model_runs_nic_rx_strict_and_lazy(tmp_path_factory, name):
    from harness.trace import synth
    path = tmp_path_factory.getbasetemp() / "nic-small.arrow"
    if not path.exists():
        synth.nic_rx(path, packets=3000, queues=2, ring=64, seed=2)
    for flush in ("strict", "lazy"):
        r = simulate(path, flush, "kernel", model=name)
        assert r["maps"] >= r["unmaps"] >= 3000 and r["accesses"] >= 3000
        if name == "none":
            assert r["lookups"] == r["inv_cost_ns"] == r["pt_pages_alloc"] == 0
        else:
            assert r["lookups"] > 0 and r["inv_cost_ns"] > 0


def test_smmu_micro_tlb_serves_repeats_before_the_main_tlb(trace_file):
    evs = [api_map(0, 0, 0x100000, 4 * 4096, paddr=0x3001000)]
    evs += [ac(1 + i, ts.NO_HANDLE, iova=0x100000 + (i % 4) * 4096) for i in range(40)]
    evs += [api_unmap(50, 0, 4 * 4096), ac(51, ts.NO_HANDLE, iova=0x100000)]
    f = trace_file(evs)
    r = simulate(f, model="arm-smmuv3")
    # 4 cold misses walk and fill both; 36 repeats hit the 32-entry micro-TLB;
    # the unmap's TLBIs reach it, so the last access faults
    assert (r["utlb_hits"], r["utlb_misses"], r["iotlb_misses"], r["faults"]) == (36, 5, 5, 1)
    off = simulate(f, model="arm-smmuv3", overrides=["utlb.entries=0"])
    assert (off["utlb_hits"], off["iotlb_hits"], off["iotlb_misses"]) == (0, 36, 5)


def test_amd_v1_domains_grow_levels_as_iovas_climb(trace_file):
    # 3 levels reach 512 GiB; an IOVA at 2^48 needs 5 (increase_address_space twice)
    f = trace_file([api_map(0, 0, 0x1000, 4096), ac(1, ts.NO_HANDLE, iova=0x1000),
                    api_map(2, 1, 1 << 48, 4096), ac(3, ts.NO_HANDLE, iova=1 << 48),
                    ac(4, ts.NO_HANDLE, iova=1 << 58)])
    r = simulate(f, model="amd-vi-v1", overrides=["psc.l2_entries=0", "psc.l3_entries=0"])
    # tables: root and 2 below for 0x1000; 2 new roots; 4 below the root for 2^48
    assert r["pt_pages_alloc"] == 3 + 2 + 4
    # walks: 3 levels, then 5; 2^58 lies beyond 5 levels: a fault with one read
    assert (r["walk_reads"], r["faults"]) == (3 + 5 + 1, 1)
    # each growth: INVALIDATE_DEVTAB_ENTRY + COMPLETION_WAIT; each unmap-free map: none
    assert (r["inv_submits"], r["inv_syncs"]) == (2 * 2, 2)


def test_smmu_stage2_concatenates_a_small_top_level(trace_file):
    # ias 40, 4K granule: 4 levels with a 2-entry top, concatenated into 3 levels
    f = trace_file([mp(0, 0), ac(1, 0), um(2, 0)])
    s1 = simulate(f, model="arm-smmuv3", overrides=["pagetable.ias=40", "psc.l2_entries=0",
                                                    "psc.l3_entries=0", "psc.l4_entries=0"])
    s2 = simulate(f, model="arm-smmuv3", overrides=["pagetable.ias=40", "pagetable.stage=2",
                                                    "psc.l2_entries=0", "psc.l3_entries=0",
                                                    "psc.l4_entries=0"])
    assert (s1["walk_reads"], s2["walk_reads"]) == (4, 3)
    assert s2["pt_bytes_peak"] == 2 * 4096 + 1024 * 8  # 1024-entry concatenated top


def test_addresses_from_2_62_are_rejected(trace_file, tmp_path):
    f = trace_file([mp(0, 0, iova=(1 << 62) + 4096, flags=API)])
    r = CliRunner().invoke(app, ["run", str(f)])
    assert r.exit_code == 2 and "column 'iova'" in r.output and "2^62" in r.output
