"""Loading the bundled demo data set (fictitious French oncology patients and trials)."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from .. import clock
from ..model import jsonbody
from ..model.platform_codes import SITE_RECRUITMENT
from ..store.base import HistoryQuery
from . import crud
from .context import Context, Payload


async def load_demo_data(context: Context) -> int:
    """Store the demo resources with their ids if the store is empty; return how many."""
    existing = await context.store.history(HistoryQuery(count=1))
    if existing.versions:
        return 0
    body = files("fhir_server.demo").joinpath("demo-data.json").read_bytes()
    collection, exact = jsonbody.parse(body)
    today = clock.today()
    for checked_entry, exact_entry in zip(collection["entry"], exact["entry"], strict=True):
        resource = checked_entry["resource"]
        for view in (resource, exact_entry["resource"]):
            _confirm_sites(view, today)
        payload = Payload(resource, exact_entry["resource"])
        await crud.update(context, resource["resourceType"], resource["id"], payload)
    return len(collection["entry"])


def _confirm_sites(resource: dict[str, Any], today: str) -> None:
    """Date the demo trials' site statuses (each a `valueDate` in demo-data.json) `today`: a
    status confirmed more than 90 days ago counts as unknown (docs/catalogue.md, "Site
    status"), and the demo's trials would be left out of `$match` a few months on."""
    if resource["resourceType"] != "ResearchStudy":
        return
    for site in resource.get("site", ()):
        for mark in site.get("extension", ()):
            for part in mark["extension"] if mark["url"] == SITE_RECRUITMENT else ():
                if part["url"] == "confirmed":
                    part["valueDate"] = today
