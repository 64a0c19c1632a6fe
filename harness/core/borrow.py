"""Borrowed views of the state arrays for the compiled kernel.

Numba reference-counts every array it passes between functions; with the
state's two dozen arrays that cost dominates the per-event work. The kernel
therefore works on views without a meminfo (nothing to count), made once per
call from arrays the caller keeps alive for the duration of that call (the
state, and the trace columns of the batch).
"""

from numba import njit
from numba.core import cgutils
from numba.extending import intrinsic

from harness.core.state import State


@intrinsic
def borrow(typingctx, arr):
    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, value=args[0])
        out = context.make_array(sig.return_type)(context, builder)
        cgutils.copy_struct(out, src)
        out.meminfo = cgutils.get_null_value(out.meminfo.type)
        out.parent = cgutils.get_null_value(out.parent.type)
        return out._getvalue()
    return arr(arr), codegen


@njit(cache=True)
def borrowed(S):
    return State(
        borrow(S.P), borrow(S.C), borrow(S.G), borrow(S.D), borrow(S.H), borrow(S.pt),
        borrow(S.pt_bytes), borrow(S.pt_charged), borrow(S.pt_free), borrow(S.nodes), borrow(S.node_free),
        borrow(S.mags), borrow(S.mag_len), borrow(S.mag_next), borrow(S.mag_free),
        borrow(S.rc), borrow(S.fq), borrow(S.fqh), borrow(S.gather), borrow(S.stack), borrow(S.resv),
        borrow(S.tlb_tag), borrow(S.tlb_dom), borrow(S.tlb_stamp), borrow(S.tlb_stale),
        borrow(S.psc_tag), borrow(S.psc_dom), borrow(S.psc_stamp),
        borrow(S.utlb_tag), borrow(S.utlb_stamp), borrow(S.utlb_stale), borrow(S.grid), borrow(S.CK))
