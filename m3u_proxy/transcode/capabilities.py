"""What the machine offers for transcoding, found once: the ffmpeg version and acceleration.

Both are detected the first time someone asks (``GET /info``) and never on the event
loop itself: the version is an awaited subprocess with a deadline, the hardware
probe (`hwaccel.detect`, which runs ``ffmpeg -encoders`` and reads ``/dev``) runs in
a worker thread. Later callers share the first result.
"""

import asyncio
import contextlib

import attrs

from m3u_proxy.transcode.ffmpeg import ffmpeg_binary
from m3u_proxy.transcode.hwaccel import HardwareAcceleration, detect, ffmpeg_encoders

PROBE_SECONDS = 5.0


@attrs.frozen
class Detected:
    ffmpeg_version: str | None  # None: no ffmpeg on PATH (or it did not answer)
    hardware: HardwareAcceleration


def parse_version(output: str) -> str | None:
    """``ffmpeg version 5.1.6-0+deb12u1 Copyright ...`` -> ``5.1.6-0+deb12u1``."""
    words = output.split("\n", 1)[0].split()
    if len(words) >= 3 and words[1] == "version":
        return words[2]
    return None


async def ffmpeg_version(binary: str | None) -> str | None:
    """The version of ffmpeg at ``binary``; None when it is missing or does not answer."""
    if binary is None:
        return None
    try:
        process = await asyncio.create_subprocess_exec(
            binary,
            "-version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    return parse_version(out.decode("utf-8", "replace"))


def _hardware(binary: str | None) -> HardwareAcceleration:
    """Blocking; none without ffmpeg (there is nothing to accelerate)."""
    return detect(ffmpeg_encoders(binary)) if binary is not None else HardwareAcceleration()


class Capabilities:
    """Detection, run once on first use and shared by every later request."""

    def __init__(self, binary: str | None = None, *, look_up: bool = True) -> None:
        self.binary = binary if binary is not None or not look_up else ffmpeg_binary()
        self._task: asyncio.Task[Detected] | None = None

    async def _detect(self) -> Detected:
        version = await ffmpeg_version(self.binary)
        hardware = await asyncio.to_thread(_hardware, self.binary)
        return Detected(version, hardware)

    async def get(self) -> Detected:
        if self._task is None:
            self._task = asyncio.create_task(self._detect())
        # Shielded: a caller that goes away must not cancel the detection for the others.
        return await asyncio.shield(self._task)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
