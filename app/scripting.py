"""Server-side Lua scripts, loaded once per server and run with EVALSHA, and their typed contract.

A script answers with Redis's reply types: integers, strings, nested lists and nil. ``Reply``
says exactly that, and nothing past a script's own module sees it: each script has a function
that runs it and returns a typed value, built with the readers below (``as_int``, ``as_str``,
``as_list``...), which raise ``ScriptContractError`` when a reply has a shape the code does not
expect (a script and its caller out of step: a bug, never bad input).

A script that answers with an outcome code declares its codes once, as an ``IntEnum``, and maps
the codes that are failures to the domain errors they mean in one table per script::

    class CreateOutcome(IntEnum):
        CREATED = 1
        KEY_REUSED = -1

    CREATE_ERRORS: OutcomeErrors[CreateOutcome, [str]] = {
        CreateOutcome.KEY_REUSED: lambda customer_id: IdempotencyKeyReused(),
    }

    outcome = raise_for(outcome_of(CreateOutcome, reply), CREATE_ERRORS, customer_id)

An error is made from what the caller passes ``raise_for`` after the table (the id or name the
request concerns, what the reply named), so each table states what its errors need.

A script that only reads says so on its first line, ``#!lua flags=no-writes`` (Redis 7): it
runs with EVALSHA_RO, which the server refuses for a script that writes, and it may run on a
replica (``replica=True``, for a store that reads from replicas; app.redis).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar, cast

from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from app.errors import AppError

if TYPE_CHECKING:
    from app.redis import RedisStore

# What a script can answer, as redis-py decodes it with ``decode_responses=True``: Lua numbers
# become integers, strings stay text, tables become lists, nil and false become None.
Reply = int | str | None | list["Reply"]

E = TypeVar("E", bound=IntEnum)
P = ParamSpec("P")
# The domain error each failing outcome of a script means, made from what ``P`` names.
OutcomeErrors = Mapping[E, Callable[P, AppError]]


class ScriptContractError(RuntimeError):
    """A script answered with a shape its caller does not expect: a bug, not bad input."""


class WritingScriptOnReplica(RuntimeError):
    """A script not declared read-only (``#!lua flags=no-writes``) was sent to a replica: a bug."""


# The first line of a script that declares flags (Redis 7 "shebang"), and the flag of a script
# that writes nothing.
SHEBANG = "#!lua"
NO_WRITES = "no-writes"


def script_source(path: Path, *helpers: Path) -> str:
    """Return the text of the script in ``path`` with the ``helpers`` files in front of it (Redis
    runs one text per script; shared Lua functions are put together here). A ``#!lua`` line stays
    first: Redis reads a script's flags from its first line only."""
    source = path.read_text()
    if not helpers:
        return source
    shebang = ""
    if source.startswith(SHEBANG):
        first, _, source = source.partition("\n")
        shebang = first + "\n"
    return shebang + "".join(helper.read_text() for helper in helpers) + source


def script_flags(source: str) -> frozenset[str]:
    """Return the flags a script declares on its first line (``#!lua flags=a,b``)."""
    first = source.split("\n", 1)[0]
    words = first.split()
    if not words or words[0] != SHEBANG:
        return frozenset()
    flags = (word.removeprefix("flags=") for word in words[1:] if word.startswith("flags="))
    return frozenset(flag for listed in flags for flag in listed.split(",") if flag)


def as_int(reply: Reply) -> int:
    """Return a reply that must be an integer (a numeric string is accepted: Lua may send one)."""
    if isinstance(reply, int) and not isinstance(reply, bool):
        return reply
    if isinstance(reply, str):
        try:
            return int(reply)
        except ValueError:
            pass
    raise ScriptContractError(f"expected an integer reply, got {reply!r}")


def as_str(reply: Reply) -> str:
    """Return a reply that must be text."""
    if isinstance(reply, str):
        return reply
    raise ScriptContractError(f"expected a text reply, got {reply!r}")


def as_text(reply: Reply) -> str:
    """Return a reply that is text or an integer as text (a Lua number or string)."""
    if isinstance(reply, int) and not isinstance(reply, bool):
        return str(reply)
    return as_str(reply)


def as_optional_str(reply: Reply) -> str | None:
    """Return a reply that is text or nil."""
    return None if reply is None else as_str(reply)


def as_list(reply: Reply) -> list[Reply]:
    """Return a reply that must be a list (an empty Lua table also arrives as a list)."""
    if isinstance(reply, list):
        return reply
    raise ScriptContractError(f"expected a list reply, got {reply!r}")


def as_fixed(reply: Reply, length: int) -> list[Reply]:
    """Return a reply that must be a list of exactly ``length`` items, to unpack."""
    items = as_list(reply)
    if len(items) != length:
        raise ScriptContractError(f"expected {length} items, got {reply!r}")
    return items


def as_str_list(reply: Reply) -> list[str]:
    """Return a reply that must be a list of text."""
    items = as_list(reply)
    if set(map(type, items)) <= {str}:  # the usual answer, checked in one pass
        return cast(list[str], items)
    return [as_str(item) for item in items]


def as_int_list(reply: Reply) -> list[int]:
    """Return a reply that must be a list of integers."""
    items = as_list(reply)
    if set(map(type, items)) <= {int}:  # (a bool's type is bool, not int)
        return cast(list[int], items)
    return [as_int(item) for item in items]


def outcome_of(kind: type[E], reply: Reply) -> E:
    """Return the outcome code ``reply`` carries as a member of ``kind``."""
    code = as_int(reply)
    try:
        return kind(code)
    except ValueError:
        raise ScriptContractError(f"unknown {kind.__name__} code {code}") from None


def raise_for(outcome: E, errors: OutcomeErrors[E, P], /, *args: P.args, **kwargs: P.kwargs) -> E:
    """Raise the domain error ``errors`` maps ``outcome`` to, made from the other arguments;
    return a successful outcome."""
    make = errors.get(outcome)
    if make is not None:
        raise make(*args, **kwargs)
    return outcome


@dataclass(frozen=True)
class LuaScript:
    """A script from a file next to the code that uses it; every key it touches is in ``keys``.

    A script whose first line is ``#!lua flags=no-writes`` is ``read_only``.
    """

    source: str
    sha: str = field(init=False)
    read_only: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())  # noqa: S324
        object.__setattr__(self, "read_only", NO_WRITES in script_flags(self.source))

    @classmethod
    def load(cls, path: Path, *helpers: Path) -> LuaScript:
        """The script in ``path``, after the ``helpers`` files it uses (see ``script_source``)."""
        return cls(script_source(path, *helpers))

    async def __call__(
        self,
        store: RedisStore,
        *,
        keys: list[str],
        args: list[str],
        what: str,
        replica: bool = False,
        now: bool = False,
    ) -> Reply:
        """Run the script under the store's retry policy, on the slot of its keys.

        A read-only script runs with EVALSHA_RO; with ``replica``, on a replica of the slot's
        shard when the store reads from replicas (its answer may miss the latest writes). A
        server that lost the script (restart, failover to a replica), or a replica that never
        had it, gets it again. Raise WritingScriptOnReplica for ``replica`` with a script that
        is not read-only. A run sent ``now`` does not wait for the turn's other commands
        (``RedisStore.call``).
        """
        if replica and not self.read_only:
            raise WritingScriptOnReplica(
                f"{what}: only a script declared '{SHEBANG} flags={NO_WRITES}' may run on a replica"
            )
        name = "EVALSHA_RO" if self.read_only else "EVALSHA"
        command: tuple[EncodableT, ...] = (name, self.sha, len(keys), *keys, *args)
        try:
            reply: Reply = await store.call(keys[0], *command, what=what, replica=replica, now=now)
        except NoScriptError:
            # Loaded on every primary of a cluster, and on every replica of the shard for a
            # replica read (Redis 7 does not replicate SCRIPT LOAD), so the retry finds it.
            await store.load_script(
                self.source, key=keys[0], what=f"load script for {what}", replica=replica
            )
            reply = await store.call(keys[0], *command, what=what, replica=replica, now=now)
        return reply
