"""Event loop selection: uvloop when importable, the stdlib loop otherwise."""

import asyncio
from collections.abc import Callable


def loop_factory() -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Return (name, factory) for the fastest loop available on this machine."""
    try:
        import uvloop  # noqa: PLC0415 - optional at import time by design
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return "asyncio", asyncio.new_event_loop
    return "uvloop", uvloop.new_event_loop
