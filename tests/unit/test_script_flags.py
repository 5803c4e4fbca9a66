"""Read-only scripts (``#!lua flags=no-writes``): how a script declares it, what runs it, what
refuses it on a replica, and the test plugin that keeps the declaration on the first line."""

from __future__ import annotations

from typing import cast

import pytest

from app.redis import RedisStore
from app.scripting import NO_WRITES, LuaScript, WritingScriptOnReplica, script_flags
from tests.conftest import PROJECT_ROOT
from tests.script_keys import PRELUDE, with_prelude

# The scripts that read only, and may run on a replica.
READ_ONLY = {"app/customers/read_customers.lua", "app/profiles/read_profile.lua"}


@pytest.mark.parametrize(
    ("source", "flags"),
    [
        ("#!lua flags=no-writes\nreturn 1", {"no-writes"}),
        ("#!lua flags=no-writes,allow-stale\nreturn 1", {"no-writes", "allow-stale"}),
        ("#!lua name=lib flags=no-writes\nreturn 1", {"no-writes"}),
        ("#!lua\nreturn 1", set()),
        ("-- #!lua flags=no-writes\nreturn 1", set()),
        ("return 1 -- flags=no-writes", set()),
        ("\n#!lua flags=no-writes\nreturn 1", set()),
        ("", set()),
    ],
)
def test_flags_come_from_the_first_line_only(source: str, flags: set[str]) -> None:
    assert script_flags(source) == flags


def test_only_a_no_writes_script_is_read_only() -> None:
    assert LuaScript("#!lua flags=no-writes\nreturn 1").read_only
    assert not LuaScript("#!lua flags=allow-stale\nreturn 1").read_only
    assert not LuaScript("return redis.call('SET', KEYS[1], 'v')").read_only


async def test_a_script_that_may_write_is_refused_on_a_replica() -> None:
    writes = LuaScript("return redis.call('SET', KEYS[1], ARGV[1])")
    # Refused before anything is sent: no store is needed to find the bug.
    nothing = cast(RedisStore, None)
    with pytest.raises(WritingScriptOnReplica, match="flags=no-writes"):
        await writes(nothing, keys=["k"], args=["v"], what="write on a replica", replica=True)


def test_the_plugin_keeps_the_flags_line_first() -> None:
    declared = "#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])\n"
    checked = with_prelude(declared)
    assert checked.startswith("#!lua flags=no-writes\n" + PRELUDE)
    assert checked.endswith("return redis.call('GET', KEYS[1])\n")
    assert with_prelude("return 1") == PRELUDE + "return 1"


def test_the_project_s_read_only_scripts_stay_read_only_under_the_plugin() -> None:
    """Loaded as the suite loads them (with the plugin's prelude), the scripts declared
    read-only still are, so the suite runs them as production does."""
    declared = {
        str(path.relative_to(PROJECT_ROOT))
        for path in (PROJECT_ROOT / "app").rglob("*.lua")
        if NO_WRITES in script_flags(path.read_text())
    }
    assert declared >= READ_ONLY
    for relative in declared:
        assert LuaScript.load(PROJECT_ROOT / relative).read_only, relative
