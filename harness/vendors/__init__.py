"""Vendor hardware families: each turns a model spec into kernel parameters
and encodes invalidations as that hardware's commands.

A family module provides PARAMS (the keys its specs must set),
hardware_params(spec, P, kernel) -> last translatable IOVA, effective_flush(
spec, requested, kernel) -> (mode, why), gfp_ignored(kernel), cost_params(spec)
and optionally counter_view(metrics). Third-party families register a module
under the entry-point group `iommu_harness.vendors` (name = family); their
hardware_params choose one of the compiled command sets (layout.FAMILY_*).
"""

from importlib.metadata import entry_points

from harness.vendors import amdvi, none, s390, smmuv3, vtd

BUILTIN = {"vtd": vtd, "amdvi": amdvi, "smmuv3": smmuv3, "s390": s390, "none": none}


def _families():
    found = dict(BUILTIN)
    for ep in entry_points(group="iommu_harness.vendors"):
        found.setdefault(ep.name, ep)
    return found


class _Families(dict):
    """Family name -> module; plugins load on first use."""

    def __getitem__(self, name):
        v = super().__getitem__(name)
        if not hasattr(v, "hardware_params"):
            v = v.load()
            self[name] = v
        return v


FAMILIES = _Families(_families())


def counter_view(spec, values):
    """(tool, {event: count}): the run as the family's hardware counters name
    it, or None when the family has no such view."""
    fam = FAMILIES[spec.family]
    view = getattr(fam, "counter_view", None)
    return view(values, spec.params) if view else None
