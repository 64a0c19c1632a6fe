"""Software prefetch of state the trace names ahead of the event that uses it.

An event's first dependent load is its handle's row of S.H: a nic-rx stream
keeps thousands of mappings in flight, and between a buffer's map and its
access or unmap the other buffers' rows and the streamed trace columns push
the row out of the core's caches. The handle column says which row the event
a few rows on will want, so the loop asks for it early (x86 PREFETCHT0 via
llvm.prefetch: no fault, no architectural effect) and the row arrives while
the events before it run. Handle rows are 64 bytes on a 64-byte boundary
(state._full): one line.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from harness.core.compiled import njit

AHEAD = 8  # rows: at 30 M events/s about 270 ns, longer than a DRAM miss


@intrinsic
def _prefetch_row(typingctx, arr, row):
    """llvm.prefetch(&arr[row, 0], read, keep in all levels, data)."""
    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer2(
            context, builder, ary.data, cgutils.unpack_tuple(builder, ary.shape),
            cgutils.unpack_tuple(builder, ary.strides), aryty.layout,
            [args[1], context.get_constant(types.intp, 0)], wraparound=False)
        ptr = builder.bitcast(ptr, cgutils.voidptr_t)  # one declaration whatever the dtype
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return types.void(arr, types.intp), codegen


@njit(cache=True, inline="always")
def handle_row(H, handle, i):
    """Prefetch the row of S.H that row i + AHEAD of the batch names."""
    j = i + AHEAD
    if j < len(handle):
        h = handle[j]
        if h < H.shape[0]:  # also excludes NO_HANDLE
            _prefetch_row(H, h)


@njit(cache=True, inline="always")
def other_handle_row(H, handle, i):
    """handle_row() when row i + AHEAD names another handle than row i: a
    stream of accesses that stays on one mapping has its row at hand."""
    j = i + AHEAD
    if j < len(handle):
        h = handle[j]
        if h < H.shape[0] and h != handle[i]:
            _prefetch_row(H, h)
