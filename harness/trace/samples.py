"""The committed sample traces in traces/samples/: one per synthetic kind and
the converted ftrace and QEMU samples. `make samples` rebuilds them; a test
checks the committed files equal a rebuild.

    python -m harness.trace.samples DIR
"""

import sys
from pathlib import Path

# (output file, iommu-harness arguments); {dir} is the samples directory
SAMPLES = [
    ("nic-rx.arrow", "trace synth nic-rx --packets 3000 --queues 2 --ring 256 --late-dma 0.01"),
    ("nic-rx-page-pool.arrow", "trace synth nic-rx --packets 3000 --queues 2 --ring 256 --page-pool"),
    ("nic-tx.arrow", "trace synth nic-tx --packets 1500 --queues 2 --ring 256 --packet-size 9000"),
    ("nvme.arrow", "trace synth nvme --ios 400 --sizes 4K:60,16K:25,128K:15"),
    ("gpu.arrow", "trace synth gpu --buffers 2 --buffer-size 16M --accesses 6000 --pattern strided"),
    ("vfio-guest.arrow", "trace synth vfio-guest --guest-ram 256M --ram-below-4g 128M --accesses 6000 "
                         "--balloon 0.1 --balloon-events 4 --balloon-ns 100000"),
    ("dma-map-benchmark.arrow", "trace synth dma-map-benchmark --threads 2 --loops 3000"),
    ("random.arrow", "trace synth random --footprint 8M --accesses 8000"),
    ("ftrace-report.arrow", "trace import ftrace {dir}/ftrace-report.txt"),
    ("ftrace-raw-iommu.arrow", "trace import ftrace {dir}/ftrace-raw-iommu.txt --access none"),
    ("qemu-vtd.arrow", "trace import qemu {dir}/qemu-vtd.log"),
    ("qemu-smmu.arrow", "trace import qemu {dir}/qemu-smmu.log"),
]


def build(samples_dir, out_dir):
    from typer.testing import CliRunner

    from harness.cli import app
    runner = CliRunner()
    for name, args in SAMPLES:
        argv = args.format(dir=samples_dir).split() + ["-o", str(Path(out_dir) / name)]
        r = runner.invoke(app, argv)
        if r.exit_code:
            raise SystemExit(f"{name}: {' '.join(argv)} failed:\n{r.output}")


if __name__ == "__main__":
    d = Path(sys.argv[1] if len(sys.argv) > 1 else "traces/samples")
    build(d, d)
