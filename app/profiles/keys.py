"""Key names of the profile domain, with the hash-slot reasoning behind them.

``profile:<user>`` and ``profile:events`` are the seeds' names, kept byte for byte so that data
written by the seeds' code and by this service is interchangeable.

Event streams: with ``profiles.event_streams`` = n, a user's events always go to stream
``slot(profile:<user>) mod n``: ``profile:events`` for the first (the seeds' stream, and the
only one when n is 1) and ``profile:events:<i>`` for the others. Each stream is one key, so one
slot, so one primary: spreading the events over several streams spreads the appends and the
aggregator's work over the shards their slots fall in.

Slots:
- The aggregator acknowledges events and applies them in one script, so a stream (and with it
  the consumer group's pending list), its read-count sorted set, its per-user generation
  register and its index of deleted profiles must share one hash slot. A stream's name has no
  braces, so its slot is CRC16 of the whole name; a key whose hash tag is that name
  (``{profile:events:2}:read-counts``) hashes exactly those bytes and lands in the same slot.
  A user's counts live with the stream their events go to, so every user is counted in exactly
  one stream's keys.
- A profile's generation counter and request markers ride with it, because the create, read
  and delete scripts touch them together with the profile: ``{profile:<user>}:…`` hashes the
  bytes "profile:<user>", the whole name of the profile's key. That is why user names may not
  contain braces: a brace in the name would move the profile's key to another slot.
"""

from __future__ import annotations

from app.slots import key_slot

PROFILE_PREFIX = "profile:"
EVENTS_STREAM = "profile:events"
AGGREGATOR_GROUP = "profile-aggregator"
# How many streams the stored events and counts are spread over ("1", "3"...), or
# "migrating <from> <to>" while `python -m app profiles event-streams` moves them.
STREAMS_LAYOUT = "{profile:events}:streams"


def profile_key(user: str) -> str:
    """Return the hash holding a user's profile."""
    return PROFILE_PREFIX + user


def companion_key(user: str, role: str) -> str:
    """Return a key in the slot of ``profile:<user>``: ``generation``, ``created-by``..."""
    return "{" + profile_key(user) + "}:" + role


def event_stream(index: int) -> str:
    """Return the name of event stream number ``index`` (0: the seeds' profile:events)."""
    return EVENTS_STREAM if index == 0 else f"{EVENTS_STREAM}:{index}"


def event_streams(count: int) -> list[str]:
    """Return the names of the first ``count`` event streams."""
    return [event_stream(index) for index in range(count)]


def stream_index(user: str, count: int) -> int:
    """Return the index of the stream a user's events go to, with ``count`` streams."""
    return key_slot(profile_key(user)) % count


def stream_of(user: str, count: int) -> str:
    """Return the stream a user's events go to, with ``count`` streams."""
    return event_stream(stream_index(user, count))


def read_counts(stream: str) -> str:
    """Return the aggregator's sorted set of read counts (user -> reads) of ``stream``'s users."""
    return "{" + stream + "}:read-counts"


def generations(stream: str) -> str:
    """Return the aggregator's register of ``stream``'s users (user -> "<generation>:<alive>")."""
    return "{" + stream + "}:generations"


def deleted(stream: str) -> str:
    """Return the aggregator's index of ``stream``'s deleted profiles (user -> ms deleted), by
    which retention forgets them."""
    return "{" + stream + "}:deleted"


def aggregate_keys(stream: str) -> list[str]:
    """Return a stream and its aggregator's keys, in the order the scripts take them."""
    return [stream, read_counts(stream), generations(stream), deleted(stream)]


READ_COUNTS = read_counts(EVENTS_STREAM)
GENERATIONS = generations(EVENTS_STREAM)
