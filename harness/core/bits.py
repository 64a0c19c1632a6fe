"""Bit helpers with the kernel's meanings (include/linux/bitops.h, log2.h)."""

from numba import njit


@njit(cache=True, inline="always")
def fls0(x):
    """Index of the highest set bit (__fls), -1 for 0."""
    if x == 0:
        return -1
    n = 0
    if x >> 32:
        x >>= 32
        n += 32
    if x >> 16:
        x >>= 16
        n += 16
    if x >> 8:
        x >>= 8
        n += 8
    if x >> 4:
        x >>= 4
        n += 4
    if x >> 2:
        x >>= 2
        n += 2
    if x >> 1:
        n += 1
    return n


@njit(cache=True, inline="always")
def ffs0(x):
    """Index of the lowest set bit (__ffs); x must be non-zero."""
    return fls0(x & -x)


@njit(cache=True, inline="always")
def fls_long(x):
    """fls_long(): 1-based highest set bit, 0 for 0."""
    return fls0(x) + 1


@njit(cache=True, inline="always")
def order_base_2(n):
    """order_base_2(): ceil(log2(n)), 0 for n <= 1."""
    return fls0(n - 1) + 1 if n > 1 else 0
