"""No event lost when the server is killed (issue 19: "kill -9 between commit and send";
docs/subscriptions.md, "Reliable delivery").

A real server (two worker processes, each with its own dispatcher contending for the lease)
notifies a loopback receiver of Patient updates while clients write; it is killed with
SIGKILL mid-load, three times, once while the receiver is down (events committed, none
sent). After the last restart the receiver has every event number from 1 to the last, in
order (repeats allowed: delivery is at least once), and every write a client saw succeed.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.builders import patient
from tests.e2e.conftest import Server
from tests.subscriptions.receiver import Receiver, receiver

TOPIC = "https://oncotrials.example.org/fhir/SubscriptionTopic/patient-updated"
WRITERS = 3


def _subscription(endpoint: str) -> dict[str, Any]:
    return {"resourceType": "Subscription", "status": "requested", "reason": "crash test",
            "criteria": TOPIC, "channel": {"type": "rest-hook", "endpoint": endpoint,
                                           "payload": "application/fhir+json"}}


def _write(server: Server, writer: int, stop: threading.Event, acked: set[tuple[str, str]]) -> None:
    """Update Patients until the server dies; note each acknowledged update (id, version)."""
    headers = {**server.auth(), "Content-Type": "application/fhir+json"}
    with httpx.Client(timeout=30) as http:
        n = 0
        while not stop.is_set():
            id = f"w{writer}-{n % 5}"
            try:
                response = http.put(f"{server.base}/fhir/Patient/{id}",
                                     json={**patient(f"N{n}"), "id": id}, headers=headers)
            except httpx.TransportError:
                return
            version = response.json().get("meta", {}).get("versionId")
            if response.status_code == 200 and version != "1":  # the topic fires on updates
                acked.add((f"Patient/{id}", version))
            n += 1


def _load_and_kill(data: Path, hook: Receiver, acked: set[tuple[str, str]], env: dict[str, str]) -> None:
    server = Server(data, env=env)
    stop = threading.Event()
    writers = [threading.Thread(target=_write, args=(server, w, stop, acked)) for w in range(WRITERS)]
    for thread in writers:
        thread.start()
    time.sleep(random.uniform(1.0, 2.5))
    server.process.kill()  # SIGKILL: no shutdown of any kind
    server.process.wait()
    server.log.close()
    stop.set()
    for thread in writers:
        thread.join()


def _delivered(hook: Receiver) -> tuple[list[int], set[tuple[str, str]]]:
    numbers: list[int] = []
    seen: set[tuple[str, str]] = set()
    for notified in hook.of_kind("event-notification"):
        numbers += [n for n in notified.numbers if n not in numbers]
        for entry in notified.json()["entry"][1:]:
            reference = "/".join(entry["fullUrl"].rsplit("/", 2)[-2:])
            seen.add((reference, entry["response"]["etag"].split('"')[1]))
    return numbers, seen


def test_every_event_is_delivered_in_order_across_kill_9(tmp_path: Path) -> None:
    env = {"FHIR_SERVER_SUBSCRIPTION_LOOPBACK_HTTP": "true"}
    acked: set[tuple[str, str]] = set()
    with receiver() as hook:
        server = Server(tmp_path, env=env)
        with server.client(timeout=30) as http:
            created = http.post("/Subscription", json=_subscription(hook.url),
                                headers={"Content-Type": "application/fhir+json"})
            assert created.status_code == 201, created.text
            id = created.json()["id"]
            deadline = time.monotonic() + 30
            while http.get(f"/Subscription/{id}").json()["status"] != "active":
                assert time.monotonic() < deadline, "no handshake"
                time.sleep(0.2)
        server.stop()
        for cycle in range(3):
            hook.down = cycle == 1  # committed, not sent, then killed
            _load_and_kill(tmp_path, hook, acked, env)
        hook.down = False
        server = Server(tmp_path, env=env)
        try:
            deadline = time.monotonic() + 120
            while True:
                numbers, seen = _delivered(hook)
                if acked <= seen or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            with server.client(timeout=30) as http:
                status = http.get(f"/Subscription/{id}/$status").json()
        finally:
            server.stop()
    assert acked and acked <= seen, f"{len(acked - seen)} acknowledged writes never notified"
    assert numbers == list(range(1, len(numbers) + 1))  # in order, no gap
    parameters = status["entry"][0]["resource"]["parameter"]
    total = next(int(p["valueString"]) for p in parameters if p["name"] == "events-since-subscription-start")
    assert total == len(numbers)
