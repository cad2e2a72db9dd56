"""Hardware acceleration: what this machine offers ffmpeg, found once at start.

Looked for, in order: NVIDIA (``/dev/nvidia0`` and an ``h264_nvenc`` encoder), Intel
Quick Sync (a render node whose vendor is Intel and an ``h264_qsv`` encoder), VAAPI (any
``/dev/dri/renderD*`` node). What is found fills ``/info.hardware_acceleration`` and the
``{hwaccel}`` variable of profiles (hardware decoding; frames come back to system memory,
so software encoders keep working). Nothing found: ``{hwaccel}`` is empty.
"""

import subprocess
from pathlib import Path

import attrs

INTEL = "0x8086"


@attrs.frozen
class HardwareAcceleration:
    enabled: bool = False
    type: str | None = None  # "nvidia", "qsv" or "vaapi"
    device: str | None = None
    ffmpeg_args: tuple[str, ...] = ()

    def public(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "type": self.type,
            "device": self.device,
            "ffmpeg_args": list(self.ffmpeg_args),
        }


def ffmpeg_encoders(binary: str | None) -> str:
    """``ffmpeg -encoders`` output ('' without ffmpeg); blocking, call it off the loop."""
    if binary is None:
        return ""
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, the ffmpeg found on PATH
            [binary, "-hide_banner", "-encoders"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout


def detect(
    encoders: str, dev: Path = Path("/dev"), sys_drm: Path = Path("/sys/class/drm")
) -> HardwareAcceleration:
    """What acceleration ``encoders`` (ffmpeg's list) and the device nodes allow."""
    if (dev / "nvidia0").exists() and "h264_nvenc" in encoders:
        return HardwareAcceleration(True, "nvidia", str(dev / "nvidia0"), ("-hwaccel", "cuda"))
    nodes = sorted((dev / "dri").glob("renderD*")) if (dev / "dri").is_dir() else []
    for node in nodes:
        vendor = sys_drm / node.name / "device" / "vendor"
        try:
            is_intel = vendor.read_text().strip() == INTEL
        except OSError:
            is_intel = False
        if is_intel and "h264_qsv" in encoders:
            return HardwareAcceleration(True, "qsv", str(node), ("-hwaccel", "qsv"))
    if nodes:
        first = str(nodes[0])
        return HardwareAcceleration(
            True, "vaapi", first, ("-hwaccel", "vaapi", "-hwaccel_device", first)
        )
    return HardwareAcceleration()
