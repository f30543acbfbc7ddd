"""kill -9 of a `fhir-server mllp` process: a message received but not committed is applied
once when resent; across kill cycles at random moments no message is lost or applied twice.

The server runs in a subprocess on a temporary data directory; the test resends what was
not acknowledged, as an MLLP sender does, and then reads the store itself."""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_server.app import open_context
from fhir_server.settings import Settings
from fhir_server.store.base import HistoryQuery
from tests.interop.hl7v2.conftest import connect, frame, message, msa

pytestmark = pytest.mark.anyio


class Server:
    """`fhir-server mllp` in a subprocess on `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("FHIR_SERVER_") or k == "FHIR_SERVER_KEY_RING"}
        env.update(FHIR_SERVER_DATA_DIR=str(self.data_dir), FHIR_SERVER_MLLP_PORT="0",
                   FHIR_SERVER_LOG_LEVEL="warning")
        self.process = subprocess.Popen([sys.executable, "-m", "fhir_server.cli", "mllp"], env=env,
                                        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert self.process.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stderr.readline().decode()
            if line.startswith("MLLP listening on"):
                self.port = int(line.rsplit(":", 1)[1])
                return
            assert line or self.process.poll() is None, "the server stopped"
        raise AssertionError("the server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data")
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


def _state(data_dir: Path, control_id: str) -> str | None:
    db = sqlite3.connect(data_dir / "hl7v2.db")
    try:
        row = db.execute("SELECT state FROM message WHERE control_id = ?", (control_id,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


async def _versions(data_dir: Path, resource_type: str) -> list[dict[str, str]]:
    async with open_context(Settings(data_dir=data_dir)) as ctx:
        page = await ctx.store.history(HistoryQuery(resource_type, count=1000))
    return [{"id": v.id, "version": str(v.version)} for v in page.versions]


async def _send(port: int, raw: bytes) -> list[str]:
    connection = await connect(port)
    await connection.send(frame(raw))
    ack = msa(await connection.ack())
    await connection.close()
    return ack


async def test_killed_between_receipt_and_commit_then_resent_gives_one_result(server: Server) -> None:
    server.start()
    # Hold the store's writer lock: the server stores the message, then waits to commit.
    lock = os.open(server.data_dir / "fhir.db.writer", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    connection = await connect(server.port)
    await connection.send(frame(message("adt_a01_admit.hl7")))
    deadline = time.monotonic() + 20
    while _state(server.data_dir, "A01-0001") != "received":
        assert time.monotonic() < deadline, "the message was never stored"
        await asyncio.sleep(0.02)
    server.kill()
    os.close(lock)
    await connection.close()
    assert await _versions(server.data_dir, "Patient") == []  # received, not committed

    server.start()
    assert (await _send(server.port, message("adt_a01_admit.hl7")))[1:3] == ["AA", "A01-0001"]
    assert await _send(server.port, message("adt_a01_admit.hl7")) == ["MSA", "AA", "A01-0001"]
    server.kill()
    [patient] = await _versions(server.data_dir, "Patient")
    assert patient["version"] == "1"
    assert len(await _versions(server.data_dir, "Encounter")) == 2  # the visit and the movement
    assert _state(server.data_dir, "A01-0001") == "applied"


def _person(n: int) -> bytes:
    """An A28 for person n (its own control id and IPP)."""
    return (message("adt_a28_add_person.hl7")
            .replace(b"|A28-0001|", f"|K{n:04d}|".encode())
            .replace(b"200001^^^", f"{300000 + n}^^^".encode()))


async def test_no_message_lost_or_applied_twice_across_kill_cycles(server: Server) -> None:
    messages, kills, rng = 24, 4, random.Random(20)
    kill_after = sorted(rng.sample(range(2, messages), kills))
    server.start()
    n = 0
    while n < messages:
        connection = await connect(server.port)
        await connection.send(frame(_person(n)))
        if kill_after and n == kill_after[0]:
            kill_after.pop(0)
            await asyncio.sleep(rng.uniform(0, 0.05))  # before, during or after its commit
            server.kill()
            await connection.close()
            server.start()
            continue  # unacknowledged: the sender sends it again
        assert msa(await connection.ack())[1] == "AA"
        await connection.close()
        n += 1
    for n in range(messages):  # every one again: all duplicates now
        assert (await _send(server.port, _person(n)))[1] == "AA"
    server.kill()
    versions = await _versions(server.data_dir, "Patient")
    assert len({v["id"] for v in versions}) == messages  # none lost, none duplicated
    assert {v["version"] for v in versions} == {"1"}  # none applied twice


async def test_messages_sent_ahead_survive_kill_cycles_once_each(server: Server) -> None:
    """Groups committed together (docs/hl7v2.md): a kill while a group is received, applied
    or acknowledged loses none and applies none twice once the unacknowledged are resent."""
    messages, rng = 40, random.Random(7)
    server.start()
    acknowledged: set[int] = set()
    for cycle in range(4):
        waiting = [n for n in range(messages) if n not in acknowledged][:12]
        connection = await connect(server.port)
        await connection.send(b"".join(frame(_person(n)) for n in waiting))
        if cycle < 3:  # killed while the group is in flight
            await asyncio.sleep(rng.uniform(0, 0.15))
            server.kill()
            for n in waiting:  # what was acknowledged before the kill is settled
                try:
                    ack = await asyncio.wait_for(connection.reader.readuntil(b"\x1c\r"), 0.01)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
                assert msa(ack[1:-2])[1:3] == ["AA", f"K{n:04d}"]
                acknowledged.add(n)
            await connection.close()
            server.start()
            continue
        for n in waiting:
            assert msa(await connection.ack())[1:3] == ["AA", f"K{n:04d}"]
            acknowledged.add(n)
        await connection.close()
    rest = [n for n in range(messages) if n not in acknowledged]
    connection = await connect(server.port)
    await connection.send(b"".join(frame(_person(n)) for n in range(messages)))  # all again
    assert [msa(await connection.ack())[1] for _ in range(messages)] == ["AA"] * messages
    await connection.close()
    server.kill()
    versions = await _versions(server.data_dir, "Patient")
    assert len({v["id"] for v in versions}) == messages, rest  # none lost, none duplicated
    assert {v["version"] for v in versions} == {"1"}  # none applied twice
