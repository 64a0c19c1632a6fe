"""Borrowed views of the state arrays for the compiled kernel.

Numba reference-counts every array it passes between functions; with the
state's two dozen arrays that cost dominates the per-event work. The kernel
therefore works on views without a meminfo (nothing to count), made once per
call from arrays the caller keeps alive for the duration of that call.
"""

from numba import njit
from numba.core import cgutils
from numba.extending import intrinsic

from harness.core.state import State


@intrinsic
def _borrow(typingctx, arr):
    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, value=args[0])
        out = context.make_array(sig.return_type)(context, builder)
        cgutils.copy_struct(out, src)
        out.meminfo = cgutils.get_null_value(out.meminfo.type)
        out.parent = cgutils.get_null_value(out.parent.type)
        return out._getvalue()
    return arr(arr), codegen


@njit(cache=True)
def _borrow4(t):
    return (_borrow(t[0]), _borrow(t[1]), _borrow(t[2]), _borrow(t[3]))


@njit(cache=True)
def borrowed(S):
    return State(
        _borrow(S.P), _borrow(S.C), _borrow(S.G), _borrow(S.D), _borrow(S.H), _borrow(S.pt),
        _borrow(S.pt_charged), _borrow(S.pt_free), _borrow(S.nodes), _borrow(S.node_free),
        _borrow(S.mags), _borrow(S.mag_len), _borrow(S.mag_next), _borrow(S.mag_free),
        _borrow(S.rc), _borrow(S.fq), _borrow(S.fqh), _borrow(S.gather), _borrow(S.stack),
        _borrow(S.tlb_tag), _borrow(S.tlb_stamp), _borrow(S.tlb_stale),
        _borrow4(S.psc_tag), _borrow4(S.psc_stamp))
