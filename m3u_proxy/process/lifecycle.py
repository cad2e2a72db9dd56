"""Process lifecycle: systemd readiness notification, start-up checks, graceful stop.

`Notifier` speaks the sd_notify protocol with the standard library only: one datagram
per message to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a leading ``@``
means the Linux abstract namespace), see sd_notify(3). Without the variable it does
nothing, so the same binary runs under systemd (``Type=notify``), Docker or a shell.

`prepare_data_dir` turns an unusable data directory into one clear sentence before any
socket is opened, and `InFlight` holds the stop to ``shutdown_timeout`` for whatever is
still running.
"""

import asyncio
import os
import socket
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from m3u_proxy.logs import get_logger

log = get_logger(__name__)


class StartupError(Exception):
    """The server cannot start for a reason the operator must fix; one line for stderr."""


def notify_address(value: str) -> str | None:
    """The socket address of a ``$NOTIFY_SOCKET`` value: a path, or ``@name`` (abstract)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # sd_notify(3) also allows vsock addresses; systemd never passes them here


class Notifier:
    """Sends sd_notify messages (``READY=1``, ``STOPPING=1``, ``STATUS=...``) to systemd."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.address = notify_address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = watchdog_interval(environ)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; say whether it was delivered.

        A lost notification must never take the server down: systemd itself treats the
        protocol as best effort, so failures are logged and swallowed.
        """
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self.address)
        except OSError as exc:
            log.warning("sd_notify_failed", error=exc.strerror or str(exc))
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=status, MAINPID=str(os.getpid()))

    def stopping(self, status: str) -> bool:
        return self.send(STOPPING="1", STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    async def keep_watchdog(self) -> None:
        """Ping systemd's watchdog (``WatchdogSec=``) from the event loop itself.

        The pings come from the loop that serves players, so a loop that hangs stops
        pinging and systemd restarts the service.
        """
        interval = self.watchdog_interval
        while interval is not None:
            self.send(WATCHDOG="1")
            await asyncio.sleep(interval)


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC`` (systemd's advice), if the watchdog is for this process."""
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


def prepare_data_dir(path: Path) -> None:
    """Create the data directory if needed and prove a file can be written in it.

    SQLite would fail too, but later and with a less direct message; a read-only mount
    or a path below a regular file is reported here in one sentence naming the path.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StartupError(f"data directory {path} is not writable: {reason}") from exc


def listen_error(host: str, port: int, exc: OSError) -> StartupError:
    """One line for a socket that cannot be bound: address in use, no permission, bad host."""
    if isinstance(exc, socket.gaierror) or not exc.errno:
        reason = exc.strerror or str(exc)
    else:
        reason = os.strerror(exc.errno)
    return StartupError(f"cannot listen on {host}:{port}: {reason}")


class InFlight:
    """Tasks serving a prepared (streaming) response, for the shutdown deadline.

    aiohttp's ``shutdown_timeout`` is spent twice before a streaming handler is
    cancelled: once waiting for it to finish, then again after cancelling its request
    body, which a proxy handler never reads. `cancel_remaining`, scheduled
    ``shutdown_timeout`` seconds after the stop began, keeps the configured promise;
    cancelling ``request.task`` is what aiohttp itself does when a client disconnects.
    """

    def __init__(self) -> None:
        self._tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    async def track(self, request: web.Request, response: web.StreamResponse) -> None:
        """``on_response_prepare`` hook."""
        self._tasks.add(request.task)

    def cancel_remaining(self) -> int:
        """Cancel every tracked task still running; return how many there were."""
        running = [task for task in self._tasks if not task.done()]
        for task in running:
            task.cancel()
        if running:
            log.info("shutdown_timeout_expired", cancelled=len(running))
        return len(running)
