"""Subscriptions under load and across kill -9 (issue 19 targets: commit -> notification p95
< 1 s at 200 writes/s with 10 subscriptions; 0 events lost over kill -9 cycles).

A real `fhir-server serve` (SQLite, auth off, `--workers` processes, one by default) notifies
a loopback receiver in this process. `latency`: `--subscriptions` topic subscriptions (patient-updated, id-only)
and Patient updates paced at `--rate` per second for `--seconds`; the delay of each event is
its arrival at the receiver minus its commit time (the version's `meta.lastUpdated`, stamped
inside the unit of work; same machine, same clock). `crash`: `--cycles` times, updates from
`--writers` clients and a SIGKILL after 1-2.5 s, the receiver down every third cycle; then a
last start, and every acknowledged update must have reached the receiver, event numbers 1..n
in order. `burst`: the app in this process (SQLite, auth off), `--updates` Patient updates
sent 16 at a time through ASGI, then wait until the receiver has every event; the CPU time of
the process (`time.process_time`, the receiver thread's small share included) from the first
update to the last event, per update; `--profile` writes a cProfile of the event loop's
thread (SQLite runs in its writer and reader threads: their CPU is the process time minus
the loop thread's `time.thread_time`).

    .venv/bin/python -m bench.subscriptions latency [--rate 200] [--seconds 20] [--subscriptions 10] [--workers 1]
    .venv/bin/python -m bench.subscriptions crash [--cycles 10] [--writers 3]
    .venv/bin/python -m bench.subscriptions burst [--updates 1000] [--subscriptions 10] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson

from bench.common import load_average, percentile, write_results
from fhir_server.app import create_app
from fhir_server.crypto import create_key_ring
from fhir_server.settings import Settings

TOPIC = "https://oncotrials.example.org/fhir/SubscriptionTopic/patient-updated"


class Receiver:
    """A minimal HTTP/1.1 endpoint on loopback (keep-alive, Content-Length bodies) that keeps
    (arrival time, body) of each request; `down` closes connections unanswered."""

    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []
        self._parsed: list[tuple[float, dict[str, Any]] | None] = []
        self.down = False
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                if self.down:
                    break
                self.received.append((time.time(), body))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    def start(self) -> None:
        ready = threading.Event()

        async def main() -> None:
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await server.serve_forever()

        threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
        ready.wait()

    def notifications(self) -> list[tuple[float, dict[str, Any]]]:
        """The event notifications received, each parsed once (the bench polls this)."""
        for at, body in self.received[len(self._parsed):]:
            bundle = orjson.loads(body)
            parameters = bundle["entry"][0]["resource"]["parameter"]
            notifies = {"name": "type", "valueCode": "event-notification"} in parameters
            self._parsed.append((at, bundle) if notifies else None)
        return [found for found in self._parsed if found is not None]


class Server:
    def __init__(self, data: Path, workers: int = 1) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        env = {**os.environ, "FHIR_SERVER_DATA_DIR": str(data), "FHIR_SERVER_BASE_URL": self.base,
               "FHIR_SERVER_AUTH": "off", "FHIR_SERVER_LOG_LEVEL": "warning",
               "FHIR_SERVER_SUBSCRIPTION_LOOPBACK_HTTP": "true",
               "FHIR_SERVER_KEY_RING": str(data / "keyring.json")}
        self.log = (data / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(self.port), "--workers", str(workers)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        answer = "no answer"
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1)
                if ready.status_code == 200:
                    return
                answer = ready.text
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not start: {answer}")

    def stop(self, kill: bool = False) -> None:
        (self.process.kill if kill else self.process.terminate)()
        self.process.wait()
        self.log.close()


def _subscribe(server: Server, receiver: Receiver, count: int) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as http:
        ids = []
        for _ in range(count):
            response = http.post("/Subscription", json=_subscription(receiver),
                                 headers={"Content-Type": "application/fhir+json"})
            response.raise_for_status()
            ids.append(response.json()["id"])
        while any(http.get(f"/Subscription/{id}").json()["status"] != "active" for id in ids):
            time.sleep(0.2)
    # Every worker process reads the subscriptions again each second: until then, one that did
    # not create them keeps no events for them (docs/subscriptions.md, "Reliable delivery").
    time.sleep(1.5)


def _subscription(receiver: Receiver) -> dict[str, Any]:
    return {"resourceType": "Subscription", "status": "requested", "reason": "bench", "criteria": TOPIC,
            "channel": {"type": "rest-hook", "payload": "application/fhir+json",
                        "endpoint": f"http://127.0.0.1:{receiver.port}/hook"}}


def _patient(id: str, n: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": id, "name": [{"family": f"Bench{n}"}], "gender": "female"}


def latency(rate: int, seconds: int, subscriptions: int, workers: int = 1) -> dict[str, Any]:
    receiver = Receiver()
    receiver.start()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        create_key_ring(data / "keyring.json")
        server = Server(data, workers)
        try:
            with httpx.Client(base_url=server.base, timeout=30) as http:
                for i in range(100):  # the Patients exist: the topic fires on updates
                    http.put(f"/Patient/b{i}", json=_patient(f"b{i}", 0),
                             headers={"Content-Type": "application/fhir+json"}).raise_for_status()
            _subscribe(server, receiver, subscriptions)
            sent, failed = asyncio.run(_paced(server.base, rate, seconds))
            deadline = time.monotonic() + 60
            expected = sent * subscriptions
            while _count(receiver) < expected and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            server.stop()
    delays = sorted(at - datetime.fromisoformat(part["valueInstant"]).timestamp()
                    for at, bundle in receiver.notifications()
                    for p in bundle["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"
                    for part in p["part"] if part["name"] == "timestamp")
    return {"rate": rate, "seconds": seconds, "subscriptions": subscriptions, "workers": workers,
            "writes": sent,
            "failed_writes": failed, "events_expected": sent * subscriptions, "events_received": len(delays),
            "notifications": len(receiver.notifications()),
            "p50_s": percentile(delays, 50), "p95_s": percentile(delays, 95),
            "p99_s": percentile(delays, 99), "max_s": delays[-1] if delays else None,
            "load_average": load_average()}


def _count(receiver: Receiver) -> int:
    return sum(sum(1 for p in b["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event")
               for _, b in receiver.notifications())


async def _paced(base: str, rate: int, seconds: int) -> tuple[int, int]:
    """Updates at `rate` per second (open loop: each starts on its schedule)."""
    failed = 0
    timeout = httpx.Timeout(60, pool=None)  # a backlog waits for a connection, not fails
    async with httpx.AsyncClient(base_url=base, timeout=timeout,
                                 limits=httpx.Limits(max_connections=64)) as http:
        async def one(n: int) -> None:
            nonlocal failed
            try:
                response = await http.put(f"/Patient/b{n % 100}", json=_patient(f"b{n % 100}", n),
                                          headers={"Content-Type": "application/fhir+json"})
            except httpx.HTTPError:
                failed += 1
                return
            failed += response.status_code != 200
        start = time.monotonic()
        tasks = []
        for n in range(rate * seconds):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
    print(f"{rate * seconds} updates in {elapsed:.1f} s ({rate * seconds / elapsed:.0f}/s achieved)",
          file=sys.stderr)
    return rate * seconds - failed, failed


def burst(updates: int, subscriptions: int, profile: Path | None) -> dict[str, Any]:
    receiver = Receiver()
    receiver.start()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        create_key_ring(data / "keyring.json")
        os.environ["FHIR_SERVER_KEY_RING"] = str(data / "keyring.json")
        settings = Settings(data_dir=data, base_url="http://bench/fhir", auth="off",
                            subscription_loopback_http=True, publish_definitions=False)
        return asyncio.run(_burst(create_app(settings), receiver, updates, subscriptions, profile))


async def _burst(app: Any, receiver: Receiver, updates: int, subscriptions: int,
                 profile: Path | None) -> dict[str, Any]:
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://bench/fhir", timeout=60) as http:
        headers = {"Content-Type": "application/fhir+json"}
        for i in range(100):
            (await http.put(f"/Patient/b{i}", json=_patient(f"b{i}", 0), headers=headers)).raise_for_status()
        ids = []
        for _ in range(subscriptions):
            response = await http.post("/Subscription", json=_subscription(receiver), headers=headers)
            ids.append(response.raise_for_status().json()["id"])
        while [id for id in ids if (await http.get(f"/Subscription/{id}")).json()["status"] != "active"]:
            await asyncio.sleep(0.1)
        profiler = cProfile.Profile(time.thread_time) if profile else None  # CPU, not waits
        gate = asyncio.Semaphore(16)

        async def one(n: int) -> None:
            async with gate:
                (await http.put(f"/Patient/b{n % 100}", json=_patient(f"b{n % 100}", n),
                                headers=headers)).raise_for_status()

        cpu, loop_cpu, wall = time.process_time(), time.thread_time(), time.monotonic()
        if profiler:
            profiler.enable()
        await asyncio.gather(*(one(n) for n in range(updates)))
        while _count(receiver) < updates * subscriptions and time.monotonic() - wall < 300:
            await asyncio.sleep(0.05)
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        cpu, loop_cpu, wall = (time.process_time() - cpu, time.thread_time() - loop_cpu,
                               time.monotonic() - wall)
    return {"updates": updates, "subscriptions": subscriptions,
            "events_expected": updates * subscriptions, "events_received": _count(receiver),
            "notifications": len(receiver.notifications()), "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "cpu_ms_per_update": round(cpu * 1000 / updates, 2),
            "loop_thread_cpu_s": round(loop_cpu, 2), "load_average": load_average()}


def crash(cycles: int, writers: int) -> dict[str, Any]:
    receiver = Receiver()
    receiver.start()
    acked: set[tuple[str, str]] = set()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        create_key_ring(data / "keyring.json")
        server = Server(data)
        _subscribe(server, receiver, 1)
        server.stop()
        for cycle in range(cycles):
            receiver.down = cycle % 3 == 1
            server = Server(data)
            stop = threading.Event()
            threads = [threading.Thread(target=_write, args=(server.base, w, stop, acked)) for w in range(writers)]
            for thread in threads:
                thread.start()
            time.sleep(random.uniform(1.0, 2.5))
            server.stop(kill=True)
            stop.set()
            for thread in threads:
                thread.join()
        receiver.down = False
        server = Server(data)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            numbers, seen = _delivered(receiver)
            if acked <= seen:
                break
            time.sleep(1)
        server.stop()
    return {"cycles": cycles, "acknowledged_updates": len(acked), "lost": len(acked - seen),
            "events_numbered": len(numbers), "in_order_without_gap": numbers == list(range(1, len(numbers) + 1)),
            "load_average": load_average()}


def _write(base: str, writer: int, stop: threading.Event, acked: set[tuple[str, str]]) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        n = 0
        while not stop.is_set():
            id = f"w{writer}-{n % 5}"
            try:
                response = http.put(f"/Patient/{id}", json=_patient(id, n),
                                    headers={"Content-Type": "application/fhir+json"})
            except httpx.TransportError:
                return
            version = response.json().get("meta", {}).get("versionId")
            if response.status_code == 200 and version != "1":
                acked.add((f"Patient/{id}", version))
            n += 1


def _delivered(receiver: Receiver) -> tuple[list[int], set[tuple[str, str]]]:
    numbers: list[int] = []
    seen: set[tuple[str, str]] = set()
    for _, bundle in receiver.notifications():
        for p in bundle["entry"][0]["resource"]["parameter"]:
            if p["name"] == "notification-event":
                number = int(p["part"][0]["valueString"])
                if number not in numbers:
                    numbers.append(number)
        for entry in bundle["entry"][1:]:
            seen.add(("/".join(entry["fullUrl"].rsplit("/", 2)[-2:]), entry["response"]["etag"].split('"')[1]))
    return numbers, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    run = modes.add_parser("latency")
    run.add_argument("--rate", type=int, default=200)
    run.add_argument("--seconds", type=int, default=20)
    run.add_argument("--subscriptions", type=int, default=10)
    run.add_argument("--workers", type=int, default=1, help="server worker processes")
    kill = modes.add_parser("crash")
    kill.add_argument("--cycles", type=int, default=10)
    kill.add_argument("--writers", type=int, default=3)
    at_once = modes.add_parser("burst")
    at_once.add_argument("--updates", type=int, default=1000)
    at_once.add_argument("--subscriptions", type=int, default=10)
    at_once.add_argument("--profile", type=Path, help="write a cProfile of the event loop's thread here")
    args = parser.parse_args()
    if args.mode == "latency":
        result = latency(args.rate, args.seconds, args.subscriptions, args.workers)
    elif args.mode == "crash":
        result = crash(args.cycles, args.writers)
    else:
        result = burst(args.updates, args.subscriptions, args.profile)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    write_results(f"subscriptions-{args.mode}", result)


if __name__ == "__main__":
    main()
