"""Server-side Lua scripts, loaded once per server and run with EVALSHA."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError

from app.redis import RedisClient


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

    async def __call__(self, client: RedisClient, *, keys: list[str], args: list[str]) -> Any:
        """Run the script; a server that lost it (restart, failover to a replica) gets it again."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # SCRIPT LOAD goes to every primary of a cluster, so the retry finds it.
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)
