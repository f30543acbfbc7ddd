"""Source files for the loader, cut into units: each unit is sent as one batch or transaction.

- A transaction or batch Bundle is sent as such (a batch without the entries already stored).
- A Bundle of another type (collection, searchset, document, ...) has its resources stored:
  PUT `Type/id` when the resource has an id, else POST. It is sent as a transaction when a
  fullUrl is a `urn:` placeholder, since only a transaction rewrites references to those
  (http.html#trules), else as a batch.
- Any other `.json` file is one resource, stored the same way.
- An `.ndjson` file holds one resource per line (bulk data format); lines go in batches.

Items are numbered per file (entry index, or line index for NDJSON) for the load state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..model import jsonbody
from ..model.errors import FhirError
from ..services.context import Payload
from .loadstate import FileState

SUFFIXES = (".json", ".ndjson")
NDJSON_BATCH = 200  # lines per batch: small enough to retry, large enough to amortise a commit


@dataclass(frozen=True)
class Unit:
    """Items of one source file sent together as one Bundle (`bundle`, checked and exact views)."""

    path: Path
    state: FileState
    items: tuple[int, ...]  # the source item of each entry of `bundle`
    bundle: Payload
    kind: Literal["entry", "line", "resource"] = "entry"

    def label(self, item: int) -> str:
        """Where an item is in its file, for people: `entry 3`, `line 17`, `resource`."""
        return {"entry": f"entry {item}", "line": f"line {item + 1}", "resource": "resource"}[self.kind]


@dataclass(frozen=True)
class Unreadable:
    """A file, or one NDJSON line, that is not a FHIR resource or Bundle in JSON."""

    path: Path
    where: str
    message: str


def source_files(paths: Sequence[Path]) -> list[Path]:
    """The files to load: files as given, directories searched recursively, in name order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return found


def units(path: Path, state: FileState) -> Iterator[Unit | Unreadable]:
    """The units of `path` still to store, and what could not be read."""
    if path.suffix == ".ndjson":
        yield from _ndjson_units(path, state)
    else:
        yield from _json_units(path, state)


def _parse(body: bytes) -> Payload:
    checked, exact = jsonbody.parse(body)
    if not isinstance(checked, dict) or not isinstance(checked.get("resourceType"), str):
        raise ValueError("not a FHIR resource (a JSON object with a resourceType)")
    return Payload(checked, exact)


def _message(exc: Exception) -> str:
    if isinstance(exc, FhirError):
        return "; ".join(i.diagnostics for i in exc.issues)
    return str(exc)


def _request(resource: dict[str, Any]) -> dict[str, str]:
    """How a resource without a request is stored: PUT with its id, else POST."""
    rtype, id = resource["resourceType"], resource.get("id")
    return {"method": "PUT", "url": f"{rtype}/{id}"} if id else {"method": "POST", "url": rtype}


def _bundle(bundle_type: str, checked: Iterable[dict[str, Any]], exact: Iterable[dict[str, Any]]) -> Payload:
    def wrap(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": bundle_type, "entry": list(entries)}

    return Payload(wrap(checked), wrap(exact))


def _entry_pair(resource: Payload, full_url: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """An entry storing `resource`, in its checked and exact views (one request dict for both)."""
    request = _request(resource.checked)
    head = {"fullUrl": full_url} if isinstance(full_url, str) else {}
    return ({**head, "resource": resource.checked, "request": request},
            {**head, "resource": resource.exact, "request": request})


def _json_units(path: Path, state: FileState) -> Iterator[Unit | Unreadable]:
    try:
        document = _parse(path.read_bytes())
    except (FhirError, ValueError) as exc:
        yield Unreadable(path, "file", _message(exc))
        return
    if document.checked["resourceType"] != "Bundle":
        state.total = 1
        checked, exact = _entry_pair(document)
        yield Unit(path, state, (0,), _bundle("batch", [checked], [exact]), "resource")
        return
    checked_entries = document.checked.get("entry") or []
    state.total = len(checked_entries)
    bundle_type = document.checked.get("type")
    if bundle_type == "transaction":
        # All or nothing: a transaction is never sent in part.
        yield Unit(path, state, tuple(range(len(checked_entries))), document)
        return
    if bundle_type == "batch":
        entries = list(zip(range(len(checked_entries)), checked_entries,
                           document.exact.get("entry") or [], strict=True))
    else:
        bundle_type, entries = _stored_entries(state, document)
    todo = [e for e in entries if bundle_type == "transaction" or not state.is_done(e[0])]
    if todo:
        yield Unit(path, state, tuple(e[0] for e in todo),
                   _bundle(bundle_type, (e[1] for e in todo), (e[2] for e in todo)))


def _stored_entries(state: FileState, document: Payload
                    ) -> tuple[str, list[tuple[int, dict[str, Any], dict[str, Any]]]]:
    """A collection-like Bundle's resources as requests: (item, checked entry, exact entry)."""
    entries = []
    placeholders = False
    for index, (raw, exact) in enumerate(zip(document.checked.get("entry") or [],
                                             document.exact.get("entry") or [], strict=True)):
        resource = raw.get("resource") if isinstance(raw, dict) else None
        search = raw.get("search") if isinstance(raw, dict) else None
        if not isinstance(resource, dict) or (isinstance(search, dict) and search.get("mode") == "outcome"):
            state.add([index])  # a searchset's OperationOutcome, or an entry without a resource
            continue
        full_url = raw.get("fullUrl")
        placeholders = placeholders or (isinstance(full_url, str) and full_url.startswith("urn:"))
        entries.append((index, *_entry_pair(Payload(resource, exact["resource"]), full_url)))
    return ("transaction" if placeholders else "batch"), entries


def _ndjson_units(path: Path, state: FileState) -> Iterator[Unit | Unreadable]:
    items: list[int] = []
    checked: list[dict[str, Any]] = []
    exact: list[dict[str, Any]] = []
    line_count = 0
    with path.open("rb") as lines:
        for index, line in enumerate(lines):
            line_count = index + 1
            if state.is_done(index):
                continue
            if not line.strip():
                state.add([index])  # nothing to store on a blank line
                continue
            try:
                resource = _parse(line)
            except (FhirError, ValueError) as exc:
                yield Unreadable(path, f"line {index + 1}", _message(exc))
                continue
            pair = _entry_pair(resource)
            items.append(index)
            checked.append(pair[0])
            exact.append(pair[1])
            if len(items) == NDJSON_BATCH:
                yield Unit(path, state, tuple(items), _bundle("batch", checked, exact), "line")
                items, checked, exact = [], [], []
    state.total = line_count
    if items:
        yield Unit(path, state, tuple(items), _bundle("batch", checked, exact), "line")
