"""Session ids, their signatures and the form tokens derived from them.

The cookie holds ``<session id>.<signature>``: the id is random (``<slot tag>.<256-bit token>``,
see ``app.sessions.keys``), the signature an HMAC-SHA256 of it under ``sessions.secret_key``, so
a forged or altered cookie is recognised without asking Redis. The cross-site request forgery
token of a form is another HMAC of the session id: a page from another site can neither read it
nor compute it, and it changes with the session id (so at every login).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from app.slots import SLOTS, slot_tag

TOKEN_BYTES = 32
# A token (an id's random part, a signature, a form token) as text: 256 bits in unpadded
# URL-safe base64.
B64_256_TEXT = r"[A-Za-z0-9_-]{43}"
TOKEN_LENGTH = 43
# A session's fingerprint: the first hex digits of its id's SHA-256.
FINGERPRINT_LENGTH = 16
_TAG = re.compile(r"[0-9a-z]{1,4}")
_TOKEN = re.compile(B64_256_TEXT)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _same(given: str, expected: str) -> bool:
    """Compare in constant time; ``given`` is any text a client sent (``hmac.compare_digest``
    refuses a ``str`` with non-ASCII characters, so both are compared as UTF-8 bytes)."""
    return hmac.compare_digest(given.encode(errors="surrogatepass"), expected.encode())


@dataclass(frozen=True)
class SessionId:
    """A session's id: the slot tag its keys carry and a random token."""

    tag: str
    token: str

    def __str__(self) -> str:
        return f"{self.tag}.{self.token}"

    @classmethod
    def new(cls, tag: str | None = None) -> SessionId:
        """Return a fresh id, in the slot of ``tag`` (a random slot without one)."""
        chosen = tag if tag is not None else slot_tag(secrets.randbelow(SLOTS))[1:-1]
        return cls(chosen, _b64(secrets.token_bytes(TOKEN_BYTES)))

    @classmethod
    def parse(cls, text: str) -> SessionId | None:
        """Return the id written as ``text``, or None if it is not one."""
        tag, _, token = text.partition(".")
        if _TAG.fullmatch(tag) and _TOKEN.fullmatch(token):
            return cls(tag, token)
        return None

    def fingerprint(self) -> str:
        """Return a short name for the session that does not reveal its id (a bearer secret)."""
        return hashlib.sha256(str(self).encode()).hexdigest()[:FINGERPRINT_LENGTH]


@dataclass(frozen=True)
class Signer:
    """Signs session ids and makes form tokens with keys derived from one secret."""

    secret: str

    def _mac(self, purpose: str, message: str) -> str:
        key = hmac.new(self.secret.encode(), purpose.encode(), hashlib.sha256).digest()
        return _b64(hmac.new(key, message.encode(), hashlib.sha256).digest())

    def cookie_value(self, session_id: SessionId) -> str:
        """Return the cookie value for ``session_id``: the id and its signature."""
        return f"{session_id}.{self._mac('session-id', str(session_id))}"

    def session_id(self, cookie: str | None) -> SessionId | None:
        """Return the id a cookie carries if its signature is valid, else None."""
        if not cookie:
            return None
        text, _, signature = cookie.rpartition(".")
        session_id = SessionId.parse(text)
        if session_id is None:
            return None
        if not _same(signature, self._mac("session-id", text)):
            return None
        return session_id

    def csrf_token(self, session_id: SessionId) -> str:
        """Return the form token of ``session_id``."""
        return self._mac("csrf", str(session_id))

    def csrf_valid(self, session_id: SessionId, token: str | None) -> bool:
        """Return True if ``token`` is the form token of ``session_id``."""
        return token is not None and _same(token, self.csrf_token(session_id))
