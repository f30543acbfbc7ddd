"""`fhir-server serve` refuses a store whose index was written under other blind-index
settings, before any worker starts, and `fhir-server reindex` rebuilds it in place, audited
(docs/blind-indexes.md, "Stores written under another layout")."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server import cli
from fhir_server.app import blind_index, body_codec, open_store
from fhir_server.search import Query
from fhir_server.settings import Settings
from fhir_server.store import index_layout
from fhir_server.store.base import Store
from tests.builders import patient
from tests.store import search_model as m


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory named by the environment, as `serve` and `reindex` read it; every
    other setting at its default (`serve` passes flags on through the environment:
    monkeypatch puts it back after)."""
    for name in Settings.model_fields.keys() - {"key_ring"}:
        monkeypatch.setenv(f"FHIR_SERVER_{name.upper()}", "")
        monkeypatch.delenv(f"FHIR_SERVER_{name.upper()}")
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(cli, "configure", lambda level: None)  # keep pytest's log handlers
    return tmp_path / "data"


def _on_store(settings: Settings, work: Any) -> Any:
    async def run() -> Any:
        store: Store = open_store(settings.store_url, codec=body_codec(settings),
                                  blind=blind_index(settings), index_check=True)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()
    return asyncio.run(run())


def _serve(monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[object]]:
    started: list[object] = []
    monkeypatch.setattr(cli.workers, "run", lambda *args: started.append(args) or 0)
    return cli.main(["serve"]), started


def test_serve_refuses_a_store_written_under_other_protected_parameters_until_reindexed(
        env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FHIR_SERVER_PROTECTED_PARAMS", '["Patient.given"]')
    before = Settings()
    _on_store(before, lambda store: store.commit([m.write(patient(id="p1", family="Lefèvre"))]))
    monkeypatch.delenv("FHIR_SERVER_PROTECTED_PARAMS")  # back to the default list

    code, started = _serve(monkeypatch)
    assert code == 2 and not started
    error = capsys.readouterr().err
    assert "another list of protected parameters" in error and "fhir-server reindex" in error
    assert "Lef" not in error

    assert cli.main(["reindex"]) == 0
    assert "1 resources re-indexed" in capsys.readouterr().out
    code, started = _serve(monkeypatch)
    assert code == 0 and len(started) == 1

    async def search(store: Store) -> list[str]:
        return await m.ids(store, m.query("Patient", ("family", "lefe")))
    assert _on_store(Settings(), search) == ["p1"]

    async def events(store: Store) -> list[dict[str, Any]]:
        page = await store.search(Query("AuditEvent", count=100))
        return [orjson.loads(v.body) for v in page.matches if v.body]
    settings = Settings()

    async def audit() -> tuple[list[dict[str, Any]], bytes | None]:
        store = open_store(settings.audit_store_url, codec=body_codec(settings))
        await store.open()
        try:
            return await events(store), await index_layout.recorded(store)
        finally:
            await store.close()
    found, layout = asyncio.run(audit())
    assert layout is None  # the audit store has no blind index: never checked, nothing recorded
    [event] = [e for e in found if e["entity"][0]["name"] == "search index"]
    assert event["action"] == "U" and event["outcome"] == "0"
    assert {d["type"]: d["valueString"] for d in event["entity"][0]["detail"]} == {"resources": "1"}


def test_a_store_refused_for_its_index_is_still_backed_up(
        env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A backup copies bodies, never index rows: the way out through a restore stays open."""
    monkeypatch.setenv("FHIR_SERVER_PROTECTED_PARAMS", "[]")
    _on_store(Settings(), lambda store: store.commit([m.write(patient(id="p1"))]))
    monkeypatch.delenv("FHIR_SERVER_PROTECTED_PARAMS")
    assert _serve(monkeypatch)[0] == 2
    assert "without blind indexes" in capsys.readouterr().err
    assert cli.main(["backup", "--dir", str(env.parent / "backups")]) == 0
    assert "1 versions" in capsys.readouterr().out


def test_encryption_turned_off_over_an_encrypted_store_is_refused_with_the_way_back(
        env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    _on_store(Settings(), lambda store: store.commit([m.write(patient(id="p1"))]))
    monkeypatch.setenv("FHIR_SERVER_ENCRYPTION", "false")
    code, started = _serve(monkeypatch)
    assert code == 2 and not started
    error = capsys.readouterr().err
    assert "cannot be opened with the settings' encryption" in error and "written under" in error
    source = tmp_path / "p2.json"
    source.write_bytes(orjson.dumps(patient(id="p2")))
    assert cli.main(["load", str(source)]) == 2  # every command: said, no traceback
    error = capsys.readouterr().err
    assert error.startswith("fhir-server load: The store's search index") and "Traceback" not in error


def test_migrate_before_serve_records_no_layout_and_opens_a_store_whatever_its_layout(
        env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`migrate` opens the stores without the settings' codec and blind index: it must not
    record their layout (a plaintext one, then refused by `serve`), nor read it."""
    assert cli.main(["migrate"]) == 0
    code, started = _serve(monkeypatch)
    assert code == 0 and len(started) == 1, capsys.readouterr().err
    _on_store(Settings(), lambda store: store.commit([m.write(patient(id="p1"))]))
    assert cli.main(["migrate"]) == 0  # again, over a store holding data and its layout
    assert _serve(monkeypatch)[0] == 0


def test_reindex_refuses_settings_it_cannot_index_under_before_touching_the_store(
        env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _on_store(Settings(), lambda store: store.commit([m.write(patient(id="p1"))]))
    monkeypatch.setenv("FHIR_SERVER_PROTECTED_PARAMS", '["Patient.birthdate"]')  # not blindable
    assert cli.main(["reindex"]) == 2
    assert "nothing was rebuilt" in capsys.readouterr().err
    monkeypatch.delenv("FHIR_SERVER_PROTECTED_PARAMS")
    assert _serve(monkeypatch)[0] == 0  # its layout as it was, not marked rebuilding
