"""Errors of the sessions domain."""

from app.errors import Conflict


class SessionEnded(Conflict):
    """A write reached a session that a logout ended meanwhile."""

    def __init__(self) -> None:
        super().__init__("This session has ended; reload to start a new one")
