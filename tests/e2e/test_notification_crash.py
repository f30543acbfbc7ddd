"""No notification lost or sent twice when the server is killed between claiming it and
having it accepted (docs/notifications.md, "Crashes"): a real server process sends through a
real SMTP server on loopback (STARTTLS) that holds the first message's DATA; the server is
killed with SIGKILL meanwhile; once restarted, after the lease of the dead process expires,
the message is accepted exactly once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fhir_server import clock
from fhir_server.app import body_codec, open_store
from fhir_server.notify import enqueue
from fhir_server.notify.runner import schedule_of
from fhir_server.settings import Settings
from fhir_server.store.schedule import Schedule
from tests.e2e.conftest import Server
from tests.notify.mail import SmtpServer

LEASE = 5


class Held:
    """An SMTP handler that holds the first DATA until `release`, then refuses it (its
    sender is dead by then), and accepts the others."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.accepted: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.entered.is_set():
            self.entered.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return "451 4.3.0 Try again later"
        self.accepted.append(",".join(envelope.rcpt_tos))
        return "250 2.0.0 OK"


@asynccontextmanager
async def _schedule(data: Path) -> AsyncIterator[Schedule]:
    """The schedule of the server's store in `data`, opened beside the server."""
    settings = Settings(data_dir=data)
    store = open_store(settings.store_url, codec=body_codec(settings))
    await store.open()
    try:
        yield schedule_of(store)
    finally:
        await store.close()


async def _enqueue(data: Path) -> None:
    async with _schedule(data) as schedule:
        await enqueue(schedule, person="Practitioner/p1", template="new-message", params={},
                      not_before=clock.now(), key="e2e/message/1")


async def _states(data: Path) -> list[str]:
    async with _schedule(data) as schedule:
        return [item.state for item in await schedule.items("e2e/")]


def _wait(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_notice_claimed_by_a_killed_server_is_sent_once_after_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    held = Held()
    with SmtpServer(tmp_path) as smtp:
        smtp.controller.handler = held
        env = {"FHIR_SERVER_SMTP_HOST": "127.0.0.1", "FHIR_SERVER_SMTP_PORT": str(smtp.port),
               "FHIR_SERVER_SMTP_SENDER": "platform@oncotrials.example",
               "FHIR_SERVER_SMTP_CA_FILE": str(smtp.ca_file),
               "FHIR_SERVER_NOTIFY_POLL_SECONDS": "0.2",
               "FHIR_SERVER_NOTIFY_LEASE_SECONDS": str(LEASE)}
        server = Server(data, workers=1, env=env)
        try:
            with server.client() as http:
                practitioner = {"resourceType": "Practitioner", "id": "p1",
                                "telecom": [{"system": "email", "value": "p1@example.org"}]}
                assert http.put("/Practitioner/p1", json=practitioner).status_code == 201
            asyncio.run(_enqueue(data))
            assert held.entered.wait(20), "the server never sent the notice"
            server.process.kill()  # claimed, being sent, not accepted
            server.process.wait(timeout=30)
        finally:
            held.release.set()
            server.stop()
        assert asyncio.run(_states(data)) == ["claimed"]
        assert held.accepted == []
        restarted = Server(data, workers=1, env=env)
        try:
            assert _wait(lambda: held.accepted, LEASE + 20), "the notice was lost"
            time.sleep(LEASE + 1)  # a second copy would have been sent by now
        finally:
            restarted.stop()
    assert held.accepted == ["p1@example.org"]
    assert asyncio.run(_states(data)) == ["sent"]
