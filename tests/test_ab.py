"""benchmarks.ab: interleaved A/B timing of two revisions."""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import ab
from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "traces" / "samples" / "nic-rx.arrow"


def _ab(*args):
    return subprocess.run([sys.executable, "-m", "benchmarks.ab", *args], cwd=ROOT,
                          capture_output=True, text=True)


def test_a_checkout_against_itself():
    """Both sides run the sample in child processes, alternating; the row
    reports both rates and equal counters."""
    out = _ab(".", ".", "--trace", str(SAMPLE), "--flush", "strict", "--flush", "lazy",
              "--rounds", "2", "--repeat", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("round 2/2 nic-rx.arrow") == 4
    rows = [line for line in out.stdout.splitlines() if line.startswith("nic-rx.arrow")]
    assert [r.split()[2] for r in rows] == ["strict", "lazy"]
    assert all("equal," in r for r in rows)


def test_bad_revision_and_trace_are_one_line_errors():
    out = _ab("no-such-revision", ".")
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: ab: 'no-such-revision' is neither a checkout directory nor a "
                                  "git revision")
    out = _ab(".", ".", "--trace", "missing.arrow")
    assert out.returncode == 2 and "--trace 'missing.arrow'" in out.stderr and len(out.stderr.splitlines()) == 1


def test_a_revision_gets_a_detached_worktree(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode:
        pytest.skip("not a git checkout")
    path = ab.tree("HEAD", tmp_path)
    try:
        assert path == (tmp_path / head.stdout.strip()[:12]).resolve()
        assert (path / "harness" / "core" / "kernel.py").is_file()
        assert ab.tree("HEAD", tmp_path) == path  # reused, not added twice
        got = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True)
        assert got.stdout == head.stdout
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=True)
    with pytest.raises(HarnessError):
        ab.tree("no-such-revision", tmp_path)


def test_table_verdicts():
    """A ratio range across 1 is noise; one side of it names the faster
    side; a digest that differs says DIFFERENT."""
    def runs(a, b, digest_b="x"):
        return [(100, 100 / r, "x") for r in a], [(100, 100 / r, digest_b) for r in b]

    cases = {}
    for name, (a, b, d) in {"noise": ([10, 11], [10.5, 10.4], "x"), "faster": ([10, 10], [12, 11], "x"),
                            "slower": ([10, 10], [9, 9.5], "y")}.items():
        ra, rb = runs(a, b, d)
        cases[(Path(name), "m", "strict")] = {"A": ra, "B": rb}
    lines = ab.table(cases)
    assert lines[1].endswith("equal, within noise")
    assert lines[2].endswith("equal, B faster") and " 1.200 " in lines[2]
    assert lines[3].endswith("DIFFERENT, B slower")
