"""Incremental pull of the trial catalogue from an ECLAIRE-compatible FHIR base
(`fhir-server trials sync BASE_URL`, docs/catalogue.md).

Each run asks the base for the studies changed since the last run, with the IG's own query
(`_lastUpdated=ge…` and the `_include`s of site, sponsor and enrollment), follows the
searchset's `next` links and stores what came through `catalogue.store_all`, so an unchanged
trial makes no new version. The last instant seen (the source's clock: the greatest
`meta.lastUpdated` received) and the trials the base listed are kept in a JSON state file,
written atomically after the store committed. A full pull (the first run, or `--full`) also
finds the trials the base no longer lists: they are marked closed, never deleted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson

from ..model.errors import Kind, fail
from ..services import server_writes
from ..services.context import Context
from ..services.server_writes import ServerWrite
from .catalogue import CatalogueReport, catalogue_id, resources_of, store_all

IG_INCLUDES = ("ResearchStudy:site", "ResearchStudy:sponsor", "ResearchStudy:enrollment")
PAGE = 1000
MAX_PAGES = 10_000  # a base whose `next` links loop must not keep us forever (nor close trials)
# R4 research-study-status codes under which a study still recruits or may: a vanished study
# in one of them is closed to accrual.
OPEN_STATUSES = frozenset({"active", "approved", "in-review", "temporarily-closed-to-accrual",
                           "temporarily-closed-to-accrual-and-intervention"})


@dataclass
class SyncReport:
    """What one sync did."""

    base: str
    since: str | None
    stored: CatalogueReport = field(default_factory=CatalogueReport)
    closed: list[str] = field(default_factory=list)
    pages: int = 0

    def summary(self) -> str:
        return (f"synced {self.base} since {self.since or 'the beginning'} ({self.pages} pages), "
                f"{len(self.closed)} vanished trials marked closed: {self.stored.summary()}")


class SyncState:
    """Per base URL: the last `meta.lastUpdated` seen and the ids of the trials it lists."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}

    def since(self, base: str) -> str | None:
        return self.data.get(base, {}).get("since")

    def trials(self, base: str) -> set[str]:
        return set(self.data.get(base, {}).get("trials", ()))

    def save(self, base: str, since: str | None, trials: set[str]) -> None:
        """Record `base`'s state durably (write, fsync, rename)."""
        self.data[base] = {"since": since, "trials": sorted(trials)}
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("wb") as fh:
            fh.write(orjson.dumps(self.data, option=orjson.OPT_INDENT_2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, self.path)


async def fetch(client: httpx.AsyncClient, base: str, since: str | None) -> tuple[list[dict[str, Any]], int]:
    """Every resource the base returns for the IG's flux 1 query; the pages read."""
    params: list[tuple[str, str]] = [("_include", i) for i in IG_INCLUDES] + [("_count", str(PAGE))]
    if since is not None:
        params.insert(0, ("_lastUpdated", f"ge{since}"))
    url: str | None = f"{base}/ResearchStudy"
    found: list[dict[str, Any]] = []
    pages = 0
    total = None  # how many trials the base says match (its first page's `total`)
    while url is not None and pages < MAX_PAGES:
        response = await client.get(url, params=params if pages == 0 else None,
                                    headers={"Accept": "application/fhir+json"})
        if response.status_code != 200:
            raise fail(Kind.UNPROCESSABLE, "exception",
                       f"{base} answered {response.status_code} to its search of ResearchStudy")
        bundle = _bundle(base, response.content)
        found.extend(resources_of(bundle))
        if pages == 0 and isinstance(bundle.get("total"), int):
            total = bundle["total"]
        pages += 1
        url = next((link.get("url") for link in bundle.get("link") or ()
                    if link.get("relation") == "next"), None)
    if url is not None:  # a partial list: a full pull would close every trial it missed
        raise fail(Kind.UNPROCESSABLE, "too-costly", f"{base} still had a next page after "
                   f"{MAX_PAGES} pages; nothing was stored")
    received = len({r.get("id") for r in found if r.get("resourceType") == "ResearchStudy"})
    if total is not None and received < total:  # paging stopped early: as partial
        raise fail(Kind.UNPROCESSABLE, "incomplete", f"{base} gave {received} of the {total} "
                   "trials it counts; nothing was stored")
    return found, pages


def _bundle(base: str, body: bytes) -> dict[str, Any]:
    """A page of the base's searchset; UNPROCESSABLE naming the base when it is not a Bundle
    (a maintenance page, an OperationOutcome answered with 200)."""
    try:
        page = orjson.loads(body)
    except orjson.JSONDecodeError:
        page = None
    if not isinstance(page, dict) or page.get("resourceType") != "Bundle":
        raise fail(Kind.UNPROCESSABLE, "exception",
                   f"{base} answered its search of ResearchStudy with something else than a Bundle")
    return page


async def sync(ctx: Context, client: httpx.AsyncClient, base: str, state: SyncState,
               *, full: bool = False) -> SyncReport:
    """Pull what changed at `base` since the last run (everything when `full` or first)."""
    base = base.rstrip("/")
    since = None if full else state.since(base)
    report = SyncReport(base, since)
    resources, report.pages = await fetch(client, base, since)
    report.stored = await store_all(ctx, resources)
    studies = [r for r in resources if r.get("resourceType") == "ResearchStudy"]
    seen = {i for r in studies if (i := catalogue_id(r)) is not None}
    stamps = [u for r in studies if isinstance(u := (r.get("meta") or {}).get("lastUpdated"), str)]
    listed = state.trials(base) | seen
    if since is None:
        for vanished in sorted(state.trials(base) - seen):
            if await _close(ctx, vanished):
                report.closed.append(vanished)
        listed = seen
    # A refused trial is asked for again next time: the instant moves only past a clean pull.
    state.save(base, since if report.stored.failures else max(stamps, default=since), listed)
    return report


async def _close(ctx: Context, id: str) -> bool:
    """Mark a study the source no longer lists as closed to accrual; whether it changed."""
    current = await ctx.store.read("ResearchStudy", id)
    if current is None or current.body is None:
        return False
    study = orjson.loads(current.body)
    if study.get("status") not in OPEN_STATUSES:
        return False
    study["status"] = "closed-to-accrual"
    await server_writes.commit(ctx, [ServerWrite(study, new=False, if_match=current.version)])
    return True
