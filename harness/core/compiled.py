"""How the kernels are compiled: no reference counting, no index wraparound,
inlining without quadratic copies.

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
unchecked, as is numba's default.

Inlining (inline="always") copies the callee's IR block by block, twice
(InlineWorker.inline_ir, numba 0.68: a working copy and the one it returns),
each block with a fresh deepcopy memo, so every block drags along its own
copy of the function's whole variable scope: blocks x variables per inlined
call, and the event loop inlines functions that have inlined others. One
memo per inline_ir call copies the scope once per copy and shares it among
the callee's blocks, as the original IR does. That holds for any numba code
in the process: the copies are equal to numba's own.
And every inlined call runs the callee's untyped pipeline again
(InlineWorker.run_untyped_passes from inline_function, enable_ssa False),
with its own inlining, though the IR depends only on the function and the
compile flags and inline_ir copies it before changing it. For functions of
the harness that IR is kept per (function, flags, typing and target
context), the call's one side effect on the caller's flags (enable_ssa)
kept too; numba's overload inlining (typing/templates.py, enable_ssa True)
changes the IR it gets and is left alone. The kernels' globals are not
rebound at run time, which a kept IR would not see. On the build machine
the shared memo took the first compile from 7 min 52 s to 4 min 1 s, and
keeping the untyped IR took another tenth off (277 s to 251 s, two compiles
side by side). pyproject.toml pins numba to 0.68.x: these hooks follow its
internals.

Imported by harness.core before any kernel compiles.
"""

import copy
import functools

import numba
from numba.core import inline_closurecall, types
from numba.np import arrayobj

_OURS = ("_ZN7harness4core", "_ZN7harness7vendors")
_fix_integer_index = arrayobj.fix_integer_index


def njit(*args, **options):
    return numba.njit(*args, _nrt=False, **options)


def _fix(context, builder, idxty, idx, size):
    if idxty.signed and builder.function.name.startswith(_OURS):
        return context.cast(builder, idx, idxty, types.intp)
    return _fix_integer_index(context, builder, idxty, idx, size)


class _SharedMemoCopy:
    """The `copy` module as inline_closurecall sees it: deepcopy shares the
    memo of the inline_ir call in progress."""

    memo = None

    def deepcopy(self, x, memo=None):
        return copy.deepcopy(x, self.memo if memo is None else memo)

    def __getattr__(self, name):  # the rest of the module, should numba use more of it
        return getattr(copy, name)


def _one_memo(inline_ir):
    @functools.wraps(inline_ir)
    def wrapped(*args, **kwargs):
        outer, _copy.memo = _copy.memo, {}
        try:
            return inline_ir(*args, **kwargs)
        finally:
            _copy.memo = outer
    wrapped.one_memo = True
    return wrapped


def _keep_untyped(run_untyped_passes):
    kept = {}

    @functools.wraps(run_untyped_passes)
    def wrapped(self, func, enable_ssa=False):
        if enable_ssa or self.locals or not func.__module__.startswith("harness."):
            return run_untyped_passes(self, func, enable_ssa)
        self.flags.enable_ssa = enable_ssa
        key = (func, id(self.typingctx), id(self.targetctx), repr(sorted(self.flags.values().items())))
        if key not in kept:
            kept[key] = run_untyped_passes(self, func, enable_ssa)
        return kept[key]
    return wrapped


_copy = _SharedMemoCopy()
if arrayobj.fix_integer_index is _fix_integer_index:
    arrayobj.fix_integer_index = _fix
if not getattr(inline_closurecall.InlineWorker.inline_ir, "one_memo", False):
    inline_closurecall.copy = _copy
    _worker = inline_closurecall.InlineWorker
    _worker.inline_ir = _one_memo(_worker.inline_ir)
    _worker.run_untyped_passes = _keep_untyped(_worker.run_untyped_passes)
