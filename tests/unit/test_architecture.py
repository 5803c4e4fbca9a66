"""The shape of the code: domains as units, no import cycles, workers/ apart from the domains.

Imports under ``if TYPE_CHECKING:`` count: a cycle a type checker needs is still a knot for
the reader.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path

import grimp

import app
from app.main import DOMAINS

# The composition root: the only modules that may know every domain.
# The composition root, and the command line that runs its tools (`python -m app messaging
# migrate` asks the messaging domain).
COMPOSITION_ROOT = {"app.main", "app.lifespan", "app.__main__"}
DOMAIN_NAMES = {domain.name for domain in DOMAINS}


@cache
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("app", "workers", include_external_packages=False)


def domain_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "app" and len(parts) > 1 and parts[1] in DOMAIN_NAMES:
        return parts[1]
    return None


def imports() -> list[tuple[str, str]]:
    g = graph()
    return sorted(
        (importer, imported)
        for importer in g.modules
        for imported in g.find_modules_directly_imported_by(importer)
    )


def test_no_import_cycle_between_files() -> None:
    g = graph()
    cycles = [
        (importer, imported, g.find_shortest_chain(importer=imported, imported=importer))
        for importer, imported in imports()
        if importer == imported or g.chain_exists(importer=imported, imported=importer)
    ]
    assert cycles == []


def test_every_domain_package_is_declared_in_create_apps_list() -> None:
    packages = {
        module.name
        for module in pkgutil.iter_modules([str(Path(app.__file__).parent)])
        if module.ispkg and (Path(app.__file__).parent / module.name / "router.py").exists()
    }
    assert packages == DOMAIN_NAMES
    for domain in DOMAINS:
        assert importlib.import_module(f"app.{domain.name}").DOMAIN is domain


def test_only_the_composition_root_knows_every_domain() -> None:
    knowing = {
        importer
        for importer, imported in imports()
        if domain_of(imported) is not None and domain_of(importer) is None
    }
    # Outside the domains, only the composition root (and python -m workers, which asks it)
    # imports a domain at all.
    assert knowing <= COMPOSITION_ROOT


def test_no_module_reaches_into_another_domains_internals() -> None:
    # Another domain's package (its __init__: the declaration and its public functions) is
    # the way in; its submodules are its own.
    reaching = [
        (importer, imported)
        for importer, imported in imports()
        if domain_of(imported) is not None
        and domain_of(importer) != domain_of(imported)
        and imported != f"app.{domain_of(imported)}"
    ]
    assert reaching == []


def test_workers_runtime_and_domains_stay_apart() -> None:
    crossing = [
        (importer, imported)
        for importer, imported in imports()
        if (importer.startswith("workers") and domain_of(imported) is not None)
        or (domain_of(importer) is not None and imported.startswith("workers"))
    ]
    assert crossing == []
