"""CPU allocator setting for training and timing processes.

PyTorch's CPU tensors come from glibc ``malloc``. With glibc's defaults, blocks above a moving
threshold are ``mmap``-ed and handed back on free, so every step page-faults its large
activations in again (on the 2-core development machine that is up to 5x the time of an
elementwise kernel, and ~10% of an MLC-D step). Serving blocks up to 32 MiB from the heap and
keeping freed heap memory makes later steps reuse it, like a caching allocator.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.cache
def retain_freed_cpu_memory() -> bool:
    """Keep freed CPU memory for reuse (glibc only; once per process). Does nothing when the
    user set ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``. Returns whether it applied."""
    if not sys.platform.startswith("linux") or {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**30) == 1
    except (OSError, AttributeError):
        return False
