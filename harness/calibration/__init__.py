"""Calibration: a throughput model over run counters and the published
results it reproduces (`iommu-harness reproduce`)."""
