"""Key names of the messaging domain, with the hash-slot reasoning behind them.

Every key a messaging script touches is one it declares (the Redis docs require it; engines
enforce it differently during slot migration, and ACL key patterns are checked on each): a
channel's keys are a fixed set per queue or topic, and the keys of a single message (its state,
body, trace, de-duplication marker) are fields of those sets, or markers whose names the caller
knows before the step (a dedupe id, a receive call's nonce).

Queues: every step on a queue (publish, receive, ack, nack, lease expiry, dead-lettering,
redrive) is one script that changes several of its keys together: the ready list or sorted set,
the delayed and in-flight sorted sets, the dead-letter list, the hashes of message bodies and
message states, the markers and the messages' traces. So all of a queue's keys carry the hash
tag ``{queue:<name>}`` and share its slot; different queues hash to different slots, so they
spread over the shards.

Topics: the stream, its consumer groups (which live inside the stream key), the topic's config
and holds, de-duplication and receive markers and the per-group lease hashes, lease-end sets,
held-entry sets, receive-call hashes and dead-letter lists carry ``{topic:<name>}``, for the
same reason.

Traces: a message's trace is a field of the hash ``<slot tag>:traces`` (its events, one JSON
object per line), and ``<slot tag>:trace-expiry`` says when finished traces go, one member per
batch of traces finished together (their ids separated by spaces; swept by the steps that
finish traces; a hash field has no expiry of its own before Redis 7.4). A
message's id is a ULID that carries the slot of its queue or topic (``app.records.ids``), and
``slot_tag`` names a tag in that slot, so the scripts append to the trace in the same step as
the change it records, and ``GET /messages/{id}/trace`` finds the trace from the id alone.

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
    """Return the keys every queue script declares: config, ready, delayed, in flight, dead,
    message bodies, message states, the traces of the queue's slot, and its receive calls
    (queue.lua, ``leave_call``)."""
    prefix = queue_prefix(name)
    parts = ("config", "ready", "delayed", "inflight", "dead", "bodies", "meta")
    return [prefix + part for part in parts] + trace_keys(key_slot(prefix)) + [prefix + "calls"]


def topic_prefix(name: str) -> str:
    """Return the prefix of every key of the topic ``name``."""
    return "{topic:" + name + "}:"


def topic_keys(name: str) -> list[str]:
    """Return the keys every topic script declares: its config, its stream, the traces of its
    slot, its groups' holds (``topic_holds``), and the traces that wait for trimming (those of
    messages a group finished while another may still hold them: see topic.lua)."""
    prefix = topic_prefix(name)
    return [
        prefix + "config",
        prefix + "stream",
        *trace_keys(key_slot(prefix)),
        topic_holds(name),
        prefix + "waiting-traces",
    ]


def topic_holds(name: str) -> str:
    """Return the key of a topic's holds: group -> how many messages it holds and its oldest
    held entry (for trimming and the metrics)."""
    return topic_prefix(name) + "holds"


def group_keys(topic: str, group: str) -> list[str]:
    """Return the keys of a topic's consumer group: its leases, their ends, its dead letters,
    the entries it holds, its receive calls (topic.lua, ``leave_call``)."""
    prefix = topic_prefix(topic)
    return [
        prefix + "leases:" + group,
        prefix + "lease-ends:" + group,
        prefix + "dead:" + group,
        prefix + "held:" + group,
        prefix + "calls:" + group,
    ]


def marker(prefix: str, kind: str, value: str) -> str:
    """Return the key of a channel's marker: ``dedupe`` (a dedupe id), ``receive`` and
    ``redrive`` (a call's nonce), in the channel's slot."""
    return f"{prefix}{kind}:{value}"


def slot_of(prefix: str) -> int:
    """Return the hash slot of the keys under ``prefix``."""
    return key_slot(prefix)


def trace_keys(slot: int) -> list[str]:
    """Return the traces hash and the trace expiry set of messages minted in ``slot``."""
    tag = slot_tag(slot)
    return [tag + ":traces", tag + ":trace-expiry"]


def message_trace_keys(message_id: str) -> list[str]:
    """Return ``trace_keys`` of a message's slot (the id must be a valid ULID)."""
    return trace_keys(ulid_slot(message_id))
