"""Set-associative cache rows (core/cache.py)."""

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from harness.core.cache import find

T, D = 7, 1  # the (tag, domain) looked up


@settings(max_examples=300, deadline=None)
@given(ways=st.integers(0, 200), first=st.sampled_from([0, 13, 32, 300]), width=st.sampled_from([0, 64]),
       data=st.data())
@example(ways=64, first=0, width=64, data=None).via("the last way of one chunk")
@example(ways=65, first=0, width=64, data=None).via("one way past a chunk")
@example(ways=97, first=32, width=64, data=None).via("past the top 32 and a chunk")
@example(ways=12, first=0, width=0, data=None).via("a row too narrow for two vector compares")
@example(ways=128, first=0, width=64, data=None).via("two whole chunks")
@example(ways=129, first=13, width=64, data=None).via("two chunks and one way")
def test_find_returns_the_lowest_matching_way(ways, first, width, data):
    """find() over rows of any width (8 ways at a time in vector compares up
    to 16 or `first`, a select per way in an array too narrow for them, then
    64 at a time) returns the lowest way holding the tag and domain, or -1,
    and never reads past the row's ways (padded with matches, where the
    array is wider: width 0 makes it exactly as wide)."""
    tag = np.full((1, ways + width), T, np.int64)
    dom = np.full((1, ways + width), D, np.int64)
    if data is None:  # an example: one match at the last way, then none
        hits = [[ways - 1], []]
    else:
        # near misses: the tag of another domain, another tag of this one
        tag[0, :ways] = data.draw(st.lists(st.sampled_from([T, 3, -1]), min_size=ways, max_size=ways))
        dom[0, :ways] = [D if t != T else 0 for t in tag[0, :ways]]
        hits = [data.draw(st.lists(st.integers(0, max(ways - 1, 0)), max_size=3 if ways else 0))]
    for where in hits:
        dom[0, :ways] = np.where(tag[0, :ways] == T, 0, dom[0, :ways])
        for w in where:
            tag[0, w], dom[0, w] = T, D
        assert find(tag, dom, 0, ways, T, D, first) == min(where, default=-1)
