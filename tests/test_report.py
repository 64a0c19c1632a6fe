"""The HTML report, rendered in headless Chromium (Debian's chromium package,
installed here when missing): the screenshot is not blank and every figure
is in the rendered page."""

import re
import shutil
import subprocess

import matplotlib.image
import pytest

from harness.analysis.report import FIGURES, write
from harness.sweep import runner, spec as sweep_spec

from conftest import mp, um, write_trace

# one test process installs and runs chromium
pytestmark = pytest.mark.xdist_group("chromium")

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


@pytest.fixture(scope="session")
def chromium():
    if not shutil.which(CHROMIUM):
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
        if subprocess.run(install, capture_output=True).returncode:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=True)
            subprocess.run(install, capture_output=True, check=True)
    return CHROMIUM


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("rep")
    write_trace(d / "bad.arrow", [mp(0, 0), um(1, 5)])
    (d / "s.toml").write_text("""
models = ["intel-vtd-legacy", "arm-smmuv3", "none"]
flush = ["strict", "lazy"]
gfp = ["atomic", "kernel-account"]
[grid]
"iotlb.entries" = [16, 64, 256]
[[traces]]
synth = "nic-rx"
packets = 4000
queues = 2
ring = 64
late_dma = 0.05
[[traces]]
synth = "random"
footprint = "4M"
accesses = 20000
[[traces]]
file = "bad.arrow"
""")
    runner.run(sweep_spec.load(d / "s.toml"), d / "res", jobs=1)
    return write(d / "res", d / "report.html"), d


def test_report_is_self_contained(report):
    path, _ = report
    text = path.read_text()
    for name in FIGURES:
        assert f'<figure id="{name}"><svg' in text
    assert not re.findall(r"(?:src|href)=\"(?!#)", text)  # nothing to fetch: no external references
    assert "<h2>Failed runs</h2>" in text and "unmap of handle 5" in text
    assert "iotlb_miss_rate (ratio)" in text


def test_report_renders_in_headless_chromium(report, chromium):
    path, d = report
    profile = d / "profile"
    png = d / "shot.png"
    subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--window-size=1400,2600",
                    f"--screenshot={png}", path.as_uri()], capture_output=True, timeout=120, check=True)
    img = matplotlib.image.imread(png)[..., :3]
    ink = (img.mean(axis=2) < 0.9).mean()  # fraction of pixels that are not (near) white
    assert img.std() > 0.05 and 0.02 < ink < 0.9
    dom = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    for name in FIGURES:
        start = dom.index(f'<figure id="{name}">')
        assert "<svg" in dom[start:start + 200] and "<path" in dom[start:dom.index("</figure>", start)]


def test_report_is_deterministic(report, tmp_path):
    path, d = report
    assert write(d / "res", tmp_path / "again.html").read_text() == path.read_text()
