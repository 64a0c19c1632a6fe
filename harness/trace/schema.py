"""Trace format v1: one Arrow IPC file, one row per DMA event.

The schema and its metadata keys are the contract every writer, importer and
reader shares; traces/README.md documents them for users.
"""

import json

import pyarrow as pa

FORMAT_NAME = "iommu-harness-trace"
FORMAT_VERSION = 1

# Event kinds (column `op`).
OP_MAP = 0
OP_UNMAP = 1
OP_ACCESS = 2
OP_NAMES = {OP_MAP: "map", OP_UNMAP: "unmap", OP_ACCESS: "access"}

# Bits of column `flags`.
FLAG_TO_DEVICE = 1 << 0    # map: DMA_TO_DEVICE; access: device reads memory
FLAG_FROM_DEVICE = 1 << 1  # map: DMA_FROM_DEVICE; access: device writes memory
FLAG_ATOMIC = 1 << 2       # the CPU event ran in atomic context (IRQs off / spinlock)
FLAG_IOMMU_API = 1 << 3    # iommu_map/iommu_unmap level instead of the DMA API
# The gfp an IOMMU-API caller passed to iommu_map() (ignored on DMA-API events:
# dma-iommu always passes GFP_ATOMIC).
FLAG_GFP_BLOCKING = 1 << 4  # may sleep (GFP_KERNEL, GFP_KERNEL_ACCOUNT)
FLAG_GFP_COMP = 1 << 5      # __GFP_COMP
FLAG_GFP_DMA = 1 << 6       # __GFP_DMA
FLAG_GFP_DMA32 = 1 << 7     # __GFP_DMA32
FLAG_GFP_HIGHMEM = 1 << 8   # __GFP_HIGHMEM
FLAG_GFP_FORBIDDEN = FLAG_GFP_COMP | FLAG_GFP_DMA | FLAG_GFP_DMA32 | FLAG_GFP_HIGHMEM
# A DMA-API map row whose scatterlist continues in the next row (dma_map_sg):
# the rows of one list share handle, ts, cpu, device and flags, lie in one
# record batch, and are mapped as one IOVA range with one iotlb_sync_map.
FLAG_SG_MORE = 1 << 9
FLAG_BIDIRECTIONAL = FLAG_TO_DEVICE | FLAG_FROM_DEVICE
KNOWN_FLAGS = (FLAG_TO_DEVICE | FLAG_FROM_DEVICE | FLAG_ATOMIC | FLAG_IOMMU_API
               | FLAG_GFP_BLOCKING | FLAG_GFP_FORBIDDEN | FLAG_SG_MORE)

NO_HANDLE = 0xFFFFFFFF  # access by absolute iova, not through a mapping
IOVA_ALLOCATE = 0       # map: let the model's IOVA allocator choose (IOVA 0 is never used)

COLUMNS = (
    ("ts", pa.uint64(), "timestamp, ns; non-decreasing"),
    ("op", pa.uint8(), "0 map, 1 unmap, 2 access"),
    ("cpu", pa.uint16(), "CPU that issued a map/unmap (< num_cpus)"),
    ("device", pa.uint32(), "requester id: segment << 16 | bus << 8 | devfn"),
    ("pasid", pa.uint32(), "PASID, 0 when none (IOMMU_NO_PASID)"),
    ("handle", pa.uint32(), "names a live mapping; reusable after its unmap; 0xFFFFFFFF none"),
    ("iova", pa.uint64(), "map: recorded IOVA or 0 to allocate; access without handle: IOVA"),
    ("paddr", pa.uint64(), "map: physical address of the buffer"),
    ("size", pa.uint64(), "bytes mapped, unmapped (equal to the map) or accessed; > 0"),
    ("offset", pa.uint64(), "access through a handle: byte offset from the mapping's DMA address"),
    ("flags", pa.uint16(), "bit 0 to-device, 1 from-device, 2 atomic context, 3 IOMMU API, "
                           "4-8 iommu_map gfp: blocking, __GFP_COMP, _DMA, _DMA32, _HIGHMEM, "
                           "9 scatterlist continues in the next row"),
)
COLUMN_NAMES = tuple(name for name, _, _ in COLUMNS)

META_FORMAT = b"iommu_harness.format"
META_VERSION = b"iommu_harness.version"
META_NUM_CPUS = b"iommu_harness.num_cpus"
META_PROVENANCE = b"iommu_harness.provenance"


# Optional columns an importer may add; readers ignore columns they do not use.
OBSERVED = ("observed", pa.uint8(), "access: outcome the recording tool saw: 0 none, 1 IOTLB hit, 2 miss")
OPTIONAL = {OBSERVED[0]: OBSERVED[1]}


def schema(num_cpus, provenance, extra=()):
    """The v1 schema carrying format, version, CPU count and provenance metadata.

    provenance: dict, e.g. {"generator": "nic-rx", "params": {...}, "seed": 1}
    or {"import": "ftrace", "source": "trace.txt"}. extra: optional
    (name, type) columns appended after the v1 columns.
    """
    meta = {
        META_FORMAT: FORMAT_NAME.encode(),
        META_VERSION: str(FORMAT_VERSION).encode(),
        META_NUM_CPUS: str(int(num_cpus)).encode(),
        META_PROVENANCE: json.dumps(provenance, sort_keys=True).encode(),
    }
    fields = [pa.field(n, t, nullable=False) for n, t, _ in COLUMNS]
    fields += [pa.field(n, t, nullable=False) for n, t in extra]
    return pa.schema(fields, metadata=meta)
