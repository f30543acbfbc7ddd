"""The bulk loader, `fhir-server load` (docs/ingestion.md): Bundles, resources and NDJSON through
the service layer; idempotence by conditional create on identifiers (FHIR R4 http.html#ccreate);
resumption from a state file; a failure summary naming file and entry.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server import cli
from fhir_server.app import open_context
from fhir_server.interop import LoadOptions, LoadReport, load, loader
from fhir_server.services.context import Context
from fhir_server.settings import Settings
from fhir_server.store.base import HistoryQuery
from tests.builders import identified_patient, observation, patient
from tests.conftest import SHARED

pytestmark = pytest.mark.anyio
SYNTHEA = SHARED / "synthea"


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[Context]:
    async with open_context(settings) as context:
        yield context


def _distinct_identifiers(resource_type: str) -> int:
    """How many different resources of a type the Synthea files describe (by first identifier)."""
    seen = set()
    for path in SYNTHEA.glob("*.json"):
        for item in orjson.loads(path.read_bytes())["entry"]:
            resource = item["resource"]
            if resource["resourceType"] == resource_type:
                first = resource["identifier"][0]
                seen.add((first["system"], first["value"]))
    return len(seen)


async def _counts(ctx: Context, *types: str) -> dict[str, int]:
    return {t: await ctx.store.count(t) for t in types}


def _write_ndjson(path: Path, lines: list[Any]) -> Path:
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else orjson.dumps(line) for line in lines))
    return path


async def test_loading_synthea_twice_duplicates_no_patient_or_organization(ctx: Context) -> None:
    first = await load(ctx, [SYNTHEA], LoadOptions(concurrency=4))
    assert first.failures == [] and first.resources == 1660
    expected = {"Patient": 12, "Organization": _distinct_identifiers("Organization"),
                "Practitioner": _distinct_identifiers("Practitioner")}
    assert await _counts(ctx, *expected) == expected
    second = await load(ctx, [SYNTHEA], LoadOptions(concurrency=4))
    assert second.failures == []
    assert await _counts(ctx, *expected) == expected
    assert second.outcomes["matched"] == 12 + 122 + 122  # every identified entry found the first copy


async def test_without_dedupe_a_second_load_duplicates(ctx: Context) -> None:
    one = sorted(SYNTHEA.glob("Alberto_*.json"))
    for _ in range(2):
        await load(ctx, one, LoadOptions(dedupe_by_identifier=False))
    assert await ctx.store.count("Patient") == 2


async def test_ndjson_lines_are_stored_once(ctx: Context, tmp_path: Path) -> None:
    source = _write_ndjson(tmp_path / "export.ndjson", [
        patient(id="p1"),
        identified_patient("184037512345690"),
        b"",
        b'{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"weight"},'
        b'"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":64.50,"unit":"kg"}}',
    ])
    for _ in range(2):
        report = await load(ctx, [source])
        assert report.failures == [] and report.resources == 3
    assert await _counts(ctx, "Patient", "Observation") == {"Patient": 2, "Observation": 1}
    stored = await ctx.store.read("Observation", "o1")
    assert stored is not None and stored.body is not None
    assert b'"value":64.50' in stored.body  # decimals kept as written


async def test_collection_bundles_and_single_resources(ctx: Context, tmp_path: Path) -> None:
    sources = tmp_path / "sources"  # beside the store's data directory, not around it
    sources.mkdir()
    subject = "urn:uuid:7c1f8a52-0000-4000-8000-000000000001"
    (sources / "collection.json").write_bytes(orjson.dumps({
        "resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": subject, "resource": patient()},
            {"fullUrl": "urn:uuid:7c1f8a52-0000-4000-8000-000000000002", "resource": observation(subject)},
        ]}))
    nested = sources / "more" / "deeper"
    nested.mkdir(parents=True)
    (nested / "patient.json").write_bytes(orjson.dumps(patient(id="single")))
    (nested / "notes.txt").write_text("not FHIR, not loaded")
    report = await load(ctx, [sources])
    assert report.failures == [] and report.files == 2 and report.resources == 3
    [stored_observation] = (await ctx.store.history(HistoryQuery("Observation"))).versions
    [stored_patient] = [v for v in (await ctx.store.history(HistoryQuery("Patient"))).versions
                        if v.id != "single"]
    assert stored_observation.body is not None
    # A collection with placeholders goes in as a transaction, so the reference is rewritten.
    subject_reference = orjson.loads(stored_observation.body)["subject"]["reference"]
    assert subject_reference == f"Patient/{stored_patient.id}"
    assert await ctx.store.read("Patient", "single") is not None


async def _wait_for_state(path: Path, files: int) -> None:
    """Until the state file records `files` complete files."""
    while True:
        if path.exists():
            state = orjson.loads(path.read_bytes())["files"].values()
            if sum(f["total"] is not None and f["done"] == [[0, f["total"]]] for f in state) >= files:
                return
        await asyncio.sleep(0.005)


async def test_an_interrupted_load_resumes_without_duplicates(ctx: Context, tmp_path: Path) -> None:
    state = tmp_path / "load-state.json"
    options = LoadOptions(concurrency=2, state_file=state)
    task = asyncio.create_task(load(ctx, [SYNTHEA], options))
    await asyncio.wait_for(_wait_for_state(state, 3), timeout=30)
    task.cancel()
    interrupted: LoadReport = await task
    assert interrupted.interrupted and 0 < interrupted.resources < 1660
    assert "re-run" in interrupted.summary()
    resumed = await load(ctx, [SYNTHEA], options)
    assert not resumed.interrupted and resumed.failures == []
    assert resumed.skipped_files >= 3
    # Observations carry no identifier: only the state file keeps them from being loaded twice.
    assert interrupted.resources + resumed.resources == 1660
    assert await _counts(ctx, "Patient", "Observation") == {"Patient": 12, "Observation": 695}
    again = await load(ctx, [SYNTHEA], options)
    assert again.resources == 0 and again.skipped_files == 14


def _failing_sources(root: Path) -> None:
    (root / "good.json").write_bytes(orjson.dumps(patient(id="good")))
    (root / "broken.json").write_bytes(b'{"resourceType": "Patient", ')
    (root / "invalid.json").write_bytes(orjson.dumps(patient(gender="unknown-gender")))
    entries = [{"resource": patient(family=f"P{i}"), "request": {"method": "POST", "url": "Patient"}}
               for i in range(4)]
    entries[2]["resource"]["gender"] = "unknown-gender"
    (root / "tx.json").write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "transaction",
                                                 "entry": entries}))
    _write_ndjson(root / "lines.ndjson", [patient(id="n1"), b"{oops", patient(id="n3", birthDate="1999-02-30"),
                                          patient(id="n4")])


async def test_failures_are_summarised_with_file_and_entry(ctx: Context, tmp_path: Path) -> None:
    sources = tmp_path / "sources"  # beside the store's data directory, not around it
    sources.mkdir()
    _failing_sources(sources)
    report = await load(ctx, [sources])
    where = {(f.path.name, f.where) for f in report.failures}
    assert where == {("broken.json", "file"), ("invalid.json", "resource"), ("tx.json", "entry 2"),
                     ("lines.ndjson", "line 2"), ("lines.ndjson", "line 3")}
    assert report.resources == 3  # good, n1, n4; the transaction stored nothing
    assert await ctx.store.count("Patient") == 3
    summary = report.summary()
    assert "5 failures" in summary and "tx.json entry 2: Entry 2:" in summary
    assert "resources/s" in summary


def test_cli_load_exit_status_and_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, sources = tmp_path / "data", tmp_path / "sources"
    sources.mkdir()
    _failing_sources(sources)
    monkeypatch.setenv("FHIR_SERVER_DATA_DIR", str(data))
    monkeypatch.setattr(cli, "configure", lambda level: None)  # keep pytest's log handlers
    state = tmp_path / "state.json"
    assert cli.main(["load", str(sources), "--state", str(state), "--concurrency", "2"]) == 1
    err = capsys.readouterr().err
    assert "loaded 3 resources from 5 files" in err and "lines.ndjson line 2" in err
    # The re-run skips the complete file and retries only what failed.
    assert cli.main(["load", str(sources), "--state", str(state)]) == 1
    err = capsys.readouterr().err
    assert "loaded 0 resources" in err and "skipped 1 files already loaded" in err
    assert (data / "fhir.db").exists()


async def test_progress_lines_off_a_terminal_count_only_finished_files(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    for n in range(12):  # two Patients per file, one Bundle each
        (sources / f"{n:02}.json").write_bytes(orjson.dumps({
            "resourceType": "Bundle", "type": "batch", "entry": [
                {"resource": patient(id=f"p{n}-{i}"), "request": {"method": "PUT",
                                                                 "url": f"Patient/p{n}-{i}"}}
                for i in range(2)]}))
    monkeypatch.setattr(loader, "LOG_EVERY", 0.0)  # a line per finished Bundle
    stream = io.StringIO()  # not a terminal: whole lines, never a redrawn one
    report = await load(ctx, [sources], LoadOptions(concurrency=2, progress=stream))
    assert report.resources == 24 and "\r" not in stream.getvalue()
    lines = stream.getvalue().splitlines()
    assert len(lines) > 12
    for line in lines:
        files, resources = map(int, re.findall(r"(\d+)/12 files  (\d+) resources", line)[0])
        assert resources >= 2 * files, line  # no file counted before its resources are stored
    assert lines[-1].startswith("12/12 files  24 resources")
