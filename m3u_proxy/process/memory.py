"""How much memory the process holds right now (resident set), for /stats and the page.

Linux's ``/proc/self/statm`` gives the current resident pages in one short read;
``getrusage`` would only give the peak. Elsewhere the figure is unknown (None).
"""

import os


def resident_bytes() -> int | None:
    """Resident set size in bytes, or None where /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
