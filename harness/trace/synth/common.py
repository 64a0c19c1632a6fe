"""What every generator shares: parameters, event arrays, time-ordered
streaming to the writer, physical buffer placement and size parsing."""

from collections import namedtuple

import numpy as np

from harness.errors import HarnessError
from harness.trace import schema as ts

PAGE = 4096
CHUNK = 1 << 18  # work items (packets, I/Os, accesses) per generated chunk
MAX_TS = 1 << 62

Param = namedtuple("Param", "name default help")
Workload = namedtuple("Workload", "kind fn params doc")
KINDS = {}


def workload(kind, *params):
    """Register a generator fn(path, **params) -> rows written as `kind`."""
    def register(fn):
        KINDS[kind] = Workload(kind, fn, params, (fn.__doc__ or "").strip().split("\n\n")[0])
        return fn
    return register


def generate(kind, path, **params):
    """Write a trace of `kind` with params (defaults for the rest); returns rows."""
    if kind not in KINDS:
        raise HarnessError(f"synth kind {kind!r}: expected one of {', '.join(sorted(KINDS))}")
    w = KINDS[kind]
    known = {p.name for p in w.params} | {"seed"}
    for k in params:
        if k not in known:
            raise HarnessError(f"synth {kind}: unknown parameter {k!r}; expected one of "
                               f"{', '.join(sorted(known))}")
    return w.fn(path, **params)


def fail(kind, what):
    raise HarnessError(f"{kind}: {what}")


def parse_size(text, name="size"):
    """Bytes from 4096, '4K', '2M', '1G' (binary units)."""
    if isinstance(text, (int, np.integer)):
        return int(text)
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise HarnessError(f"{name} {text!r}: expected bytes like 4096, 64K, 2M or 1G") from None


def parse_mix(text, name):
    """(sizes, weights) from '4K:70,64K:20,1M:10' (weights need not sum to 1)."""
    sizes, weights = [], []
    for part in str(text).split(","):
        size, _, weight = part.partition(":")
        sizes.append(parse_size(size, name))
        try:
            weights.append(float(weight) if weight else 1.0)
        except ValueError:
            raise HarnessError(f"{name} {text!r}: expected size:weight pairs like 4K:70,1M:30") from None
    w = np.array(weights)
    if not len(sizes) or min(sizes) < 1 or (w < 0).any() or w.sum() <= 0:
        raise HarnessError(f"{name} {text!r}: expected positive sizes and weights")
    return np.array(sizes, np.int64), w / w.sum()


def device_id(text):
    try:
        return int(text, 0) if isinstance(text, str) else int(text)
    except ValueError:
        raise HarnessError(f"device {text!r}: expected a requester id like 0x0300") from None


def events(t, op, handle, size, *, cpu=0, device=0, pasid=0, iova=0, paddr=0, offset=0,
           flags=0, phase=0):
    """Columns of len(t) events; scalars stay scalars until written. phase
    (0..7) orders events of one timestamp; rows of equal (ts, phase) keep the
    order they were generated in (a scatterlist's rows stay together)."""
    cols = {"ts": np.asarray(t, np.int64), "op": op, "cpu": cpu, "device": device,
            "pasid": pasid, "handle": handle, "iova": iova, "paddr": paddr, "size": size,
            "offset": offset, "flags": flags, "_phase": phase}
    return {k: v if np.ndim(v) == 0 else np.asarray(v, np.int64) for k, v in cols.items()}


def _rows(ev):
    return len(ev["ts"])


def cat(*evs):
    """Events of several groups; a column equal to one scalar in all stays scalar."""
    evs = [e for e in evs if e is not None and _rows(e)]
    if not evs:
        return None
    out = {}
    for k in evs[0]:
        vals = [e[k] for e in evs]
        if all(np.ndim(v) == 0 for v in vals) and len({int(v) for v in vals}) == 1:
            out[k] = vals[0]
        else:
            out[k] = np.concatenate([np.broadcast_to(np.asarray(v, np.int64), _rows(e))
                                     for v, e in zip(vals, evs)])
    return out


def select(ev, idx):
    """The events at idx (a mask or indices); scalar columns stay scalars."""
    return {k: v if np.ndim(v) == 0 else v[idx] for k, v in ev.items()}


class Stream:
    """Writes generated events in (ts, phase) order, stable for ties. Chunks
    may overlap in time: events at or past the horizon (the earliest time a
    later chunk can produce) wait for the next push."""

    def __init__(self, writer):
        self.w = writer
        self.carry = None

    def push(self, ev, horizon=None):
        ev = cat(self.carry, ev)
        self.carry = None
        if ev is None:
            return
        if ev["ts"].max() >= MAX_TS:
            raise HarnessError(f"timestamps reach {int(ev['ts'].max()):,} ns, beyond 2^62: raise the rate")
        order = np.lexsort((np.broadcast_to(ev["_phase"], ev["ts"].shape), ev["ts"]))  # stable
        t = ev["ts"][order]
        cut = len(t) if horizon is None else int(np.searchsorted(t, horizon))
        n = len(t)
        self.w.write({k: (np.full(cut, v) if np.ndim(v) == 0 else v[order[:cut]])
                      for k, v in ev.items() if not k.startswith("_")})
        if cut < n:
            self.carry = select(ev, order[cut:])

    def close(self):
        rest, self.carry = self.carry, None
        self.push(rest)


def frames(rng, n, size, align=PAGE, below=1 << 36):
    """Physical addresses of n buffers of `size` bytes from the page allocator:
    random frames below `below`, aligned to `align` (its order for multi-page
    buffers: the buddy allocator hands out naturally aligned blocks)."""
    align = max(align, 1 << (max(size, PAGE) - 1).bit_length()) if align == PAGE else align
    lo = max(1, (1 << 20) // align)
    return rng.integers(lo, below // align, size=n, dtype=np.int64) * align


def zipf_cdf(n, alpha):
    """Cumulative probabilities of ranks 1..n under Zipf(alpha) (alpha >= 0)."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -alpha
    c = np.cumsum(w)
    return c / c[-1]


def ranks(cdf, u):
    """np.searchsorted(cdf, u), looking the uniforms up in sorted order: the
    same ranks, with cache-friendly probes of a large cdf."""
    order = np.argsort(u)
    out = np.empty(len(u), np.int64)
    out[order] = np.searchsorted(cdf, u[order])
    return out


def check_positive(kind, **values):
    for k, v in values.items():
        if v is None or not v > 0:
            fail(kind, f"--{k.replace('_', '-')} {v}: expected > 0")


def check_span(kind, ns):
    """Timestamps must stay below 2^62 ns."""
    if not ns < MAX_TS:
        fail(kind, f"the trace would span {ns:.3g} ns, beyond 2^62: raise the rate")


def check_at_least(kind, low, **values):
    for k, v in values.items():
        if v is None or not v >= low:
            fail(kind, f"--{k.replace('_', '-')} {v}: expected >= {low}")
