"""Wall-clock timestamps in the one format the API, events and the store use."""

from datetime import UTC, datetime


def utc_now() -> str:
    """Now as ISO 8601 UTC with milliseconds and a ``Z`` (``2026-01-02T03:04:05.678Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
