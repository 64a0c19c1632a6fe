"""Bit helpers with the kernel's meanings (include/linux/bitops.h, log2.h),
compiled to the CPU's count-leading/trailing-zeros instructions."""

from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros

from harness.core.compiled import njit


@njit(cache=True, inline="always")
def fls0(x):
    """Index of the highest set bit (__fls), -1 for 0."""
    return 63 - leading_zeros(x) if x else -1


@njit(cache=True, inline="always")
def ffs0(x):
    """Index of the lowest set bit (__ffs); x must be non-zero."""
    return trailing_zeros(x)


@njit(cache=True, inline="always")
def fls_long(x):
    """fls_long(): 1-based highest set bit, 0 for 0."""
    return fls0(x) + 1


@njit(cache=True, inline="always")
def order_base_2(n):
    """order_base_2(): ceil(log2(n)), 0 for n <= 1."""
    return fls0(n - 1) + 1 if n > 1 else 0
