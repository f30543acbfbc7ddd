"""What a load has finished, kept in a JSON file so an interrupted load resumes where it stopped.

Each source file is a sequence of items (a Bundle's entries, an NDJSON file's lines, or the one
resource of a resource file). The state records, per file, the ranges of items stored, and
whether the file is complete. It is written after each commit, never before, so it can lag
the store after a crash (those items are sent again) but never run ahead of it.

A file whose size or modification time changed since is considered new: its old ranges would
name other items.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

_FORMAT = 1


@dataclass
class FileState:
    """Progress of one source file."""

    size: int
    mtime_ns: int
    done: list[tuple[int, int]] = field(default_factory=list)  # sorted, merged [start, stop)
    total: int | None = None  # number of items, once the file has been read

    @property
    def complete(self) -> bool:
        """Every item is stored (or had nothing to store): a re-run need not open the file."""
        return self.total is not None and (self.total == 0 or self.done == [(0, self.total)])

    def add(self, items: list[int]) -> None:
        """Record `items` (item numbers) as stored."""
        ranges = sorted([*self.done, *((i, i + 1) for i in items)])
        merged: list[tuple[int, int]] = []
        for start, stop in ranges:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(stop, merged[-1][1]))
            else:
                merged.append((start, stop))
        self.done = merged

    def is_done(self, item: int) -> bool:
        return any(start <= item < stop for start, stop in self.done)


class LoadState:
    """The state of a load; in memory only when no path is given."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.files: dict[str, FileState] = {}
        if path is not None and path.exists():
            self._read(path)

    def _read(self, path: Path) -> None:
        raw = orjson.loads(path.read_bytes())
        if raw.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a load state file this version understands")
        for name, item in raw["files"].items():
            self.files[name] = FileState(item["size"], item["mtime_ns"],
                                         [(a, b) for a, b in item["done"]], item["total"])

    def file(self, source: Path) -> FileState:
        """The progress of `source`, reset if the file changed since it was recorded."""
        stat = source.stat()
        key = str(source.resolve())
        known = self.files.get(key)
        if known is None or (known.size, known.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            known = self.files[key] = FileState(stat.st_size, stat.st_mtime_ns)
        return known

    def save(self) -> None:
        """Write the state atomically (a crash leaves the previous or the new file, whole)."""
        if self.path is None:
            return
        data: dict[str, Any] = {"format": _FORMAT, "files": {
            name: {"size": s.size, "mtime_ns": s.mtime_ns, "done": s.done, "total": s.total}
            for name, s in self.files.items()}}
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        os.replace(temporary, self.path)
