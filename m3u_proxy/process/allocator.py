"""glibc allocator tuning for a process that frees and reallocates 64-256 KiB chunks.

Every provider chunk is a fresh bytes object of 64-256 KiB, freed right after it was
written. With glibc's defaults each free of such a block at the top of the heap trims
the heap (and larger blocks come and go as mmap/munmap), so the copy loop pays system
calls per chunk: bench/throughput.py measured 0.75x nginx at 1.17 CPU-s/GB with the
defaults, and 1.1x nginx at 0.8 CPU-s/GB with a fixed mmap threshold of a few MiB and a
32 MiB trim threshold. Memory per client (bench/memory.py) did not change. Blocks above
the mmap threshold (a large playlist export) are still given back to the system at once.

The price of that threshold: after a heavy run the freed chunks stay in the heap, and
RSS stayed at 64-87 MiB against 51 MiB fresh (issue #19). `MemoryReturn` gives them
back with one ``malloc_trim(0)`` once the viewer count has fallen and stayed down for a
few seconds, at most every ``min_gap`` seconds; never per chunk (a per-chunk trim is
what cost 25 % of the throughput above). A full ``gc.collect()`` goes first: a viewer
that left leaves its last provider chunks in reference cycles (an exception's
traceback holds the copy loop's frame), and tracemalloc showed 11 MiB of them alive
seconds after 50 live viewers left, until the next full collection. What exists when
the server has started (modules, config, routes: ~50,000 objects) is frozen out of the
collector (``gc.freeze``), so that collection walks the viewers' objects only: 33 ms
instead of 147 ms with 300 viewers playing, on a busy machine.
"""

import asyncio
import ctypes
import ctypes.util
import gc
from collections.abc import Callable

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


def malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)`` (free heap pages back to the system), None elsewhere."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryReturn:
    """Decides, once a second, whether freed heap memory should go back to the system.

    It trims when the client count has fallen to half its peak (or to zero) since the
    last trim and has stayed there for ``settle`` ticks, and never twice within
    ``min_gap`` ticks: a heavy run that ends is trimmed ``settle`` seconds later, a
    steady load never.
    """

    def __init__(self, trim: Callable[[], object], settle: int = 5, min_gap: int = 10) -> None:
        self.trim = trim
        self.settle = settle
        self.min_gap = min_gap
        self.peak = 0
        self.low_for = 0
        self.since_trim = min_gap
        self.trims = 0

    def tick(self, clients: int) -> bool:
        """Record this second's client count; True when it trimmed."""
        self.since_trim += 1
        self.peak = max(self.peak, clients)
        fallen = self.peak > 0 and clients <= self.peak // 2
        self.low_for = self.low_for + 1 if fallen else 0
        if self.low_for < self.settle or self.since_trim < self.min_gap:
            return False
        self.trim()
        self.trims += 1
        self.peak, self.low_for, self.since_trim = clients, 0, 0
        return True


async def return_memory(clients: Callable[[], int], every: float = 1.0) -> None:
    """Run `MemoryReturn` over ``clients()`` until cancelled (nothing to do off glibc)."""
    trim = malloc_trim()
    if trim is None:
        return
    if gc.get_freeze_count() == 0:
        gc.freeze()  # once per process: start-up objects are never garbage

    def release() -> None:
        gc.collect()  # the garbage in cycles first, so that its pages can go too
        trim()

    decider = MemoryReturn(release)
    while True:
        await asyncio.sleep(every)
        decider.tick(clients())
