"""glibc allocator tuning for a process that frees and reallocates 64-256 KiB chunks.

Every provider chunk is a fresh bytes object of 64-256 KiB, freed right after it was
written. With glibc's defaults each free of such a block at the top of the heap trims
the heap (and larger blocks come and go as mmap/munmap), so the copy loop pays system
calls per chunk: bench/throughput.py measured 0.75x nginx at 1.17 CPU-s/GB with the
defaults, and 1.1x nginx at 0.8 CPU-s/GB with a fixed mmap threshold of a few MiB and a
32 MiB trim threshold. Memory per client (bench/memory.py) did not change. Blocks above
the mmap threshold (a large playlist export) are still given back to the system at once.
"""

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 32 * 1024 * 1024


def tune_allocator() -> bool:
    """Apply the thresholds when running on glibc; False (and no change) elsewhere."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
