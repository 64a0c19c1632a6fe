"""Throughput and latency model: a run's counters priced in CPU and device time.

CPU side: every work unit (a packet, an I/O, a benchmark loop) costs the host
`unit_ns` (driver, stack, application) plus its share of the DMA API work the
run counted, priced by the model's `cpu.*` parameters (dma-iommu software
paths) and `inv.*` parameters (invalidation submission, completion wait, VM
exits). qi_submit_sync() and the SMMU/AMD completion waits spin on the CPU
that unmaps, so invalidation time is CPU time. Units spread over `cores`.

Device side: the device moves `request_bytes` per translated request with
`outstanding` requests in flight (Little's law, as pcie-bench models PCIe
DMA bandwidth); a request whose translation misses the IOTLB waits
`walk.miss_ns` plus `walk.read_ns` for every page-table read the walk made.
The link carries each unit's bytes plus `wire_overhead_bytes` at
`line_rate_gbps`.

Modelled throughput is the lowest of the three rates (CPU, DMA, link); the
fraction of line rate is that rate over the link's.
"""

import math

from harness import metrics
from harness.errors import HarnessError

# Host and device parameters of a calibration case ([host] in its file).
HOST_DEFAULTS = {
    "line_rate_gbps": 100.0,
    "cores": 1,
    "unit_ns": 0.0,
    "wire_overhead_bytes": 0,
    "outstanding": 64,
    "request_bytes": 256,
    "latency_ns": 500.0,
}
# dma-iommu software costs: (counter, parameter); side of the call they land on.
MAP_COSTS = (("maps", "cpu.map_ns"), ("iova_rcache_hits", "cpu.iova_rcache_ns"),
             ("iova_tree_allocs", "cpu.iova_tree_ns"), ("iova_tree_walk_steps", "cpu.iova_step_ns"),
             ("pt_pages_alloc", "cpu.pt_alloc_ns"))
UNMAP_COSTS = (("unmaps", "cpu.unmap_ns"), ("fq_queued", "cpu.fq_ns"),
               ("iova_rcache_inserts", "cpu.iova_rcache_ns"), ("iova_tree_frees", "cpu.iova_tree_ns"))
PAGE = 4096


def host_params(table, where):
    """[host] of a case over the defaults; unknown keys and wrong types are errors."""
    host = dict(HOST_DEFAULTS)
    for k, v in table.items():
        if k not in HOST_DEFAULTS:
            raise HarnessError(f"{where}: host.{k}: unknown; expected one of {', '.join(HOST_DEFAULTS)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise HarnessError(f"{where}: host.{k} = {v!r}: expected a number >= 0")
        host[k] = v
    for k in ("line_rate_gbps", "cores", "outstanding", "request_bytes", "latency_ns"):
        if not host[k] > 0:
            raise HarnessError(f"{where}: host.{k} = {host[k]}: expected > 0")
    return host


def _parts(v, params):
    """(count, ns each) of everything the map and the unmap calls pay.
    Page costs are per 4 KiB of bytes mapped (a PTE each; a superpage is
    priced as its 4 KiB pages), paid again by the unmaps in proportion to
    the maps they undo. Invalidation lands on the unmap side, the sync-map
    flushes of virtual IOMMUs included."""
    pages = v["bytes_mapped"] / PAGE
    unmapped = pages * min(1.0, v["unmaps"] / v["maps"]) if v["maps"] else 0.0
    map_side = [(v[c], params[p]) for c, p in MAP_COSTS] + [(pages, params["cpu.page_ns"])]
    unmap_side = [(v[c], params[p]) for c, p in UNMAP_COSTS] + [(unmapped, params["cpu.page_ns"])]
    return map_side, unmap_side + metrics.inv_terms(v, params)


def latency(calls, parts):
    """Mean and standard deviation (ns) of one call's cost when `calls` calls
    share the counted work: work counted at least once per call is spread
    evenly; rarer work (a tree allocation, a flush-queue flush) falls on
    separate calls, each call paying it independently with probability
    count / calls."""
    if not calls:
        return 0.0, 0.0
    mean = var = 0.0
    for n, ns in parts:
        p = n / calls
        mean += p * ns
        if p < 1:
            var += p * (1 - p) * ns * ns
    return mean, math.sqrt(var)


def model(v, params, host, units):
    """Modelled rates of a run: v its counters and derived metrics, params
    its resolved model parameters, host the case's [host], units the work
    units of its trace."""
    map_side, unmap_side = _parts(v, params)
    dma_ns = sum(n * ns for n, ns in map_side + unmap_side)
    cpu_ns = host["unit_ns"] + dma_ns / units
    cpu_rate = host["cores"] * 1e9 / cpu_ns if cpu_ns else math.inf
    unit_bytes = v["bytes_accessed"] / units
    link_rate = host["line_rate_gbps"] * 1e9 / 8 / (unit_bytes + host["wire_overhead_bytes"]) \
        if unit_bytes + host["wire_overhead_bytes"] else math.inf
    dma_rate, penalty, stall = math.inf, 0.0, 0.0
    if v["bytes_accessed"]:
        requests = v["bytes_accessed"] / host["request_bytes"]
        misses = v["iotlb_misses"]
        penalty = params["walk.miss_ns"] + params["walk.read_ns"] * (v["walk_reads"] / misses if misses else 0)
        stall = misses / requests * penalty
        bps = host["outstanding"] * host["request_bytes"] * 1e9 / (host["latency_ns"] + stall)
        dma_rate = bps / unit_bytes
    rates = {"cpu": cpu_rate, "dma": dma_rate, "link": link_rate}
    bound = min(rates, key=rates.get)
    rate = rates[bound]
    map_mean, map_sd = latency(v["maps"], map_side)
    unmap_mean, unmap_sd = latency(v["unmaps"], unmap_side)
    return {
        "units": units, "unit_bytes": unit_bytes, "cpu_ns_per_unit": cpu_ns,
        "dma_api_ns_per_unit": dma_ns / units, "miss_penalty_ns": penalty,
        "stall_ns_per_request": stall, "cpu_rate": cpu_rate, "dma_rate": dma_rate,
        "link_rate": link_rate, "rate": rate, "bound": bound,
        "gbps": rate * unit_bytes * 8 / 1e9,
        "line_fraction": rate / link_rate if math.isfinite(link_rate) else math.nan,
        "iotlb_misses_per_mib": v["iotlb_misses_per_mib"],
        "map_us": map_mean / 1e3, "map_sd_us": map_sd / 1e3,
        "unmap_us": unmap_mean / 1e3, "unmap_sd_us": unmap_sd / 1e3,
    }
