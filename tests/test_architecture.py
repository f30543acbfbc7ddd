"""The import arrows of ../shared/ARCHITECTURE.md, checked by walking every import of fhir_server/:
`http -> services -> {access, audit, search, store, model}`; `trials, privacy, interop ->
services`; `store -> {search, model}`; nothing imports `http` except app.py; `store` never
imports `access` or `auth`; a package that declares its surface (`__all__` in `__init__.py`) is
imported from other packages only through it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fhir_server"
# FHIR knowledge, configuration, logging, the one clock, the version, owner-only files,
# fast frozen dataclasses, the collector held off: anyone may import them
FLOOR = {"model", "settings", "logs", "clock", "private_files", "frozen", "heap", "",
         "terminology_service"}  # CodeSystems, ValueSets, ConceptMaps: FHIR knowledge too
MAY_IMPORT = {
    "app": {"*"},  # the one place that knows everyone
    "cli": {"*"},  # wiring too, but never http (checked below)
    "http": {"services", "auth", "search"},  # auth: token -> claims; search.parse (picture's walk)
    "services": {"access", "audit", "search", "store", "crypto", "subscriptions"},
    # topics, Subscriptions read, events kept in the outbox and sent: below services, which
    # decide access (the dispatcher is handed its checks by app.py)
    "subscriptions": {"search", "store"},
    "trials": {"services"}, "privacy": {"services"}, "interop": {"services"}, "bulk": {"services"},
    # the schedule is the store's (store/schedule.py); reminders search referrals
    "notify": {"services", "store", "search"},
    # backups read and rebuild whole stores, the audit chain, and replay erasures
    "backup": {"services", "store", "search", "audit", "crypto", "access"},
    "access": {"search"},  # access adds its clauses to the Query AST
    "audit": {"search", "store"},  # AuditEvents are stored and indexed like any resource
    "auth": {"access"},  # token verification -> Principal
    "store": {"search", "crypto"}, "search": set(), "crypto": set(), "workers": set(), "demo": set(),
    **{floor: set() for floor in FLOOR},
}
# Today's violations, (importing package, imported package), each with why it is still here
# (docs/architecture.md). A new one fails the test; one that is gone must leave this list.
KNOWN_ARROWS = {
    # Types only: http names the Claims it hands to services and the server's own principal
    # (auth_routes audits sign-ins as it); audit.events reads a Principal's fields. The
    # Principal is built in services/principals.py; moving the type to model/ removes these.
    ("http", "access"), ("audit", "access"),
    # Sign-in attempts and token requests never reach a service: the login and token routes
    # build their security AuditEvents themselves (audit.events.security_event).
    ("http", "audit"),
    # Types only: http.routes, bundles and headers render the store's Version/Result
    # (the services should hand http result types of their own).
    ("http", "store"),
    # http.operations calls $refer, $referral-summary and $confirm in trials directly; the
    # writes themselves go through services/server_writes.py. A services operation registry
    # that app.py fills with the trials' operations removes it.
    ("http", "trials"),
    # http.privacy calls $everything and the exports in privacy directly, as for trials.
    ("http", "privacy"),
    # trials builds search clauses for its look-ups and reads the store's Version type.
    ("trials", "search"), ("trials", "store"),
}
# (importing package, module imported around its package's __init__)
KNOWN_SIDE_DOORS = {
    # the Principal type (see above)
    ("audit", "access.principal"), ("http", "access.principal"), ("services", "access.policy"),
    # reference parsing, not exported by search/__init__ yet
    ("access", "search.references"), ("http", "search.references"),
    # app.py mounts the routers module by module (http/__init__ exports none of them)
    ("app", "http.audit"), ("app", "http.login_routes"), ("app", "http.auth_routes"),
    ("app", "http.operations"), ("app", "http.terminology"),
    # search/__init__ does not export EARTH_RADIUS_KM (store/mongo/filters.py)
    ("store", "search.params.special"),
}


@cache
def _surface(package: str) -> frozenset[str]:
    """The names a package's `__init__.py` lists in `__all__` (empty: no declared surface)."""
    init = PACKAGE / package / "__init__.py"
    for node in ast.walk(ast.parse(init.read_text()) if init.exists() else ast.Module()):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__all__":
            return frozenset(ast.literal_eval(node.value))
    return frozenset()


def _imports() -> Iterator[tuple[str, str]]:
    """(importing module, imported module), dotted under fhir_server ('' is the package)."""
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        here = parts[:-1]  # the package relative imports start from
        importer = ".".join(here if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [(a.name, []) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                start = ".".join(["fhir_server", *here[:len(here) - node.level + 1]])
                found = [(f"{start}.{node.module or ''}" if node.level else node.module or "",
                          [a.name for a in node.names])]
            else:
                continue
            for dotted, names in found:
                if dotted.split(".")[0] != "fhir_server":
                    continue
                base = [p for p in dotted.split(".")[1:] if p]
                # `from ..access import consent` imports access/consent.py, unless __init__
                # exports that name (`from ..search import extract` is the function)
                modules = [[*base, n] for n in names if n not in _surface(".".join(base))
                           and (PACKAGE.joinpath(*base, n).is_dir()
                                or PACKAGE.joinpath(*base, f"{n}.py").exists())]
                for module in modules or [base]:
                    yield importer, ".".join(module)


def test_imports_follow_the_arrows() -> None:
    arrows, side_doors = set(), set()
    for importer, imported in _imports():
        source, target = importer.split(".")[0], imported.split(".")[0]
        if source == target:
            continue
        assert source in MAY_IMPORT, f"a new package, {source}: say what it may import"
        allowed = MAY_IMPORT[source]
        if (target == "http" and source != "app") or not (
                target in FLOOR or "*" in allowed or target in allowed):
            arrows.add((source, target))
        if "." in imported and _surface(target):
            side_doors.add((source, imported))
    assert arrows - KNOWN_ARROWS == set(), "imports against ARCHITECTURE.md's arrows"
    assert KNOWN_ARROWS - arrows == set(), "fixed: remove them from KNOWN_ARROWS"
    assert side_doors - KNOWN_SIDE_DOORS == set(), "import these through their package"
    assert KNOWN_SIDE_DOORS - side_doors == set(), "fixed: remove them from KNOWN_SIDE_DOORS"
