"""The compiled event loop: one pass over a batch of trace columns.

Per event: fire due timers, then the DMA-API or IOMMU-API map/unmap path of
the domain core (drivers/iommu/dma-iommu.c, v6.12: __iommu_dma_map,
__iommu_dma_unmap) or a device access translated page by page through the
IOTLB, paging-structure caches and page walker. The loop stops early when a
pool needs growing (the caller grows it and resumes) or on bad input.
"""

import numpy as np

from harness.core.compiled import njit
from harness.core import checks, flush, iotlb, iova, pagetable, pages, prefetch, timers, translate
from harness.core import layout as L
from harness.vendors import hw
from harness.trace import schema as ts

FLAG_ATOMIC = ts.FLAG_ATOMIC
FLAG_IOMMU_API = ts.FLAG_IOMMU_API
FLAG_SG_MORE = ts.FLAG_SG_MORE
NO_HANDLE = ts.NO_HANDLE
OP_MAP = ts.OP_MAP
OP_UNMAP = ts.OP_UNMAP


@njit(cache=True, inline="always")
def _gfp(S, flags):
    """(gfp kind, charged) of a page-table allocation under the run's policy."""
    if S.P[L.P_GFP_IGNORED]:
        return L.GFP_ATOMIC, 0
    policy = S.P[L.P_GFP]
    account = 1 if policy == L.GFP_POLICY_KERNEL_ACCOUNT else 0
    if policy == L.GFP_POLICY_ATOMIC or flags & FLAG_ATOMIC:
        return L.GFP_ATOMIC, account
    if account:
        return L.GFP_KERNEL_ACCOUNT, 1
    return L.GFP_KERNEL, 0


@njit(cache=True)
def _init_domains(S, d):
    """The device's domain and the mirrors of its IOAS."""
    for k in range(S.P[L.P_HW_DOMAINS]):
        _init_domain(S, d + k)


@njit(cache=True)
def _init_domain(S, d):
    """Domain allocation at the device's first event. An identity domain has no
    tables. A paging domain gets its root table (process context), its iovad
    with the reserved regions (iova_reserve_iommu_regions: reserve_iova), and
    identity maps of RESV_DIRECT regions (iommu_create_device_direct_mappings,
    GFP_KERNEL)."""
    S.D[d, L.D_READY] = 1
    S.C[L.C_DOMAINS] += 1
    if S.P[L.P_FLUSH] == L.FLUSH_PASSTHROUGH:
        return
    if S.P[L.P_GFP_IGNORED]:
        gfp, charge = L.GFP_ATOMIC, 0
    elif S.P[L.P_GFP] == L.GFP_POLICY_KERNEL_ACCOUNT:
        gfp, charge = L.GFP_KERNEL_ACCOUNT, 1
    else:
        gfp, charge = L.GFP_KERNEL, 0
    S.D[d, L.D_LEVELS] = S.P[L.P_INIT_LEVELS]
    S.D[d, L.D_ROOT] = pages.alloc(S, gfp, charge, S.D[d, L.D_LEVELS])
    iova.init_domain(S, d)
    for r in range(S.resv.shape[0]):
        gs = S.P[L.P_GRANULE_SHIFT]
        iova.reserve(S, d, S.resv[r, 0], S.resv[r, 1])
        if S.resv[r, 2]:
            lo = S.resv[r, 0] << gs
            pagetable.iommu_map(S, d, lo, lo, ((S.resv[r, 1] + 1) << gs) - lo,
                                L.GFP_ATOMIC if S.P[L.P_GFP_IGNORED] else L.GFP_KERNEL, 0)


@njit(cache=True)
def _fire_timers(S, now):
    while True:
        t, d, f = timers.earliest(S)
        S.G[L.G_NEXT_TIMER] = t
        if t > now or d < 0:  # d < 0: none armed (an event at or past NEVER)
            return
        S.G[L.G_NOW] = t
        if f == L.D_FQ_TIMER:
            flush.fq_flush_timeout(S, d)
        else:
            iova.depot_work(S, d, f - L.D_DEPOT_TIMER)


@njit(cache=True)
def _unroll(S, d, base, length):
    """iommu_unmap() of what a failed map had mapped: its own gather and sync."""
    if length:
        flush.gather_init(S.gather)
        _unmap_range(S, d, base, length, False, S.gather)
        flush.iotlb_sync(S, d, S.gather)


@njit(cache=True)
def _map_failed(S, d, cpu, h, base, length, k, done):
    """-ENOMEM in domain d + k after `done` bytes: iommu_map() unmaps what it
    mapped there and in the domains filled before; dma-iommu frees the IOVA."""
    S.C[L.C_MAP_ENOMEM] += 1
    for j in range(k + 1):
        _unroll(S, d + j, base, length if j < k else done)
    if S.H[h, L.H_NODE] != -1:
        iova.free_iova_fast(S, d, cpu, S.H[h, L.H_NODE], base >> S.P[L.P_GRANULE_SHIFT],
                            S.H[h, L.H_PAGES])


@njit(cache=True)
def _map_mirrors(S, d, cpu, h, base, paddr, length, gfp, charge):
    """IOMMU-API maps go to every hardware domain of the IOAS in order
    (iopt_area_fill_domains); a failure unmaps the domains already filled."""
    for k in range(1, S.P[L.P_HW_DOMAINS]):
        done = pagetable.iommu_map(S, d + k, base, paddr, length, gfp, charge)
        if done >= 0:
            _map_failed(S, d, cpu, h, base, length, k, done)
            return False
        hw.iotlb_sync_map(S, d + k, base, length)
    return True


@njit(cache=True)
def _unmap_api(S, d, h):
    """iommu_unmap() from every hardware domain of the IOAS: always strict."""
    g = S.gather
    for k in range(S.P[L.P_HW_DOMAINS]):
        flush.gather_init(g)
        _unmap_range(S, d + k, S.H[h, L.H_BASE], S.H[h, L.H_LEN], False, g)
        flush.iotlb_sync(S, d + k, g)


@njit(cache=True, inline="always")
def _dma_iova(S, d, cpu, h, iova_rec, off, length):
    """Base IOVA of a DMA-API map of length bytes: allocated (recorded on the
    handle) or the recorded DMA address less its page offset; -1 when the
    allocation fails or the map is rejected."""
    gs = S.P[L.P_GRANULE_SHIFT]
    if iova_rec == 0:
        n, lo = iova.dma_alloc_iova(S, d, cpu, length >> gs)
        if n == -1:
            return -1
        S.H[h, L.H_NODE] = n
        S.H[h, L.H_PAGES] = length >> gs
        return lo << gs
    base = iova_rec - off
    if (iova_rec & ((1 << gs) - 1)) != off or (base + length - 1) >> 12 > S.P[L.P_APERTURE_PFN]:
        S.C[L.C_MAP_REJECTED] += 1  # misaligned, or beyond the aperture (-EFAULT)
        return -1
    return base


@njit(cache=True, inline="always")
def _map(S, d, cpu, h, iova_rec, paddr, size, flags):
    H = S.H
    if H[h, L.H_STATE] == L.HS_MAPPED:
        return L.ST_MAP_LIVE
    S.C[L.C_MAPS] += 1
    S.C[L.C_BYTES_MAPPED] += size
    H[h, L.H_SIZE] = size
    H[h, L.H_NODE] = -1
    H[h, L.H_API] = 1 if flags & FLAG_IOMMU_API else 0
    H[h, L.H_STATE] = L.HS_FAILED
    H[h, L.H_DMA] = 0
    gmask = (1 << S.P[L.P_GRANULE_SHIFT]) - 1
    if flags & FLAG_IOMMU_API:
        off = 0
        length = size
        base = iova_rec
        if flags & ts.FLAG_GFP_FORBIDDEN:  # iommu_map(): WARN_ON_ONCE(gfp & ...), -EINVAL
            S.C[L.C_GFP_FORBIDDEN] += 1
            S.C[L.C_MAP_REJECTED] += 1
            return L.ST_DONE
        if (iova_rec | paddr | size) & (gmask):  # __iommu_map(): -EINVAL
            S.C[L.C_MAP_REJECTED] += 1
            return L.ST_DONE
        if (base + length - 1) >> 12 > S.P[L.P_APERTURE_PFN]:  # intel_iommu_map(): -EFAULT
            S.C[L.C_MAP_REJECTED] += 1
            return L.ST_DONE
    else:
        off = paddr & gmask  # iova_offset()
        length = (size + off + gmask) & ~gmask  # iova_align()
        base = _dma_iova(S, d, cpu, h, iova_rec, off, length)
        if base == -1:
            return L.ST_DONE
    gfp, charge = _gfp(S, flags)
    before = S.C[L.C_PT_PAGES_ALLOC]
    done = pagetable.iommu_map(S, d, base, paddr - off, length, gfp, charge)
    ok = done < 0
    if not ok:
        _map_failed(S, d, cpu, h, base, length, 0, done)
    else:
        hw.iotlb_sync_map(S, d, base, length)
        if flags & FLAG_IOMMU_API and S.P[L.P_HW_DOMAINS] > 1:
            ok = _map_mirrors(S, d, cpu, h, base, paddr - off, length, gfp, charge)
    if flags & FLAG_IOMMU_API and flags & FLAG_ATOMIC and flags & ts.FLAG_GFP_BLOCKING:
        S.C[L.C_GFP_BLOCKING_IN_ATOMIC] += S.C[L.C_PT_PAGES_ALLOC] - before
    if not ok:
        return L.ST_DONE
    H[h, L.H_STATE] = L.HS_MAPPED
    H[h, L.H_DMA] = base + off
    H[h, L.H_BASE] = base
    H[h, L.H_LEN] = length
    return L.ST_DONE


@njit(cache=True)
def _map_sg(S, d, cpu, h, i, e, iova_, paddr, size, flags):
    """dma_map_sg() of the list in rows i..e: iommu_dma_map_sg() (dma-iommu.c,
    v6.12) gives every segment an aligned slot that keeps its page offset, one
    IOVA allocation for them all; iommu_map_sg() maps each physically
    contiguous run with one __iommu_map() and calls iotlb_sync_map once.
    Padding to the segment boundary (4 GiB for PCI) is not modelled."""
    H = S.H
    if H[h, L.H_STATE] == L.HS_MAPPED:
        return L.ST_MAP_LIVE
    gmask = (1 << S.P[L.P_GRANULE_SHIFT]) - 1
    total = 0
    length = 0
    for j in range(i, e + 1):
        total += size[j]
        length += (size[j] + (paddr[j] & gmask) + gmask) & ~gmask
    S.C[L.C_MAPS] += 1
    S.C[L.C_SG_SEGMENTS] += e - i + 1
    S.C[L.C_BYTES_MAPPED] += total
    H[h, L.H_SIZE] = total
    H[h, L.H_NODE] = -1
    H[h, L.H_API] = 0
    H[h, L.H_STATE] = L.HS_FAILED
    H[h, L.H_DMA] = 0
    off = paddr[i] & gmask
    base = _dma_iova(S, d, cpu, h, iova_[i], off, length)
    if base == -1:
        return L.ST_DONE
    gfp, charge = _gfp(S, flags)
    mapped = 0
    start = 0
    run = 0
    for j in range(i, e + 2):
        if j <= e:
            phys = paddr[j] & ~gmask
            seg = (size[j] + (paddr[j] & gmask) + gmask) & ~gmask
            if run and phys == start + run:
                run += seg
                continue
        if run:
            done = pagetable.iommu_map(S, d, base + mapped, start, run, gfp, charge)
            if done >= 0:  # __iommu_map unrolls its run, iommu_map_sg the runs before
                S.C[L.C_MAP_ENOMEM] += 1
                _unroll(S, d, base + mapped, done)
                _unroll(S, d, base, mapped)
                if H[h, L.H_NODE] != -1:
                    iova.free_iova_fast(S, d, cpu, H[h, L.H_NODE], base >> S.P[L.P_GRANULE_SHIFT],
                                        H[h, L.H_PAGES])
                return L.ST_DONE
            mapped += run
        if j <= e:
            start = phys
            run = seg
    hw.iotlb_sync_map(S, d, base, length)
    H[h, L.H_STATE] = L.HS_MAPPED
    H[h, L.H_DMA] = base + off
    H[h, L.H_BASE] = base
    H[h, L.H_LEN] = length
    return L.ST_DONE


@njit(cache=True, inline="always")
def _unmap_range(S, d, base, length, queued, g):
    """__iommu_unmap(): clear [base, base + length) chunk by chunk, gathering
    the range unless queued; returns the end (unmaps may widen to a superpage)."""
    fl = g[flush.G_FL:flush.G_FL + 3]
    bitmap = S.P[L.P_PGSIZE_BITMAP]
    it = base
    while it - base < length:
        pgsize, count = pagetable.iommu_pgsize(bitmap, it, it, length - (it - base))
        got = pagetable.unmap_pages(S, d, it, pgsize * count, fl)
        if not queued:
            flush.gather_add_page(S, d, g, it, got, pgsize)
        it += got
    return it


@njit(cache=True, inline="always")
def _end_mapping(S, h, size):
    """What every unmap checks and records: (status, handle state before)."""
    st = S.H[h, L.H_STATE]
    if st == L.HS_NONE or st == L.HS_UNMAPPED:
        return L.ST_UNMAP_UNKNOWN, st
    if size != S.H[h, L.H_SIZE]:
        return L.ST_UNMAP_SIZE, st
    S.C[L.C_UNMAPS] += 1
    S.H[h, L.H_STATE] = L.HS_UNMAPPED
    return L.ST_DONE, st


@njit(cache=True, inline="always")
def _identity(S, o, h, size):
    """Passthrough (IOMMU_DOMAIN_IDENTITY): DMA addresses are physical; nothing
    is allocated, mapped, translated or invalidated."""
    H = S.H
    st = H[h, L.H_STATE] if h != NO_HANDLE else L.HS_MAPPED
    if o == OP_MAP:
        if st == L.HS_MAPPED:
            return L.ST_MAP_LIVE
        S.C[L.C_MAPS] += 1
        S.C[L.C_BYTES_MAPPED] += size
        H[h, L.H_STATE] = L.HS_MAPPED
        H[h, L.H_SIZE] = size
    elif o == OP_UNMAP:
        return _end_mapping(S, h, size)[0]
    else:
        if st == L.HS_NONE:
            return L.ST_ACCESS_UNKNOWN
        S.C[L.C_ACCESSES] += 1
        S.C[L.C_BYTES_ACCESSED] += size
        if st == L.HS_UNMAPPED:
            S.C[L.C_LATE_ACCESSES] += 1
    return L.ST_DONE


@njit(cache=True, inline="always")
def _unmap(S, d, cpu, h, size):
    H = S.H
    rc, st = _end_mapping(S, h, size)
    if rc != L.ST_DONE or st == L.HS_FAILED:
        return rc
    base = H[h, L.H_BASE]
    queued = S.P[L.P_FLUSH] != L.FLUSH_STRICT
    g = S.gather
    if H[h, L.H_API]:
        _unmap_api(S, d, h)
        return L.ST_DONE
    flush.gather_init(g)
    it = _unmap_range(S, d, base, H[h, L.H_LEN], queued, g)
    if not queued:
        flush.iotlb_sync_inline(S, d, g)
        if H[h, L.H_NODE] != -1:
            iova.free_iova_fast(S, d, cpu, H[h, L.H_NODE], base >> S.P[L.P_GRANULE_SHIFT],
                                H[h, L.H_PAGES])
        return L.ST_DONE
    npages = (it - base) >> 12  # with any superpage widening
    iotlb.range_apply(S, d, base >> 12, npages, 1)
    S.D[d, L.D_PEND_PAGES] += npages
    S.D[d, L.D_PEND_PAGETS] += npages * S.G[L.G_NOW]
    flush.queue_iova(S, d, cpu, H[h, L.H_NODE], base >> S.P[L.P_GRANULE_SHIFT], H[h, L.H_PAGES], g)
    return L.ST_DONE


@njit(cache=True, inline="always")
def _access(S, d, h, iova_abs, offset, size, one_pass, counted=False):
    """A device access, page by page; one_pass: through translate_sizes()
    (a one-pass size sweep), a constant where the loops inline it, so each
    loop compiles only its own translation; counted: the caller counts the
    access and its bytes."""
    if not counted:
        S.C[L.C_ACCESSES] += 1
        S.C[L.C_BYTES_ACCESSED] += size
    if h != NO_HANDLE:
        st = S.H[h, L.H_STATE]
        if st == L.HS_NONE:
            return L.ST_ACCESS_UNKNOWN
        if st == L.HS_UNMAPPED:
            S.C[L.C_LATE_ACCESSES] += 1
        addr = S.H[h, L.H_DMA] + offset
    else:
        addr = iova_abs
    gs = S.P[L.P_GRANULE_SHIFT]
    for page in range(addr >> gs, ((addr + size - 1) >> gs) + 1):
        if not one_pass:
            translate.translate(S, d, page << (gs - 12))
        elif not translate.translate_sizes(S, d, page << (gs - 12)):
            return L.ST_DIVERGED
    return L.ST_DONE


@njit(cache=True, inline="always")
def _accesses(S, ts_, op, cpu, device, handle, iova_, paddr, size, offset, flags, i, dev, d, one_pass):
    ncpu = S.P[L.P_NCPU]
    nh = S.H.shape[0]
    nxt = S.G[L.G_NEXT_TIMER]
    last = S.G[L.G_LAST_TS]
    n = len(op)
    st = L.ST_DONE
    start = i
    nbytes = 0
    while i < n:
        prefetch.other_handle_row(S.H, handle, i)
        t = np.int64(ts_[i])
        if op[i] != ts.OP_ACCESS or device[i] != dev or t >= nxt:
            break
        if not checks.row_ok(ts_, op, cpu, handle, iova_, paddr, size, offset, flags, i, last, ncpu):
            break
        h = np.int64(handle[i])
        if h != NO_HANDLE and h >= nh:
            break
        last = t
        nbytes += np.int64(size[i])
        st = _access(S, d, h, np.int64(iova_[i]), np.int64(offset[i]), np.int64(size[i]), one_pass, True)
        if st != L.ST_DONE:
            break
        i += 1
    S.G[L.G_NOW] = last
    S.G[L.G_LAST_TS] = last
    taken = i - start + (st != L.ST_DONE)
    S.C[L.C_EVENTS] += taken
    S.C[L.C_ACCESSES] += taken
    S.C[L.C_BYTES_ACCESSED] += nbytes
    return st, i


@njit(cache=True)
def _access_run(S, ts_, op, cpu, device, handle, iova_, paddr, size, offset, flags, i, dev, d):
    """Rows i.. while they are valid accesses by device dev (domain d, set
    up) with no timer due: a device's stream of DMA without run_batch's
    per-event dispatch. Accesses allocate nothing, so no pool can run low.
    A row that may break a rule is left to run_batch, whose check() names
    the rule. Returns (status, first row not taken); run_batch takes that
    row. The run's accesses and bytes are counted once, at its end, and a
    handle row is prefetched only when the row ahead names another handle:
    on a zipf stream over one 256 KiB buffer the two took the build
    machine from 38-39 to 47 M accesses/s (benchmarks.ab, interleaved),
    nic-rx unchanged."""
    if S.grid.shape[0]:
        return _accesses(S, ts_, op, cpu, device, handle, iova_, paddr, size, offset, flags, i, dev, d, True)
    return _accesses(S, ts_, op, cpu, device, handle, iova_, paddr, size, offset, flags, i, dev, d, False)


@njit(cache=True, inline="always")
def _tables_needed(S, length, align):
    """Upper bound on tables one map (and its superpage switches) allocates.
    A level's tables hang under the entries of the level above; where those
    entries can be leaves (a page size of their span, and the map's iova |
    paddr in align aligned to it), iommu_pgsize() makes them leaves up to the
    map's tail, so the map needs this level's tables only there."""
    n = 1
    for level in range(2, S.P[L.P_LEVELS] + 1):
        shift = 12 + S.P[L.P_LVL_PSHIFT + level]
        span = np.int64(1) << shift
        if S.P[L.P_PGSIZE_BITMAP] & span and align & (span - 1) == 0:
            n += 2
        else:
            n += (length >> shift) + 2
    return n


@njit(cache=True)
def run_batch(S, ts_, op, cpu, device, handle, iova_, paddr, size, offset, flags, start,
              dev_keys, dev_dom):
    """Process rows start.. of a batch; returns (status, row). Each row is
    checked against the trace contract first; devices map to domains through
    the sorted dev_keys/dev_dom (a new device stops the loop)."""
    ncpu = S.P[L.P_NCPU]
    last_dev = np.int64(-1)
    d = -1
    gsize = 1 << S.P[L.P_GRANULE_SHIFT]
    passthrough = S.P[L.P_FLUSH] == L.FLUSH_PASSTHROUGH
    i = start
    while i < len(op):
        prefetch.handle_row(S.H, handle, i)
        if not checks.row_ok(ts_, op, cpu, handle, iova_, paddr, size, offset, flags, i,
                             S.G[L.G_LAST_TS], ncpu):
            return L.ST_BAD + checks.check(ts_, op, cpu, handle, iova_, paddr, size, offset, flags, i,
                                           S.G[L.G_LAST_TS], ncpu), i
        o = op[i]
        e = i  # last row of the event: a scatterlist spans rows i..e
        need = 1
        if o == OP_MAP:
            sg = flags[i] & FLAG_SG_MORE  # a list's later segments sit at offsets of its IOVA
            need = _tables_needed(S, size[i] + gsize, 1 if sg else (iova_[i] | paddr[i]) & -gsize)
            if sg:
                e, bad = checks.sg_end(ts_, op, cpu, device, handle, iova_, size, flags, i)
                if bad >= 0:
                    return L.ST_BAD + bad, e
                for j in range(i + 1, e + 1):
                    bad = checks.check(ts_, op, cpu, handle, iova_, paddr, size, offset, flags,
                                       j, S.G[L.G_LAST_TS], ncpu)
                    if bad >= 0:
                        return L.ST_BAD + bad, j
                    need += _tables_needed(S, size[j] + gsize, 1)
        if np.int64(device[i]) != last_dev:
            k = np.searchsorted(dev_keys, device[i])
            if k == len(dev_keys) or dev_keys[k] != device[i]:
                return L.ST_NEW_DEVICE, i
            last_dev = np.int64(device[i])
            d = dev_dom[k]
        if handle[i] != NO_HANDLE and handle[i] >= S.H.shape[0]:
            return L.ST_GROW_HANDLES, i
        if S.D[d, L.D_READY] == 0:
            need += S.P[L.P_INIT_TABLES] * S.P[L.P_HW_DOMAINS]
        if o == OP_MAP:
            need *= S.P[L.P_HW_DOMAINS]
        need += S.P[L.P_LEVELS]
        if S.G[L.G_PT_FREE] < need or S.G[L.G_NODE_FREE] < 4 or S.G[L.G_MAG_FREE] < S.P[L.P_MAG_MARGIN]:
            S.G[L.G_PT_NEED] = need
            return L.ST_GROW, i
        t = np.int64(ts_[i])
        if t >= S.G[L.G_NEXT_TIMER]:
            _fire_timers(S, t)
        S.G[L.G_NOW] = t
        S.G[L.G_LAST_TS] = t
        if S.D[d, L.D_READY] == 0:
            _init_domains(S, d)
        S.C[L.C_EVENTS] += e - i + 1
        h = np.int64(handle[i])
        c = np.int64(cpu[i])
        f = np.int64(flags[i])
        if passthrough:
            total = np.int64(0)
            for j in range(i, e + 1):
                total += np.int64(size[j])
            st = _identity(S, o, h, total)
            if e > i:
                S.C[L.C_SG_SEGMENTS] += e - i + 1
        elif e > i:
            st = _map_sg(S, d, c, h, i, e, iova_, paddr, size, f)
        elif o == OP_MAP:
            st = _map(S, d, c, h, np.int64(iova_[i]), np.int64(paddr[i]), np.int64(size[i]), f)
        elif o == OP_UNMAP:
            st = _unmap(S, d, c, h, np.int64(size[i]))
        else:
            st = _access(S, d, h, np.int64(iova_[i]), np.int64(offset[i]), np.int64(size[i]),
                         S.grid.shape[0] != 0)
        if st != L.ST_DONE:
            return st, i
        i = e + 1
        if (o == ts.OP_ACCESS and not passthrough and i + 1 < len(op) and op[i] == ts.OP_ACCESS
                and op[i + 1] == ts.OP_ACCESS and device[i] == device[i - 1]):
            st, i = _access_run(S, ts_, op, cpu, device, handle, iova_, paddr, size, offset, flags, i,
                                device[i - 1], d)
            if st != L.ST_DONE:
                return st, i
    return L.ST_DONE, len(op)
