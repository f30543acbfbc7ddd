"""An organisation's whole data out, for reversibility (issue 18; docs/export.md): the
compartments of the patients it manages and its own directory resources, as FHIR ndjson files
in a directory with the Bulk Data manifest and a SHA-256 checksum of every file, made by the
same job machinery as `$export` (a job of the server, run here, audited)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from ..services import export
from ..services.context import Context
from .worker import ExportWorker

MANIFEST, CHECKSUMS = "manifest.json", "SHA256SUMS"
POLL_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Written:
    """What an organisation's export wrote: its directory, files and resources by type."""

    directory: Path
    files: int
    resources: dict[str, int]


async def export_organization(ctx: Context, organization: str, out: Path, policy: export.Policy,
                              record: export.Record) -> Written:
    """Export `organization` into `out` (created, owner-only; it must be empty or new).
    NOT_FOUND if there is no such Organization; FAULT if the job fails."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    id = await export.kick_off(ctx, "organization", [], request=f"fhir-server export organization "
                               f"{organization}", lenient=False, policy=policy,
                               organization=organization)
    worker = ExportWorker(ctx, policy, record)
    while (status := await export.status(ctx, id, policy)).manifest is None:
        if status.failure is not None:
            raise RuntimeError(f"the export failed: {status.failure}")
        if not await worker.run_one():  # the job is a server's: wait for it
            await asyncio.sleep(POLL_SECONDS)
    manifest = status.manifest
    sums: list[str] = []
    resources: dict[str, int] = {}
    for key in ("output", "error"):
        for item in manifest[key]:
            name = item["url"].rsplit("/", 1)[1]
            data = await export.file(ctx, id, name, policy)
            _write(out / name, data)
            sums.append(f"{hashlib.sha256(data).hexdigest()}  {name}")
            item["url"] = name  # relative to the manifest
            if key == "output":
                resources[item["type"]] = resources.get(item["type"], 0) + item["count"]
    body = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
    _write(out / MANIFEST, body)
    sums.append(f"{hashlib.sha256(body).hexdigest()}  {MANIFEST}")
    _write(out / CHECKSUMS, ("\n".join(sums) + "\n").encode())
    await export.cancel(ctx, id)  # the files are out: none left in the store
    return Written(out, len(sums) - 1, resources)


def _write(path: Path, data: bytes) -> None:
    """A file readable by its owner only: it holds patients' records in clear."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
