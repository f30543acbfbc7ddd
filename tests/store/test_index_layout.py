"""A store records the layout of its search index and is refused under another until it is
re-indexed (store/index_layout.py): on SQLite and the MongoDB double alike."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.crypto import BlindDigest, BodyCodec, UnreadableBody
from fhir_server.search import BlindIndex, default_protected, default_registry, extract
from fhir_server.store import index_layout
from fhir_server.store.base import Delete, Outbox, Store
from fhir_server.store.index_layout import KEY, REBUILDING, StaleIndex
from fhir_server.store.mongo import MongoStore
from fhir_server.store.sqlite import SqliteStore
from tests.store import search_model as m
from tests.store.conftest import DOUBLE, encrypting, migrated_double
from tests.store.mongo_double import DoubleClient

pytestmark = pytest.mark.anyio
KINDS = ["sqlite", DOUBLE]
REGISTRY = default_registry()


def keyed(secret: str) -> BlindDigest:
    return BlindDigest(lambda param: hashlib.sha256(f"{secret}/{param}".encode()).digest())


def blind(*, protected: tuple[str, ...] | None = None, cap: int = 12, secret: str = "k1") -> BlindIndex:
    return BlindIndex(default_protected(REGISTRY) if protected is None else protected,
                      keyed(secret), REGISTRY, prefix_cap=cap)


Opener = Callable[..., Store]


@pytest.fixture(params=KINDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Makes a store of one kind, always on the same data (file or double), under the blind
    index given."""
    codec: BodyCodec = encrypting(tmp_path)
    if request.param == "sqlite":
        return lambda index=None, check=True: SqliteStore(
            tmp_path / "fhir.db", codec=codec, blind=index, index_check=check)
    client = DoubleClient()
    migrated_double(client)  # its collections and indexes, once
    return lambda index=None, check=True: MongoStore(client, codec=codec, blind=index,
                                                     index_check=check)


PATIENTS = [
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "Dupont", "given": ["Hélène"]}],
     "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "2790512345678"}],
     "gender": "female"},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Durand", "given": ["Marc"]}],
     "gender": "male"},
    {"resourceType": "Patient", "id": "p3", "name": [{"family": "Martin"}], "gender": "male"},
]
SEARCHES = [[("family", "du")], [("family", "dupont")], [("name", "hel")], [("given:exact", "Hélène")],
            [("identifier", "urn:oid:1.2.250.1.213.1.4.8|2790512345678")], [("family:missing", "true")],
            [("gender", "male")]]
EXPECTED = [["p1", "p2"], ["p1"], ["p1"], ["p1"], ["p1"], [], ["p2", "p3"]]


async def found(store: Store) -> list[list[str]]:
    return [sorted(await m.ids(store, m.query("Patient", *params))) for params in SEARCHES]


async def shut(store: Store) -> None:
    """Closed, but for the double: its client is the data, shared by every store made on it."""
    if isinstance(store, SqliteStore):
        await store.close()


async def opened(store: Store) -> Store:
    await store.open()
    return store


async def written(opener: Opener, index: BlindIndex | None) -> None:
    """The patients written by a store under `index`."""
    store = await opened(opener(index))
    await store.commit([m.write(p) for p in PATIENTS])
    await shut(store)


async def stored_layout(opener: Opener) -> Any:
    store = await opened(opener(check=False))
    try:
        body = await index_layout.recorded(store)
        return None if body is None else orjson.loads(body)
    finally:
        await shut(store)


async def test_an_empty_store_records_its_layout_and_opens_under_it_again(opener: Opener) -> None:
    index = blind()
    await written(opener, index)
    assert await stored_layout(opener) == index.layout()
    assert set(index.layout()) == {"rows", "protected", "prefix_cap", "keys"}
    store = await opened(opener(blind()))  # the same settings, made again
    assert await found(store) == EXPECTED
    await shut(store)


@pytest.mark.parametrize(("other", "why"), [
    (lambda: None, "settings protect nothing"),
    (lambda: blind(cap=16), "prefix cap of 12, the settings give 16"),
    (lambda: blind(secret="k2"), "other index keys"),
    (lambda: blind(protected=("Patient.family", "Patient.given")), "another list of protected"),
])
async def test_a_store_is_refused_under_another_layout_and_left_as_it_was(
        opener: Opener, other: Callable[[], BlindIndex | None], why: str) -> None:
    await written(opener, blind())
    with pytest.raises(StaleIndex) as refused:
        await opened(opener(other()))
    message = refused.value.issues[0].diagnostics
    assert why in message and "fhir-server reindex" in message
    assert "k1" not in message and "Dupont" not in message
    assert await stored_layout(opener) == blind().layout()
    store = await opened(opener(blind()))
    assert await found(store) == EXPECTED  # nothing was changed by the refusal
    await shut(store)


async def test_a_plaintext_store_is_refused_under_blind_indexes(opener: Opener) -> None:
    await written(opener, None)
    assert await stored_layout(opener) == {"protected": []}
    with pytest.raises(StaleIndex, match="without blind indexes"):
        await opened(opener(blind()))


async def test_a_store_written_before_layouts_were_recorded_is_refused(opener: Opener) -> None:
    await written(opener, blind())
    store = await opened(opener(check=False))
    await store.commit([Outbox(remove=(KEY,))])  # as a store of before
    await shut(store)
    with pytest.raises(StaleIndex, match="before stores recorded"):
        await opened(opener(blind()))


async def test_reindex_rebuilds_every_current_resource_under_the_new_layout(opener: Opener) -> None:
    await written(opener, None)
    deleted = await opened(opener(check=False))
    await deleted.commit([m.write({"resourceType": "Patient", "id": "gone", "name": [{"family": "Dubois"}]})])
    await deleted.commit([Delete("Patient", "gone", None)])
    await shut(deleted)
    index = blind()
    store = await opened(opener(index, check=False))
    assert (await found(store))[:5] == [[], [], [], [], []]  # plaintext rows, blind searches
    count = await index_layout.reindex(store, store.codec, REGISTRY, index.layout())  # type: ignore[arg-type, attr-defined]
    await shut(store)
    assert count == len(PATIENTS)
    store = await opened(opener(blind()))
    assert await found(store) == EXPECTED
    assert await m.ids(store, m.query("Patient", ("family", "dubois"))) == []
    await shut(store)


async def test_a_reindex_cut_short_is_refused_until_run_again(opener: Opener) -> None:
    await written(opener, None)
    store = await opened(opener(blind(), check=False))
    await store.commit([Outbox(put=((KEY, REBUILDING),))])  # as a reindex does first
    await shut(store)
    with pytest.raises(StaleIndex, match="did not finish"):
        await opened(opener(blind()))
    store = await opened(opener(blind(), check=False))
    await index_layout.reindex(store, store.codec, REGISTRY, blind().layout())  # type: ignore[arg-type, attr-defined]
    await shut(store)
    store = await opened(opener(blind()))
    assert await found(store) == EXPECTED
    await shut(store)


async def test_a_reindex_leaves_a_version_written_since_it_was_read_as_written(opener: Opener) -> None:
    await written(opener, blind())
    store = await opened(opener(blind()))
    [page] = [versions async for versions in store.current(10)]  # type: ignore[attr-defined]
    stale = next(v for v in page if v.id == "p1")
    assert stale.body is not None
    entries = extract(orjson.loads(store.codec.open("Patient", "p1", stale.version, stale.body)))  # type: ignore[attr-defined]
    await store.commit([m.write({**PATIENTS[0], "name": [{"family": "Moreau"}]})])
    assert await store.reindex([(stale, entries)]) == 0  # type: ignore[attr-defined]
    assert await m.ids(store, m.query("Patient", ("family", "moreau"))) == ["p1"]
    assert await m.ids(store, m.query("Patient", ("family", "dupont"))) == []
    await shut(store)


async def test_stores_opened_together_while_empty_record_one_layout(tmp_path: Path) -> None:
    codec = encrypting(tmp_path)
    stores = [SqliteStore(tmp_path / "fhir.db", codec=codec, blind=blind(), index_check=True)
              for _ in range(3)]
    await asyncio.gather(*(store.open() for store in stores))
    for store in stores:
        await store.close()
    layout = await stored_layout(lambda index=None, check=True: SqliteStore(
        tmp_path / "fhir.db", codec=codec, blind=index, index_check=check))
    assert layout == blind().layout()


async def _unreachable_at_start(tmp_path: Path) -> MongoStore:
    """A store under blind indexes over a plaintext index, its cluster down as it opened."""
    codec = encrypting(tmp_path)
    client = DoubleClient()
    first = MongoStore(client, codec=codec, index_check=True)
    await first.migrate()
    await first.open()
    await first.commit([m.write(p) for p in PATIENTS])  # a plaintext index
    client.down = True
    store = MongoStore(client, codec=codec, blind=blind(), index_check=True)
    await store.open()
    client.down = False
    return store


async def test_mongodb_unreachable_at_start_checks_at_its_first_answer_and_serves_nothing_stale(
        tmp_path: Path) -> None:
    store = await _unreachable_at_start(tmp_path)  # starts anyway: /readyz says why
    for _ in range(2):  # and again: it is refused until re-indexed, not once
        with pytest.raises(StaleIndex, match="without blind indexes") as refused:
            await store.read("Patient", "p1")
        assert refused.value.kind.value == "busy" and store.deployment is None


async def test_mongodb_serves_no_request_while_its_first_layout_check_is_under_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests arriving together at a store whose cluster did not answer at start: none is
    served before the layout check has passed, not only the one that runs it."""
    store = await _unreachable_at_start(tmp_path)
    ensure = index_layout.ensure

    async def answering_slowly(*args: Any) -> None:  # as a real cluster's round trips do
        await asyncio.sleep(0.01)
        await ensure(*args)
    monkeypatch.setattr(index_layout, "ensure", answering_slowly)
    answers = await asyncio.gather(store.read("Patient", "p1"), found(store), return_exceptions=True)
    assert all(isinstance(answer, StaleIndex) for answer in answers), answers


@pytest.mark.parametrize("codec", ["plain", "other data keys"])
async def test_a_layout_record_the_settings_cannot_open_is_a_stale_index(
        tmp_path: Path, codec: str) -> None:
    """Encryption turned off over an encrypted store, or another key ring: refused with the
    reason, not a decoding error out of the check."""
    store = SqliteStore(tmp_path / "fhir.db", codec=encrypting(tmp_path), blind=blind(),
                        index_check=True)
    await store.open()
    await store.commit([m.write(p) for p in PATIENTS])
    await store.close()
    other = None if codec == "plain" else encrypting(tmp_path / "elsewhere")
    with pytest.raises(StaleIndex, match="cannot be opened") as refused:
        await opened(SqliteStore(tmp_path / "fhir.db", codec=other,
                                 blind=None if other is None else blind(), index_check=True))
    assert "Dupont" not in str(refused.value)


class _Shredding:
    """A codec whose data key of one resource was destroyed (its patient's erasure under way)."""

    def __init__(self, codec: BodyCodec, shredded: str) -> None:
        self.codec, self.shredded = codec, shredded

    def __getattr__(self, name: str) -> Any:
        return getattr(self.codec, name)

    def open(self, resource_type: str, id: str, version: int, stored: bytes) -> bytes:
        if id == self.shredded:
            raise UnreadableBody(resource_type, id, version, "key destroyed", destroyed=True)
        return self.codec.open(resource_type, id, version, stored)


async def test_a_reindex_leaves_no_row_of_a_shredded_resource(opener: Opener) -> None:
    """Its body cannot be indexed again, and its rows of the old layout (here plaintext names)
    must not stay behind."""
    await written(opener, None)
    store = await opened(opener(blind(), check=False))
    shredding = _Shredding(store.codec, "p2")  # type: ignore[attr-defined]
    count = await index_layout.reindex(store, shredding, REGISTRY, blind().layout())  # type: ignore[arg-type]
    assert count == len(PATIENTS) - 1
    assert await m.ids(store, m.query("Patient", ("gender", "male"))) == ["p3"]
    await shut(store)
