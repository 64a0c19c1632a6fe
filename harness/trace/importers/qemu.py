"""QEMU vIOMMU trace events (-trace with the log backend) to a trace.

Events (hw/i386/trace-events, hw/arm/trace-events):
  VT-d:  vtd_iotlb_page_hit, vtd_iotlb_page_update (a miss that walked and
         filled), vtd_inv_desc_iotlb_pages / _pasid_pages / _domain / _pasid
         / _global
  SMMU:  smmu_iotlb_lookup_hit / _miss (and the older smmu_iotlb_cache_hit /
         _miss), smmuv3_range_inval (smmuv3_s1_range_inval before QEMU 9.1),
         smmu_iotlb_inv_iova / _asid / _asid_vmid / _vmid / _vmid_s1 / _all
QEMU sees the guest's IOTLB, not its maps: the first lookup of a page after
it was last invalidated opens an IOMMU-API map of that 4 KiB page (the
physical address from the VT-d slpte; the IOVA itself for SMMU), each lookup
is an access whose `observed` column keeps QEMU's outcome (1 hit, 2 miss),
and an invalidation unmaps the open pages it covers. Devices: the VT-d
source id; for SMMU, vmid << 16 | asid. Lines carry `pid@sec.usec:` or an
ISO timestamp when QEMU ran with -msg timestamp=on; without, rows are 1 ns
apart in file order.
"""

import datetime
import os
import re

from harness.errors import HarnessError
from harness.trace import schema as ts
from harness.trace.importers.common import PAGE, Handles, ImportReport, Sink, read_lines

PREFIX = re.compile(r"^(?:(?P<pid>\d+)@(?P<sec>\d{1,10})\.(?P<usec>\d{1,6}):|(?P<iso>\d{4}-\d\d-\d\dT[\d:.]+Z) )?"
                    r"(?P<event>\w+) ?(?P<body>.*)$")
H = r"0x([0-9a-fA-F]+)"
D = r"(-?\d+)"
VTD_LOOKUP = re.compile(rf"^IOTLB page (?:hit|update) sid {H} iova {H} slpte {H} domain {H}$")
VTD_PAGES = re.compile(rf"^iotlb invalidate domain {H} addr {H} mask {H}(?: pasid {H})?$")
VTD_DOMAIN = re.compile(rf"^iotlb invalidate (?:whole )?domain {H}(?: pasid {H})?$")
SMMU_LOOKUP = re.compile(rf"^IOTLB cache (?:HIT|MISS) asid={D}(?: vmid={D})? addr={H} hit={D} miss={D} hit rate={D}$")
SMMU_RANGE = re.compile(rf"^(?:vmid={D} )?asid={D} addr={H} tg={D} num_pages={H} ttl={D} leaf={D}(?: stage={D})?$")
SMMU_IOVA = re.compile(rf"^IOTLB invalidate asid={D} addr={H}$")
SMMU_ASID = re.compile(rf"^IOTLB invalidate asid={D}(?: vmid={D})?$")
SMMU_VMID = re.compile(rf"^IOTLB invalidate vmid={D}$")
PTE_ADDR = ((1 << 52) - 1) & ~(PAGE - 1)
HIT, MISS = 1, 2


class _Pages:
    """Open 4 KiB mappings per device; invalidations close them."""

    def __init__(self):
        self.handles = Handles()
        self.by_dev = {}

    def access(self, dev, iova, paddr, outcome):
        """Rows of one lookup: the map of its page when not open, then the
        access with QEMU's outcome. Values the trace cannot hold are a
        ValueError before anything changes."""
        if not (0 <= dev < 1 << 32 and 0 <= iova < 1 << 62 and 0 <= paddr < 1 << 62):
            raise ValueError("value out of range")
        page = iova & ~(PAGE - 1)
        key = (dev, page)
        rows = []
        if key not in self.handles.live:
            h = self.handles.open(key, PAGE)
            self.by_dev.setdefault(dev, set()).add(page)
            rows.append(dict(op=ts.OP_MAP, device=dev, handle=h, iova=page, paddr=paddr & ~(PAGE - 1),
                             size=PAGE, flags=ts.FLAG_IOMMU_API | ts.FLAG_BIDIRECTIONAL | ts.FLAG_GFP_BLOCKING))
        rows.append(dict(op=ts.OP_ACCESS, device=dev, handle=self.handles.live[key][0],
                         offset=iova % PAGE, size=1, flags=ts.FLAG_BIDIRECTIONAL, observed=outcome))
        return rows

    def invalidate(self, devs, lo=0, hi=1 << 64):
        rows = []
        for dev in sorted(devs):
            pages = self.by_dev.get(dev, set())
            for page in sorted(p for p in pages if lo <= p < hi):
                h, _ = self.handles.close((dev, page))
                pages.discard(page)
                rows.append(dict(op=ts.OP_UNMAP, device=dev, handle=h, size=PAGE,
                                 flags=ts.FLAG_IOMMU_API | ts.FLAG_BIDIRECTIONAL))
        return rows


def convert(src, out, strict=False):
    """Import a QEMU trace log into out; returns the report as a dict."""
    lines, truncated = read_lines(src, "QEMU -trace output (vtd_*/smmu_* events)")
    rep = ImportReport(src, strict)
    pages = _Pages()
    vtd_domains = {}  # VT-d domain id -> source ids seen in it
    smmu_devs = set()
    sink = Sink(out, 1, {"import": "qemu", "source": os.path.basename(src)}, extra=[ts.OBSERVED[:2]])
    last_t = 0
    try:
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            m = PREFIX.match(line.strip())
            ev = m["event"] if m else None
            handler = _HANDLERS.get(ev)
            if handler is None:
                if m and (ev.startswith("vtd_") or ev.startswith("smmu")):
                    rep.ignored[ev] += 1  # QEMU's other vIOMMU events: no IOTLB lookup or invalidation
                    continue
                rep.problem("truncated last line" if truncated and lineno == len(lines)
                            else "malformed or unknown line", lineno)
                continue
            try:
                t = _timestamp(m, last_t)
                if t >= 1 << 63:
                    raise ValueError("timestamp out of range")
                rows = handler(m["body"].strip(), pages, vtd_domains, smmu_devs)
            except (ValueError, OverflowError) as e:  # numbers of thousands of digits, bad dates
                rep.problem(f"malformed {ev} event", lineno, str(e))
                continue
            if rows is None:
                rep.problem(f"malformed {ev} event", lineno)
                continue
            last_t = t
            rep.converted[ev] += 1
            for row in rows:
                sink.add(t, row)
        if not sink.w.rows and not sink.cols["ts"]:
            raise HarnessError(f"{src}: no vtd_iotlb_*/smmu_iotlb_* lookups or invalidations "
                               f"to convert; {rep.summary()}")
        sink.close()
    except BaseException:
        sink.abort()
        raise
    result = rep.as_dict()
    result["rows"] = sink.w.rows
    return result


def _timestamp(m, last_t):
    """ns from the line's prefix, never before the previous line (threads
    interleave: file order wins); 1 ns after it without a prefix."""
    if m["sec"]:
        t = int(m["sec"]) * 1_000_000_000 + int(m["usec"].ljust(6, "0")[:6]) * 1000
    elif m["iso"]:
        stamp = datetime.datetime.fromisoformat(m["iso"].replace("Z", "+00:00"))
        t = int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1000
    else:
        t = last_t + 1
    return max(t, last_t)


def _vtd_lookup(outcome):
    def handle(body, pages, domains, _):
        m = VTD_LOOKUP.match(body)
        if not m:
            return None
        sid, iova, slpte, dom = (int(x, 16) for x in m.groups())
        rows = pages.access(sid, iova, slpte & PTE_ADDR, outcome)
        domains.setdefault(dom, set()).add(sid)
        return rows
    return handle


def _vtd_pages(body, pages, domains, _):
    m = VTD_PAGES.match(body)
    if not m:
        return None
    dom, addr, mask = int(m[1], 16), int(m[2], 16), int(m[3], 16)
    if mask > 52:
        return None
    return pages.invalidate(domains.get(dom, ()), addr, addr + (PAGE << mask))


def _vtd_domain(body, pages, domains, _):
    m = VTD_DOMAIN.match(body)
    return None if not m else pages.invalidate(domains.get(int(m[1], 16), ()))


def _vtd_global(body, pages, domains, _):
    return pages.invalidate({s for sids in domains.values() for s in sids})


def _smmu_lookup(outcome):
    def handle(body, pages, _, devs):
        m = SMMU_LOOKUP.match(body)
        if not m:
            return None
        dev = (int(m[2] or 0) & 0xFFFF) << 16 | int(m[1]) & 0xFFFF
        iova = int(m[3], 16)
        rows = pages.access(dev, iova, iova, outcome)
        devs.add(dev)
        return rows
    return handle


def _smmu_range(body, pages, _, devs):
    m = SMMU_RANGE.match(body)
    if not m:
        return None
    vmid, asid, addr, tg, num = int(m[1] or 0), int(m[2]), int(m[3], 16), int(m[4]), int(m[5], 16)
    granule = {0: PAGE, 1: PAGE, 2: 16384, 3: 65536}.get(tg)
    if granule is None:
        return None
    match = {d for d in devs if (asid < 0 or d & 0xFFFF == asid & 0xFFFF)
             and (vmid < 0 or d >> 16 == vmid & 0xFFFF)}
    return pages.invalidate(match, addr, addr + max(1, num) * granule)


def _smmu_iova(body, pages, _, devs):
    m = SMMU_IOVA.match(body)
    if not m:
        return None
    addr = int(m[2], 16)
    return pages.invalidate({d for d in devs if d & 0xFFFF == int(m[1]) & 0xFFFF}, addr, addr + PAGE)


def _smmu_asid(body, pages, _, devs):
    m = SMMU_ASID.match(body)
    if not m:
        return None
    return pages.invalidate({d for d in devs if d & 0xFFFF == int(m[1]) & 0xFFFF})


def _smmu_vmid(body, pages, _, devs):
    m = SMMU_VMID.match(body)
    return None if not m else pages.invalidate({d for d in devs if d >> 16 == int(m[1]) & 0xFFFF})


def _smmu_all(body, pages, _, devs):
    return pages.invalidate(set(devs))


_HANDLERS = {
    "vtd_iotlb_page_hit": _vtd_lookup(HIT), "vtd_iotlb_page_update": _vtd_lookup(MISS),
    "vtd_inv_desc_iotlb_pages": _vtd_pages, "vtd_inv_desc_iotlb_pasid_pages": _vtd_pages,
    "vtd_inv_desc_iotlb_domain": _vtd_domain, "vtd_inv_desc_iotlb_pasid": _vtd_domain,
    "vtd_inv_desc_iotlb_global": _vtd_global,
    "smmu_iotlb_lookup_hit": _smmu_lookup(HIT), "smmu_iotlb_lookup_miss": _smmu_lookup(MISS),
    "smmu_iotlb_cache_hit": _smmu_lookup(HIT), "smmu_iotlb_cache_miss": _smmu_lookup(MISS),
    "smmuv3_range_inval": _smmu_range, "smmuv3_s1_range_inval": _smmu_range,
    "smmu_iotlb_inv_iova": _smmu_iova, "smmu_iotlb_inv_asid": _smmu_asid,
    "smmu_iotlb_inv_asid_vmid": _smmu_asid, "smmu_iotlb_inv_vmid": _smmu_vmid,
    "smmu_iotlb_inv_vmid_s1": _smmu_vmid, "smmu_iotlb_inv_all": _smmu_all,
}
