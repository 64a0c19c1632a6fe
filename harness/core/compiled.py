"""How the kernels are compiled: no reference counting, no index wraparound.

njit() is numba's with the runtime's reference counting off (the `_nrt`
target option): the kernels allocate nothing, they work on the state's
preallocated arrays, and with counting on every non-inlined call taking the
state tuple increfs and decrefs its three dozen arrays (tens of nanoseconds
a call).

Numba compiles every signed variable index i as `i + n if i < 0 else i`, a
compare, add and select per dimension that LLVM rarely proves away (a set
index `pfn & (sets - 1)`, a way, a level). The kernels index only with
non-negative values (rows, slots, ways, levels; -1 sentinels are tested
before use), so for functions of harness.core and harness.vendors the select
is dropped: a negative index there, even a literal a[-1], reads before the
array. Numba code outside these packages compiles as before. Bounds stay
unchecked, as is numba's default. Imported by harness.core before any
kernel compiles.
"""

import numba
from numba.core import types
from numba.np import arrayobj

_OURS = ("_ZN7harness4core", "_ZN7harness7vendors")
_fix_integer_index = arrayobj.fix_integer_index


def njit(*args, **options):
    return numba.njit(*args, _nrt=False, **options)


def _fix(context, builder, idxty, idx, size):
    if idxty.signed and builder.function.name.startswith(_OURS):
        return context.cast(builder, idx, idxty, types.intp)
    return _fix_integer_index(context, builder, idxty, idx, size)


if arrayobj.fix_integer_index is _fix_integer_index:
    arrayobj.fix_integer_index = _fix
