"""ftrace and QEMU importers: round trips on the committed samples, every
bad-input case, and fuzzing: any input gives a valid trace or a clear
HarnessError, never a traceback, and never a partial output file."""

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from harness import models
from harness.cli import app
from harness.errors import HarnessError
from harness.trace.importers import ftrace, qemu
from harness.trace.info import summarize
from harness.trace.reader import TraceReader

from helpers import simulate

SAMPLES = Path(__file__).parent.parent / "traces" / "samples"
REPORT, RAW = SAMPLES / "ftrace-report.txt", SAMPLES / "ftrace-raw-iommu.txt"
runner = CliRunner()


def _lines(path, *events):
    return sum(1 for line in path.read_text().splitlines()
               if re.search(r"\s(%s):\s" % "|".join(events), line))


@pytest.mark.parametrize("model", sorted(models.available()))
def test_ftrace_sample_counts_match_its_lines(tmp_path, model):
    out = tmp_path / "t.arrow"
    rep = ftrace.convert(str(REPORT), str(out), access="page")
    assert rep["problems"] == {} and rep["live_at_end"] == 0
    maps = _lines(REPORT, "dma_map_page", "dma_map_sg", "dma_alloc")
    unmaps = _lines(REPORT, "dma_unmap_page", "dma_unmap_sg", "dma_free")
    faults = _lines(REPORT, "io_page_fault")
    sg = re.search(r"dma_addrs=\{([^}]*)\}", REPORT.read_text())[1].count(",") + 1
    for flush in ("strict", "lazy"):
        r = simulate(out, flush, model=model)
        assert (r["maps"], r["unmaps"], r["sg_segments"]) == (maps, unmaps, sg)
        if model != "none" and flush == "strict":
            assert r["faults"] == faults  # the faulting address was unmapped
            assert r["late_accesses"] == 0


def test_raw_iommu_sample_old_and_new_formats(tmp_path):
    out = tmp_path / "t.arrow"
    rep = ftrace.convert(str(RAW), str(out), access="page")
    assert rep["converted"] == {"iommu map": 3, "iommu unmap": 3, "io_page_fault": 1}
    s = summarize(out)
    # one unmap line covers the two 2 MiB maps: every map is unmapped
    assert s["ops"] == {"map": 3, "unmap": 3, "access": 2 * 512 + 1 + 1}
    r = simulate(out, "strict")
    assert (r["maps"], r["unmaps"], r["faults"], r["pt_pages_alloc"] > 0) == (3, 3, 1, True)


@pytest.mark.parametrize("mode, repeat, expected", [("none", 1, 0), ("page", 1, 4), ("line", 1, 64), ("page", 3, 12)])
def test_access_synthesis_modes(tmp_path, mode, repeat, expected):
    src = tmp_path / "t.txt"
    src.write_text("  a-1 [000] 1.000000: dma_map_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=10000 "
                   "size=16384 phys_addr=40000 attrs=\n" if mode != "line" else
                   "  a-1 [000] 1.000000: dma_map_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=10000 "
                   "size=4096 phys_addr=40000 attrs=\n")
    ftrace.convert(str(src), str(tmp_path / "t.arrow"), access=mode, repeat=repeat)
    with TraceReader(tmp_path / "t.arrow") as r:
        assert r.provenance["access_synthesis"] == {"mode": mode, "repeat": repeat}
    assert summarize(tmp_path / "t.arrow")["ops"]["access"] == expected


def test_dma_iommu_maps_are_not_counted_twice(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text(
        "  a-1 [000] 1.000000: map: IOMMU: iova=0x0000000000010000 - 0x0000000000011000 paddr=0x0000000000040000 size=4096\n"
        "  a-1 [000] 1.000001: dma_map_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=10000 size=4096 phys_addr=40000 attrs=\n")
    rep = ftrace.convert(str(src), str(tmp_path / "a.arrow"))
    assert rep["converted"] == {"dma_map_page": 1} and sum(rep["ignored"].values()) == 1
    rep = ftrace.convert(str(src), str(tmp_path / "b.arrow"), api="both")
    assert rep["converted"] == {"dma_map_page": 1, "iommu map": 1}


def test_latency_flags_give_the_context(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("  a-1 [000] d.s1.  1.000000: dma_map_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=10000 size=4096 phys_addr=40000 attrs=\n"
                   "  a-1 [000] .....  1.000001: dma_map_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=20000 size=4096 phys_addr=50000 attrs=\n")
    ftrace.convert(str(src), str(tmp_path / "t.arrow"), access="none")
    with TraceReader(tmp_path / "t.arrow") as r:
        (_, c), = r.batches()
        assert (c["flags"] & 4).tolist() == [4, 0]


def test_qemu_samples_keep_observed_outcomes(tmp_path):
    for log, hits, misses in (("qemu-vtd.log", "page_hit", "page_update"), ("qemu-smmu.log", "lookup_hit", "lookup_miss")):
        src = SAMPLES / log
        out = tmp_path / (log + ".arrow")
        rep = qemu.convert(str(src), str(out))
        assert rep["problems"] == {}
        s = summarize(out)
        text = src.read_text()
        assert s["observed"] == {"hits": text.count(hits), "misses": text.count(misses)}
        r = simulate(out, "strict", model="intel-vtd-viommu" if "vtd" in log else "arm-smmuv3")
        assert r["faults"] == 0 and r["accesses"] == s["ops"]["access"]


BAD = [
    ("garbage\n", "malformed line", 1),
    ("  a-1 [000] 1.000000: dma_unmap_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=1000 size=4096 attrs=\n",
     "with no earlier map", 1),
    ("  a-1 [000] 1.000000: dma_map_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=1000 size=4096 phys_addr=1000 attrs=\n"
     "  a-1 [000] 1.000001: dma_map_pa", "truncated last line", 2),
    ("  a-1 [000] 1.000000: sched_switch: prev_comm=a\n", "unknown event sched_switch", 1),
    ("  a-1 [000] 1.000000: dma_map_page: 0000:03:00.0 dir=SIDEWAYS dma_addr=1000 size=4096 phys_addr=1000 attrs=\n",
     "malformed dma_map_page event", 1),
]


@pytest.mark.parametrize("text, problem, line", BAD)
def test_ftrace_bad_lines_are_reported_or_fatal_with_strict(tmp_path, text, problem, line):
    src, out = tmp_path / "t.txt", tmp_path / "t.arrow"
    src.write_text(text)
    r = runner.invoke(app, ["trace", "import", "ftrace", str(src), "-o", str(out), "--strict"])
    assert r.exit_code == 2 and f"line {line}: " in r.output and problem in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]  # nothing half-written
    r = runner.invoke(app, ["trace", "import", "ftrace", str(src), "-o", str(out)])
    if r.exit_code == 0:  # something converted: the problem is listed with its line
        assert problem in r.output and f"lines {line}" in r.output
    else:
        assert r.exit_code == 2 and "no iommu or dma events" in r.output
        assert not out.exists()


@pytest.mark.parametrize("cmd", ["ftrace", "qemu"])
def test_empty_and_missing_files(tmp_path, cmd):
    (tmp_path / "e.txt").write_text("")
    for src, what in ((tmp_path / "e.txt", "empty file"), (tmp_path / "nope.txt", "cannot read")):
        r = runner.invoke(app, ["trace", "import", cmd, str(src), "-o", str(tmp_path / "o.arrow")])
        assert r.exit_code == 2 and what in r.output and str(src) in r.output
    assert not (tmp_path / "o.arrow").exists()


def _outcome(convert, data, tmp):
    src, out = tmp / "in.txt", tmp / "out.arrow"
    src.write_bytes(data)
    for p in tmp.glob("out.arrow*"):
        p.unlink()
    try:
        convert(str(src), str(out))
    except HarnessError:
        assert not list(tmp.glob("out.arrow*"))
        return "error"
    simulate(out, "lazy")  # a written trace is valid: it runs
    return "ok"


def _mutate(text, data):
    lines = text.splitlines(keepends=True)
    i = data.draw(st.integers(0, len(lines) - 1))
    how = data.draw(st.sampled_from(["drop", "dup", "swap", "cut", "field", "junk"]))
    line = lines[i]
    if how == "drop":
        del lines[i]
    elif how == "dup":
        lines.insert(i, line)
    elif how == "swap" and i:
        lines[i - 1], lines[i] = lines[i], lines[i - 1]
    elif how == "cut":
        return "".join(lines[:i]) + line[:data.draw(st.integers(0, len(line)))]
    elif how == "field":
        tokens = line.split(" ")
        j = data.draw(st.integers(0, len(tokens) - 1))
        tokens[j] = data.draw(st.sampled_from(["", "0x", "-1", "zz", "{0x1,}", "size=0", "=", "9" * 30]))
        lines[i] = " ".join(tokens)
    else:
        lines[i] = data.draw(st.text(max_size=80)) + "\n"
    return "".join(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), which=st.sampled_from([REPORT, RAW, SAMPLES / "qemu-vtd.log", SAMPLES / "qemu-smmu.log"]))
def test_fuzz_mutated_samples(tmp_path, data, which):
    convert = qemu.convert if which.suffix == ".log" else ftrace.convert
    _outcome(convert, _mutate(which.read_text(), data).encode(), tmp_path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), cmd=st.sampled_from([ftrace.convert, qemu.convert]))
def test_fuzz_random_bytes(tmp_path, data, cmd):
    _outcome(cmd, data, tmp_path)


ARROW_SAMPLE = SAMPLES / "ftrace-report.arrow"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_trace_reader(tmp_path, data):
    """Truncated, bit-flipped or random files: a valid trace or a TraceError."""
    raw = bytearray(ARROW_SAMPLE.read_bytes())
    how = data.draw(st.sampled_from(["truncate", "flip", "random"]))
    if how == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
    else:
        raw = bytearray(data.draw(st.binary(max_size=2000)))
    p = tmp_path / "t.arrow"
    p.write_bytes(bytes(raw))
    try:
        simulate(p, "lazy")
        summarize(p)
    except HarnessError:
        pass


@pytest.mark.parametrize("key, message", [
    (b"iommu_harness.format", r"is \xe9ommu-harness-trace, expected iommu-harness-trace"),
    (b"iommu_harness.version", r"trace format version \xb1, expected 1"),
    (b"iommu_harness.num_cpus", "num_cpus missing or not an integer"),
    (b"iommu_harness.provenance", "provenance is not JSON"),
])
def test_metadata_that_is_not_utf8_is_a_trace_error(tmp_path, key, message):
    """A flipped top bit makes a metadata value invalid UTF-8 (found by the fuzz test)."""
    import pyarrow as pa
    with pa.memory_map(str(ARROW_SAMPLE)) as f:
        table = pa.ipc.open_file(f).read_all()
    meta = dict(table.schema.metadata)
    meta[key] = bytes([meta[key][0] ^ 0x80]) + meta[key][1:]
    p = tmp_path / "t.arrow"
    with pa.OSFile(str(p), "wb") as f, pa.ipc.new_file(f, table.schema.with_metadata(meta)) as w:
        w.write_table(table)
    with pytest.raises(HarnessError, match=re.escape(message)):
        TraceReader(p)


@pytest.mark.parametrize("cmd, line", [
    (ftrace.convert, "  a-1 [000] 1.000000: dma_map_page: 0000:03:00.0 dir=TO_DEVICE "
                     "dma_addr=1000000000000000000000 size=4096 phys_addr=1000 attrs="),
    (ftrace.convert, "  a-1 [000] 1.000000: dma_map_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=1000 "
                     "size=99999999999999999999999 phys_addr=1000 attrs="),
    (ftrace.convert, "  a-1 [000] 99999999999999999.000000: dma_map_page: 0000:03:00.0 dir=TO_DEVICE "
                     "dma_addr=1000 size=4096 phys_addr=1000 attrs="),
    (qemu.convert, "vtd_iotlb_page_update IOTLB page update sid 0x1ffffffff iova 0x1000 slpte 0x3 domain 0x1"),
    (qemu.convert, "vtd_iotlb_page_hit IOTLB page hit sid 0x1 iova 0xfffffffffffffffffff slpte 0x3 domain 0x1"),
])
def test_values_beyond_the_trace_limits_are_malformed_lines(tmp_path, cmd, line):
    src = tmp_path / "t.txt"
    src.write_text(line + "\n")
    with pytest.raises(HarnessError, match=r"line.? 1"):
        cmd(str(src), str(tmp_path / "t.arrow"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_cpu_beyond_uint16_and_huge_cpu_headers(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("cpus=100000000\n"
                   "  a-1 [000] 1.000000: dma_map_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=1000 size=4096 phys_addr=1000 attrs=\n"
                   "  a-1 [65537] 1.000001: dma_unmap_page: 0000:03:00.0 dir=TO_DEVICE dma_addr=1000 size=4096 attrs=\n")
    rep = ftrace.convert(str(src), str(tmp_path / "t.arrow"), access="none")
    assert set(rep["problems"]) == {"malformed line"} and rep["problems"]["malformed line"]["lines"] == [1, 3]
    with TraceReader(tmp_path / "t.arrow") as r:
        assert r.num_cpus == 1


def test_qemu_bad_timestamp_does_not_poison_later_lines(tmp_path):
    src = tmp_path / "t.log"
    src.write_text("1@99999999999.000001:vtd_iotlb_page_hit IOTLB page hit sid 0x1 iova 0x1000 slpte 0x3 domain 0x1\n"
                   "1@1.000001:vtd_iotlb_page_hit IOTLB page hit sid 0x1 iova 0x1000 slpte 0x3 domain 0x1\n"
                   "2024-13-45T00:00:00.000001Z vtd_iotlb_page_hit IOTLB page hit sid 0x1 iova 0x1000 slpte 0x3 domain 0x1\n"
                   "1@1.000002:vtd_iotlb_page_hit IOTLB page hit sid 0x1 iova 0x1000 slpte 0x3 domain 0x1\n")
    rep = qemu.convert(str(src), str(tmp_path / "t.arrow"))
    assert rep["converted"] == {"vtd_iotlb_page_hit": 2}
    assert sorted(n for p in rep["problems"].values() for n in p["lines"]) == [1, 3]
    assert summarize(tmp_path / "t.arrow")["time_span_ns"] == 1000
