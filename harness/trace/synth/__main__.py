"""Print traces/README.md's section on the synthetic workloads."""

from harness.trace.synth import markdown

print(markdown())
