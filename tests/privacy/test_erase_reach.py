"""$erase reaches what lies outside the patient's compartment: the frozen copy of their record a
referral carries (a Bundle, trials/snapshot.py) and the earlier versions of a resource that
moved to another patient. After the erasure nothing of the patient can be read: not by the
API, not by opening every body left in the store, the audit store and an archive taken
before the erasure and restored after it, with the live keys. On each store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_server.auth.users import Users
from fhir_server.crypto import UnreadableBody, create_key_ring
from fhir_server.store.base import Store
from fhir_server.store.bodies import opened
from tests.builders import observation, patient
from tests.http.helpers import send
from tests.privacy.conftest import Server
from tests.privacy.test_backup import _restore_into, _take
from tests.trials.conftest import ADMIN, Platform, build, served

MARKER = "Qzwvkerfrozen"
FORMS = (MARKER, MARKER.lower(), MARKER.upper())


@pytest.fixture(params=["sqlite", "mongodb-double"])
def world(request: pytest.FixtureRequest, tmp_path: Path, signing_keys: bytes,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Platform, Server]]:
    """The referral platform on a key ring (so an erasure ledger) of its own; the patient
    "shared" carries the marker, has been referred, and had an Observation that moved to
    the patient "stranger"."""
    ring = tmp_path / "keys" / "keyring.json"
    create_key_ring(ring)
    monkeypatch.setenv("FHIR_SERVER_KEY_RING", str(ring))
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(data))
    with served(request.param, data, signing_keys) as client:
        build(client)
        Users(client.app.state.oauth.registry).add("admin", "a long enough password", ADMIN,  # type: ignore[attr-defined]
                                                    admin=True)
        for body in ({**patient(family=MARKER, given="Shared"), "id": "shared"},
                     {**observation("Patient/shared"), "id": "moving", "note": [{"text": MARKER}]},
                     {**observation("Patient/stranger"), "id": "moving"}):
            response = send(client, "PUT", f"/fhir/{body['resourceType']}/{body['id']}", body)
            assert response.status_code in (200, 201), response.text
        yield Platform(client), Server(client, client.app.state.settings)  # type: ignore[attr-defined]


async def _readable(store: Store) -> list[bytes]:
    """Every body left in `store` that opens with the live keys (shredded ones cannot)."""
    codec: Any = getattr(store, "codec")
    found = []
    async for versions in store.dump():
        for version in versions:
            try:
                body = opened(codec, version).body
            except UnreadableBody as error:
                assert error.destroyed, error
                continue
            if body is not None:
                found.append(body)
    return found


def _leaks(bodies: list[bytes]) -> list[bytes]:
    return [b for b in bodies if any(form.encode() in b for form in FORMS)]


def test_erasure_reaches_frozen_copies_and_moved_versions(world: tuple[Platform, Server], tmp_path: Path) -> None:
    platform, server = world
    client = platform.client
    referred = platform.refer("shared")
    assert referred.status_code in (200, 201), referred.text
    bundle = referred.json()["payload"][0]["contentReference"]["reference"]
    frozen = client.get(f"/fhir/{bundle}", headers=platform.headers("investigator"))
    assert frozen.status_code == 200 and MARKER in frozen.text  # the copy holds the record
    store: Any = client.app.state.context.store  # type: ignore[attr-defined]
    assert _leaks(client.portal.call(_readable, store.main))  # type: ignore[union-attr]
    # Not preselected: the study holds no data of theirs (no legal hold), so $erase erases.
    assert platform.answer(referred.json()["id"], "not-preselected", reason="HER2 negative").status_code in (200, 201)
    archive = _take(server, tmp_path / "backups")

    erased = send(client, "POST", "/fhir/Patient/shared/$erase", {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "GDPR request 7"}]}, **platform.headers("admin"))
    assert erased.status_code == 200, erased.text
    counts = {tuple(part.get("valueCode", part.get("valueInteger")) for part in p["part"])
              for p in erased.json()["parameter"] if p["name"] == "erased"}
    assert ("Bundle", 1, 1) in counts, erased.text  # the frozen record
    assert ("Observation", 1, 2) in counts  # shared-obs, and the first version of moving

    ehr = platform.headers("ehr")
    assert client.get(f"/fhir/{bundle}", headers=platform.headers("investigator")).status_code == 404
    assert client.get(f"/fhir/{bundle}/_history/1", headers=platform.headers("investigator")).status_code == 404
    assert client.get("/fhir/Observation/moving/_history/1", headers=ehr).status_code == 404
    moved = client.get("/fhir/Observation/moving", headers=ehr)
    assert moved.status_code == 200 and MARKER not in moved.text
    history = client.get("/fhir/Observation/moving/_history", headers=ehr).json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2"]
    assert MARKER not in client.get("/fhir/Bundle?_count=100", headers=ehr).text

    # Every body left, opened with the live keys: none holds the patient.
    assert _leaks(client.portal.call(_readable, store.main)) == []  # type: ignore[union-attr]
    assert _leaks(client.portal.call(_readable, store.audit)) == []  # type: ignore[union-attr]
    # The archive taken before the erasure, restored after it: nothing of the patient opens.
    where = tmp_path / "restored"
    where.mkdir()

    async def restored() -> list[bytes]:
        _, main, audit, chain = await _restore_into(server, archive, where)
        try:
            return await _readable(main) + await _readable(audit)
        finally:
            chain.close()
            await main.close()
            await audit.close()

    assert _leaks(client.portal.call(restored)) == []  # type: ignore[union-attr]
    for name in ("fhir.db", "fhir.db-wal", "audit.db", "audit.db-wal"):
        for folder in (Path(server.settings.data_dir), where):
            if (folder / name).exists():
                raw = (folder / name).read_bytes()
                assert not any(form.encode() in raw for form in FORMS), folder / name
