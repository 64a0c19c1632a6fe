"""Synthetic workloads, generated with vectorised numpy and streamed to disk.

nic-rx: a NIC receive path. Each of `queues` RX rings holds `ring` descriptors,
each with a mapped buffer (dma_map_page, DMA_FROM_DEVICE). At ifup every slot
is mapped in process context. Packets arrive at `rate` packets/s, round-robin
over queues; the device writes the packet into the next buffer of its ring
(an access), then the CPU owning the queue completes it in NAPI (softirq:
atomic context) after `latency_ns`: it unmaps the buffer and maps a fresh one
into the slot. Handles name ring slots. With `late_dma`, that fraction of
packets sees the device write the buffer once more between its unmap and the
refill: the buggy or malicious late DMA that strict invalidation stops and a
flush queue lets through. Buffers come from the page allocator
at random page frames (seeded); buffers of up to half a page share a page.
"""

import numpy as np

from harness.errors import HarnessError
from harness.trace import schema as ts
from harness.trace.writer import TraceWriter

CHUNK = 1 << 18  # packets per generated chunk


def nic_rx(path, packets=100_000, queues=4, ring=512, buffer_size=2048, packet_size=1500,
           rate=1_000_000.0, latency_ns=2000, num_cpus=None, device=0x0300, late_dma=0.0, seed=1):
    """Write a nic-rx trace; returns the number of events."""
    num_cpus = num_cpus or queues
    if min(packets, queues, ring, buffer_size, packet_size, num_cpus) < 1 or rate <= 0:
        raise HarnessError("nic-rx: packets, queues, ring, buffer size, packet size, "
                           "num_cpus and rate must be positive")
    if not 0 <= late_dma <= 1:
        raise HarnessError(f"nic-rx: late DMA fraction {late_dma} is not within 0..1")
    if packet_size > buffer_size:
        raise HarnessError(f"nic-rx: packet size {packet_size} exceeds buffer size {buffer_size}")
    gap = 1e9 / rate
    if latency_ns >= ring * queues * gap:
        raise HarnessError(f"nic-rx: completion latency {latency_ns} ns is longer than a ring "
                           f"wrap ({ring * queues * gap:.0f} ns); raise --ring or lower --rate")
    params = dict(packets=packets, queues=queues, ring=ring, buffer_size=buffer_size,
                  packet_size=packet_size, rate=rate, latency_ns=latency_ns,
                  num_cpus=num_cpus, device=device, late_dma=late_dma)
    rng = np.random.default_rng(seed)
    prov = {"generator": "nic-rx", "params": params, "seed": seed}
    with TraceWriter(path, num_cpus, prov) as w:
        slots = np.arange(queues * ring, dtype=np.int64)
        w.write(_events(np.zeros(len(slots), np.int64), np.full(len(slots), ts.OP_MAP),
                        slots, slots // ring % num_cpus, _buffers(rng, len(slots), buffer_size),
                        buffer_size, 0, device))
        carry = None
        for k0 in range(0, packets, CHUNK):
            k = np.arange(k0, min(packets, k0 + CHUNK), dtype=np.int64)
            q = k % queues
            slot = q * ring + (k // queues) % ring
            cpu = q % num_cpus
            t_arr = np.round(k * gap).astype(np.int64) + 1
            t_done = t_arr + latency_ns
            n = len(k)
            ev = _cat(
                _events(t_arr, np.full(n, ts.OP_ACCESS), slot, cpu, 0, packet_size, 0, device,
                        phase=0),
                _events(t_done, np.full(n, ts.OP_UNMAP), slot, cpu, 0, buffer_size,
                        ts.FLAG_ATOMIC, device, phase=1),
                _events(t_done, np.full(n, ts.OP_MAP), slot, cpu,
                        _buffers(rng, n, buffer_size), buffer_size, ts.FLAG_ATOMIC, device,
                        phase=3))
            if late_dma:
                late = rng.random(n) < late_dma
                ev = _cat(ev, _events(t_done[late], np.full(late.sum(), ts.OP_ACCESS), slot[late],
                                      cpu[late], 0, packet_size, 0, device, phase=2))
            if carry is not None:
                ev = _cat(carry, ev)
            order = np.lexsort((ev["_seq"], ev["_phase"], ev["ts"]))
            ev = {name: col[order] for name, col in ev.items()}
            last = k0 + n >= packets
            cut = len(order) if last else int(np.searchsorted(
                ev["ts"], np.round((k[-1] + 1) * gap) + 1, side="left"))
            w.write({name: col[:cut] for name, col in ev.items()})
            carry = {name: col[cut:] for name, col in ev.items()}
        return w.rows


def _buffers(rng, n, buffer_size):
    """Physical addresses of n fresh buffers: random page frames below 64 GiB,
    naturally aligned for multi-page buffers, two per page when they fit."""
    pages = max(1, -(-buffer_size // 4096))
    order_pages = 1 << (pages - 1).bit_length()
    pfn = rng.integers(1 << 8, 1 << 24, size=n, dtype=np.int64) // order_pages * order_pages
    paddr = pfn << 12
    if buffer_size <= 2048:
        paddr += rng.integers(0, 2, size=n, dtype=np.int64) * 2048
    return paddr


def _events(t, op, slot, cpu, paddr, size, flags, device, phase=0):
    n = len(t)
    direction = ts.FLAG_FROM_DEVICE
    return {
        "ts": t, "op": op, "cpu": np.broadcast_to(cpu, n),
        "device": np.full(n, device), "pasid": np.zeros(n, np.int64),
        "handle": slot, "iova": np.zeros(n, np.int64),
        "paddr": np.broadcast_to(paddr, n), "size": np.full(n, size),
        "offset": np.zeros(n, np.int64), "flags": np.full(n, direction | flags),
        "_phase": np.full(n, phase), "_seq": slot,
    }


def _cat(*evs):
    return {name: np.concatenate([e[name] for e in evs]) for name in evs[0]}
