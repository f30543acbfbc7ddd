"""What the platform adds to a catalogue trial, kept when its source rewrites it
(docs/catalogue.md, "Local additions").

A source (ECLAIRE, a load) knows nothing of two things we add to a stored ResearchStudy: the
eligibility Groups curated here (`enrollment` references to Groups claiming our
`eligibility-criteria` profile) and the per-site recruiting statuses (the `site-recruitment-status`
extension on a `site` reference). A new version from the source keeps them: the references
are appended after the source's own, and a site the source still lists gets back its status
unless the source sends one. A site the source dropped loses its status with it.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..services.context import Context
from .catalogue_sites import SITE_RECRUITMENT
from .eligibility_format import is_eligibility_group


async def kept(ctx: Context, incoming: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """`incoming` (a ResearchStudy from its source) with the local additions of `current`
    (the stored version) it lacks."""
    merged = dict(incoming)
    ours = await _curated(ctx, incoming, current)
    if ours:
        merged["enrollment"] = [*(incoming.get("enrollment") or ()), *ours]
    statuses = {site["reference"]: marks for site in current.get("site") or ()
                if isinstance(site, dict) and (marks := _marks(site))}
    if statuses and incoming.get("site"):  # absent stays absent: R4 has no empty arrays
        merged["site"] = [_with_marks(site, statuses.get(site.get("reference"), []))
                          if isinstance(site, dict) else site for site in incoming.get("site") or ()]
    return merged


async def _curated(ctx: Context, incoming: dict[str, Any], current: dict[str, Any]) -> list[dict[str, Any]]:
    """The `enrollment` references of `current` to our eligibility Groups that `incoming` lacks."""
    sent = {e.get("reference") for e in incoming.get("enrollment") or () if isinstance(e, dict)}
    found = []
    for entry in current.get("enrollment") or ():
        reference = entry.get("reference") if isinstance(entry, dict) else None
        if not isinstance(reference, str) or reference in sent or not reference.startswith("Group/"):
            continue
        group = await ctx.store.read("Group", reference.removeprefix("Group/"))
        if group is not None and group.body is not None and is_eligibility_group(orjson.loads(group.body)):
            found.append(entry)
    return found


def _marks(site: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in site.get("extension") or () if isinstance(e, dict) and e.get("url") == SITE_RECRUITMENT]


def _with_marks(site: dict[str, Any], marks: list[dict[str, Any]]) -> dict[str, Any]:
    """`site` with `marks` (the stored status) unless it carries a status of its own."""
    if not marks or _marks(site):
        return site
    return {**site, "extension": [*(site.get("extension") or ()), *marks]}
