"""Vendor hardware families: each turns a model spec into kernel parameters and
encodes range/domain invalidations as that hardware's commands."""

from harness.vendors import vtd

FAMILIES = {"vtd": vtd}
