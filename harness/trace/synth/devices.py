"""Accelerator, virtual machine and uniform/zipf workloads: long-lived
mappings and a stream of device accesses."""

import numpy as np

from harness.trace import schema as ts
from harness.trace.synth.common import (CHUNK, PAGE, Param, Stream, cat, check_at_least, check_span,
                                        check_positive, device_id, events, fail, frames,
                                        parse_size, ranks, workload, zipf_cdf)
from harness.trace.writer import TraceWriter

TO, FROM, BIDI, MORE, API, BLOCKING = (ts.FLAG_TO_DEVICE, ts.FLAG_FROM_DEVICE,
                                       ts.FLAG_BIDIRECTIONAL, ts.FLAG_SG_MORE,
                                       ts.FLAG_IOMMU_API, ts.FLAG_GFP_BLOCKING)
GIB = 1 << 30


def _directions(rng, n, write_fraction):
    return np.where(rng.random(n) < write_fraction, FROM, TO)


@workload("gpu",
          Param("buffers", 8, "Buffers (GEM objects) mapped at start and kept."),
          Param("buffer_size", "256M", "Bytes per buffer."),
          Param("page_size", "2M", "Backing pages: 2M or 1G, naturally aligned, one sg segment each."),
          Param("accesses", 1_000_000, "Device accesses."),
          Param("access_size", "64K", "Bytes per access."),
          Param("pattern", "stream", "stream (sequential sweep) | strided | random."),
          Param("stride", "2M", "strided: bytes between consecutive accesses."),
          Param("write_fraction", 0.5, "Fraction of accesses that write memory."),
          Param("rate", 10_000_000.0, "Accesses per second."),
          Param("device", "0x0400", "PCI requester id."))
def gpu(path, buffers=8, buffer_size="256M", page_size="2M", accesses=1_000_000,
        access_size="64K", pattern="stream", stride="2M", write_fraction=0.5,
        rate=10_000_000.0, device="0x0400", seed=1):
    """GPU: large long-lived buffers on 2M/1G pages, then streaming, strided or random accesses.

    Each buffer is a scatterlist of naturally aligned huge pages at random
    physical addresses (dma_map_sgtable of a GEM object's pages), mapped at
    start in process context and unmapped after the last access. Accesses of
    `access_size` bytes sweep all buffers in order (stream), jump by `stride`
    (strided), or land at random aligned positions (random).
    """
    kind = "gpu"
    dev = device_id(device)
    bsize, page = parse_size(buffer_size, "--buffer-size"), parse_size(page_size, "--page-size")
    asize, step = parse_size(access_size, "--access-size"), parse_size(stride, "--stride")
    check_positive(kind, buffers=buffers, buffer_size=bsize, accesses=accesses,
                   access_size=asize, rate=rate, stride=step)
    if page not in (2 << 20, GIB):
        fail(kind, f"--page-size {page_size}: expected 2M or 1G")
    if bsize % page or asize > min(bsize, GIB) or bsize // page > 4096:
        fail(kind, f"--buffer-size {buffer_size}: expected a multiple of the page size, at most "
                   "4096 pages, holding one access")
    if pattern not in ("stream", "strided", "random"):
        fail(kind, f"--pattern {pattern}: expected stream, strided or random")
    params = dict(buffers=buffers, buffer_size=bsize, page_size=page, accesses=accesses,
                  access_size=asize, pattern=pattern, stride=step,
                  write_fraction=write_fraction, rate=rate, device=dev)
    rng = np.random.default_rng(seed)
    pages = bsize // page
    total = buffers * bsize
    gap = 1e9 / rate
    check_span(kind, accesses * gap)
    with TraceWriter(path, 1, {"generator": kind, "params": params, "seed": seed}) as w:
        out = Stream(w)
        h = np.repeat(np.arange(buffers), pages)
        more = np.where(np.tile(np.arange(pages), buffers) < pages - 1, MORE, 0)
        out.push(events(np.zeros(len(h)), ts.OP_MAP, h, page, device=dev,
                        paddr=frames(rng, len(h), page, align=page, below=1 << 44),
                        flags=BIDI | more))
        slots = (bsize - asize) // asize + 1  # aligned access positions per buffer
        for k0 in range(0, accesses, CHUNK):
            k = np.arange(k0, min(accesses, k0 + CHUNK), dtype=np.int64)
            if pattern == "random":
                buf = rng.integers(0, buffers, len(k))
                off = rng.integers(0, slots, len(k)) * asize
            else:
                pos = (k * (asize if pattern == "stream" else step)) % total
                buf, off = pos // bsize, np.minimum(pos % bsize, bsize - asize)
            t = np.round(k * gap).astype(np.int64) + 1
            horizon = None if k0 + CHUNK >= accesses else np.round((k[-1] + 1) * gap) + 1
            out.push(events(t, ts.OP_ACCESS, buf, asize, device=dev, offset=off,
                            flags=_directions(rng, len(k), write_fraction)), horizon)
        t_end = round(accesses * gap) + 2
        out.push(events(np.full(buffers, t_end), ts.OP_UNMAP, np.arange(buffers), bsize,
                        device=dev, flags=BIDI))
        out.close()
        return w.rows


@workload("vfio-guest",
          Param("guest_ram", "4G", "Guest RAM bytes (below 4G up to ram_below_4g, the rest from 4G)."),
          Param("ram_below_4g", "2G", "Guest RAM under the 4 GiB PCI hole."),
          Param("backing", "2M", "Host backing pages: 4K, 2M (THP) or 1G (hugetlbfs)."),
          Param("accesses", 1_000_000, "Device accesses (DMA to guest buffers)."),
          Param("access_size", 2048, "Bytes per access, within one guest page."),
          Param("alpha", 0.8, "Zipf exponent over guest pages (0: uniform)."),
          Param("rate", 5_000_000.0, "Accesses per second."),
          Param("write_fraction", 0.5, "Fraction of accesses that write guest memory."),
          Param("balloon", 0.0, "Fraction of guest RAM the balloon may take; the guest never DMAs there."),
          Param("balloon_events", 0, "Balloon inflate/deflate cycles: unmap a backing run, remap it later."),
          Param("balloon_ns", 1_000_000, "Time a ballooned run stays unmapped."),
          Param("device", "0x0500", "PCI requester id of the assigned device."))
def vfio_guest(path, guest_ram="4G", ram_below_4g="2G", backing="2M", accesses=1_000_000,
               access_size=2048, alpha=0.8, rate=5_000_000.0, write_fraction=0.5, balloon=0.0,
               balloon_events=0, balloon_ns=1_000_000, device="0x0500", seed=1):
    """VFIO guest: guest RAM mapped once through the IOMMU API, device accesses, occasional balloon unmaps.

    QEMU maps every RAM region with VFIO_IOMMU_MAP_DMA at start: vfio type1
    (drivers/vfio/vfio_iommu_type1.c, vfio_pin_map_dma) pins the pages and
    calls iommu_map() once per physically contiguous run of the backing, the
    IOVA being the guest physical address, with GFP_KERNEL_ACCOUNT (process
    context, charged to the VM's memory cgroup). The assigned device then DMAs
    to guest pages (zipf over a random permutation of pages, outside the
    balloon). Balloon cycles unmap one run (VFIO_IOMMU_UNMAP_DMA) and map it
    again `balloon_ns` later.
    """
    kind = "vfio-guest"
    dev = device_id(device)
    ram, low = parse_size(guest_ram, "--guest-ram"), parse_size(ram_below_4g, "--ram-below-4g")
    run = parse_size(backing, "--backing")
    check_positive(kind, guest_ram=ram, accesses=accesses, access_size=access_size, rate=rate,
                   balloon_ns=balloon_ns)
    check_at_least(kind, 0, balloon_events=balloon_events)
    if run not in (PAGE, 2 << 20, GIB):
        fail(kind, f"--backing {backing}: expected 4K, 2M or 1G")
    if ram % run or low % run or low > 3 * GIB:
        fail(kind, f"--guest-ram {guest_ram} / --ram-below-4g {ram_below_4g}: expected multiples "
                   "of the backing page, at most 3G below 4G")
    if ram // run > 1 << 22:
        fail(kind, f"{ram // run} backing runs: expected at most 4M (use larger --backing)")
    if access_size > PAGE or not 0 <= balloon < 1 or alpha < 0:
        fail(kind, "--access-size at most 4096, --balloon within 0..1, --alpha >= 0")
    params = dict(guest_ram=ram, ram_below_4g=low, backing=run, accesses=accesses,
                  access_size=access_size, alpha=alpha, rate=rate, write_fraction=write_fraction,
                  balloon=balloon, balloon_events=balloon_events, balloon_ns=balloon_ns,
                  device=dev)
    rng = np.random.default_rng(seed)
    nruns = ram // run
    gpa = np.arange(nruns, dtype=np.int64) * run
    gpa[gpa >= min(low, ram)] += 4 * GIB - min(low, ram)  # RAM above the PCI hole
    hpa = frames(rng, nruns, run, align=run, below=1 << 46)
    map_flags = API | BLOCKING | BIDI
    gap = 1e9 / rate
    check_span(kind, accesses * gap + balloon_events * (balloon_ns + 1))
    span = round(accesses * gap)
    usable = nruns - int(nruns * balloon)
    if balloon_events and usable == nruns:
        fail(kind, "--balloon-events need --balloon > 0 (a region the guest gave up)")
    with TraceWriter(path, 1, {"generator": kind, "params": params, "seed": seed}) as w:
        out = Stream(w)
        h = np.arange(nruns, dtype=np.int64)
        out.push(events(np.zeros(nruns), ts.OP_MAP, h, run, device=dev, iova=gpa, paddr=hpa,
                        flags=map_flags))
        if balloon_events:
            victim = rng.choice(np.arange(usable, nruns), balloon_events)
            t0 = np.sort(rng.integers(1, max(2, span), balloon_events))
            # a run is unmapped once at a time: cycles on the same run are spaced apart
            t0 = t0 + np.arange(balloon_events) * (balloon_ns + 1)
            bal = cat(events(t0, ts.OP_UNMAP, victim, run, device=dev, flags=map_flags, phase=1),
                      events(t0 + balloon_ns, ts.OP_MAP, victim, run, device=dev, iova=gpa[victim],
                             paddr=hpa[victim], flags=map_flags, phase=1))
            order = np.argsort(bal["ts"], kind="stable")
            bal = {k: v if np.ndim(v) == 0 else v[order] for k, v in bal.items()}
        else:
            bal = None
        gpages = usable * (run // PAGE)
        perm = rng.permutation(gpages) if gpages <= 1 << 24 else None
        cdf = zipf_cdf(min(gpages, 1 << 24), alpha) if alpha else None
        bal_at = 0
        for k0 in range(0, accesses, CHUNK):
            k = np.arange(k0, min(accesses, k0 + CHUNK), dtype=np.int64)
            if cdf is not None:
                rank = ranks(cdf, rng.random(len(k)))
                page = perm[rank] if perm is not None else rank
            else:
                page = rng.integers(0, gpages, len(k))
            ppr = run // PAGE
            addr = gpa[page // ppr] + page % ppr * PAGE + \
                rng.integers(0, (PAGE - access_size) // 64 + 1, len(k)) * 64
            t = np.round(k * gap).astype(np.int64) + 1
            last = k0 + CHUNK >= accesses
            horizon = None if last else int(np.round((k[-1] + 1) * gap) + 1)
            ev = events(t, ts.OP_ACCESS, ts.NO_HANDLE, access_size, device=dev, iova=addr,
                        flags=_directions(rng, len(k), write_fraction))
            if bal is not None:
                upto = len(bal["ts"]) if last else int(np.searchsorted(bal["ts"], horizon))
                ev = cat(ev, {c: v if np.ndim(v) == 0 else v[bal_at:upto] for c, v in bal.items()})
                bal_at = upto
            out.push(ev, horizon)
        out.close()
        return w.rows


@workload("dma-map-benchmark",
          Param("threads", 1, "Benchmark kthreads (-t); thread i runs on CPU i % num_cpus."),
          Param("loops", 100_000, "map/unmap pairs per thread."),
          Param("granule", 1, "Pages per mapping (-g); in sg mode, single-page sg entries."),
          Param("dir", 0, "Direction (-d): 0 BIDIRECTIONAL, 1 TO_DEVICE, 2 FROM_DEVICE."),
          Param("mode", "single", "single (dma_map_single) | sg (dma_map_sg, -m 1)."),
          Param("delay_ns", 0, "Transmit delay between map and unmap (-x, dma_trans_ns)."),
          Param("loop_ns", 1000, "Nominal time of one loop besides the delay (timestamps only)."),
          Param("num_cpus", 0, "CPUs (0: one per thread)."),
          Param("device", "0x0600", "PCI requester id."))
def dma_map_benchmark(path, threads=1, loops=100_000, granule=1, dir=0, mode="single",
                      delay_ns=0, loop_ns=1000, num_cpus=0, device="0x0600", seed=1):
    """The kernel's dma_map_benchmark loop: per thread map, delay, unmap of one buffer, repeated.

    kernel/dma/map_benchmark.c: each kthread allocates its buffer once
    (alloc_pages_exact of granule pages; in sg mode granule single pages) and
    loops dma_map_single (or dma_map_sg), ndelay(dma_trans_ns),
    dma_unmap_single, in process context, with no device access. Threads are
    interleaved in time; compare the modelled cost with the tool's
    "average map latency(us)" lines.
    """
    kind = "dma-map-benchmark"
    num_cpus = num_cpus or threads
    dev = device_id(device)
    check_positive(kind, threads=threads, loops=loops, granule=granule, num_cpus=num_cpus)
    check_at_least(kind, 2, loop_ns=loop_ns)  # the unmap comes loop_ns / 2 after the map
    check_at_least(kind, 0, delay_ns=delay_ns)
    if threads > 1024 or granule > 1024:
        fail(kind, "--threads and --granule: expected at most 1024 (DMA_MAP_MAX_THREADS, 1024 pages)")
    if dir not in (0, 1, 2):
        fail(kind, f"--dir {dir}: expected 0, 1 or 2")
    if mode not in ("single", "sg"):
        fail(kind, f"--mode {mode}: expected single or sg")
    params = dict(threads=threads, loops=loops, granule=granule, dir=dir, mode=mode,
                  delay_ns=delay_ns, loop_ns=loop_ns, num_cpus=num_cpus, device=dev)
    rng = np.random.default_rng(seed)
    flags = (BIDI, TO, FROM)[dir]
    nseg = granule if mode == "sg" else 1
    seg_size = PAGE if mode == "sg" else granule * PAGE
    # each thread's buffer: one block (single) or granule separate pages (sg)
    paddr = frames(rng, threads * nseg, seg_size).reshape(threads, nseg)
    period = loop_ns + delay_ns
    check_span(kind, loops * period)
    th = np.arange(threads, dtype=np.int64)
    skew = th * period // threads
    more = np.where(np.arange(nseg) < nseg - 1, MORE, 0)
    per_chunk = max(1, CHUNK // threads // (nseg + 1))
    with TraceWriter(path, num_cpus, {"generator": kind, "params": params, "seed": seed}) as w:
        out = Stream(w)
        for i0 in range(0, loops, per_chunk):
            i = np.arange(i0, min(loops, i0 + per_chunk), dtype=np.int64)
            t_map = (i[:, None] * period + skew[None, :]).ravel() + 1  # loop-major, then thread
            thr = np.tile(th, len(i))
            rep = lambda a: np.repeat(a, nseg)  # noqa: E731
            ev = cat(events(rep(t_map), ts.OP_MAP, rep(thr), seg_size, cpu=rep(thr % num_cpus),
                            device=dev, paddr=paddr[thr].ravel(), flags=flags | np.tile(more, len(thr)),
                            phase=1),
                     events(t_map + loop_ns // 2 + delay_ns, ts.OP_UNMAP, thr, seg_size * nseg,
                            cpu=thr % num_cpus, device=dev, flags=flags, phase=0))
            horizon = None if i0 + per_chunk >= loops else (i[-1] + 1) * period + 1
            out.push(ev, horizon)
        out.close()
        return w.rows


@workload("random",
          Param("footprint", "64M", "Bytes mapped at start."),
          Param("map_size", "2M", "Bytes per mapping (the footprint is mapped in pieces)."),
          Param("accesses", 1_000_000, "Device accesses."),
          Param("access_size", 64, "Bytes per access (within one mapping)."),
          Param("distribution", "zipf", "uniform | zipf over the footprint's pages."),
          Param("alpha", 0.9, "Zipf exponent."),
          Param("rate", 10_000_000.0, "Accesses per second."),
          Param("api", "dma", "dma (DMA API, allocated IOVAs) | iommu (IOMMU API at fixed IOVAs)."),
          Param("device", "0x0700", "PCI requester id."))
def random_access(path, footprint="64M", map_size="2M", accesses=1_000_000, access_size=64,
                  distribution="zipf", alpha=0.9, rate=10_000_000.0, api="dma",
                  device="0x0700", seed=1):
    """Random accesses: a mapped footprint, then uniform or zipf accesses over its pages.

    The footprint is mapped at start in map_size pieces at random page-aligned
    physical addresses; then each access picks a 4 KiB page (uniformly or by
    Zipf rank over a random permutation of pages, so hot pages are scattered)
    and a random 64-byte-aligned offset within it.
    """
    kind = "random"
    dev = device_id(device)
    foot, msize = parse_size(footprint, "--footprint"), parse_size(map_size, "--map-size")
    check_positive(kind, footprint=foot, map_size=msize, accesses=accesses,
                   access_size=access_size, rate=rate)
    if msize % PAGE or foot % msize or access_size > PAGE:
        fail(kind, "--map-size a multiple of 4K dividing --footprint; --access-size at most 4096")
    if distribution not in ("uniform", "zipf") or api not in ("dma", "iommu"):
        fail(kind, f"--distribution {distribution} / --api {api}: expected uniform|zipf, dma|iommu")
    if foot // PAGE > 1 << 26:
        fail(kind, f"--footprint {footprint}: expected at most 256G")
    params = dict(footprint=foot, map_size=msize, accesses=accesses, access_size=access_size,
                  distribution=distribution, alpha=alpha, rate=rate, api=api, device=dev)
    rng = np.random.default_rng(seed)
    nmaps = foot // msize
    ppm = msize // PAGE
    gap = 1e9 / rate
    check_span(kind, accesses * gap)
    with TraceWriter(path, 1, {"generator": kind, "params": params, "seed": seed}) as w:
        out = Stream(w)
        h = np.arange(nmaps, dtype=np.int64)
        base = 1 << 32  # IOMMU API: mappings laid out from 4 GiB
        align = 1 << (msize - 1).bit_length()
        out.push(events(np.zeros(nmaps), ts.OP_MAP, h, msize, device=dev,
                        iova=base + h * align if api == "iommu" else 0,
                        paddr=frames(rng, nmaps, PAGE, below=1 << 40),
                        flags=BIDI | (API | BLOCKING if api == "iommu" else 0)))
        npages = foot // PAGE
        perm = rng.permutation(npages)
        cdf = zipf_cdf(npages, alpha) if distribution == "zipf" else None
        for k0 in range(0, accesses, CHUNK):
            n = min(CHUNK, accesses - k0)
            page = perm[ranks(cdf, rng.random(n))] if cdf is not None else \
                rng.integers(0, npages, n)
            off = page % ppm * PAGE + rng.integers(0, (PAGE - access_size) // 64 + 1, n) * 64
            t = np.round(np.arange(k0, k0 + n) * gap).astype(np.int64) + 1
            horizon = None if k0 + n >= accesses else np.round((k0 + n) * gap) + 1
            out.push(events(t, ts.OP_ACCESS, page // ppm, access_size, device=dev, offset=off,
                            flags=FROM), horizon)
        out.close()
        return w.rows
