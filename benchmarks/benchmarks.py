"""asv benchmarks: the simulator's speed per vendor family and flush mode,
trace generation, a small sweep and its summary, peak memory over a long
trace, and model outputs on fixed reference traces (track_*, lower is
better: miss rate, commands, ns, bytes, stale hits).

Reference traces are generated once per asv run (setup_cache) from fixed
seeds, so every commit is measured on the same inputs.
"""

import os
import tempfile
from pathlib import Path

from harness import models
from harness.core.simulator import Simulator
from harness.trace import synth
from harness.trace.reader import TraceReader

FAMILIES = ["intel-vtd-legacy", "amd-vi-v1", "arm-smmuv3", "s390", "none"]
MODES = ["strict", "lazy"]


def _simulate(path, model, flush, gfp="atomic", overrides=()):
    spec = models.resolve(model).with_overrides(list(overrides))
    with TraceReader(path) as r:
        return Simulator(spec, flush, gfp, r.num_cpus).run(r)


def _traces():
    d = Path(tempfile.mkdtemp(prefix="iommu-harness-asv-"))
    synth.nic_rx(d / "nic.arrow", packets=200_000, queues=4, ring=512, rate=2e6, late_dma=0.001, seed=1)
    synth.generate("random", d / "random.arrow", footprint="32M", accesses=600_000, seed=1)
    synth.generate("nvme", d / "nvme.arrow", ios=4000, seed=1)
    return str(d)


class Simulate:
    """Simulation of a 600k-event nic-rx trace per family and flush mode."""
    params = (FAMILIES, MODES)
    param_names = ["model", "flush"]
    timeout = 300

    def setup_cache(self):
        d = _traces()
        _simulate(Path(d) / "nic.arrow", "intel-vtd-legacy", "strict")  # compile (cached) kernels
        return d

    def time_nic_rx(self, d, model, flush):
        _simulate(Path(d) / "nic.arrow", model, flush)

    def time_access_only(self, d, model, flush):
        _simulate(Path(d) / "random.arrow", model, flush)


class Generate:
    timeout = 120

    def setup(self):
        self.dir = tempfile.mkdtemp(prefix="iommu-harness-asv-gen-")

    def teardown(self):
        for f in Path(self.dir).iterdir():
            f.unlink()
        os.rmdir(self.dir)

    def time_synth_nic_rx(self):
        synth.nic_rx(Path(self.dir) / "t.arrow", packets=1_000_000, queues=8, ring=1024, rate=8e6)

    def time_synth_nvme(self):
        synth.generate("nvme", Path(self.dir) / "t.arrow", ios=20_000)


class Sweep:
    """A small sweep (2 models x 2 flush x 2 gfp x 2 IOTLB sizes on two traces)
    in-process, and the polars summary of its results."""
    timeout = 300

    def setup_cache(self):
        d = Path(_traces())
        (d / "s.toml").write_text(
            'models = ["intel-vtd-legacy", "arm-smmuv3"]\nflush = ["strict", "lazy"]\n'
            'gfp = ["atomic", "kernel-account"]\n[grid]\n"iotlb.entries" = [64, 512]\n'
            '[[traces]]\nfile = "nic.arrow"\n[[traces]]\nfile = "nvme.arrow"\n')
        self._run(d, "done")
        return str(d)

    @staticmethod
    def _run(d, name):
        import shutil
        from harness.sweep import runner, spec as sweep_spec
        out = Path(d) / name
        shutil.rmtree(out, ignore_errors=True)
        runner.run(sweep_spec.load(Path(d) / "s.toml"), out, jobs=1)

    def time_sweep(self, d):
        self._run(d, "timed")

    def time_summary(self, d):
        from harness.analysis.summary import pivot
        pivot(Path(d) / "done")


class LongTrace:
    """Peak memory of a run over a 6M-event trace: bounded by the model state."""
    timeout = 600

    def setup_cache(self):
        d = Path(tempfile.mkdtemp(prefix="iommu-harness-asv-long-"))
        synth.nic_rx(d / "long.arrow", packets=2_000_000, queues=8, ring=1024, rate=8e6, seed=1)
        return str(d)

    def peakmem_lazy_nic_rx(self, d):
        _simulate(Path(d) / "long.arrow", "intel-vtd-legacy", "lazy")


class Outputs:
    """Model outputs on the reference traces; a change here is a change of
    modelled behaviour, intended or not."""
    params = (["intel-vtd-legacy", "amd-vi-v1", "arm-smmuv3", "s390"], MODES)
    param_names = ["model", "flush"]
    timeout = 300

    def setup_cache(self):
        d = _traces()
        out = {}
        for model in self.params[0]:
            for flush in MODES:
                out[model, flush] = {
                    "nic": _simulate(Path(d) / "nic.arrow", model, flush, "kernel-account"),
                    "random": _simulate(Path(d) / "random.arrow", model, flush)}
        return out

    def track_iotlb_miss_rate(self, out, model, flush):
        return out[model, flush]["random"]["iotlb_miss_rate"]
    track_iotlb_miss_rate.unit = "ratio"

    def track_inv_cmds_per_mib(self, out, model, flush):
        return out[model, flush]["nic"]["inv_cmds_per_mib"]
    track_inv_cmds_per_mib.unit = "commands/MiB"

    def track_inv_cost_ns_per_mib(self, out, model, flush):
        return out[model, flush]["nic"]["inv_cost_ns_per_mib"]
    track_inv_cost_ns_per_mib.unit = "ns/MiB"

    def track_pt_bytes_peak(self, out, model, flush):
        return out[model, flush]["nic"]["pt_bytes_peak"]
    track_pt_bytes_peak.unit = "bytes"

    def track_stale_hits(self, out, model, flush):
        return out[model, flush]["nic"]["stale_hits"]
    track_stale_hits.unit = "translations"


class Startup:
    """`iommu-harness run` of a committed sample trace, compiled kernels cached:
    the time a user waits for a small run (issue bar: under 3 s)."""
    timeout = 600

    def setup_cache(self):
        self.time_cli_run_small()  # fill the kernel cache

    def time_cli_run_small(self, *_):
        import subprocess
        import sys
        sample = Path(__file__).parent.parent / "traces" / "samples" / "nic-rx.arrow"
        subprocess.run([sys.executable, "-m", "harness.cli", "run", str(sample), "-q"], check=True)
