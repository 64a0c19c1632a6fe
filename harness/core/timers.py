"""Timers on trace time: the flush-queue timer and the rcache depot worker.

Each armed timer is a deadline in D; G_NEXT_TIMER caches the earliest so the
event loop pays one comparison per event. Like mod_timer()/schedule_delayed_
work(), arming a timer that is already pending does nothing.
"""

from harness.core.compiled import njit
from harness.core import layout as L


@njit(cache=True, inline="always")
def arm(S, d, field, deadline):
    if S.D[d, field] == L.NEVER:
        S.D[d, field] = deadline
        if deadline < S.G[L.G_NEXT_TIMER]:
            S.G[L.G_NEXT_TIMER] = deadline


@njit(cache=True)
def earliest(S):
    """(deadline, domain, field) of the earliest armed timer; ties go to the
    lower domain, then the flush-queue timer, then depot classes in order."""
    best, bd, bf = L.NEVER, -1, -1
    for d in range(S.D.shape[0]):
        if S.D[d, L.D_FQ_TIMER] < best:
            best, bd, bf = S.D[d, L.D_FQ_TIMER], d, L.D_FQ_TIMER
        for k in range(L.IOVA_RANGE_CACHE_MAX_SIZE):
            if S.D[d, L.D_DEPOT_TIMER + k] < best:
                best, bd, bf = S.D[d, L.D_DEPOT_TIMER + k], d, L.D_DEPOT_TIMER + k
    return best, bd, bf
