"""Regenerate fhir_server/model/data/r4-structures.json.gz from the official R4 definitions.

Usage: `.venv/bin/python tests/model/structuregen.py [DEFINITIONS_DIR] [--check]`
(default DEFINITIONS_DIR: /work/shared/data/fhir-r4). `--check` only compares.

The snapshots of every R4 resource and data type, with only what snapshot generation and the
profile validator read (ids, cardinality, types, fixed and pattern values, bindings, slicing,
constraints): the base a differential-only profile is built on (model/snapshot_gen.py).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "fhir_server" / "model" / "data" / "r4-structures.json.gz"
DEFAULT_SOURCE = Path("/work/shared/data/fhir-r4")
_ELEMENT_KEYS = ("id", "path", "sliceName", "min", "max", "type", "binding", "slicing",
                 "constraint", "contentReference")
_CONSTRAINT_KEYS = ("key", "severity", "human", "expression", "source")
_BEST_PRACTICE = "http://hl7.org/fhir/StructureDefinition/elementdefinition-bestpractice"


def _best_practice(constraint: dict[str, Any]) -> bool:
    return any(e.get("url") == _BEST_PRACTICE and e.get("valueBoolean")
               for e in constraint.get("extension", []))


def _element(raw: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in raw.items() if k in _ELEMENT_KEYS or k.startswith(("fixed", "pattern"))}
    if "constraint" in kept:
        kept["constraint"] = [{k: c[k] for k in _CONSTRAINT_KEYS if k in c}
                              | ({"extension": [{"url": _BEST_PRACTICE, "valueBoolean": True}]}
                                 if _best_practice(c) else {})
                              for c in kept["constraint"]]
    if "binding" in kept:
        kept["binding"] = {k: v for k, v in kept["binding"].items() if k in ("strength", "valueSet")}
    return kept


def build(source: Path) -> bytes:
    structures: dict[str, Any] = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        for entry in json.loads((source / name).read_text())["entry"]:
            sd = entry["resource"]
            if sd.get("resourceType") != "StructureDefinition" or "snapshot" not in sd:
                continue
            structures[sd["url"]] = {
                "resourceType": "StructureDefinition", "url": sd["url"], "type": sd["type"],
                "kind": sd["kind"], "derivation": sd.get("derivation"),
                "baseDefinition": sd.get("baseDefinition"),
                "snapshot": {"element": [_element(e) for e in sd["snapshot"]["element"]]},
            }
    text = json.dumps(structures, separators=(",", ":"), sort_keys=True).encode()
    return gzip.compress(text, compresslevel=9, mtime=0)


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    data = build(Path(args[0]) if args else DEFAULT_SOURCE)
    if "--check" in argv:
        same = TARGET.exists() and gzip.decompress(TARGET.read_bytes()) == gzip.decompress(data)
        print("up to date" if same else f"{TARGET} differs")
        return 0 if same else 1
    TARGET.write_bytes(data)
    print(f"wrote {TARGET} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
