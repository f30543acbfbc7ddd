"""The include walk both stores share (store/includes.py), on its own."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from fhir_server.crypto import UnreadableBody
from fhir_server.search import Include, Query
from fhir_server.store import includes
from fhir_server.store.base import Version


def _version(type_: str, id: str) -> Version:
    return Version(type_, id, 1, "2026-01-01T00:00:00Z", "PUT", b"{}")


def _open(version: Version) -> Version:
    if version.id == "shredded":  # its data key destroyed by an erasure
        raise UnreadableBody(version.resource_type, version.id, version.version, "key destroyed", destroyed=True)
    return version


def test_an_included_resource_shredded_by_an_erasure_is_left_out_not_an_error() -> None:
    admitted: list[list[str]] = []

    def admit(versions: Sequence[Version]) -> list[Version]:
        admitted.append([v.id for v in versions])
        return list(versions)

    query = Query("Communication", include=(Include("Communication", "subject"),), admit_included=admit)
    found = includes.run(query, [("Communication", "c")],
                         lambda *_: [_version("Patient", "shredded"), _version("Patient", "kept")], _open)
    assert [v.id for v in found] == ["kept"]
    assert admitted == [["kept"]]


def test_a_body_that_fails_to_decrypt_otherwise_is_still_an_error() -> None:
    def tampered(version: Version) -> Version:
        raise UnreadableBody(version.resource_type, version.id, version.version, "tampered")

    query = Query("Communication", include=(Include("Communication", "subject"),), admit_included=list)
    with pytest.raises(UnreadableBody):
        includes.run(query, [("Communication", "c")], lambda *_: [_version("Patient", "p")], tampered)
