"""The Jobs port: asynchronous jobs (Bulk Data `$export`, docs/export.md) and the files they
write, kept by the store so that a job survives a crash of the process running it.

A job is claimed by one worker at a time under a lease with an expiry: a worker killed
mid-job stops renewing it, and once it expires any worker claims the job again and goes on
from the progress last saved. `save` is fenced by the lease: a worker that lost its lease
saves nothing. A job's files are written by `save` under names the job's progress fixes
before they are written, so a step run twice (the first run's files written, its progress
not) replaces its files instead of adding to them.

The request, the progress and every file are sealed by the store's body codec, like resource
bodies (docs/security.md): `Job.spec`, `Job.progress` and file data are plain here and
ciphertext in the store. Ids, the client, the state, times and attempts are kept in clear.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..crypto import BodyCodec

JobState = Literal["queued", "running", "done", "failed"]
# The states a worker may claim a job in (a lease of a running job may have expired).
CLAIMABLE: tuple[JobState, ...] = ("queued", "running")
# The body codec's names for what it seals: a job's request and progress, and its files.
_JOB, _FILE = "export-job", "export-file"


@dataclass(frozen=True, slots=True)
class Job:
    """One job. Times are seconds since the epoch (clock.seconds)."""

    id: str
    client_id: str  # who started it: the only one who sees it
    state: JobState
    created: float
    spec: bytes  # what to do (JSON)
    progress: bytes  # what is done (JSON): cursors and files written
    attempts: int = 0  # claims so far
    lease_owner: str | None = None
    lease_until: float = 0.0
    updated: float = 0.0


@dataclass(frozen=True, slots=True)
class JobFile:
    """A file of a job, by the name its progress gives it."""

    name: str
    data: bytes


class Jobs(Protocol):
    """The jobs of one store. Every method is safe to call from several processes."""

    async def create(self, job: Job) -> None:
        """Store a new job (its id is fresh)."""

    async def get(self, id: str) -> Job | None:
        """The job, or None if there is none (never created, or deleted)."""

    async def all(self) -> list[Job]:
        """Every job, oldest first."""

    async def claim(self, owner: str, now: float, until: float) -> Job | None:
        """Atomically take the oldest job in a CLAIMABLE state whose lease ended before `now`:
        it becomes `running`, leased to `owner` until `until`, its attempts counted one more.
        None when there is none."""

    async def save(self, id: str, owner: str, *, state: JobState, progress: bytes, until: float,
                   now: float, files: Sequence[JobFile] = ()) -> bool:
        """Write `files` (replacing files of the same names) and set the job's state, progress
        and lease end, if `owner` still holds its lease; False (the job's record untouched)
        when it does not, or the job was deleted."""

    async def file(self, id: str, name: str) -> bytes | None:
        """A file of the job, None if there is no such file."""

    async def delete(self, id: str) -> bool:
        """Remove the job, then every file of it (a save racing it finds no job and takes its
        files back); False if there was no job."""

    async def prune(self) -> int:
        """Remove the files whose job is gone (a process killed mid-`delete`); how many."""


def seal_spec(codec: BodyCodec, id: str, part: str, data: bytes) -> bytes:
    """The stored form of a job's `part` ("spec" or "progress")."""
    return codec.seal(_JOB, f"{id}/{part}", 0, data, ())


def open_spec(codec: BodyCodec, id: str, part: str, stored: bytes) -> bytes:
    return codec.open(_JOB, f"{id}/{part}", 0, stored)


def seal_file(codec: BodyCodec, id: str, name: str, data: bytes) -> bytes:
    """The stored form of a job's file: bound to the job and the name (moved, it fails to open)."""
    return codec.seal(_FILE, f"{id}/{name}", 0, data, ())


def open_file(codec: BodyCodec, id: str, name: str, stored: bytes) -> bytes:
    return codec.open(_FILE, f"{id}/{name}", 0, stored)
