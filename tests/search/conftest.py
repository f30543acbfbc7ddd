"""Shared fixtures: the R4 registry and the official example and Synthea resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server.search import Registry, default_registry

DEFINITIONS = Path("/work/shared/data/fhir-r4")
EXAMPLES = DEFINITIONS / "examples"
SYNTHEA = Path("/work/shared/data/synthea")


@pytest.fixture(scope="session")
def registry() -> Registry:
    return default_registry()


def load_examples() -> list[dict[str, Any]]:
    """The 607 official R4 examples (fails loudly if the data folder is missing)."""
    files = sorted(EXAMPLES.glob("*.json"))
    assert files, f"no examples in {EXAMPLES}"
    return [json.loads(f.read_text()) for f in files]


def load_synthea() -> list[dict[str, Any]]:
    """Every resource of the Synthea transaction bundles, references made relative."""
    resources = []
    files = sorted(SYNTHEA.glob("*.json"))
    assert files, f"no bundles in {SYNTHEA}"
    for path in files:
        entries = json.loads(path.read_text())["entry"]
        local = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries}
        text = json.dumps([e["resource"] for e in entries])
        for urn, ref in local.items():
            text = text.replace(f'"{urn}"', f'"{ref}"')
        resources.extend(json.loads(text))
    return resources


@pytest.fixture(scope="session")
def examples() -> list[dict[str, Any]]:
    return load_examples()


@pytest.fixture(scope="session")
def synthea() -> list[dict[str, Any]]:
    return load_synthea()
