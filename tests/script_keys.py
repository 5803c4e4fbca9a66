"""A pytest plugin (``-p tests.script_keys`` in pyproject.toml): every Lua script the tests run
fails on a key it did not declare in KEYS.

The Redis docs require a script to declare every key it touches; Redis 7.0 checks only the
declared ones against the slot, so an undeclared key in the same slot goes unnoticed here, yet
other engines refuse it (serverless offerings always, newer Valkey during slot migration) and
ACL key patterns apply to it. Loaded before any script, this plugin puts a prelude in front of
each one (``LuaScript.load``) that checks the key arguments of every ``redis.call`` and
``redis.pcall`` against KEYS, so the whole suite proves every script declares its keys. A
script's ``#!lua flags=...`` line stays first: Redis reads the flags from there only.
"""

from __future__ import annotations

from pathlib import Path

from app import scripting

# Where the keys are in the arguments of the commands the scripts run: the first argument,
# unless the command is listed here ("all": every argument; "streams": XREADGROUP's keys after
# STREAMS; a number: that argument; "none": no key).
PRELUDE = r"""
local checked_redis = redis
local declared_keys = {}
for _, declared in ipairs(KEYS) do
  declared_keys[declared] = true
end
local KEY_AT = { time = 'none', del = 'all', unlink = 'all', exists = 'all', xgroup = 2,
  xinfo = 2, xreadgroup = 'streams' }
local function check_keys(command, ...)
  local args = { ... }
  local name = string.lower(command)
  local at = KEY_AT[name] or 1
  local positions = {}
  if at == 'all' then
    for i = 1, #args do
      positions[#positions + 1] = i
    end
  elseif at == 'streams' then
    for i = 1, #args do
      if string.upper(args[i]) == 'STREAMS' then
        for j = i + 1, i + (#args - i) / 2 do
          positions[#positions + 1] = j
        end
        break
      end
    end
  elseif at ~= 'none' then
    positions[1] = at
  end
  for _, i in ipairs(positions) do
    local key = args[i]
    if key ~= nil and not declared_keys[key] then
      error('undeclared key ' .. tostring(key) .. ' in ' .. command)
    end
  end
end
local redis = setmetatable({
  call = function(command, ...)
    check_keys(command, ...)
    return checked_redis.call(command, ...)
  end,
  pcall = function(command, ...)
    check_keys(command, ...)
    return checked_redis.pcall(command, ...)
  end,
}, { __index = checked_redis })
"""


def with_prelude(source: str) -> str:
    """Return ``source`` with the prelude in front, after its ``#!lua`` line if it has one: Redis
    reads a script's flags from its first line only."""
    if source.startswith(scripting.SHEBANG):
        shebang, _, body = source.partition("\n")
        return f"{shebang}\n{PRELUDE}{body}"
    return PRELUDE + source


def _load_checked(
    cls: type[scripting.LuaScript], path: Path, *helpers: Path
) -> scripting.LuaScript:
    return cls(with_prelude(scripting.script_source(path, *helpers)))


scripting.LuaScript.load = classmethod(_load_checked)  # type: ignore[method-assign,assignment]
