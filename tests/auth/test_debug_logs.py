"""Secrets never in logs, whatever the log level: at `debug`, authlib would log the tokens it
issues ("Issue token ...")."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fhir_server import logs
from tests.auth.conftest import TOKEN_URL, es384, register


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """What logs.configure("debug") writes, undone afterwards."""
    root = logging.getLogger()
    authlib = logging.getLogger("authlib")
    saved = root.handlers[:], root.level, authlib.level
    logs.configure("debug")
    written = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(written)
    yield written
    root.handlers[:], level, authlib_level = saved
    root.setLevel(level)
    authlib.setLevel(authlib_level)


def test_no_token_is_logged_at_debug(app_client: TestClient, debug_log: io.StringIO) -> None:
    backend = register(app_client, es384("debug-site"), "system/Patient.rs")
    answer = app_client.post("/auth/token", data=backend.form("system/Patient.rs",
                                                              audience=TOKEN_URL))
    assert answer.status_code == 200
    logged = debug_log.getvalue()
    assert logging.getLogger("fhir_server").isEnabledFor(logging.DEBUG)
    assert answer.json()["access_token"].split(".")[2] not in logged
