"""A40, merge patient: the record MRG-1 names is replaced by the one PID-3 names.

The survivor gains `link` `replaces` to the old record; the old record gets `active` false
and `link` `replaced-by` to the survivor, written with If-Match on the version read, so a
concurrent change fails the message instead of being overwritten. References held by other
resources (Encounters, Observations) to the old record are left as they are: the old record
stays readable and its `replaced-by` link leads to the survivor (docs/hl7v2.md)."""

from __future__ import annotations

from typing import Any

from ...services.context import Context
from .identifiers import identifier_token, stored_with
from .mapping import Instance, nearest
from .problems import Code, error


async def merge_entries(ctx: Context, instances: list[Instance]) -> list[dict[str, Any]]:
    """The Bundle entries that retire each merged record; sets the survivors' links."""
    entries = []
    for merged in [i for i in instances if "merge_into" in i.rule]:
        survivor = nearest(instances, merged.rule["merge_into"], merged.position)
        assert survivor is not None  # the survivor's segment is required by the message map
        location = merged.segment.location(1)
        old = await _one(ctx, merged.resource["identifier"][0])
        if old is None:
            raise error(Code.UNKNOWN_KEY, f"{location}: no Patient has the identifier "
                        f"{merged.resource['identifier'][0].get('value', '')}.", location)
        current = await _one(ctx, survivor.resource["identifier"][0])
        if current is not None and current["id"] == old["id"]:
            raise error(Code.UNKNOWN_KEY, f"{location} and PID-3 name the same Patient.", location)
        reference = f"Patient/{old['id']}"
        kept = [link for link in (current or {}).get("link", [])
                if link.get("other", {}).get("reference") != reference]
        survivor.resource["link"] = [*kept, {"other": {"reference": reference}, "type": "replaces"}]
        version = old["meta"]["versionId"]
        retired = {key: value for key, value in old.items() if key not in ("meta", "link")}
        others = [link for link in old.get("link", []) if link.get("type") != "replaced-by"]
        retired.update(active=False, link=[*others, {"other": {"reference": survivor.full_url},
                                                     "type": "replaced-by"}])
        if meta := {k: v for k, v in old.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}:
            retired["meta"] = meta
        entries.append({"resource": retired, "request": {
            "method": "PUT", "url": reference, "ifMatch": f'W/"{version}"'}})
    return entries


async def _one(ctx: Context, identifier: dict[str, Any]) -> dict[str, Any] | None:
    """The Patient with this identifier, if any; several: an error."""
    matches = await stored_with(ctx, "Patient", identifier)
    if len(matches) > 1:
        raise error(Code.DUPLICATE_KEY, f"Several Patients have the identifier "
                    f"{identifier_token(identifier)}.")
    return matches[0] if matches else None
