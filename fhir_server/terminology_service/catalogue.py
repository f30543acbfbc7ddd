"""The terminology the server holds, indexed once at start: our CodeSystems, ValueSets and
ConceptMaps (top-level `terminology/`, and any shipped under `profiles/` or `mappings/`), and
the FHIR R4 core CodeSystems and ValueSets (`data/r4-terminology.json.gz`, derived from the
official definitions: see `tests/terminology/datagen.py`).

Resources are found by canonical URL (optionally `url|version`) or by id. Two resources with
the same URL and version: the first loaded wins (ours before the core), and the clash is
logged.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from .codesystems import CodeSystem
from .v2maps import vocabulary_concept_maps

log = logging.getLogger("fhir_server")

PACKAGE = Path(__file__).resolve().parents[1]
CORE_FILE = Path(__file__).parent / "data" / "r4-terminology.json.gz"
# Where the server's own definitions are shipped (symlinks to the top-level folders).
SOURCE_DIRS = (PACKAGE / "terminology", PACKAGE / "profiles", PACKAGE / "mappings")
TYPES = ("CodeSystem", "ValueSet", "ConceptMap")
DEFAULT_MAX_EXPANSION = 10_000


def split_canonical(canonical: str, version: str | None = None) -> tuple[str, str | None]:
    """(`url`, `version`) of a canonical reference `url|version` (an explicit version wins)."""
    url, bar, pinned = canonical.partition("|")
    return url, version or (pinned if bar else None)


class Catalogue:
    """The CodeSystems, ValueSets and ConceptMaps held, by URL and by id; and the largest
    expansion the server computes (`max_expansion` codes)."""

    def __init__(self, resources: Iterable[dict[str, Any]], *,
                 max_expansion: int = DEFAULT_MAX_EXPANSION) -> None:
        self.max_expansion = max_expansion
        self._by_url: dict[str, dict[str, list[dict[str, Any]]]] = {t: {} for t in TYPES}
        self._by_id: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in TYPES}
        self._code_systems: dict[tuple[str, str | None], CodeSystem] = {}
        # The codes of the value sets held, by (url, version), computed on first use
        # (valuesets.membership): the catalogue does not change while serving.
        self.expansions: dict[tuple[str, str | None], dict[tuple[str, str], Any]] = {}
        for resource in resources:
            self.add(resource)

    def add(self, resource: dict[str, Any]) -> None:
        """Hold one more CodeSystem, ValueSet or ConceptMap."""
        kind = resource["resourceType"]
        versions = self._by_url[kind].setdefault(resource["url"], [])
        clash = next((r for r in versions if r.get("version") == resource.get("version")), None)
        if clash is not None:
            if clash != resource:
                log.warning("terminology: two definitions of one canonical, the first kept",
                            extra={"url": resource["url"]})
            return
        versions.append(resource)
        if "id" in resource:
            self._by_id[kind].setdefault(resource["id"], resource)

    def resource(self, kind: str, canonical: str, version: str | None = None) -> dict[str, Any] | None:
        """The `kind` resource of a canonical URL (`url|version` or `version`), or None."""
        url, version = split_canonical(canonical, version)
        versions = self._by_url[kind].get(url, [])
        if version is None:
            return versions[0] if versions else None
        return next((r for r in versions if r.get("version") == version), None)

    def by_id(self, kind: str, id: str) -> dict[str, Any] | None:
        """The `kind` resource with this logical id, or None."""
        return self._by_id[kind].get(id)

    def urls(self, kind: str) -> list[str]:
        """The canonical URLs of every `kind` resource held."""
        return list(self._by_url[kind])

    def resources(self, kind: str, url: str) -> list[dict[str, Any]]:
        """Every version held of a canonical URL, the default (first loaded) first."""
        return list(self._by_url[kind].get(url, []))

    def versions(self, kind: str, url: str) -> list[str]:
        """The versions held of a canonical URL (empty: the URL is not held)."""
        return [str(r.get("version")) for r in self._by_url[kind].get(url, [])]

    def code_system(self, canonical: str, version: str | None = None) -> CodeSystem | None:
        """The indexed CodeSystem of a canonical URL (and version), or None."""
        resource = self.resource("CodeSystem", canonical, version)
        if resource is None:
            return None
        # Indexed on first use: the core has a thousand systems, a request needs one or two.
        key = (resource["url"], resource.get("version"))
        index = self._code_systems.get(key)
        if index is None:
            index = self._code_systems[key] = CodeSystem(resource)
        return index

    def concept_maps(self) -> list[dict[str, Any]]:
        """Every ConceptMap held (each version)."""
        return [r for versions in self._by_url["ConceptMap"].values() for r in versions]


def own_definitions(dirs: Sequence[Path] = SOURCE_DIRS) -> list[dict[str, Any]]:
    """Our CodeSystems, ValueSets and ConceptMaps, read from `dirs` and their subfolders
    (files named `<Type>-<id>.json`, and the HL7 v2 tables of a `vocabulary.json`)."""
    found = []
    for folder in dirs:
        for kind in TYPES:
            for path in sorted(folder.rglob(f"{kind}-*.json")) if folder.is_dir() else ():
                resource = orjson.loads(path.read_bytes())
                if resource.get("resourceType") == kind and "url" in resource:
                    found.append(resource)
        for path in sorted(folder.rglob("vocabulary.json")) if folder.is_dir() else ():
            found.extend(vocabulary_concept_maps(path))
    return found


def core_definitions(path: Path = CORE_FILE) -> list[dict[str, Any]]:
    """The FHIR R4 core CodeSystems and ValueSets, as the derived index keeps them."""
    resources: list[dict[str, Any]] = orjson.loads(gzip.decompress(path.read_bytes()))
    return resources


def load_catalogue(*, max_expansion: int = DEFAULT_MAX_EXPANSION,
                   dirs: Sequence[Path] = SOURCE_DIRS, core: Path = CORE_FILE,
                   operator: Path | None = None) -> Catalogue:
    """Our definitions, the operator's code systems (folder `operator`: operator.py) and the
    R4 core ones, indexed. Without operator code systems the catalogue is made once per
    process and arguments (it does not change while serving, and every app of a test run
    shares it); with them, once per call: each server's folder is its own, and a cache keyed
    by it would keep a catalogue for every app a process ever made."""
    loaded = own_definitions((operator,)) if operator is not None else []
    if not loaded:
        return _shared_catalogue(max_expansion, tuple(dirs), core)
    return Catalogue([*own_definitions(dirs), *loaded, *core_definitions(core)],
                     max_expansion=max_expansion)


@cache
def _shared_catalogue(max_expansion: int, dirs: tuple[Path, ...], core: Path) -> Catalogue:
    return Catalogue([*own_definitions(dirs), *core_definitions(core)], max_expansion=max_expansion)
