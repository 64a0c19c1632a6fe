"""Model specs: one TOML file per hardware model, plus the domain-core defaults.

A spec names its vendor family and sets that family's parameters; every
default carries its source in the file's [sources] table. `--set key=value`
overrides are checked against the resolved spec: the key must exist and the
value must have the default's type.
"""

import importlib.util
import os
import tomllib
from pathlib import Path

from harness.errors import HarnessError
from harness.vendors import FAMILIES

def _builtin_dir():
    """models/ of the checkout, or harness/builtin_models/ of an installed wheel
    (pyproject.toml maps the one onto the other)."""
    try:
        spec = importlib.util.find_spec("harness.builtin_models")
    except ModuleNotFoundError:
        spec = None
    if spec and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parent.parent / "models"


BUILTIN_DIR = _builtin_dir()

# Domain-core parameters (the Linux IOMMU layer), shared by every model.
CORE_DEFAULTS = {
    "kernel": "6.12",
    "fq.size": 256,
    "fq.timeout_ms": 10.0,
    "fq.single_size": 32768,
    "fq.single_timeout_ms": 1000.0,
    "memcg.limit_bytes": 0,
    "iommufd.hw_domains": 1,
    "mem.free_bytes": 0,
    "mem.min_watermark_bytes": 64 << 20,
    "mem.jitter_bytes": 0,
    "mem.seed": 1,
    "cache.seed": 1,
    "iova.reserved": [],
    "iova.direct": [],
    "iova.mag_size": 127,
    "iova.depot_delay_ms": 100.0,
    "iova.pci_32bit_first": True,
    "iova.dma_mask_bits": 64,
    # CPU cost of the DMA API's software paths and device-side walk latency:
    # the throughput model's prices (harness/calibration/throughput.py).
    "cpu.map_ns": 100.0,
    "cpu.unmap_ns": 100.0,
    "cpu.page_ns": 1.8,
    "cpu.iova_rcache_ns": 25.0,
    "cpu.iova_tree_ns": 250.0,
    "cpu.iova_step_ns": 15.0,
    "cpu.pt_alloc_ns": 500.0,
    "cpu.fq_ns": 40.0,
    "walk.miss_ns": 130.0,
    "walk.read_ns": 150.0,
}
CORE_SOURCES = {
    "kernel": "Linux release the model follows; version quirks switch on it",
    "fq.single_size": "drivers/iommu/dma-iommu.c IOVA_SINGLE_FQ_SIZE (v6.7)",
    "fq.single_timeout_ms": "drivers/iommu/dma-iommu.c IOVA_SINGLE_FQ_TIMEOUT (v6.7)",
    "memcg.limit_bytes": "memory.max of the cgroup charged for GFP_KERNEL_ACCOUNT tables; 0: no limit",
    "iommufd.hw_domains": "hardware domains attached to each device's IOAS; IOMMU-API maps and "
                          "unmaps are mirrored into each (drivers/iommu/iommufd/io_pagetable.c "
                          "iopt_area_fill_domains)",
    "mem.free_bytes": "free memory before the first page table; 0 disables the GFP_ATOMIC failure model",
    "mem.min_watermark_bytes": "zone min watermark (vm.min_free_kbytes); GFP_ATOMIC may use reserves "
                               "down to 3/8 of it (mm/page_alloc.c __zone_watermark_ok: "
                               "ALLOC_MIN_RESERVE halves it, ALLOC_NON_BLOCK takes a further quarter)",
    "mem.jitter_bytes": "other activity: each allocation sees free memory lower by a seeded uniform "
                        "draw below this",
    "mem.seed": "seed of the jitter draws (splitmix64)",
    "cache.seed": "seed of random cache replacement (iotlb.policy / psc.policy = \"random\", splitmix64)",
    "iova.reserved": "IOMMU_RESV_MSI/RESERVED regions [start, end] (bytes) reserved in every iovad",
    "iova.direct": "IOMMU_RESV_DIRECT regions [start, end]: reserved and identity-mapped at attach",
    "fq.size": "drivers/iommu/dma-iommu.c IOVA_DEFAULT_FQ_SIZE (v6.7)",
    "fq.timeout_ms": "drivers/iommu/dma-iommu.c IOVA_DEFAULT_FQ_TIMEOUT (v6.7)",
    "iova.mag_size": "drivers/iommu/iova.c IOVA_MAG_SIZE = 127 (v6.0; 128 before)",
    "iova.depot_delay_ms": "drivers/iommu/iova.c IOVA_DEPOT_DELAY = msecs_to_jiffies(100) (v6.7)",
    "iova.pci_32bit_first": "drivers/iommu/dma-iommu.c iommu_dma_alloc_iova(): "
                            "pci_32bit_workaround (PCI-only since v6.6)",
    "iova.dma_mask_bits": "device DMA mask (dma_set_mask); 64 for modern PCIe devices",
    "cpu.map_ns": "dma-iommu map call without IOVA allocation and invalidation (iommu_dma_map_page, "
                  "iommu_map): Morello SMMUv3 dma_map_benchmark, 4 KiB map 0.1 us with the IOVA "
                  "rcache hit (M. Saleh, IOMMU_DEBUG_PAGEALLOC cover letter, 2025)",
    "cpu.unmap_ns": "dma-iommu unmap call without invalidation (iommu_dma_unmap_page, "
                    "iommu_unmap_fast, IOVA free): assumption, as the map path",
    "cpu.page_ns": "per 4 KiB page written at map and cleared at unmap: Morello dma_map_benchmark, "
                   "1 MiB map 0.8 us vs 4 KiB 0.1 us, less the tree allocation of a 256-page "
                   "IOVA: about 1.8 ns per PTE",
    "cpu.iova_rcache_ns": "per-CPU magazine pop or push under its spinlock (iova_rcache_get): "
                          "assumption, tens of ns",
    "cpu.iova_tree_ns": "iova_rbtree_lock, kmem_cache_alloc and rb insert of the slow path "
                        "(alloc_iova): assumption, a few hundred ns",
    "cpu.iova_step_ns": "one rb_prev step of __alloc_and_insert_iova_range (a cache miss): assumption",
    "cpu.pt_alloc_ns": "allocate and zero one page-table page (iommu_alloc_pages_node_sz): "
                       "assumption, clearing 4 KiB",
    "cpu.fq_ns": "queue_iova() into the per-CPU flush queue plus its later fq_ring_free: assumption",
    "walk.miss_ns": "IOTLB miss beyond its page-table reads (lookup, walk-cache probes, fill): "
                    "pcie-bench raw data (SIGCOMM 2018, Xeon E5-2630v4, IOMMU on, no superpages): "
                    "64 B random DMA reads take about 560 ns within the IOTLB's reach and 840 ns "
                    "beyond it, so a miss with one page-table read costs about 280 ns",
    "walk.read_ns": "one page-table read by the walker (a memory read from the IOMMU): the same "
                    "pcie-bench figure less walk.miss_ns",
}


# Walk caches a model may leave out (no cache at that level).
OPTIONAL = {f"psc.l{lv}_{f}" for lv in range(2, 7) for f in ("entries", "ways")}


def _flatten(table, prefix=""):
    out = {}
    for k, v in table.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class ModelSpec:
    def __init__(self, name, path, family, description, params, sources):
        self.name = name
        self.path = path
        self.family = family
        self.description = description
        self.params = params
        self.sources = sources

    @property
    def vendor(self):
        return FAMILIES[self.family]

    def with_overrides(self, overrides):
        """A copy with `key=value` strings applied, each checked against the spec."""
        params = dict(self.params)
        for item in overrides:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep:
                raise HarnessError(f"--set {item!r}: expected key=value")
            if key not in params and key in OPTIONAL:
                params[key] = 0  # a walk cache the model leaves out
            if key not in params:
                raise HarnessError(f"--set {key}: unknown parameter of model {self.name} "
                                   f"(see `iommu-harness models show {self.name}`)")
            params[key] = _coerce(key, raw.strip(), params[key])
        return ModelSpec(self.name, self.path, self.family, self.description, params, self.sources)


def _coerce(key, raw, default):
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: a string
    expected = type(default)
    if expected is float and type(value) is int:
        value = float(value)
    if type(value) is not expected or (expected is list and not value):
        raise HarnessError(f"--set {key}={raw}: expected {expected.__name__} "
                           f"like the default {default!r}")
    return value


def _read(path):
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise HarnessError(f"{path}: cannot read model: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise HarnessError(f"{path}: not valid TOML: {e}") from None


def _merged(path, models_dir, seen=()):
    """The file's tables over those of the model it inherits from, if any."""
    doc = _read(path)
    base = doc.pop("inherits", None)
    if base is None:
        return doc
    if base in seen:
        raise HarnessError(f"{path}: field 'inherits' = {base!r} loops back to itself")
    found = available(models_dir)
    if base not in found:
        raise HarnessError(f"{path}: field 'inherits' is {base!r}, expected a model name "
                           f"({', '.join(found)})")
    merged = _flatten(_merged(found[base], models_dir, seen + (base,)))
    merged.pop("name", None)
    merged.update(_flatten(doc))
    return merged


def load(path, models_dir=None):
    path = Path(path)
    doc = _flatten(_merged(path, models_dir, (path.stem,)))
    family = doc.pop("family", None)
    if family not in FAMILIES:
        raise HarnessError(f"{path}: field 'family' is {family!r}, expected one of "
                           f"{', '.join(sorted(FAMILIES))}")
    name = doc.pop("name", path.stem)
    description = doc.pop("description", "")
    sources = dict(CORE_SOURCES)
    sources.update({k[len("sources."):]: v for k, v in doc.items() if k.startswith("sources.")})
    params = dict(CORE_DEFAULTS)
    params.update({k: v for k, v in doc.items() if not k.startswith("sources.")})
    allowed = set(FAMILIES[family].PARAMS) | set(CORE_DEFAULTS) | OPTIONAL
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise HarnessError(f"{path}: unknown parameter(s) {', '.join(unknown)} for family {family}")
    for k in params:  # a cache's ways share the source of its entries
        if k.endswith("_ways") and k not in sources:
            sources[k] = sources.get(k[:-len("_ways")] + "_entries", "")
    missing = [k for k in FAMILIES[family].PARAMS if k not in params]
    if missing:
        raise HarnessError(f"{path}: missing parameter(s) {', '.join(missing)} "
                           f"for family {family}")
    return ModelSpec(name, str(path), family, description, params, sources)


def search_dirs(models_dir=None):
    dirs = [Path(models_dir)] if models_dir else []
    env = os.environ.get("IOMMU_HARNESS_MODELS")
    if env:
        dirs.append(Path(env))
    dirs.append(BUILTIN_DIR)
    return dirs


def available(models_dir=None):
    found = {}
    for d in search_dirs(models_dir):
        for p in sorted(d.glob("*.toml")) if d.is_dir() else ():
            found.setdefault(p.stem, p)
    return found


def resolve(name, models_dir=None):
    """A model by name (from --models-dir, $IOMMU_HARNESS_MODELS, built-ins) or path."""
    if name.endswith(".toml") or os.sep in name:
        return load(name, models_dir)
    found = available(models_dir)
    if name not in found:
        raise HarnessError(f"unknown model {name!r}: expected one of {', '.join(found) or 'none'}")
    return load(found[name], models_dir)
