"""Server-side Lua scripts, loaded once per server and run with EVALSHA."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError
from redis.typing import EncodableT

if TYPE_CHECKING:
    from app.redis import RedisStore


@dataclass(frozen=True)
class LuaScript:
    """A script from a file next to the code that uses it; every key it touches is in ``keys``."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())  # noqa: S324

    @classmethod
    def load(cls, path: Path) -> LuaScript:
        return cls(path.read_text())

    async def __call__(
        self, store: RedisStore, *, keys: list[str], args: list[str], what: str
    ) -> Any:
        """Run the script under the store's retry policy, on the slot of its keys.

        A server that lost the script (restart, failover to a replica) gets it again.
        """
        command: tuple[EncodableT, ...] = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await store.call(keys[0], *command, what=what)
        except NoScriptError:
            # SCRIPT LOAD goes to every primary of a cluster, so the retry finds it.
            await store.run(lambda r: r.script_load(self.source), what=f"load script for {what}")
            return await store.call(keys[0], *command, what=what)
