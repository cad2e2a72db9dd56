"""Signed tokens: playback tokens for stream ids and opaque, stream-bound HLS URLs.

HLS tokens are self-contained so that several instances sharing ``secret_key`` agree:
``mac = HMAC(secret, "hls|stream_id|kind|url")[:16]`` and the URL is XOR-ed with a
keystream derived from the secret and the mac (a deterministic SIV-style construction
from the standard library's hashes). The same URL always yields the same token, which
keeps shared fetches and caching keyed on it; an altered or foreign token fails the
MAC check before anything is contacted.
"""

import base64
import binascii
import hashlib
import hmac
import secrets

MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class Signer:
    def __init__(self, secret: str) -> None:
        self._mac_key = hashlib.sha256(b"mac|" + secret.encode()).digest()
        self._enc_key = hashlib.sha256(b"enc|" + secret.encode()).digest()

    def _mac(self, message: str) -> bytes:
        return hmac.new(self._mac_key, message.encode(), hashlib.sha256).digest()[:MAC_BYTES]

    def playback_token(self, stream_id: str) -> str:
        return _b64(self._mac(f"play|{stream_id}"))

    def check_playback(self, stream_id: str, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.playback_token(stream_id))

    def _keystream(self, mac: bytes, length: int) -> bytes:
        return hashlib.shake_256(self._enc_key + mac).digest(length)

    def seal(self, stream_id: str, kind: str, url: str) -> str:
        raw = url.encode("utf-8")
        mac = self._mac(f"hls|{stream_id}|{kind}|{url}")
        cipher = bytes(a ^ b for a, b in zip(raw, self._keystream(mac, len(raw)), strict=True))
        return _b64(mac + cipher)

    def open(self, stream_id: str, kind: str, token: str) -> str | None:
        """The URL sealed in ``token`` for this stream and kind, or None if it is not ours."""
        try:
            blob = _unb64(token)
        except (binascii.Error, ValueError):
            return None
        if len(blob) <= MAC_BYTES:
            return None
        mac, cipher = blob[:MAC_BYTES], blob[MAC_BYTES:]
        raw = bytes(a ^ b for a, b in zip(cipher, self._keystream(mac, len(cipher)), strict=True))
        try:
            url = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not hmac.compare_digest(mac, self._mac(f"hls|{stream_id}|{kind}|{url}")):
            return None
        return url
