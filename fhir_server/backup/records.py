"""What a backup archive holds, record by record (JSON arrays, backup/archive.py):

    ["v", type, id, version, lastUpdated, method, body]  a clinical version, body as stored
    ["a", type, id, version, lastUpdated, method, body]  an AuditEvent version, the same
    ["l", seq, event ids, digest, event digests]          a link of the audit hash chain
    ["c", seq, digest, at, events, mac]                    a checkpoint of the chain (audit/prune.py)
    ["p", event id, mac]                                   an AuditEvent noted as pruned
    ["end", {"versions": n, "audit": n, "links": n, "checkpoints": n, "pruned": n}]
                                                           the last record: the counts (archives
                                                           taken before pruning existed: no
                                                           checkpoints, no pruned)

Bodies are base64 (null for a deletion), sealed under their data keys when encryption is on:
the archive holds no data key, so an erased patient's versions stay unreadable in it.
"""

from __future__ import annotations

import base64
from typing import Any

from ..audit.chain import Link
from ..store.base import Version

CLINICAL, AUDIT, LINK, CHECKPOINT, PRUNED, END = "v", "a", "l", "c", "p", "end"


def version_record(kind: str, version: Version) -> list[Any]:
    body = base64.b64encode(version.body).decode() if version.body is not None else None
    return [kind, version.resource_type, version.id, version.version, version.last_updated,
            version.method, body]


def version_of(record: list[Any]) -> Version:
    _, resource_type, id, number, last_updated, method, body = record
    return Version(resource_type, id, number, last_updated, method,
                   base64.b64decode(body) if body is not None else None)


def link_record(link: Link) -> list[Any]:
    digests = " ".join(link.event_digests) if link.event_digests is not None else None
    return [LINK, link.seq, " ".join(link.event_ids), link.digest, digests]


def link_of(record: list[Any]) -> Link:
    _, seq, ids, digest, digests = record
    return Link(seq, tuple(ids.split(" ")), digest,
                tuple(digests.split(" ")) if digests is not None else None)
