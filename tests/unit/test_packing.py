"""Commands packed for the automatic pipeline (hiredis): as redis-py sends them, errors as its."""

from __future__ import annotations

import enum

import pytest
from redis import exceptions as rexc
from redis.asyncio.connection import Connection
from redis.typing import EncodableT

from app.autopipeline import command_name, pack_command


def redis_py_packs(command: tuple[EncodableT, ...]) -> bytes:
    """Return the bytes redis-py's asyncio client writes for ``command``."""
    return b"".join(Connection().pack_command(*command))


def test_arguments_redis_py_refuses_are_refused_before_sending() -> None:
    with pytest.raises(rexc.DataError):
        pack_command(("SET", "k", True))
    with pytest.raises(rexc.DataError):
        pack_command(("SET", "k", None))  # type: ignore[arg-type]
    two_words = pack_command(("CLIENT SETNAME", "x"))
    assert two_words == b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$1\r\nx\r\n"


@pytest.mark.parametrize(
    "command",
    [
        ("GET", "customer:1"),
        ("SET", "k", "line\r\nbreak $5\r\n*2 ünïcödé"),
        ("SET", "k", ""),
        ("SET", "k", b"\x00\xff\r\n"),
        ("HSET", "h", "int", 42, "negative", -7, "big", 2**80),
        ("HSET", "h", "float", 1.5, "tiny", 1e-300, "huge", 1e20, "third", 1 / 3),
        ("SET", "k", bytearray(b"mutable")),
        ("SET", "k", memoryview(b"viewed")),
        (b"GET", b"k"),
        ("CLIENT SETNAME", "x"),
        (b"CONFIG GET", "maxmemory"),
        ("EVALSHA", "a" * 40, 2, "{t}:a", "{t}:b", "arg"),
    ],
)
def test_commands_are_packed_as_redis_py_packs_them(command: tuple[EncodableT, ...]) -> None:
    assert pack_command(command) == redis_py_packs(command)


class Level(enum.IntEnum):
    LOW = 1


@pytest.mark.parametrize("bad", [True, False, None, object(), [1], Level.LOW])
def test_what_hiredis_cannot_encode_is_a_data_error_naming_the_types(bad: object) -> None:
    with pytest.raises(rexc.DataError, match="must be str, int, float or bytes") as caught:
        pack_command(("SET", "k", bad))  # type: ignore[arg-type]
    assert isinstance(caught.value.__cause__, TypeError)


def test_text_that_is_not_unicode_is_refused_as_redis_py_refuses_it() -> None:
    with pytest.raises(UnicodeEncodeError):
        redis_py_packs(("SET", "k", "\ud800"))
    with pytest.raises(UnicodeEncodeError):  # the pipeline fails only this command with it
        pack_command(("SET", "k", "\ud800"))


@pytest.mark.parametrize(
    ("command", "name"), [(("GET", "k"), "GET"), ((b"HGETALL", "h"), "HGETALL"), ((7,), "7")]
)
def test_the_command_name_picks_the_reply_parser(
    command: tuple[EncodableT, ...], name: str
) -> None:
    assert command_name(command) == name
