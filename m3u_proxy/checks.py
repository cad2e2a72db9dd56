"""Validation of fields that several request bodies share: URLs and HTTP headers.

Streams, webhooks and imported playlists all take provider or receiver URLs and extra
headers; each check raises `ValidationFailed` naming the field, which the error
middleware answers with 422.
"""

from typing import Any
from urllib.parse import urlsplit

from m3u_proxy.errors import ValidationFailed

MAX_URL_LENGTH = 8192


def check_url(field: str, value: Any) -> str:
    """An absolute http(s) URL with a host, no whitespace or control characters."""
    if not isinstance(value, str) or not value:
        raise ValidationFailed(field, "must be a non-empty string")
    if len(value) > MAX_URL_LENGTH:
        raise ValidationFailed(field, f"longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValidationFailed(field, "must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ValidationFailed(field, f"is not a valid URL ({exc})") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise ValidationFailed(field, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValidationFailed(field, "must name a host")
    return value


def check_header_value(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationFailed(field, "must be a string")
    if "\r" in value or "\n" in value or "\0" in value:
        # Header injection: a CR/LF would let a caller smuggle extra upstream headers.
        raise ValidationFailed(field, "must not contain CR, LF or NUL characters")
    return value


def is_empty(value: Any) -> bool:
    """Absent, null, or ``[]``: PHP's json_encode writes an empty array (m3u-editor's
    headers and metadata when it has none) as ``[]``, never ``{}``."""
    return value is None or (isinstance(value, list) and not value)


def check_headers(field: str, value: Any) -> dict[str, str]:
    if is_empty(value):
        return {}
    if not isinstance(value, dict):
        raise ValidationFailed(field, "must be an object of string values")
    headers: dict[str, str] = {}
    for name, header_value in value.items():
        token_ok = name and all(
            33 <= ord(ch) <= 126 and ch not in '()<>@,;:\\"/[]?={}' for ch in name
        )
        if not token_ok:
            raise ValidationFailed(f"{field}.{name}", "is not a valid header name")
        headers[name] = check_header_value(f"{field}.{name}", header_value)
    return headers
