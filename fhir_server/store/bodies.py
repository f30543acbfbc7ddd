"""A version's body as both stores keep it: sealed by the body codec when written (inside the
unit of work, meta stamped, so the version it is bound to is known) and opened when read.
The codec (crypto/codec.py) decides how; the stores only call these."""

from __future__ import annotations

from dataclasses import replace

from ..crypto import BodyCodec
from ..search import Registry, patients_of
from .base import HistoryPage, SearchPage, Version, Write


def sealed(codec: BodyCodec, registry: Registry, op: Write, version: int, body: bytes) -> bytes:
    """The stored form of `body`, version `version` of what `op` writes."""
    patients = patients_of(registry, op.resource_type, op.entries, op.id, links=False)
    return codec.seal(op.resource_type, op.id, version, body, patients)


def opened(codec: BodyCodec, version: Version) -> Version:
    """`version` with its stored body opened (a deletion has none)."""
    if version.body is None:
        return version
    body = codec.open(version.resource_type, version.id, version.version, version.body)
    return replace(version, body=body)


def opened_page(codec: BodyCodec, page: SearchPage) -> SearchPage:
    return replace(page, matches=tuple(opened(codec, v) for v in page.matches),
                   included=tuple(opened(codec, v) for v in page.included))


def opened_history(codec: BodyCodec, page: HistoryPage) -> HistoryPage:
    return replace(page, versions=tuple(opened(codec, v) for v in page.versions))
