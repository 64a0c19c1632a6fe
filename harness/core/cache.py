"""Set-associative LRU caches (IOTLB, paging-structure caches) over numpy arrays.

A cache is (tag[sets, ways], stamp[sets, ways]): tag -1 is an invalid way;
stamp orders ways by last use. A fill takes the lowest invalid way, else the
least recently used one. Set index: low bits of the page number.
"""

import numpy as np
from numba import njit

from harness.core import layout as L


@njit(cache=True, inline="always")
def lookup(tag, stamp, s, t, G):
    """Way holding tag t in set s (stamped as most recently used), or -1."""
    for w in range(tag.shape[1]):
        if tag[s, w] == t:
            G[L.G_CLOCK] += 1
            stamp[s, w] = G[L.G_CLOCK]
            return w
    return -1


@njit(cache=True, inline="always")
def fill(tag, stamp, s, t, G):
    """Insert tag t into set s; returns (way, evicted tag or -1)."""
    victim = 0
    oldest = np.int64(1) << 62
    for w in range(tag.shape[1]):
        if tag[s, w] == -1:
            victim = w
            break
        if stamp[s, w] < oldest:
            oldest = stamp[s, w]
            victim = w
    evicted = tag[s, victim]
    tag[s, victim] = t
    G[L.G_CLOCK] += 1
    stamp[s, victim] = G[L.G_CLOCK]
    return victim, evicted
