"""The plugin that fails a script on an undeclared key (tests/script_keys.py) catches one: the
suite's proof that every script declares its keys rests on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.exceptions import ResponseError

from app.config import RedisSettings
from app.local_cluster import LocalCluster
from app.redis import open_store
from app.scripting import LuaScript


async def test_an_undeclared_key_fails_the_script(cluster: LocalCluster, tmp_path: Path) -> None:
    source = tmp_path / "peek.lua"
    source.write_text(
        "redis.call('SET', KEYS[1], 'a')\nreturn redis.call('GET', KEYS[1] .. ':other')\n"
    )
    script = LuaScript.load(source)
    async with open_store(RedisSettings(), cluster.url) as store:
        with pytest.raises(ResponseError, match=r"undeclared key \{t\}:k:other in GET"):
            await script(store, keys=["{t}:k"], args=[], what="test")
        declared = tmp_path / "declared.lua"
        declared.write_text("redis.call('SET', KEYS[1], 'a')\nreturn redis.call('GET', KEYS[2])\n")
        reply = await LuaScript.load(declared)(
            store, keys=["{t}:k", "{t}:k:other"], args=[], what="test"
        )
        assert reply is None
