import json

import polars as pl
import pytest
from typer.testing import CliRunner

from harness import metrics
from harness.cli import app

from conftest import mp, um, write_trace

runner = CliRunner()


@pytest.fixture(scope="module")
def nic(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "nic.arrow"
    r = runner.invoke(app, ["trace", "synth", "nic-rx", "-o", str(p), "--packets", "5000",
                            "--queues", "2", "--ring", "64", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "wrote 15,128 events" in r.output
    return p


def test_paths_print_unbroken_and_as_they_are(tmp_path):
    p = tmp_path / ("d" * 90) / "[nic].arrow"  # wider than the console; brackets are not markup
    p.parent.mkdir()
    r = runner.invoke(app, ["trace", "synth", "nic-rx", "-o", str(p), "--packets", "100", "--queues", "1",
                            "--ring", "16"])
    assert r.exit_code == 0, r.output
    assert f"events to {p}\n" in r.output


def test_synth_is_deterministic(nic, tmp_path):
    again = tmp_path / "again.arrow"
    r = runner.invoke(app, ["trace", "synth", "nic-rx", "-o", str(again), "--packets", "5000",
                            "--queues", "2", "--ring", "64", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert again.read_bytes() == nic.read_bytes()


def test_trace_info(nic):
    r = runner.invoke(app, ["trace", "info", str(nic), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["rows"] == 15128
    assert s["ops"] == {"map": 5128, "unmap": 5000, "access": 5000}
    assert s["devices"] == ["0000:03:00.0"]
    assert s["peak_mapped_bytes"] == 128 * 2048
    assert s["provenance"]["generator"] == "nic-rx" and s["provenance"]["seed"] == 3


def test_run_prints_table_and_writes_one_row_parquet(nic, tmp_path):
    out = tmp_path / "res"
    r = runner.invoke(app, ["run", str(nic), "--flush", "lazy", "--gfp", "kernel-account",
                            "--set", "iotlb.entries=128", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "iotlb_miss_rate" in r.output
    files = list(out.iterdir())
    assert len(files) == 1 and files[0].suffix == ".parquet"
    df = pl.read_parquet(files[0])
    assert df.height == 1
    row = df.row(0, named=True)
    assert (row["model"], row["family"], row["flush"], row["gfp"]) == ("intel-vtd-legacy", "vtd", "lazy", "kernel-account")
    assert json.loads(row["overrides"]) == {"iotlb.entries": "128"}
    assert len(row["trace_sha256"]) == 64
    assert set(m.name for m in metrics.ALL) <= set(df.columns)
    assert row["unmaps"] == 5000 and row["fq_queued"] == 5000


@pytest.mark.parametrize("args, message", [
    (["run", "{bad}"], "not an Arrow IPC file"),
    (["run", "{nic}", "--model", "nope"], "unknown model 'nope'"),
    (["run", "{nic}", "--set", "iotlb.bogus=1"], "--set iotlb.bogus: unknown parameter"),
    (["run", "{nic}", "--set", "iotlb.ways=two"], "expected int"),
    (["run", "{nic}", "--set", "iotlb.entries=48"], "expected a power of two"),
    (["run", "{nic}", "--flush", "sometimes"], "--flush sometimes: expected one of strict, lazy"),
    (["trace", "info", "{missing}"], "cannot open"),
    (["trace", "synth", "nic-rx", "-o", "{out}", "--packet-size", "4000"], "expected 1..mtu + 14"),
])
def test_bad_input_is_one_line_and_exit_2(nic, tmp_path, args, message):
    bad = tmp_path / "bad.arrow"
    bad.write_text("not arrow")
    paths = dict(nic=nic, bad=bad, missing=tmp_path / "missing.arrow", out=tmp_path / "o.arrow")
    r = runner.invoke(app, [a.format(**paths) for a in args])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.output
    assert not (tmp_path / "o.arrow").exists()


@pytest.mark.parametrize("events, message", [
    ([um(0, 4)], "row 0: unmap of handle 4, which has no live mapping"),
    ([mp(0, 1, size=0)], "row 0: column 'size' is 0, expected > 0"),
])
def test_bad_events_exit_2_with_one_line(tmp_path, events, message):
    p = write_trace(tmp_path / "t.arrow", events)
    r = runner.invoke(app, ["run", str(p), "--out", str(tmp_path / "res")])
    assert r.exit_code == 2
    assert r.output.strip() == f"error: {p}: {message}"
    assert not (tmp_path / "res").exists()


def test_models_list_and_show():
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "intel-vtd-legacy" in r.output
    r = runner.invoke(app, ["models", "show", "intel-vtd-legacy"])
    assert r.exit_code == 0 and "inv.mamv" in r.output and "VTD_MAMV" in r.output


def test_results_readme_documents_every_metric():
    from pathlib import Path
    doc = (Path(__file__).parent.parent / "results" / "README.md").read_text()
    for m in metrics.ALL:
        assert f"| `{m.name}` | {m.unit} |" in doc, m.name
