"""iommu-harness: trace-driven IOMMU performance harness."""

__version__ = "0.1.0"
