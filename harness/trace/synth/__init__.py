"""Synthetic workloads: vectorised numpy, seeded, streamed to disk in batches.

Each kind registers its parameters (harness.trace.synth.common.workload); the
CLI and sweep specs read the registry.
"""

from harness.trace.synth.common import KINDS, generate  # noqa: F401
from harness.trace.synth.nic import nic_rx, nic_tx  # noqa: F401
from harness.trace.synth.nvme import nvme  # noqa: F401
from harness.trace.synth.devices import dma_map_benchmark, gpu, random_access, vfio_guest  # noqa: F401


def markdown():
    """traces/README.md's section on each kind: its description and parameters."""
    import inspect
    out = []
    for w in KINDS.values():
        doc = inspect.cleandoc(w.fn.__doc__ or "").split("\n\n", 1)
        out += [f"### {w.kind}", "", doc[0], ""]
        if len(doc) > 1:
            out += [" ".join(doc[1].split()), ""]
        out += ["| option | default | meaning |", "|---|---|---|"]
        out += [f"| `--{p.name.replace('_', '-')}` | `{p.default}` | {p.help.replace('|', chr(92) + '|')} |" for p in w.params]
        out += ["| `--seed` | `1` | Random seed. |", ""]
    return "\n".join(out)
