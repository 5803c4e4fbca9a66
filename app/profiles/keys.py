"""Key names of the profile domain, with the hash-slot reasoning behind them.

``profile:<user>`` and ``profile:events`` are the seeds' names, kept byte for byte so that data
written by the seeds' code and by this service is interchangeable.

Slots:
- The aggregator acknowledges events and applies them in one script, so the stream (and with
  it the consumer group's pending list), the read-count sorted set and the per-user generation
  register must share one hash slot. The stream's name has no braces, so its slot is
  CRC16("profile:events"); a key whose hash tag is ``{profile:events}`` hashes exactly those
  bytes and lands in the same slot.
- A profile's generation counter and request markers (created-by, deleted-by) ride with it,
  because the create, read and delete scripts touch them together with the profile:
  ``{profile:<user>}:…`` hashes the bytes "profile:<user>", the whole name of the profile's
  key. That is why user names may not contain braces: a brace in the name would move the
  profile's key to another slot.
"""

PROFILE_PREFIX = "profile:"
EVENTS_STREAM = "profile:events"
READ_COUNTS = "{profile:events}:read-counts"
GENERATIONS = "{profile:events}:generations"
AGGREGATOR_GROUP = "profile-aggregator"


def profile_key(user: str) -> str:
    """Return the hash holding a user's profile."""
    return PROFILE_PREFIX + user


def companion_key(user: str, role: str) -> str:
    """Return a key in the slot of ``profile:<user>``: ``generation``, ``created-by``..."""
    return "{" + profile_key(user) + "}:" + role
