"""Bulk loading of FHIR files through the service layer (`fhir-server load`), see docs/ingestion.md.

Files become batch or transaction Bundles (sources.py) run in-process by
`services.bundle`, the same code as `POST [base]`, so validation, indexing and the
all-or-nothing rule are those of the HTTP API. `concurrency` asyncio tasks send units at
once: one validates while another writes. Progress is recorded after each commit
(loadstate.py), so an interrupted load resumes; identified Patients, Organizations and
Practitioners are created conditionally (dedupe.py), so loading the same data twice does not
duplicate them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..model.errors import FhirError
from ..services import bundle
from ..services.context import Context
from .dedupe import add_if_none_exist
from .loadstate import LoadState
from .sources import Unit, Unreadable, source_files, units

log = logging.getLogger("fhir_server.interop")
_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]")


@dataclass(frozen=True)
class LoadOptions:
    """How to load: see `fhir-server load --help`."""

    concurrency: int = 4
    state_file: Path | None = None
    dedupe_by_identifier: bool = True
    progress: TextIO | None = None  # where to report progress, if anywhere


@dataclass(frozen=True)
class Failure:
    """Something not stored: the file, where in it (`entry 3`, `line 17`, `file`) and why."""

    path: Path
    where: str
    message: str


@dataclass
class LoadReport:
    """What a load did."""

    files: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # created, updated, matched, ...
    failures: list[Failure] = field(default_factory=list)
    skipped_files: int = 0  # complete in the state file of an earlier run
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def resources(self) -> int:
        return sum(self.outcomes.values())

    @property
    def rate(self) -> float:
        return self.resources / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """A few lines for people: totals, rate, and each failure with its place."""
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.outcomes.items()))
        lines = [f"{'interrupted after' if self.interrupted else 'loaded'} {self.resources} resources "
                 f"from {self.files} files in {self.seconds:.1f} s ({self.rate:.0f} resources/s)"
                 + (f": {kinds}" if kinds else "")]
        if self.skipped_files:
            lines.append(f"skipped {self.skipped_files} files already loaded by an earlier run")
        if self.failures:
            lines.append(f"{len(self.failures)} failures:")
            lines.extend(f"  {f.path} {f.where}: {f.message}" for f in self.failures)
        if self.interrupted:
            lines.append("re-run the same command with the same --state file to resume")
        return "\n".join(lines)


LOG_EVERY = 5.0  # seconds between progress lines when the stream is not a terminal


class _Progress:
    """On a terminal, one line redrawn at most five times a second; elsewhere (a log file, a
    container's output), a new line every LOG_EVERY seconds; silent without a stream."""

    def __init__(self, stream: TextIO | None, files: int) -> None:
        self.stream, self.files, self.started, self.drawn = stream, files, time.monotonic(), 0.0
        self.terminal = stream is not None and stream.isatty()

    def update(self, report: LoadReport, files_done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        every = 0.2 if self.terminal else LOG_EVERY
        if self.stream is None or (not final and now - self.drawn < every):
            return
        self.drawn = now
        rate = report.resources / max(now - self.started, 1e-9)
        line = (f"{files_done}/{self.files} files  {report.resources} resources  "
                f"{rate:.0f}/s  {len(report.failures)} failures")
        if self.terminal:
            self.stream.write(f"\r{line} " + ("\n" if final else ""))
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()


class Loader:
    """One load: feeds units to `concurrency` tasks and keeps the report and the state."""

    def __init__(self, ctx: Context, options: LoadOptions) -> None:
        self.ctx = ctx
        self.options = options
        self.state = LoadState(options.state_file)
        self.report = LoadReport()
        self._files_done = 0
        # Units of each file not yet sent; a file counts as done once it has none left and
        # all its units are read (not when they are queued: the counter follows the work).
        self._unsent: Counter[Path] = Counter()
        self._read: set[Path] = set()
        self._progress = _Progress(None, 0)
        self._in_flight: set[asyncio.Future[None]] = set()

    async def run(self, paths: Sequence[Path]) -> LoadReport:
        """Load `paths`; cancelled (Ctrl-C), finish the units in flight, then report `interrupted`.

        Letting them finish keeps the state file in step with the store: a unit cancelled
        between its commit and the state update would be sent again by the next run.
        """
        files = source_files(paths)
        self.report.files = len(files)
        self._progress = _Progress(self.options.progress, len(files))
        started = time.monotonic()
        try:
            async with asyncio.TaskGroup() as group:
                queue: asyncio.Queue[Unit | None] = asyncio.Queue(maxsize=2 * self.options.concurrency)
                for _ in range(self.options.concurrency):
                    group.create_task(self._work(queue))
                await self._produce(files, queue)
        except asyncio.CancelledError:
            self.report.interrupted = True
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        finally:
            self.report.seconds = time.monotonic() - started
            self.state.save()
            self._progress.update(self.report, self._files_done, final=True)
        return self.report

    async def _produce(self, files: list[Path], queue: asyncio.Queue[Unit | None]) -> None:
        for path in files:
            state = self.state.file(path)
            if state.complete:
                self.report.skipped_files += 1
                self._files_done += 1
                continue
            for unit in units(path, state):
                if isinstance(unit, Unreadable):
                    self.report.failures.append(Failure(unit.path, unit.where, unit.message))
                    continue
                if self.options.dedupe_by_identifier:
                    for entry in unit.bundle.checked["entry"]:
                        add_if_none_exist(entry)
                self._unsent[path] += 1
                await queue.put(unit)
            self._read.add(path)
            self._file_progress(path)
        for _ in range(self.options.concurrency):
            await queue.put(None)

    async def _work(self, queue: asyncio.Queue[Unit | None]) -> None:
        while (unit := await queue.get()) is not None:
            send = asyncio.ensure_future(self._send(unit))
            self._in_flight.add(send)
            send.add_done_callback(self._in_flight.discard)
            await asyncio.shield(send)
            self._unsent[unit.path] -= 1
            self._file_progress(unit.path)
            self._progress.update(self.report, self._files_done)

    def _file_progress(self, path: Path) -> None:
        if path in self._read and self._unsent[path] == 0:
            self._read.discard(path)
            self._files_done += 1

    async def _send(self, unit: Unit) -> None:
        stored: list[int] = []
        try:
            bundle_type, entries = bundle.parse_entries(self.ctx, unit.bundle)
            run = bundle.transaction if bundle_type == "transaction" else bundle.batch
            outcome = await run(self.ctx, entries)
        except FhirError as exc:
            self._fail(unit, exc)
        except Exception as exc:  # a bug must not stop the other files; the log has the traceback
            log.exception("load failed", extra={"file": str(unit.path)})
            self.report.failures.append(Failure(unit.path, "file", f"internal error: {exc!r}"))
        else:
            for item, result in zip(unit.items, outcome.entries, strict=True):
                if result.error is not None:
                    self.report.failures.append(Failure(unit.path, unit.label(item), _message(result.error)))
                else:
                    stored.append(item)
                    self.report.outcomes[result.result.outcome if result.result else "read"] += 1
        if stored:
            unit.state.add(stored)
            self.state.save()

    def _fail(self, unit: Unit, error: FhirError) -> None:
        """A refused Bundle: name the entry the error is about, in the source's terms."""
        where = "file"
        for issue in error.issues:
            found = next((m for e in issue.expression if (m := _ENTRY.match(e))), None)
            if found and int(found[1]) < len(unit.items):
                where = unit.label(unit.items[int(found[1])])
                break
        self.report.failures.append(Failure(unit.path, where, _message(error)))


def _message(error: FhirError) -> str:
    return "; ".join(i.diagnostics for i in error.issues)


async def load(ctx: Context, paths: Sequence[Path], options: LoadOptions | None = None) -> LoadReport:
    """Load files and directories of FHIR JSON / NDJSON into the store behind `ctx`."""
    return await Loader(ctx, options or LoadOptions()).run(paths)
