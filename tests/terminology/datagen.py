"""Build fhir_server/terminology_service/data/r4-terminology.json.gz, the server's index of
the FHIR R4 core CodeSystems and ValueSets, from the official definitions
(../shared/data/fhir-r4/: valuesets.json, v2-tables.json, v3-codesystems.json; CC0).

Kept: what the terminology operations read. CodeSystems keep url, id, version, name, title,
status, content, caseSensitive, hierarchyMeaning, valueSet, supplements, their property
declarations (code, uri, type) and concepts (code, display, designation, property, nesting);
concept definitions, narratives and descriptions are left out (4 MB of text the operations do
not return for the core). ValueSets keep url, id, version, name, title, status, compose and
expansion. The output is sorted and gzipped without a timestamp, so a rebuild is
byte-identical (tests/terminology/test_catalogue.py checks that).

    .venv/bin/python tests/terminology/datagen.py [/work/shared/data/fhir-r4]
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT.parent / "shared" / "data" / "fhir-r4"
BUNDLES = ("valuesets.json", "v2-tables.json", "v3-codesystems.json")
OUTPUT = ROOT / "fhir_server" / "terminology_service" / "data" / "r4-terminology.json.gz"
CODE_SYSTEM = ("resourceType", "id", "url", "version", "name", "title", "status", "content",
               "caseSensitive", "hierarchyMeaning", "valueSet", "supplements", "property", "concept")
VALUE_SET = ("resourceType", "id", "url", "version", "name", "title", "status", "compose",
             "expansion")


def _concept(raw: dict[str, Any]) -> dict[str, Any]:
    out = {k: raw[k] for k in ("code", "display", "designation", "property") if k in raw}
    if "concept" in raw:
        out["concept"] = [_concept(c) for c in raw["concept"]]
    return out


def reduce(resource: dict[str, Any]) -> dict[str, Any]:
    """What the index keeps of one CodeSystem or ValueSet."""
    if resource["resourceType"] == "ValueSet":
        return {k: resource[k] for k in VALUE_SET if k in resource}
    out = {k: resource[k] for k in CODE_SYSTEM if k in resource}
    if "property" in out:
        out["property"] = [{k: p[k] for k in ("code", "uri", "type") if k in p}
                           for p in out["property"]]
    if "concept" in out:
        out["concept"] = [_concept(c) for c in out["concept"]]
    return out


def build(source: Path = SOURCE) -> bytes:
    """The gzipped index, from the official bundles in `source`."""
    resources = [reduce(entry["resource"]) for name in BUNDLES
                 for entry in json.loads((source / name).read_text())["entry"]
                 if entry["resource"]["resourceType"] in ("CodeSystem", "ValueSet")]
    resources.sort(key=lambda r: (r["resourceType"], r["url"], r.get("version", "")))
    text = json.dumps(resources, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


if __name__ == "__main__":
    OUTPUT.write_bytes(build(Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE))
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)")
