"""What every store stamps on a version: the commit time and the stored JSON body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now() -> tuple[str, int]:
    """The commit time as a FHIR instant and as microseconds since the epoch."""
    moment = datetime.now(UTC)
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), micros


def stamp(resource: dict[str, Any], id: str, version: int, last_updated: str) -> bytes:
    """The stored JSON: the client's resource with the id and meta the server owns.

    The client's property order is kept for everything but the leading id and meta.
    """
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated
    stamped = {"resourceType": resource["resourceType"], "id": id, "meta": meta}
    stamped.update((k, v) for k, v in resource.items() if k not in stamped)
    return orjson.dumps(stamped)
