"""dma_map_sg: one IOVA range, merged physically contiguous runs and one
iotlb_sync_map per list; counts worked out by hand."""

import re

import pytest

from harness.errors import TraceError
from harness.trace import schema as ts

from conftest import ac, mp, um, write_trace
from helpers import simulate

MORE = ts.FLAG_SG_MORE
FROM = ts.FLAG_FROM_DEVICE


def sg(t, h, segs):
    """Rows of one list: segs = [(paddr, size), ...]."""
    return [mp(t, h, size=size, paddr=paddr, flags=FROM | (MORE if k < len(segs) - 1 else 0))
            for k, (paddr, size) in enumerate(segs)]


# slots: 0x100800+0x800 -> 1 page; 0x101000+0x2000 -> 2 pages, right after the
# first slot physically (one run); 0x200000+0x1000 -> 1 page: 4 IOVA pages.
SEGS = [(0x100800, 0x800), (0x101000, 0x2000), (0x200000, 0x1000)]
TOTAL = 0x3800


def test_one_list_is_one_map_one_sync_map(trace_file):
    # DMA addresses: list = base + 0x800; segment 1 at base + 0x1000 (offset
    # 0x800 from the list), segment 2 at base + 0x3000 (offset 0x2800).
    evs = sg(0, 0, SEGS) + [ac(1, 0, size=0x800, offset=0), ac(2, 0, size=0x2000, offset=0x800),
                            ac(3, 0, size=0x1000, offset=0x2800), um(4, 0, size=TOTAL)]
    r = simulate(trace_file(evs), "strict", overrides=["vtd.caching_mode=true"])
    assert (r["events"], r["maps"], r["sg_segments"], r["bytes_mapped"]) == (7, 1, 3, TOTAL)
    assert (r["iova_allocs"], r["iotlb_sync_maps"], r["unmaps"], r["iotlb_syncs"]) == (1, 1, 1, 1)
    # one PSI of the 4 (size-aligned) pages on map, one on unmap
    assert (r["inv_range"], r["inv_pages"]) == (2, 8)
    assert (r["lookups"], r["faults"], r["iotlb_misses"]) == (4, 0, 4)


def test_separate_maps_sync_each(trace_file):
    evs = [mp(0, k, size=size, paddr=paddr) for k, (paddr, size) in enumerate(SEGS)]
    r = simulate(trace_file(evs), "strict", overrides=["vtd.caching_mode=true"])
    assert (r["maps"], r["sg_segments"], r["iova_allocs"], r["iotlb_sync_maps"]) == (3, 0, 3, 3)


@pytest.mark.parametrize("second, tables", [
    (0x40100000, 3),  # contiguous: one 2 MiB run on a 2 MiB-aligned IOVA -> a superpage
    (0x80000000, 4),  # apart: two 1 MiB runs of 4 KiB pages need a leaf table
])
def test_contiguous_segments_map_as_one_run(trace_file, second, tables):
    evs = sg(0, 0, [(0x40000000, 1 << 20), (second, 1 << 20)]) + [ac(1, 0, offset=(1 << 20) + 64)]
    r = simulate(trace_file(evs), "strict")
    assert (r["pt_pages_alloc"], r["faults"], r["maps"]) == (tables, 0, 1)


def test_list_straddling_a_batch_boundary_is_held_together(tmp_path):
    evs = [mp(0, 1)] + sg(1, 0, SEGS) + [ac(2, 0, offset=0x2800), um(3, 0, size=TOTAL)]
    one = simulate(write_trace(tmp_path / "a.arrow", evs), "lazy")
    split = simulate(write_trace(tmp_path / "b.arrow", evs, batch=2), "lazy")
    assert one == split and one["sg_segments"] == 3


def test_passthrough_counts_the_list_once(trace_file):
    r = simulate(trace_file(sg(0, 0, SEGS) + [um(1, 0, size=TOTAL)]), "passthrough")
    assert (r["maps"], r["unmaps"], r["sg_segments"], r["pt_pages_alloc"]) == (1, 1, 3, 0)


@pytest.mark.parametrize("rows, row, message", [
    (sg(0, 0, SEGS[:1]) + [dict(mp(0, 0), flags=FROM | MORE), mp(0, 1)], 1,
     "expected bit 9 (scatterlist continues) to be followed"),
    ([dict(mp(0, 0), flags=FROM | MORE), mp(0, 0, iova=0x5000)], 1, "expected 0 on a scatterlist"),
    ([mp(0, 0), dict(um(1, 0), flags=FROM | MORE), mp(1, 0)], 1,
     "expected bit 9 (scatterlist continues) only on DMA-API maps"),
    ([dict(mp(0, 0), flags=FROM | MORE), dict(mp(1, 0))], 0, "followed in the same record batch"),
    ([dict(mp(0, 0, size=1 << 57), flags=FROM | MORE), mp(0, 0, size=1 << 57)], 1,
     "expected a scatterlist of at most 2^57 bytes in all"),
])
def test_broken_lists_are_errors(trace_file, rows, row, message):
    with pytest.raises(TraceError, match=rf"row {row}: .*{re.escape(message)}"):
        simulate(trace_file(rows), "strict")


def test_writer_refuses_a_trace_ending_inside_a_list(tmp_path):
    with pytest.raises(ValueError, match="ends inside a scatterlist"):
        write_trace(tmp_path / "t.arrow", [dict(mp(0, 0), flags=FROM | MORE)])
    assert not list(tmp_path.iterdir())
