"""Synthetic workloads: vectorised numpy, seeded, streamed to disk in batches.

Each kind registers its parameters (harness.trace.synth.common.workload); the
CLI and sweep specs read the registry.
"""

from harness.trace.synth.common import KINDS, generate  # noqa: F401
from harness.trace.synth.nic import nic_rx, nic_tx  # noqa: F401
from harness.trace.synth.nvme import nvme  # noqa: F401
from harness.trace.synth.devices import dma_map_benchmark, gpu, random_access, vfio_guest  # noqa: F401
