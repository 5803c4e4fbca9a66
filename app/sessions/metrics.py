"""What the session store tells an operator: sessions begun, logins, sessions ended.

There is no gauge of active sessions. Sessions spread over every hash slot (an anonymous one in
a random slot, a user's in the slot of the user's name), so an exact count would need an index
in each slot, kept by the session scripts and read slot by slot at every refresh: up to 16384
reads per scrape. The counters cost nothing and answer the questions an operator asks (are
people logging in, are sessions being created and ended).
"""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import Counter

CREATED = Counter(
    "mdb_sessions_created",
    "Sessions stored for the first time: a new session's first write, or a login's new session.",
)
LOGINS = Counter(
    "mdb_session_logins",
    "Logins that succeeded (each begins a new session under a new id).",
)
ENDED = Counter(
    "mdb_sessions_ended",
    "Stored sessions ended, by reason: logout, logout_everywhere, or login (a login ends the "
    "session it replaces).",
    ["reason"],
)
EndReason = Literal["logout", "logout_everywhere", "login"]
# Every reason has its series from the start, so a rate over it is defined before the first.
for _reason in get_args(EndReason):
    ENDED.labels(_reason)
