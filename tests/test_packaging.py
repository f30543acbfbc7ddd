"""What gets installed: the wheel the Docker image builds, and the dependencies it declares.

Docker cannot run here, so the image's build stage is replayed: the files its COPY lines take
from the build context (less .dockerignore), copied as Docker copies them (symlinks kept as
links), built into a wheel offline, and a server is started from that wheel's files alone.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import orjson

from fhir_server.crypto import create_key_ring

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter whose only copy of fhir_server is the unpacked wheel.
_SERVER_FROM_WHEEL = """
import sys, orjson
import fhir_server
from fastapi.testclient import TestClient
from fhir_server.app import create_app
assert fhir_server.__file__.startswith(sys.argv[1]), fhir_server.__file__
with TestClient(create_app()) as client:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200, response.text
    sys.stdout.write(response.text)
"""


def _build_stage_copies(dockerfile: str) -> list[tuple[str, str]]:
    """(source, destination) of each COPY in the first stage, relative to its WORKDIR."""
    first_stage = re.split(r"(?m)^FROM ", dockerfile)[1]
    copies = []
    for line in first_stage.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            *sources, destination = line.split()[1:]
            copies += [(source, destination) for source in sources]
    return copies


def _ignored(relative: Path, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves `relative` out (its patterns: a path, or `**/name`)."""
    return any(fnmatch.fnmatch(relative.name, p[3:]) if p.startswith("**/")
               else fnmatch.fnmatch(str(relative), p) for p in patterns)


def _replay_build_context(target: Path) -> None:
    """Copy what the build stage's COPY lines take, as Docker does (symlinks stay links)."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for source, destination in _build_stage_copies((ROOT / "Dockerfile").read_text()):
        origin, into = ROOT / source, target / destination
        assert origin.exists(), f"the Dockerfile copies {source}, which does not exist"
        if origin.is_dir():
            shutil.copytree(origin, into, symlinks=True, ignore=lambda folder, names: [
                n for n in names
                if _ignored((Path(folder) / n).relative_to(ROOT), patterns)])
        else:
            into = into / origin.name if destination.endswith("/") else into
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, into)


def test_the_docker_images_wheel_serves_the_platforms_operations_and_search_parameters(
        tmp_path: Path) -> None:
    context, wheels, site = tmp_path / "src", tmp_path / "wheels", tmp_path / "site"
    _replay_build_context(context)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--wheel-dir", str(wheels), str(context)],
                   check=True, capture_output=True)
    [wheel] = wheels.glob("fhir_server-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    metadata = next(site.glob("fhir_server-*.dist-info/METADATA")).read_text()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert (site / "fhir_server/profiles/OperationDefinition-ResearchStudy-refer.json").is_file()
    assert (site / "fhir_server/terminology/CodeSystem-referral-outcome.json").is_file()
    assert (site / "fhir_server/mappings/hl7v2/messages/ADT_visit.json").is_file()
    assert (site / "fhir_server/mappings/schema/hl7v2-mapping.schema.json").is_file()

    env = {name: value for name, value in os.environ.items()
           if not name.startswith("FHIR_SERVER_")}
    env.update(PYTHONPATH=str(site), FHIR_SERVER_AUTH="off",
               FHIR_SERVER_DATA_DIR=str(tmp_path / "data"))
    create_key_ring(tmp_path / "data" / "keyring.json")  # its default place
    run = subprocess.run([sys.executable, "-c", _SERVER_FROM_WHEEL, str(site)], cwd=tmp_path,
                         env=env, capture_output=True, check=False)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    resources = {r["type"]: r for r in orjson.loads(run.stdout)["rest"][0]["resource"]}
    operations = {o["name"] for o in resources["ResearchStudy"].get("operation", [])}
    assert {"refer", "referral-summary"} <= operations
    parameters = {p["name"] for p in resources["Communication"]["searchParam"]}
    assert {"about", "in-response-to", "payload"} <= parameters


def _imported_packages() -> set[str]:
    """Top-level names fhir_server/ imports that are neither stdlib nor fhir_server."""
    names = set()
    for path in (ROOT / "fhir_server").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "fhir_server"}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_package_imported_directly_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # A runtime extra counts: python-pkcs11 is needed only with key_provider = pkcs11 (`hsm`).
    extras = [r for name, group in project["optional-dependencies"].items() if name != "test"
              for r in group]
    declared = {_normalized(re.split(r"[\[<>=!~ ;]", requirement)[0])
                for requirement in [*project["dependencies"], *extras]}
    distributions = packages_distributions()
    undeclared = {name: distributions.get(name) for name in _imported_packages()
                  if not {_normalized(d) for d in distributions.get(name, [name])} & declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_file_the_image_copies_is_in_the_build_context() -> None:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert os.access(ROOT / "bin/docker-entrypoint", os.X_OK)  # COPY keeps the mode


def _entrypoint(tmp_path: Path, *args: str, store: str | None, migrate_status: int = 0
                ) -> tuple[int, list[str]]:
    """Run the image's entrypoint with a stand-in `fhir-server` that notes its arguments."""
    calls = tmp_path / "calls"
    stand_in = tmp_path / "bin" / "fhir-server"
    stand_in.parent.mkdir(exist_ok=True)
    stand_in.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n'
                        f'[ "$1" = migrate ] && exit {migrate_status}\nexit 0\n')
    stand_in.chmod(0o755)
    env = {**os.environ, "PATH": f"{stand_in.parent}:{os.environ['PATH']}"}
    env.pop("FHIR_SERVER_STORE", None)
    if store is not None:
        env["FHIR_SERVER_STORE"] = store
    run = subprocess.run(["sh", str(ROOT / "bin/docker-entrypoint"), *args], env=env,
                         capture_output=True, check=False)
    return run.returncode, calls.read_text().splitlines() if calls.exists() else []


def test_the_entrypoint_migrates_then_serves_and_needs_a_store(tmp_path: Path) -> None:
    assert _entrypoint(tmp_path, "--workers", "2", store="mongodb://mongo/fhir") == (
        0, ["migrate", "serve --workers 2"])
    (tmp_path / "calls").unlink()
    assert _entrypoint(tmp_path, store="mongodb://mongo/fhir", migrate_status=1) == (1, ["migrate"])
    (tmp_path / "calls").unlink()
    assert _entrypoint(tmp_path, store=None) == (2, [])  # no silent SQLite in the image
