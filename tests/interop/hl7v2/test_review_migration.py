"""Hostile review of sealing in place (issue 16): a process killed (SIGKILL) while it seals a
plaintext inbox leaves every message readable, and the next opening seals them all, once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fhir_server.app import body_codec
from fhir_server.interop.hl7v2 import INBOX, Inbox
from fhir_server.settings import Settings

from .test_sealed import PLAINTEXT_SCHEMA, marked

pytestmark = pytest.mark.anyio
ROWS = 20000
OPEN = "from fhir_server.app import body_codec; from fhir_server.interop.hl7v2 import Inbox; " \
       "from fhir_server.settings import Settings; import pathlib, sys; " \
       "s = Settings(); Inbox(pathlib.Path(sys.argv[1]), body_codec(s))"


def _plaintext(path: Path) -> None:
    """An inbox as written before sealing: ROWS messages in error."""
    with sqlite3.connect(path) as db:
        db.executescript(PLAINTEXT_SCHEMA)
        db.executemany("INSERT INTO message VALUES (?, 'HIS_CHU|CHU_DEMO', ?, '2026-01-01T00:00:00Z',"
                       " NULL, ?, 'error', ?, ?, '2026-01-01T00:00:00Z')",
                       [(n, f"OLD-{n}", marked(f"OLD-{n}"), f"MSA|AE|OLD-{n}".encode(), f"reason {n}")
                        for n in range(1, ROWS + 1)])
    db.close()


async def test_a_kill_while_sealing_in_place_loses_nothing(settings: Settings) -> None:
    path = settings.data_dir / INBOX
    _plaintext(path)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FHIR_SERVER_") or k == "FHIR_SERVER_KEY_RING"}
    env.update(FHIR_SERVER_DATA_DIR=str(settings.data_dir), FHIR_SERVER_LOG_LEVEL="warning")
    for delay in (0.6, 1.2, 2.0):  # killed at one moment or another of the sealing
        process = subprocess.Popen([sys.executable, "-c", OPEN, str(path)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    inbox = Inbox(path, body_codec(settings))
    try:
        for n in (1, ROWS // 2, ROWS):
            stored = await inbox.get(n)
            assert stored is not None and stored.raw == marked(f"OLD-{n}")
            assert stored.ack == f"MSA|AE|OLD-{n}".encode() and stored.reason == f"reason {n}"
        assert len(await inbox.unsettled(limit=ROWS + 1)) == ROWS
        assert all(m.reason and m.reason.startswith("reason") for m in await inbox.unsettled(limit=ROWS + 1))
    finally:
        inbox.close()
    again = Inbox(path, body_codec(settings))  # not sealed twice
    assert (await again.get(ROWS)) is not None and (await again.get(ROWS)).raw == marked(f"OLD-{ROWS}")
    again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    db.close()
