"""Index constants shared by the compiled kernel and the Python side.

Numba freezes module-level integers as compile-time constants, so the kernel
reads parameters, global state and per-domain state by these names.
"""

from harness.metrics import COUNTER_INDEX

# Counter slots: C_<NAME> for every counter in harness.metrics.COUNTERS.
globals().update({f"C_{name.upper()}": idx for name, idx in COUNTER_INDEX.items()})

# Model/run parameters (int64 vector P).
P_FAMILY = 0           # FAMILY_*: the vendor dispatch of invalidation and sync_map
P_LEVELS = 1           # page-table levels (the most a domain grows to)
P_PGSIZE_BITMAP = 2    # domain->pgsize_bitmap
P_GRANULE_SHIFT = 3    # log2 of the smallest page size: the IOVA and translation granule
P_APERTURE_PFN = 4     # last 4 KiB IOVA page the domain translates (address width)
P_IOTLB_SETS = 5
P_IOTLB_WAYS = 6
P_IOTLB_POLICY = 7     # POLICY_*: IOTLB replacement
P_FQ_SIZE = 8          # slots per flush queue
P_FQ_TIMEOUT = 9       # ns
P_MAG_SIZE = 10        # IOVA_MAG_SIZE
P_DEPOT_DELAY = 11     # ns
P_PCI32 = 12           # try the 32-bit IOVA window first (PCI SAC trick)
P_DMA_LIMIT_PFN = 13   # min(dma mask, aperture end) in granule pages
P_DMA32_PFN = 14       # iovad->dma_32bit_pfn: 4 GiB in granule pages
P_FLUSH = 15           # effective flush mode: FLUSH_*
P_GFP = 16             # GFP_POLICY_*
P_NCPU = 17            # num_online_cpus
P_MAG_MARGIN = 18      # free magazines the kernel keeps in reserve before an event
P_GFP_IGNORED = 19     # driver ignores the gfp argument: GFP_ATOMIC, never charged
P_MEMCG_LIMIT = 20     # bytes of page tables the memory cgroup may be charged; 0: none
P_INIT_TABLES = 21     # tables a new domain may allocate (root, RESV_DIRECT maps)
P_HW_DOMAINS = 22      # hardware domains mirroring a device's IOAS (iommufd)
P_MEM_FREE = 23        # free memory (bytes) before any page table; 0: no memory pressure
P_MEM_ATOMIC_FLOOR = 24  # bytes GFP_ATOMIC may not dip below: 3/8 of the min watermark
P_MEM_JITTER = 25      # free memory seen by an allocation drops by up to this much
P_PT_UNMAP = 26        # PT_UNMAP_*: what an unmap does with the tables it empties
P_VIRT = 27            # virtualized IOMMU: VT-d caching mode, AMD NpCache, s390 shadowing
P_FIRST_STAGE = 28     # first-stage tables (VT-d PASID-based invalidation)
P_ATS = 29             # devices have ATS: device-TLB/ATC invalidations follow IOTLB ones
P_MAX_RANGE = 30       # VT-d MAMV; SMMUv3 CMDQ_MAX_TLBI_OPS: beyond it, invalidate all
P_CMD_BATCH = 31       # commands per submission before the sync/wait is appended
P_RIL = 32             # SMMUv3 range invalidation; VT-d qi_batch (v6.12)
P_PSC_POLICY = 33      # POLICY_* of the paging-structure (walk) caches
P_LVL_PSHIFT = 34      # + level (1..6): log2 of the 4 KiB pages one entry spans
P_LVL_ENTRIES = 41     # + level: entries of a table at that level
P_LVL_BYTES = 48       # + level: bytes the allocator hands out for such a table
P_PSC_SETS = 55        # + level (2..6)
P_PSC_WAYS = 62        # + level (2..6)
P_PSC_BASE = 69        # + level (2..6): first row of that level in the walk-cache arrays
P_UTLB_ENTRIES = 76    # per-device micro-TLB in front of the IOTLB (gem5 SMMUv3); 0: none
P_INIT_LEVELS = 77     # levels a new domain starts with (AMD v1: 3, grown up to P_LEVELS)
NUM_PARAMS = 78
MAX_LEVELS = 6
WALK_CODES = (MAX_LEVELS + 1) << 7  # walk outcomes of a one-pass size sweep (translate.py)

FAMILY_NONE = 0
FAMILY_VTD = 1
FAMILY_AMDVI = 2
FAMILY_SMMUV3 = 3
FAMILY_S390 = 4

PT_UNMAP_KEEP = 0      # tables stay until the domain is freed (AMD, s390)
PT_UNMAP_FREELIST = 1  # covered tables go on the gather freelist (VT-d)
PT_UNMAP_WALK = 2      # covered tables freed after a walk-cache invalidation (io-pgtable-arm)

POLICY_LRU = 0
POLICY_FIFO = 1        # round-robin: ways replaced in fill order
POLICY_RANDOM = 2      # seeded (G_CACHE_RNG)
POLICIES = {"lru": POLICY_LRU, "round-robin": POLICY_FIFO, "random": POLICY_RANDOM}

GFP_POLICY_ATOMIC = 0
GFP_POLICY_KERNEL = 1
GFP_POLICY_KERNEL_ACCOUNT = 2
GFP_POLICIES = {"atomic": GFP_POLICY_ATOMIC, "kernel": GFP_POLICY_KERNEL,
                "kernel-account": GFP_POLICY_KERNEL_ACCOUNT}
FLUSH_STRICT = 0       # IOMMU_DOMAIN_DMA
FLUSH_LAZY = 1         # IOMMU_DOMAIN_DMA_FQ, per-CPU flush queues
FLUSH_LAZY_SINGLE = 2  # DMA_FQ with one shared queue (shadow_on_flush, v6.7)
FLUSH_PASSTHROUGH = 3  # IOMMU_DOMAIN_IDENTITY
FLUSH_MODES = {"strict": FLUSH_STRICT, "lazy": FLUSH_LAZY, "lazy-single": FLUSH_LAZY_SINGLE,
               "passthrough": FLUSH_PASSTHROUGH}

# gfp kinds an allocation is counted under.
GFP_ATOMIC = 0
GFP_KERNEL = 1
GFP_KERNEL_ACCOUNT = 2

# Global scalar state (int64 vector G).
G_CLOCK = 0            # LRU stamp source
G_NOW = 1              # current time, ns
G_NEXT_TIMER = 2       # earliest armed timer deadline
G_PT_FREE = 3          # free page-table slots on the stack
G_NODE_FREE = 4        # free IOVA nodes on the stack
G_MAG_FREE = 5         # free magazines on the stack
G_PT_PENDING = 6       # page-table allocations on a freelist awaiting invalidation
G_PT_BYTES = 7         # bytes of page-table allocations not freed
G_CHARGED = 8          # bytes charged to the memory cgroup
G_PT_LIVE = 9          # page-table allocations not freed
G_IOTLB_ORDERS = 10    # bit o set: the IOTLB holds entries of 2^o 4 KiB pages
G_CACHE_RNG = 11       # splitmix64 state of random replacement
G_UTLB_ORDERS = 12     # bit o set: a micro-TLB has held an entry of 2^o 4 KiB pages
G_L1_USED = 13         # 1 when a level-1 table is remembered (pagetable.py)
G_LAST_TS = 14         # timestamp of the last event processed
G_RNG = 15             # splitmix64 state of the memory-pressure model
G_IOTLB_CNT = 16       # + o: live IOTLB entries of order o
L1_MEMO = 64           # remembered level-1 tables, direct-mapped by pagetable._l1_key()
G_L1_KEY = 16 + 52     # + k: key of remembered table k, 0 for none
G_L1_TABLE = G_L1_KEY + L1_MEMO  # + k: its slot
G_PSC_LEVELS = G_L1_TABLE + L1_MEMO  # bit level set: a walk cache of that level has been filled
G_PT_NEED = G_PSC_LEVELS + 1  # free page-table slots the event that stopped for ST_GROW needs
NUM_GLOBALS = G_PT_NEED + 1

NEVER = 1 << 62        # timer not armed; also the IOVA anchor pfn

# Per-domain state (int64 matrix D[domain, field]).
D_ROOT = 0             # root table slot, 0 before the domain exists
D_ANCHOR = 1           # IOVA anchor node (pfn IOVA_ANCHOR)
D_CACHED = 2           # iovad->cached_node
D_CACHED32 = 3         # iovad->cached32_node
D_MAX32 = 4            # iovad->max32_alloc_size
D_PCI32 = 5            # dev->iommu->pci_32bit_workaround
D_FQ_TIMER = 6         # flush-queue timer deadline
D_FQ_TIMER_CPU = 7     # CPU whose mod_timer armed it (the timer runs there)
D_FQ_START = 8         # fq_flush_start_cnt
D_FQ_FINISH = 9        # fq_flush_finish_cnt
D_PEND_PAGES = 10      # unmapped pages not yet invalidated
D_PEND_PAGETS = 11     # sum of pages * unmap time over them
D_DEPOT = 12           # + size class: depot head magazine (-1 empty)
D_DEPOT_SIZE = 18      # + size class
D_DEPOT_TIMER = 24     # + size class: depot worker deadline
D_READY = 30           # the domain exists (allocated at the device's first event)
D_LEVELS = 31          # levels of the domain's table now (its root's level)
NUM_DOMAIN_FIELDS = 32

IOVA_RANGE_CACHE_MAX_SIZE = 6  # rcache size classes: 1..32 pages

# Handle table (int64 matrix H[handle, field]).
H_STATE = 0            # HS_*
H_DMA = 1              # DMA address the device uses (iova + offset in page)
H_SIZE = 2             # bytes mapped
H_NODE = 3             # IOVA node allocated for it, -1 when recorded/IOMMU API
H_PAGES = 4            # iova pages (size >> shift) passed to the free path
H_API = 5              # 1 for IOMMU-API mappings
H_BASE = 6             # page-aligned iova actually mapped
H_LEN = 7              # page-aligned bytes actually mapped
NUM_HANDLE_FIELDS = 8
HS_NONE = 0
HS_MAPPED = 1
HS_UNMAPPED = 2
HS_FAILED = 3          # the map returned an error

# Gather array (S.gather): the iotlb gather, then the freelist of tables a map
# replaced (AMD alloc_pte -> free_clear_pte) and the map's "updated" flag.
# A freelist is three slots: tables, bytes, charged bytes.
GA_START = 0
GA_END = 1
GA_PGSIZE = 2
GA_FL = 3
GA_MAP_FL = 6
GA_MAP_UPDATED = 9
GATHER_LEN = 10

# Flush-queue entry fields (fq[domain, cpu, slot, field]).
FQ_NODE = 0
FQ_PFN = 1             # iova_pfn, as the kernel's entry holds it
FQ_PAGES = 2
FQ_COUNTER = 3
FQ_PT = 4              # freelist: table allocations
FQ_PT_BYTES = 5        # freelist: their bytes
FQ_PT_CHARGED = 6      # freelist: bytes charged to the memory cgroup
NUM_FQ_FIELDS = 7

# run_batch status codes.
ST_DONE = 0
ST_GROW = 1            # a pool ran low: grow it and resume at the returned row
ST_UNMAP_UNKNOWN = 2
ST_MAP_LIVE = 3
ST_UNMAP_SIZE = 4
ST_ACCESS_UNKNOWN = 5
ST_NEW_DEVICE = 6      # first event of a device: number it a domain and resume
ST_GROW_HANDLES = 7    # handle beyond the handle table: grow it and resume
ST_DIVERGED = 8        # a one-pass size sweep cannot go on (translate.translate_sizes)
ST_BAD = 16            # + index into checks.CHECKS

