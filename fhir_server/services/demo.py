"""Loading the bundled demo data set (fictitious French oncology patients and trials)."""

from __future__ import annotations

from importlib.resources import files

from ..model import jsonbody
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
    for checked_entry, exact_entry in zip(collection["entry"], exact["entry"], strict=True):
        resource = checked_entry["resource"]
        payload = Payload(resource, exact_entry["resource"])
        await crud.update(context, resource["resourceType"], resource["id"], payload)
    return len(collection["entry"])
