"""The session cookie's Set-Cookie header."""

from __future__ import annotations


def cookie_header(name: str, value: str, *, max_age: int, secure: bool) -> bytes:
    """Return a Set-Cookie header value; an empty ``value`` clears the cookie."""
    parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age if value else 0}"]
    if not value:
        parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
    parts += ["HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode("latin-1")
