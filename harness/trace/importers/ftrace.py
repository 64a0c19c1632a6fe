"""ftrace text (trace-cmd report, or the tracefs `trace` file) to a trace.

Events (include/trace/events/iommu.h and dma.h):
  iommu: map, unmap (before v5.17 without the `- end` of the range),
         io_page_fault
  dma (v6.12+): dma_map_page / dma_map_phys (v6.18) / dma_map_resource,
         the matching unmaps, dma_map_sg / dma_unmap_sg (with the nents/ents
         counts of later kernels), dma_alloc / dma_free (v6.12 with phys_addr
         or virt_addr, v6.13+ with dir), dma_alloc_pages / dma_free_pages,
         dma_alloc_sgt / dma_free_sgt, dma_sync_*, dma_map_sg_err and
         dma_alloc_sgt_err.
DMA-API events become DMA-API maps with their recorded DMA addresses; iommu
events become IOMMU-API maps. dma-iommu's own iommu_map() calls fire
iommu:map too, so by default (--api auto) iommu map/unmap events are used
only when the file has no DMA-API map or unmap events. Tracepoints carry no device
accesses: access synthesis adds them after each map (none, one per page, one
per 64-byte line, repeated). The context of a CPU event comes from the
latency flags when the file has them (irqs off, in IRQ/softirq, or preempt
count: atomic); without them every event is taken as atomic.
"""

import os
import re

from harness.errors import HarnessError
from harness.trace import schema as ts
from harness.trace.importers.common import (ACCESS_MODES, PAGE, Devices, Handles, ImportReport,
                                            Sink, access_rows, out_of_range, read_lines)

LINE_RE = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[?(?P<cpu>\d{1,5})\]?\s+"
    r"(?:(?P<lat>[^\s:]{4,8})\s+)?(?P<sec>\d{1,10})\.(?P<frac>\d{1,9}):\s+"
    r"(?:(?P<system>\w+):)?(?P<event>\w+):\s?(?P<body>.*)$")
HEX = r"(?:0x)?([0-9a-fA-F]+)"
KV = re.compile(r"(\w+)=(\{[^}]*\}|\S*)")
IOMMU_MAP = re.compile(rf"^IOMMU: iova=0x([0-9a-f]+)(?: - 0x[0-9a-f]+)? paddr=0x([0-9a-f]+) size=(\d+)$")
IOMMU_UNMAP = re.compile(rf"^IOMMU: iova=0x([0-9a-f]+)(?: - 0x[0-9a-f]+)? size=(\d+) unmapped_size=(\d+)$")
IOMMU_FAULT = re.compile(rf"^IOMMU:(\S*) (\S+) iova=0x([0-9a-f]+) flags=0x([0-9a-f]+)$")
MAX_CPUS = 1 << 16  # the cpu column is uint16
DIRS = {"BIDIRECTIONAL": ts.FLAG_BIDIRECTIONAL, "TO_DEVICE": ts.FLAG_TO_DEVICE,
        "FROM_DEVICE": ts.FLAG_FROM_DEVICE, "NONE": ts.FLAG_BIDIRECTIONAL}
MAP_PAGE = {"dma_map_page", "dma_map_phys", "dma_map_resource"}
UNMAP_PAGE = {"dma_unmap_page", "dma_unmap_phys", "dma_unmap_resource"}
ALLOC = {"dma_alloc", "dma_alloc_pages"}
FREE = {"dma_free", "dma_free_pages"}
SYNC = {"dma_sync_single_for_cpu", "dma_sync_single_for_device", "dma_sync_sg_for_cpu",
        "dma_sync_sg_for_device"}
FAILED = {"dma_map_sg_err", "dma_alloc_sgt_err"}
IOMMU_OTHER = {"attach_device_to_domain", "detach_device_from_domain", "add_device_to_group",
               "remove_device_from_group"}
KNOWN = MAP_PAGE | UNMAP_PAGE | ALLOC | FREE | SYNC | FAILED | IOMMU_OTHER | {
    "map", "unmap", "io_page_fault", "dma_map_sg", "dma_unmap_sg", "dma_alloc_sgt", "dma_free_sgt"}
DMA_EVENTS = MAP_PAGE | UNMAP_PAGE | ALLOC | FREE | {"dma_map_sg", "dma_unmap_sg", "dma_alloc_sgt",
                                                     "dma_free_sgt"}


class Malformed(Exception):
    pass


def _atomic(lat):
    """Latency flags (irqs-off, need-resched, hard/softirq, preempt depth, ...)."""
    if not lat:
        return True
    return lat[0] in "dDbX" or (len(lat) > 2 and lat[2] in "hHsSzZ") or (
        len(lat) > 3 and lat[3] not in ".0")


def _fields(body):
    """Leading device name and key=value fields of a dma event."""
    dev, _, rest = body.partition(" ")
    if not dev or "=" in dev:
        raise Malformed("expected the device name first")
    return dev, dict(KV.findall(rest))


def _hex(f, key):
    try:
        return int(f[key], 16)
    except (KeyError, ValueError):
        raise Malformed(f"expected {key}=<hex>") from None


def _int(f, key):
    try:
        return int(f[key], 0)
    except (KeyError, ValueError):
        raise Malformed(f"expected {key}=<integer>") from None


def _array(f, key):
    v = f.get(key, "")
    if not (v.startswith("{") and v.endswith("}")):
        raise Malformed(f"expected {key}={{...}}")
    try:
        return [int(x, 16) for x in v[1:-1].split(",") if x]
    except ValueError:
        raise Malformed(f"expected {key} to list hex values") from None


def _dir(f):
    d = f.get("dir", "BIDIRECTIONAL")
    if d not in DIRS:
        raise Malformed(f"dir={d}: expected BIDIRECTIONAL, TO_DEVICE, FROM_DEVICE or NONE")
    return DIRS[d]


def _sg_pieces(phys, sizes):
    """(paddr, bytes) per scatterlist entry. The event lists the mapped DMA
    segments, which dma-iommu may have merged: with fewer sizes than entries,
    every entry but the last is taken to run to the end of its page, which
    is exact for single-page entries only."""
    total = sum(sizes)
    if len(sizes) == len(phys):
        return list(zip(phys, sizes)), False
    if len(sizes) > len(phys):
        raise Malformed(f"{len(sizes)} mapped segments for {len(phys)} phys_addrs")
    pieces = [(p, PAGE - p % PAGE) for p in phys[:-1]]
    rest = total - sum(n for _, n in pieces)
    if rest <= 0 or not phys:
        raise Malformed(f"{len(phys)} phys_addrs do not fit {total} mapped bytes")
    return pieces + [(phys[-1], rest)], True


def _slots(pieces):
    """Offsets of the pieces from the list's DMA address, 4 KiB layout."""
    out, pos = [], 0
    first = pieces[0][0] % PAGE
    for p, n in pieces:
        off = p % PAGE
        out.append((pos + off - first, n))
        pos += (n + off + PAGE - 1) // PAGE * PAGE
    return out


def convert(src, out, api="auto", access="page", repeat=1, strict=False, device=0):
    """Import src into out; returns the ImportReport (as a dict)."""
    if api not in ("auto", "dma", "iommu", "both"):
        raise HarnessError(f"--api {api}: expected auto, dma, iommu or both")
    if access not in ACCESS_MODES or repeat < 1:
        raise HarnessError(f"--access {access} / --repeat {repeat}: expected one of "
                           f"{', '.join(ACCESS_MODES)} and repeat >= 1")
    lines, truncated = read_lines(src, "ftrace text (trace-cmd report or tracefs trace)")
    rep = ImportReport(src, strict)
    events, ncpus = [], 0
    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("version =") or re.match(r"^CPU \d+ is empty$", s):
            continue
        m = re.match(r"^cpus=(\d{1,5})$", s)
        if m and int(m.group(1)) <= MAX_CPUS:
            ncpus = int(m.group(1))
            continue
        if re.match(r"^CPU:?\s*\d+ \[LOST \d+ EVENTS\]$", s) or "[LOST" in s and "EVENTS]" in s:
            rep.problem("lost events (the ring buffer overflowed)", lineno)
            continue
        m = LINE_RE.match(line)
        if m and int(m["cpu"]) >= MAX_CPUS:
            rep.problem("malformed line", lineno, f"cpu {m['cpu']} beyond {MAX_CPUS - 1}")
            continue
        if not m:
            rep.problem("truncated last line" if truncated and lineno == len(lines)
                        else "malformed line", lineno)
            continue
        t = int(m["sec"]) * 1_000_000_000 + int(m["frac"].ljust(9, "0")[:9])
        events.append((t, lineno, m))
    if not events and not rep.problems:
        raise HarnessError(f"{src}: no trace events found (expected lines like "
                           "'task-123 [001] 12.345678: dma_map_page: ...')")
    events.sort(key=lambda e: e[0])  # per-CPU buffers: stable merge by time
    if api == "auto":
        api = "dma" if any(m["event"] in DMA_EVENTS for _, _, m in events) else "iommu"
    use_dma, use_iommu = api in ("dma", "both"), api in ("iommu", "both")
    devs = Devices()
    handles = Handles()
    num_cpus = max([ncpus] + [int(m["cpu"]) + 1 for _, _, m in events])
    prov = {"import": "ftrace", "source": os.path.basename(src), "api": api,
            "access_synthesis": {"mode": access, "repeat": repeat},
            "context": "latency flags" if any(m["lat"] for _, _, m in events) else "assumed atomic"}
    sink = Sink(out, num_cpus, prov)
    try:
        for t, lineno, m in events:
            ev = m["event"]
            if ev not in KNOWN:
                rep.problem(f"unknown event {ev}", lineno)
                continue
            try:
                if t >= 1 << 63:
                    raise Malformed("timestamp out of range")
                rows = _event(ev, m, t, lineno, devs, handles, rep, use_dma, use_iommu, device,
                              access, repeat)
            except (Malformed, ValueError) as e:  # ValueError: numbers of thousands of digits
                rep.problem(f"malformed {ev} event", lineno, str(e))
                continue
            bad = out_of_range(rows)
            if bad:  # unmap rows carry the line's values only, checked here
                rep.problem(f"malformed {ev} event", lineno, bad)
                continue
            for row in rows:
                sink.add(t, row)
        if not sink.w.rows and not sink.cols["ts"]:
            raise HarnessError(f"{src}: no iommu or dma events to convert; {rep.summary()}")
        prov["devices"] = {name: f"{rid:#x}" for name, rid in devs.ids.items()}
        sink.close()
    except BaseException:
        sink.abort()
        raise
    result = rep.as_dict()
    result["rows"] = sink.w.rows
    result["live_at_end"] = len(handles.live)
    return result


def _event(ev, m, t, lineno, devs, handles, rep, use_dma, use_iommu, api_dev, access, repeat):
    """Rows of one event (updating the live mappings)."""
    cpu = int(m["cpu"])
    ctx = ts.FLAG_ATOMIC if _atomic(m["lat"]) else 0
    body = m["body"].strip()
    if ev in ("map", "unmap", "io_page_fault"):
        return _iommu(ev, body, lineno, cpu, ctx, devs, handles, rep, use_iommu, api_dev,
                      access, repeat)
    if ev in IOMMU_OTHER:
        rep.ignored[ev] += 1
        return []
    dev_name, f = _fields(body)
    dev = devs(dev_name)
    if ev in SYNC or ev in FAILED:
        rep.ignored[ev] += 1  # cache maintenance / a failed map: no mapping changes
        return []
    if not use_dma:
        rep.ignored[ev] += 1
        return []
    base = dict(cpu=cpu, device=dev)
    if ev in MAP_PAGE or ev in ALLOC:
        addr, size = _hex(f, "dma_addr"), _int(f, "size")
        if ev in ALLOC:  # coherent: bidirectional; the gfp tells whether it may sleep
            flags = ts.FLAG_BIDIRECTIONAL | (0 if "GFP_KERNEL" in f.get("flags", "") else ts.FLAG_ATOMIC)
            paddr = _hex(f, "phys_addr") if "phys_addr" in f else addr  # page-aligned either way
        else:
            flags, paddr = _dir(f) | ctx, _hex(f, "phys_addr")
        return _map_rows(ev, (dev, addr), [(paddr, size)], addr, size, flags, base, lineno,
                         handles, rep, access, repeat)
    if ev == "dma_map_sg" or ev == "dma_alloc_sgt":
        if ev == "dma_map_sg":
            dma, sizes, phys = _array(f, "dma_addrs"), _array(f, "sizes"), _array(f, "phys_addrs")
            if not dma or len(dma) != len(sizes) or not phys:
                raise Malformed("expected as many dma_addrs as sizes, and phys_addrs")
            pieces, inferred = _sg_pieces(phys, sizes)
            key, flags = (dev, "sg", phys[0]), _dir(f) | ctx
        else:
            dma = [_hex(f, "dma_addr")]
            phys, size = _array(f, "phys_addrs"), _int(f, "size")
            pieces, inferred = _sg_pieces(phys, [size])
            key = (dev, dma[0])
            flags = _dir(f) | (0 if "GFP_KERNEL" in f.get("flags", "") else ts.FLAG_ATOMIC)
        if inferred:
            rep.converted["sg lists with inferred segment sizes"] += 1
        return _map_rows(ev, key, pieces, dma[0], sum(n for _, n in pieces), flags, base, lineno,
                         handles, rep, access, repeat)
    if ev in UNMAP_PAGE or ev in FREE or ev == "dma_free_sgt":
        return _unmap_rows(ev, (dev, _hex(f, "dma_addr")), _int(f, "size"), ctx, base, lineno,
                           handles, rep)
    if ev == "dma_unmap_sg":
        phys = _array(f, "phys_addrs")
        if not phys:
            raise Malformed("expected phys_addrs")
        key = (dev, "sg", phys[0])
        size = handles.live[key][1][0] if key in handles.live else None
        return _unmap_rows(ev, key, size, ctx, base, lineno, handles, rep)
    raise AssertionError(ev)


def _map_rows(ev, key, pieces, iova, size, flags, base, lineno, handles, rep, access, repeat):
    if size <= 0 or any(n <= 0 for _, n in pieces):
        raise Malformed("expected size > 0")
    bad = out_of_range([dict(base, iova=iova, paddr=p, size=n) for p, n in pieces] + [dict(size=size)])
    if bad:
        raise Malformed(bad)
    if key in handles.live:
        rep.problem(f"{ev} of an address that is still mapped", lineno)
        return []
    h = handles.open(key, (size, flags))
    rep.converted[ev] += 1
    rows = []
    for k, (paddr, n) in enumerate(pieces):
        more = ts.FLAG_SG_MORE if k < len(pieces) - 1 else 0
        rows.append(dict(base, op=ts.OP_MAP, handle=h, iova=iova if k == 0 else 0, paddr=paddr,
                         size=n, flags=flags | more))
    slots = _slots(pieces) if len(pieces) > 1 else None
    return rows + access_rows(access, repeat, base["device"], h, size, flags, slots)


def _unmap_rows(ev, key, size, ctx, base, lineno, handles, rep):
    if key not in handles.live:
        rep.problem(f"{ev} with no earlier map (mapped before the trace started?)", lineno)
        return []
    h, (mapped, flags) = handles.live[key]
    if size is not None and size != mapped:
        rep.problem(f"{ev} size {size} differs from the mapped size {mapped}", lineno)
        return []
    handles.close(key)
    rep.converted[ev] += 1
    keep = flags & (ts.FLAG_BIDIRECTIONAL | ts.FLAG_IOMMU_API)
    return [dict(base, op=ts.OP_UNMAP, handle=h, size=mapped, flags=keep | ctx)]


def _iommu(ev, body, lineno, cpu, ctx, devs, handles, rep, use_iommu, api_dev, access, repeat):
    if ev == "io_page_fault":
        m = IOMMU_FAULT.match(body)
        if not m:
            raise Malformed("expected 'IOMMU:<driver> <device> iova=0x... flags=0x...'")
        write = int(m[4], 16) & 1  # IOMMU_FAULT_WRITE
        rows = [dict(op=ts.OP_ACCESS, cpu=cpu, device=devs(m[2]), handle=ts.NO_HANDLE,
                     iova=int(m[3], 16), size=4,
                     flags=ts.FLAG_FROM_DEVICE if write else ts.FLAG_TO_DEVICE)]
        bad = out_of_range(rows)
        if bad:
            raise Malformed(bad)
        rep.converted[ev] += 1
        return rows
    if not use_iommu:
        rep.ignored[f"iommu {ev} (dma-iommu's own; --api iommu or both to use)"] += 1
        return []
    api = ts.FLAG_IOMMU_API | ts.FLAG_BIDIRECTIONAL
    base = dict(cpu=cpu, device=api_dev)
    if ev == "map":
        m = IOMMU_MAP.match(body)
        if not m:
            raise Malformed("expected 'IOMMU: iova=0x... [- 0x...] paddr=0x... size=N'")
        iova, paddr, size = int(m[1], 16), int(m[2], 16), int(m[3])
        return _map_rows("iommu map", (api_dev, "api", iova), [(paddr, size)], iova, size,
                         api | ctx, base, lineno, handles, rep, access, repeat)
    m = IOMMU_UNMAP.match(body)
    if not m:
        raise Malformed("expected 'IOMMU: iova=0x... [- 0x...] size=N unmapped_size=N'")
    iova, size = int(m[1], 16), int(m[2])
    # iommu_unmap may cover several maps: unmap every live mapping in the range
    rows, end, it = [], iova + size, iova
    while it < end:
        key = (api_dev, "api", it)
        if key not in handles.live:
            break
        n = handles.live[key][1][0]
        rows += _unmap_rows("iommu unmap", key, n, ctx, base, lineno, handles, rep)
        it += n
    if it != end:
        rep.problem("iommu unmap of a range that does not match earlier maps", lineno)
    return rows
