"""What every store stamps on a version: the stored JSON body with its meta."""

from __future__ import annotations

from typing import Any

import orjson

def stamp(resource: dict[str, Any], id: str, version: int, last_updated: str) -> bytes:
    """The stored JSON: the client's resource with the id and meta the server owns.

    The client's property order is kept for everything but the leading id and meta.
    """
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated
    # The leading keys keep their place when `resource` repeats them; their values are set after.
    stamped = {"resourceType": resource["resourceType"], "id": id, "meta": meta, **resource}
    stamped["id"] = id
    stamped["meta"] = meta
    return orjson.dumps(stamped)
