"""Regenerate fhir_server/search/data/ from the official R4 definitions.

Usage: `.venv/bin/python tests/search/datagen.py [DEFINITIONS_DIR] [--check]`
(default DEFINITIONS_DIR: /work/shared/data/fhir-r4). `--check` only compares.

Element types come from the StructureDefinition snapshots of every resource and data type;
only the paths the expression compiler actually looks up are kept, found by compiling every
parameter (the official ones and this server's, in profiles/) for every base type against the
full table.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fhir_server.search.compile import CompileError, Compiler  # noqa: E402
from fhir_server.search.registry import (  # noqa: E402
    COMPARTMENT_FILE,
    PARAMS_FILE,
    Registry,
    own_params,
    params_from_json,
)

DEFAULT_SOURCE = Path("/work/shared/data/fhir-r4")
_KEEP = (
    "id", "url", "code", "type", "base", "expression", "target", "component",
    "multipleOr", "multipleAnd", "comparator", "modifier", "chain", "description",
)  # fmt: skip
_SYSTEM = "http://hl7.org/fhirpath/System."


def _entries(path: Path) -> list[dict[str, Any]]:
    return [e["resource"] for e in json.loads(path.read_text())["entry"]]


def _type_code(t: dict[str, Any]) -> str:
    code: str = t["code"]
    if code.startswith(_SYSTEM):
        # Element.id / Resource.id: the fhir-type extension names the FHIR primitive.
        for ext in t.get("extension", ()):
            if ext.get("url", "").endswith("structuredefinition-fhir-type"):
                return str(ext.get("valueUrl") or ext.get("valueUri"))
        return code[len(_SYSTEM) :].lower()
    return code


def element_table(source: Path) -> tuple[dict[str, list[str]], dict[str, str], dict[str, str]]:
    """(path -> types, complex type -> base type, resource type -> Resource|DomainResource)."""
    elements: dict[str, list[str]] = {}
    base_types: dict[str, str] = {}
    resource_types: dict[str, str] = {}
    structure = _entries(source / "profiles-resources.json") + _entries(source / "profiles-types.json")
    for sd in structure:
        if sd.get("resourceType") != "StructureDefinition" or sd.get("derivation") == "constraint":
            continue
        base = sd.get("baseDefinition", "").rsplit("/", 1)[-1]
        if sd["kind"] == "resource" and not sd.get("abstract"):
            resource_types[sd["type"]] = base
        if sd["kind"] == "complex-type" and base not in ("Element", "BackboneElement", ""):
            base_types[sd["type"]] = base
        for el in sd["snapshot"]["element"]:
            if "." not in el["path"]:
                continue
            if "contentReference" in el:
                elements[el["path"]] = [el["contentReference"]]
            elif el.get("type"):
                elements[el["path"]] = [_type_code(t) for t in el["type"]]
    return elements, base_types, resource_types


def build(source: Path = DEFAULT_SOURCE) -> tuple[bytes, str]:
    """The (gzipped params file, compartment JSON text) derived from `source`."""
    params = [
        {k: p[k] for k in _KEEP if k in p}
        for p in _entries(source / "search-parameters.json")
        if p.get("resourceType") == "SearchParameter"
    ]
    params.sort(key=lambda p: p["id"])
    elements, base_types, resource_types = element_table(source)
    # This server's own parameters are compiled too, so the element types they need are kept;
    # they are loaded from profiles/ at run time, not stored here.
    own = [{k: p[k] for k in _KEEP if k in p} for p in own_params()]
    registry = Registry(
        params_from_json(params + own),
        resource_types=resource_types,
        elements={k: tuple(v) for k, v in elements.items()},
        base_types=base_types,
    )
    lookups: set[str] = set()
    compiler = Compiler(registry, lookups)
    for rtype in sorted(resource_types):
        for sp in registry.for_type(rtype).values():
            if not sp.expression:
                continue
            try:
                branches = compiler.compile(sp.expression, rtype)
                for comp in sp.components:
                    for b in branches:
                        compiler.compile(comp.expression, b.type, rtype)
            except CompileError:
                pass  # falls back to fhirpathpy at runtime; nothing to record
    data = {
        "fhirVersion": "4.0.1",
        "resourceTypes": dict(sorted(resource_types.items())),
        "baseTypes": dict(sorted(base_types.items())),
        "params": params,
        "elements": {k: elements[k] for k in sorted(lookups) if k in elements},
    }
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
    compressed = gzip.compress(raw, compresslevel=9, mtime=0)
    compartment = json.loads((source / "compartmentdefinition-patient.json").read_text())
    links = {r["code"]: r["param"] for r in compartment["resource"] if r.get("param")}
    return compressed, json.dumps(links, indent=1, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    source = Path(args[0]) if args else DEFAULT_SOURCE
    params_gz, compartment = build(source)
    if check:
        same = PARAMS_FILE.read_bytes() == params_gz and COMPARTMENT_FILE.read_text() == compartment
        print("up to date" if same else "DRIFT: regenerate")
        return 0 if same else 1
    PARAMS_FILE.write_bytes(params_gz)
    COMPARTMENT_FILE.write_text(compartment)
    print(f"wrote {PARAMS_FILE} ({len(params_gz)} bytes) and {COMPARTMENT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
