"""The HL7 v2 tables the listener's maps apply (mappings/hl7v2/vocabulary.json, `concept_maps`)
as ConceptMaps, so that `ConceptMap/$translate` answers what a message's codes become and the
two never disagree: the ConceptMaps are built from the very table the mapping engine reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ..model.platform_codes import CANONICAL

BASE = f"{CANONICAL}/ConceptMap"


def vocabulary_concept_maps(path: Path) -> list[dict[str, Any]]:
    """A ConceptMap per table `concept_maps` names in the vocabulary file at `path` (none
    when the file is no vocabulary); ValueError for a table the file does not hold."""
    vocabulary = orjson.loads(path.read_bytes())
    if vocabulary.get("kind") != "vocabulary":
        return []
    found = []
    for table, systems in vocabulary.get("concept_maps", {}).items():
        if table not in vocabulary["maps"]:
            raise ValueError(f"{path}: concept_maps names {table}, which maps does not hold")
        found.append(_concept_map(table, systems, vocabulary["maps"][table]))
    return found


def _concept_map(table: str, systems: dict[str, str], values: dict[str, Any]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for code, value in values.items():
        coding = value if isinstance(value, dict) else {"system": systems["target"], "code": value}
        target = {k: coding[k] for k in ("code", "display") if k in coding}
        groups.setdefault(coding["system"], []).append(
            {"code": code, "target": [{**target, "equivalence": "equivalent"}]})
    return {
        "resourceType": "ConceptMap", "id": f"hl7v2-{table}", "url": f"{BASE}/hl7v2-{table}",
        "name": f"Hl7v2{table.replace('-', '').title()}", "status": "active",
        "title": f"HL7 v2 table {table.removeprefix('v2-')} as the HL7 v2 listener maps it",
        "group": [{"source": systems["source"], "target": system, "element": elements}
                  for system, elements in groups.items()],
    }
