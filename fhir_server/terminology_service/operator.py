"""Code systems the operator loads from their own licensed distributions (MedDRA, ICD-10,
ICD-O-3: we may not redistribute them), kept as files in `<data_dir>/terminology/` and
indexed at start with the ones we ship (docs/terminology.md, "Loading licensed code systems").
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson

from .catalogue import SOURCE_DIRS, own_definitions
from .codesystems import CodeSystem

# FHIR ids (datatypes.html#id): the id names the file, so nothing else may reach the path.
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class Refused(ValueError):
    """The file is not a CodeSystem the server can hold; the message says why."""


def operator_dir(data_dir: Path) -> Path:
    """Where the operator's code systems are kept."""
    return data_dir / "terminology"


def install(source: Path, data_dir: Path) -> Path:
    """Check the CodeSystem JSON `source` and keep it in the operator's folder (replacing an
    earlier load of the same id); the path written. Refused: not a complete CodeSystem with
    `url`, `id` and concepts, or a canonical the server ships."""
    try:
        resource = orjson.loads(source.read_bytes())
    except orjson.JSONDecodeError as error:
        raise Refused(f"{source}: not JSON ({error})") from None
    _check(resource)
    folder = operator_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"CodeSystem-{resource['id']}.json"
    partial = target.with_suffix(".partial")
    partial.write_bytes(orjson.dumps(resource))
    os.replace(partial, target)  # a server starting meanwhile reads the old file or the new
    return target


def _check(resource: Any) -> None:
    if not isinstance(resource, dict) or resource.get("resourceType") != "CodeSystem":
        raise Refused("not a CodeSystem resource")
    if not isinstance(resource.get("url"), str) or not resource["url"]:
        raise Refused("the CodeSystem has no url")
    if not isinstance(resource.get("id"), str) or not _ID.fullmatch(resource["id"]):
        raise Refused("the CodeSystem needs an id (letters, digits, '-', '.'; 64 at most)")
    if resource.get("content") != "complete" or not resource.get("concept"):
        raise Refused("the CodeSystem must be content 'complete' with its concepts")
    if any(r["url"] == resource["url"] for r in own_definitions(SOURCE_DIRS)):
        raise Refused(f"{resource['url']} is a code system the server ships")
    try:
        CodeSystem(resource)
    except (KeyError, TypeError, AttributeError) as error:
        raise Refused(f"a concept cannot be read ({error!r})") from None
