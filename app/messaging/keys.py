"""Key names of the messaging domain, with the hash-slot reasoning behind them.

Queues: every step on a queue (publish, receive, ack, nack, lease expiry, dead-lettering,
redrive) is one script that changes several of its keys together: the ready list or sorted set,
the delayed and in-flight sorted sets, the dead-letter list, the message hashes, the
de-duplication markers and the messages' traces. So all of a queue's keys carry the hash tag
``{queue:<name>}`` and share its slot; different queues hash to different slots, so they spread
over the shards. The scripts derive the per-message keys (``…:msg:<id>``, ``…:dedupe:<id>``,
``…:receive:<nonce>``) from that prefix: they are in the same slot by construction, which is why
they need not be declared one by one.

Topics: the stream, its consumer groups (which live inside the stream key), the topic's config,
de-duplication markers and per-group dead-letter lists carry ``{topic:<name>}``, for the same
reason.

Traces: a message's trace is a list under ``<slot tag>:trace:<id>``. Its id is a ULID that
carries the slot of its queue or topic (``app.records.ids``), and ``slot_tag`` names a tag in that
slot, so the scripts append to the trace in the same step as the change it records, and
``GET /messages/{id}/trace`` finds the trace from the id alone.

Registries: ``messaging:queues`` and ``messaging:topics`` are sorted sets of the names of the
queues and topics created (scored by when each was first registered), so the metrics and the
dashboard find them without a SCAN. Each is one key in a slot of its own, apart from the
channels' slots, so a create registers in a second step (see ``Channel.register``).

Names may not hold braces (they would move keys out of the tag's slot) nor anything outside
``[A-Za-z0-9_.:-]``; the schemas check that before any key is built.
"""

from __future__ import annotations

from app.records.ids import ulid_slot
from app.slots import key_slot, slot_tag

QUEUE_REGISTRY = "messaging:queues"
TOPIC_REGISTRY = "messaging:topics"


def queue_prefix(name: str) -> str:
    """Return the prefix of every key of the queue ``name`` (its hash tag and a colon)."""
    return "{queue:" + name + "}:"


def queue_keys(name: str) -> list[str]:
    """Return the keys every queue script declares: config, ready, delayed, in flight, dead."""
    prefix = queue_prefix(name)
    return [prefix + part for part in ("config", "ready", "delayed", "inflight", "dead")]


def topic_prefix(name: str) -> str:
    """Return the prefix of every key of the topic ``name``."""
    return "{topic:" + name + "}:"


def topic_keys(name: str) -> list[str]:
    """Return the keys every topic script declares: its config and its stream."""
    prefix = topic_prefix(name)
    return [prefix + "config", prefix + "stream"]


def slot_of(prefix: str) -> int:
    """Return the hash slot of the keys under ``prefix``."""
    return key_slot(prefix)


def trace_prefix(slot: int) -> str:
    """Return the prefix of the trace keys of messages minted in ``slot``."""
    return slot_tag(slot) + ":trace:"


def trace_key(message_id: str) -> str:
    """Return the key of a message's trace (the id must be a valid ULID)."""
    return trace_prefix(ulid_slot(message_id)) + message_id
