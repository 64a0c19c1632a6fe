"""NIC workloads: the receive path (nic-rx) and the transmit path (nic-tx).

Drivers follow the common Linux patterns: RX rings refilled from the page
allocator with one dma_map_page per buffer, or from a page_pool
(net/core/page_pool.c: page_pool_dma_map maps a page once; recycled pages are
reused mapped, only pages released from the pool are unmapped), or from huge
pages mapped once; TX maps an skb's head and fragments as one scatterlist at
ndo_start_xmit and unmaps it at TX completion in NAPI.
"""

import numpy as np

from harness.trace import schema as ts
from harness.trace.synth.common import (CHUNK, PAGE, Param, Stream, cat, check_at_least, check_span,
                                        check_positive, device_id, events, fail, frames, select,
                                        workload)
from harness.trace.writer import TraceWriter

ETH_HLEN = 14
HUGE = 2 << 20
MAX_SKB_FRAGS = 17
FROM, TO, ATOMIC, MORE = ts.FLAG_FROM_DEVICE, ts.FLAG_TO_DEVICE, ts.FLAG_ATOMIC, ts.FLAG_SG_MORE

COMMON = (
    Param("packets", 100_000, "Packets."),
    Param("queues", 4, "Queues (rings); queue q runs on CPU q % num_cpus."),
    Param("ring", 512, "Descriptors per ring."),
    Param("rate", 1_000_000.0, "Packets per second over all queues."),
    Param("num_cpus", 0, "CPUs (0: one per queue)."),
    Param("device", "0x0300", "PCI requester id (bus << 8 | devfn)."),
)


def _buffers(rng, n, buffer_size):
    """Physical addresses of n fresh RX buffers: random page frames below
    64 GiB, naturally aligned when multi-page, two per page when they fit."""
    paddr = frames(rng, n, buffer_size, below=1 << 36)
    if buffer_size <= PAGE // 2:
        paddr += rng.integers(0, 2, size=n, dtype=np.int64) * (PAGE // 2)
    return paddr


@workload("nic-rx", *COMMON,
          Param("buffer_size", 2048, "Bytes per RX buffer."),
          Param("mtu", 1500, "MTU; a frame is at most mtu + 14 bytes and spans several buffers "
                             "when larger than one (multi-buffer receive)."),
          Param("packet_size", 0, "Frame bytes the device writes (0: mtu + 14)."),
          Param("latency_ns", 2000, "Packet arrival to NAPI completion (unmap/refill)."),
          Param("page_pool", False, "Buffers from a page_pool: mapped once, recycled mapped."),
          Param("recycle", 0.95, "page_pool: fraction of buffers recycled; the rest are "
                                 "released (unmapped) and replaced by a new mapped page."),
          Param("huge_pages", False, "Buffers carved from 2 MiB pages, each mapped once at ifup."),
          Param("late_dma", 0.0, "Fraction of unmapped buffers the device writes once more "
                                 "after the unmap (a late DMA)."))
def nic_rx(path, packets=100_000, queues=4, ring=512, rate=1_000_000.0, num_cpus=0, device="0x0300",
           buffer_size=2048, mtu=1500, packet_size=0, latency_ns=2000, page_pool=False,
           recycle=0.95, huge_pages=False, late_dma=0.0, seed=1):
    """NIC receive: rings mapped at ifup, then per packet a device write, NAPI unmap and refill.

    Each of `queues` rings holds `ring` buffers mapped at ifup (process
    context). Packets arrive round-robin over queues at `rate`; the device
    writes each frame into the next buffers of its ring (access events), and
    `latency_ns` later the queue's CPU completes them in NAPI (softirq: atomic
    context): it unmaps each buffer and maps a fresh one (dma_map_page,
    DMA_FROM_DEVICE). With `page_pool`, buffers are pool pages mapped once;
    a recycled page stays mapped, a released one is unmapped and replaced.
    With `huge_pages`, buffers sit in 2 MiB pages mapped once and are never
    remapped. `late_dma` makes that fraction of unmapped buffers see one more
    device write between the unmap and the refill: the late DMA that strict
    invalidation stops and a flush queue lets through.
    """
    kind = "nic-rx"
    num_cpus = num_cpus or queues
    dev = device_id(device)
    check_positive(kind, packets=packets, queues=queues, ring=ring, buffer_size=buffer_size,
                   mtu=mtu, rate=rate, num_cpus=num_cpus)
    frame = packet_size or mtu + ETH_HLEN
    if not 0 < frame <= mtu + ETH_HLEN:
        fail(kind, f"--packet-size {packet_size}: expected 1..mtu + 14 = {mtu + ETH_HLEN}")
    if not (0 <= late_dma <= 1 and 0 <= recycle <= 1):
        fail(kind, "--late-dma and --recycle: expected fractions within 0..1")
    if huge_pages and buffer_size > HUGE:
        fail(kind, f"--buffer-size {buffer_size}: expected at most 2 MiB with --huge-pages")
    per_packet = -(-frame // buffer_size)
    if per_packet > ring:
        fail(kind, f"a {frame}-byte frame needs {per_packet} buffers, more than --ring {ring}")
    check_at_least(kind, 0, latency_ns=latency_ns)
    gap = 1e9 / rate
    check_span(kind, packets * gap + latency_ns)
    wrap = ring // per_packet * queues * gap
    if latency_ns >= wrap - 1:  # timestamps round to ns: keep a slot's next packet after its refill
        fail(kind, f"completion latency {latency_ns} ns is longer than a ring wrap ({wrap:.0f} ns); "
                   "raise --ring or lower --rate")
    params = dict(packets=packets, queues=queues, ring=ring, rate=rate, num_cpus=num_cpus,
                  device=dev, buffer_size=buffer_size, mtu=mtu, packet_size=frame,
                  latency_ns=latency_ns, page_pool=page_pool, recycle=recycle,
                  huge_pages=huge_pages, late_dma=late_dma)
    rng = np.random.default_rng(seed)
    nslots = queues * ring
    slots = np.arange(nslots, dtype=np.int64)
    # Mapping size and slot placement: a buffer, a pool page, or a slice of a huge page.
    if huge_pages:
        per_huge = HUGE // buffer_size
        handle_of, offset_of = slots // per_huge, slots % per_huge * buffer_size
        nmaps, map_size = -(-nslots // per_huge), HUGE
    else:
        handle_of, offset_of = slots, np.zeros(nslots, np.int64)
        nmaps = nslots
        map_size = max(PAGE, 1 << (buffer_size - 1).bit_length()) if page_pool else buffer_size
    place = (lambda n: frames(rng, n, HUGE, align=HUGE)) if huge_pages else (
        (lambda n: frames(rng, n, map_size)) if page_pool else (lambda n: _buffers(rng, n, buffer_size)))
    remap = not huge_pages
    keep = recycle if page_pool else 0.0
    with TraceWriter(path, num_cpus, {"generator": kind, "params": params, "seed": seed}) as w:
        out = Stream(w)
        h = np.arange(nmaps, dtype=np.int64)
        first_slot = h * per_huge if huge_pages else h
        out.push(events(np.zeros(nmaps), ts.OP_MAP, h, map_size, cpu=first_slot // ring % num_cpus,
                        device=dev, paddr=place(nmaps), flags=FROM))
        for k0 in range(0, packets, CHUNK):
            k = np.repeat(np.arange(k0, min(packets, k0 + CHUNK), dtype=np.int64), per_packet)
            j = np.tile(np.arange(per_packet, dtype=np.int64), len(k) // per_packet)
            q = k % queues
            slot = q * ring + ((k // queues) * per_packet + j) % ring
            cpu = q % num_cpus
            t_arr = np.round(k * gap).astype(np.int64) + 1
            t_done = t_arr + latency_ns
            hnd, off = handle_of[slot], offset_of[slot]
            size = np.minimum(buffer_size, frame - j * buffer_size)
            ev = [events(t_arr, ts.OP_ACCESS, hnd, size, cpu=cpu, device=dev, offset=off,
                         flags=FROM, phase=0)]
            if remap:
                swap = rng.random(len(k)) >= keep
                s = select(dict(t=t_done, h=hnd, cpu=cpu), swap)
                ev.append(events(s["t"], ts.OP_UNMAP, s["h"], map_size, cpu=s["cpu"], device=dev,
                                 flags=FROM | ATOMIC, phase=1))
                ev.append(events(s["t"], ts.OP_MAP, s["h"], map_size, cpu=s["cpu"], device=dev,
                                 paddr=place(len(s["t"])), flags=FROM | ATOMIC, phase=3))
                if late_dma:
                    late = rng.random(len(s["t"])) < late_dma
                    ev.append(events(s["t"][late], ts.OP_ACCESS, s["h"][late], size[swap][late],
                                     cpu=s["cpu"][late], device=dev, flags=FROM, phase=2))
            horizon = None if k0 + CHUNK >= packets else np.round((k[-1] + 1) * gap) + 1
            out.push(cat(*ev), horizon)
        out.close()
        return w.rows


@workload("nic-tx", *COMMON,
          Param("packet_size", 1514, "Bytes per packet (up to 64 KiB with TSO)."),
          Param("head_size", 128, "Bytes in the skb's linear head (headers); the rest is in fragments."),
          Param("frag_size", 4096, "Bytes per page fragment (4096: page frags; 32768: order-3 frags)."),
          Param("latency_ns", 5000, "ndo_start_xmit to TX completion (unmap)."))
def nic_tx(path, packets=100_000, queues=4, ring=512, rate=1_000_000.0, num_cpus=0,
           device="0x0300", packet_size=1514, head_size=128, frag_size=4096, latency_ns=5000, seed=1):
    """NIC transmit: each skb mapped as one scatterlist, read by the device, unmapped at completion.

    Packets leave round-robin over `queues` at `rate`. ndo_start_xmit (BH
    disabled: atomic) maps the skb as a scatterlist: the kmalloc'd linear head
    of `head_size` bytes plus page fragments of `frag_size` bytes (at most 17,
    MAX_SKB_FRAGS). The device reads every segment; `latency_ns` later TX
    completion in NAPI unmaps the list. A packet's head fragment offsets are
    random within their pages; fragments of 4 KiB or more start on a page.
    Access offsets follow the list's IOVA layout for a 4 KiB granule.
    """
    kind = "nic-tx"
    num_cpus = num_cpus or queues
    dev = device_id(device)
    check_positive(kind, packets=packets, queues=queues, ring=ring, rate=rate, num_cpus=num_cpus,
                   packet_size=packet_size, head_size=head_size, frag_size=frag_size)
    head = min(head_size, packet_size)
    if head > PAGE:
        fail(kind, f"--head-size {head_size}: expected at most {PAGE}")
    nfrags = -(-(packet_size - head) // frag_size)
    if nfrags > MAX_SKB_FRAGS:
        fail(kind, f"{packet_size} bytes need {nfrags} fragments of {frag_size}; at most "
                   f"{MAX_SKB_FRAGS} (MAX_SKB_FRAGS): raise --frag-size")
    check_at_least(kind, 2, latency_ns=latency_ns)  # map, device read 1 ns later, then unmap
    gap = 1e9 / rate
    check_span(kind, packets * gap + latency_ns)
    if latency_ns >= ring * queues * gap - 1:
        fail(kind, f"completion latency {latency_ns} ns is longer than a ring wrap "
                   f"({ring * queues * gap:.0f} ns); raise --ring or lower --rate")
    params = dict(packets=packets, queues=queues, ring=ring, rate=rate, num_cpus=num_cpus,
                  device=dev, packet_size=packet_size, head_size=head, frag_size=frag_size,
                  latency_ns=latency_ns)
    rng = np.random.default_rng(seed)
    nseg = 1 + nfrags
    seg_size = np.array([head] + [frag_size] * nfrags, np.int64)
    if nfrags:
        seg_size[-1] = packet_size - head - (nfrags - 1) * frag_size
    with TraceWriter(path, num_cpus, {"generator": kind, "params": params, "seed": seed}) as w:
        out = Stream(w)
        for k0 in range(0, packets, CHUNK):
            k = np.arange(k0, min(packets, k0 + CHUNK), dtype=np.int64)
            n = len(k)
            q = k % queues
            hnd = q * ring + (k // queues) % ring
            cpu = q % num_cpus
            t_x = np.round(k * gap).astype(np.int64) + 1
            # segment physical addresses: head in a slab object, fragments in page frags
            pa = np.empty((n, nseg), np.int64)
            pa[:, 0] = frames(rng, n, PAGE) + rng.integers(0, (PAGE - head) // 64 + 1, n) * 64
            for f in range(1, nseg):
                sz = int(seg_size[f])
                base = frames(rng, n, max(PAGE, min(sz, 32768)))
                slack = (PAGE - sz) // 64 + 1 if sz < PAGE else 1
                pa[:, f] = base + rng.integers(0, slack, n) * 64
            off = pa & (PAGE - 1)
            slot = (seg_size + off + PAGE - 1) // PAGE * PAGE
            start = np.cumsum(slot, axis=1) - slot  # slot starts in the list's IOVA range
            acc_off = start + off - off[:, :1]
            sub = np.arange(nseg)
            more = np.where(sub < nseg - 1, MORE, 0)
            rep = lambda a: np.repeat(a, nseg)  # noqa: E731
            ev = cat(
                events(rep(t_x), ts.OP_MAP, rep(hnd), np.tile(seg_size, n), cpu=rep(cpu), device=dev,
                       paddr=pa.ravel(), flags=TO | ATOMIC | np.tile(more, n), phase=1),
                events(rep(t_x + 1), ts.OP_ACCESS, rep(hnd), np.tile(seg_size, n), cpu=rep(cpu),
                       device=dev, offset=acc_off.ravel(), flags=TO, phase=2),
                events(t_x + latency_ns, ts.OP_UNMAP, hnd, packet_size, cpu=cpu, device=dev,
                       flags=TO | ATOMIC, phase=0))
            horizon = None if k0 + CHUNK >= packets else np.round((k[-1] + 1) * gap) + 1
            out.push(ev, horizon)
        out.close()
        return w.rows
