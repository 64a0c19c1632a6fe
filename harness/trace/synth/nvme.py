"""NVMe I/O: drivers/nvme/host/pci.c (v6.12) nvme_map_data().

A request of one physical segment that fits two controller pages is mapped
with dma_map_bvec (nvme_setup_prp_simple / nvme_setup_sgl_simple); any other
is mapped as a scatterlist (dma_map_sgtable) and described to the device by a
PRP list (8 bytes per controller page after the first, when more than two)
or, with SGLs for requests of at least sgl_threshold bytes, by SGL
descriptors (16 bytes per segment), both from a per-queue dma_pool of
coherent memory mapped at probe time, like the submission (64-byte entries)
and completion (16-byte entries) rings.
"""

import numpy as np

from harness.trace import schema as ts
from harness.trace.synth.common import (CHUNK, PAGE, Param, Stream, cat, check_at_least, check_span,
                                        check_positive, device_id, events, fail, frames, parse_mix,
                                        parse_size, workload)
from harness.trace.writer import TraceWriter

HUGE = 2 << 20
SQE, CQE, PRP_ENTRY, SGL_DESC = 64, 16, 8, 16
TO, FROM, BIDI, ATOMIC, MORE = (ts.FLAG_TO_DEVICE, ts.FLAG_FROM_DEVICE, ts.FLAG_BIDIRECTIONAL,
                                ts.FLAG_ATOMIC, ts.FLAG_SG_MORE)


@workload("nvme",
          Param("ios", 100_000, "I/O requests."),
          Param("queues", 2, "I/O queues; queue q runs on CPU q % num_cpus."),
          Param("qd", 32, "Queue depth: outstanding requests (tags) per queue."),
          Param("iops", 200_000.0, "Requests per second over all queues."),
          Param("latency_ns", 80_000, "Submission to completion (unmap)."),
          Param("sizes", "4K:60,16K:15,128K:15,1M:10", "I/O size mix size:weight, 4K..1M."),
          Param("read_fraction", 0.7, "Fraction of reads (the device writes memory)."),
          Param("pattern", "random", "random | sequential placement of I/O buffers in the footprint."),
          Param("footprint", "1G", "Bytes of host memory the I/O buffers come from."),
          Param("huge_pages", False, "Buffers backed by 2 MiB pages (fewer, longer segments)."),
          Param("sgl", False, "The controller supports SGLs: used for requests >= sgl_threshold."),
          Param("sgl_threshold", 32768, "nvme.sgl_threshold: smallest request described by SGLs."),
          Param("max_segments", 128, "Segments per request (NVME_MAX_SEGS); larger I/Os are split."),
          Param("num_cpus", 0, "CPUs (0: one per queue)."),
          Param("device", "0x0100", "PCI requester id."))
def nvme(path, ios=100_000, queues=2, qd=32, iops=200_000.0, latency_ns=80_000,
         sizes="4K:60,16K:15,128K:15,1M:10", read_fraction=0.7, pattern="random", footprint="1G",
         huge_pages=False, sgl=False, sgl_threshold=32768, max_segments=128, num_cpus=0,
         device="0x0100", seed=1):
    """NVMe: per request a map (single or scatterlist), device reads of the SQ entry and PRP/SGL list, data transfer, completion and unmap.

    I/Os are submitted round-robin over queues at `iops` (blk-mq queue_rq:
    atomic context) with sizes from the `sizes` mix; an I/O larger than
    max_segments pages is split into requests of that size. Buffers are 4 KiB
    pages (or 2 MiB pages with huge_pages) of a `footprint`-byte region, at
    random or sequential positions. Physically contiguous pages merge into
    one segment. The device reads the SQ entry and the PRP/SGL list, moves
    the data (one access per segment; offsets follow the list's layout for a
    4 KiB granule), writes the CQ entry; the completion IRQ unmaps.
    """
    kind = "nvme"
    num_cpus = num_cpus or queues
    dev = device_id(device)
    foot = parse_size(footprint, "--footprint")
    size_set, weights = parse_mix(sizes, "--sizes")
    check_positive(kind, ios=ios, queues=queues, qd=qd, iops=iops, num_cpus=num_cpus,
                   max_segments=max_segments, footprint=foot)
    if (size_set % PAGE).any() or size_set.max() > 64 << 20:
        fail(kind, f"--sizes {sizes}: expected multiples of 4K up to 64M")
    if pattern not in ("random", "sequential"):
        fail(kind, f"--pattern {pattern}: expected random or sequential")
    if not 0 <= read_fraction <= 1:
        fail(kind, f"--read-fraction {read_fraction}: expected 0..1")
    max_req = max_segments * PAGE
    if foot < max(size_set.max(), HUGE if huge_pages else PAGE) or foot % PAGE:
        fail(kind, f"--footprint {footprint}: expected a multiple of 4K holding the largest I/O")
    check_at_least(kind, 2, latency_ns=latency_ns)  # the data moves between submission and completion
    gap = 1e9 / iops
    check_span(kind, ios * gap + latency_ns)
    if latency_ns >= qd * queues * gap - 1:
        fail(kind, f"completion latency {latency_ns} ns is longer than a queue wrap "
                   f"({qd * queues * gap:.0f} ns): raise --qd or lower --iops")
    params = dict(ios=ios, queues=queues, qd=qd, iops=iops, latency_ns=latency_ns, sizes=sizes,
                  read_fraction=read_fraction, pattern=pattern, footprint=foot,
                  huge_pages=huge_pages, sgl=sgl, sgl_threshold=sgl_threshold,
                  max_segments=max_segments, num_cpus=num_cpus, device=dev)
    rng = np.random.default_rng(seed)
    npages = foot // PAGE
    if huge_pages:  # 2 MiB frames, contiguous inside
        huge = frames(rng, -(-npages // 512), HUGE, align=HUGE, below=1 << 40)
        pfn = (huge[np.arange(npages) // 512] >> 12) + np.arange(npages) % 512
    else:
        pfn = frames(rng, npages, PAGE, below=1 << 40) >> 12
    ntags = queues * qd
    # handles: data mappings by tag, then per queue its SQ, CQ and descriptor pool
    sq_h, cq_h, pool_h = ntags + np.arange(queues), ntags + queues + np.arange(queues), \
        ntags + 2 * queues + np.arange(queues)
    with TraceWriter(path, num_cpus, {"generator": kind, "params": params, "seed": seed}) as w:
        out = Stream(w)
        qcpu = np.arange(queues) % num_cpus
        out.push(cat(*(events(np.zeros(queues), ts.OP_MAP, h, size, cpu=qcpu, device=dev,
                              paddr=frames(rng, queues, size), flags=BIDI)
                       for h, size in ((sq_h, qd * SQE), (cq_h, qd * CQE), (pool_h, qd * PAGE)))))
        pos = 0
        done = 0
        while done < ios:
            io_size = rng.choice(size_set, size=min(CHUNK // 32, ios - done), p=weights)
            # the block layer splits an I/O into requests of at most max_req bytes
            parts = -(-io_size // max_req)
            req_size = np.minimum(np.repeat(io_size, parts), max_req)
            req_size[np.cumsum(parts) - 1] = io_size - (parts - 1) * max_req
            nreq = min(len(req_size), ios - done)
            req_size = req_size[:nreq]
            if pattern == "random":
                start_pg = rng.integers(0, npages - req_size // PAGE + 1)
            else:
                off = pos + np.cumsum(req_size) - req_size
                start_pg = (off % foot) // PAGE
                wrap = start_pg + req_size // PAGE > npages
                start_pg[wrap] = 0
                pos = int(off[-1] + req_size[-1]) % foot
            k = done + np.arange(nreq, dtype=np.int64)
            q = k % queues
            tag = q * qd + (k // queues) % qd
            cpu = q % num_cpus
            t_sub = np.round(k * gap).astype(np.int64) + 1
            t_done = t_sub + latency_ns
            read = rng.random(nreq) < read_fraction
            dirf = np.where(read, FROM, TO)
            # pages of every request, merged into physically contiguous segments
            pages = req_size // PAGE
            req_of = np.repeat(np.arange(nreq), pages)
            first = np.cumsum(pages) - pages
            page_pfn = pfn[start_pg[req_of] + np.arange(len(req_of)) - first[req_of]]
            new_seg = np.ones(len(req_of), bool)
            new_seg[1:] = (page_pfn[1:] != page_pfn[:-1] + 1) | (req_of[1:] != req_of[:-1])
            seg_req = req_of[new_seg]
            seg_start = np.flatnonzero(new_seg)
            seg_pages = np.diff(np.append(seg_start, len(req_of)))
            seg_paddr = page_pfn[new_seg] << 12
            seg_size = seg_pages * PAGE
            nseg = np.bincount(seg_req, minlength=nreq)
            seg_first = np.cumsum(nseg) - nseg
            last = np.zeros(len(seg_req), bool)
            last[seg_first + nseg - 1] = True
            before = np.cumsum(seg_size) - seg_size
            seg_off = before - before[seg_first][seg_req]  # from the request's DMA address
            r = seg_req
            ev = [events(t_sub[r], ts.OP_MAP, tag[r], seg_size, cpu=cpu[r], device=dev,
                         paddr=seg_paddr, flags=dirf[r] | ATOMIC | np.where(last, 0, MORE), phase=1),
                  events(t_sub, ts.OP_ACCESS, sq_h[q], SQE, device=dev, offset=(tag - q * qd) * SQE,
                         flags=TO, phase=2)]
            # descriptor lists: PRP for more than two pages, SGL (when used) for several segments
            use_sgl = sgl & (req_size >= sgl_threshold)
            desc = np.where(use_sgl, np.where(nseg > 1, nseg * SGL_DESC, 0),
                            np.where(pages > 2, (pages - 1) * PRP_ENTRY, 0))
            has = desc > 0
            ev.append(events(t_sub[has], ts.OP_ACCESS, pool_h[q[has]], desc[has], device=dev,
                             offset=(tag[has] - q[has] * qd) * PAGE, flags=TO, phase=3))
            ev.append(events(t_sub[r] + latency_ns // 2, ts.OP_ACCESS, tag[r], seg_size, device=dev,
                             offset=seg_off, flags=dirf[r], phase=4))
            ev.append(events(t_done, ts.OP_ACCESS, cq_h[q], CQE, device=dev,
                             offset=(tag - q * qd) * CQE, flags=FROM, phase=0))
            ev.append(events(t_done, ts.OP_UNMAP, tag, req_size, cpu=cpu, device=dev,
                             flags=dirf | ATOMIC, phase=0))
            done += nreq
            horizon = None if done >= ios else np.round(done * gap) + 1
            out.push(cat(*ev), horizon)
        out.close()
        return w.rows
