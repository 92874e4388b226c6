"""The dashboard's browser login: a signed session cookie in place of the ``X-API-Key`` header.

A browser posts an API key once (``POST /login``) and gets a cookie
``<expiry>.<key tag>.<signature>``: the expiry in epoch seconds, a tag naming which API key was
used (an HMAC of the key, so the cookie does not carry the key or a plain hash of it), and an
HMAC-SHA256 of both under the session secret. A cookie is valid until it expires and while the
key it was made from is still configured: removing a key from the settings ends its sessions.

The cookie is HttpOnly (scripts cannot read it), SameSite=Strict (no other site can make the
browser send it, which is also what protects ``POST /logout`` and the JSON API from cross-site
requests) and Secure when the request came over HTTPS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from typing import Final

COOKIE_NAME: Final = "facestream_session"
_TAG_BYTES: Final = 8


class SessionCodec:
    """Makes and checks session cookie values for a set of API keys."""

    def __init__(self, keys: Iterable[bytes], secret: bytes | None, lifetime_seconds: float):
        # Without a configured secret, one per process: sessions end at restart, never forgeable.
        self._secret = secret or secrets.token_bytes(32)
        self._tags = {self._tag(key): key for key in keys}
        self.lifetime_seconds = lifetime_seconds
        if not self._tags:
            raise ValueError("SessionCodec needs at least one key")

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()

    def _tag(self, key: bytes) -> str:
        return self._mac(b"key\x00" + key)[: 2 * _TAG_BYTES]

    def issue(self, key: bytes, now: float | None = None) -> str:
        """A cookie value for a client that proved it holds ``key`` (one of the keys)."""
        tag = self._tag(key)
        if tag not in self._tags:
            raise ValueError("not a configured key")
        expiry = int((now if now is not None else time.time()) + self.lifetime_seconds)
        body = f"{expiry}.{tag}"
        return f"{body}.{self._mac(body.encode())}"

    def valid(self, value: str, now: float | None = None) -> bool:
        """Whether ``value`` is a cookie this codec issued, unexpired, for a key still in use."""
        parts = value.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return False
        expiry, tag, signature = parts
        expected = self._mac(f"{expiry}.{tag}".encode())
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return False
        if int(expiry) <= (now if now is not None else time.time()):
            return False
        return tag in self._tags
