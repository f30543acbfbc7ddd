"""Ingestion benchmark: concurrent clients pushing Synthea transaction Bundles over HTTP.

As the published FHIR server benchmarks do, N clients (default 20) push the Synthea patient
bundles as FHIR transactions; each push is a fresh copy (new urn:uuid fullUrls, new
identifiers) so every resource is really created. Server, store (SQLite) and load generator
share this machine. Reports resources/s and per-bundle latency percentiles.

    python -m bench.ingest [--clients 20] [--bundles 240] [--workers 2] [--schema-only]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx2 as httpx
import orjson

from fhir_server.auth.keys import SigningKeys
from fhir_server.auth.registry import Registry as AuthRegistry
from fhir_server.auth.tokens import TokenService
from fhir_server.crypto import create_key_ring

SYNTHEA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "synthea"
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def patient_bundles() -> list[bytes]:
    """The 12 Synthea patient transaction bundles, as sent."""
    return [p.read_bytes() for p in sorted(SYNTHEA.glob("*.json"))
            if not p.name.startswith(("hospital", "practitioner"))]


def fresh_copy(body: bytes) -> bytes:
    """The bundle with every UUID replaced consistently (fullUrls, references, identifiers)."""
    mapping: dict[bytes, bytes] = {}

    def swap(match: re.Match[bytes]) -> bytes:
        old = match.group(0)
        if old not in mapping:
            mapping[old] = str(uuid.uuid4()).encode()
        return mapping[old]

    return _UUID.sub(swap, body)


def start_server(data_dir: Path, port: int, workers: int, schema_only: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FHIR_SERVER_DATA_DIR": str(data_dir), "FHIR_SERVER_LOG_LEVEL": "warning",
           "FHIR_SERVER_BASE_URL": f"http://127.0.0.1:{port}/fhir",
           "FHIR_SERVER_VALIDATE_WITH_MODELS": "false" if schema_only else "true"}
    process = subprocess.Popen(
        [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the server process and its live workers have used: on a
    machine others load, what a run cost, where resources/s says how much CPU it was given."""
    tick = os.sysconf("SC_CLK_TCK")

    def own(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own(pid) + sum(own(int(child)) for child in children)


def access_token(data_dir: Path, port: int) -> str:
    """A token the server accepts (signed with the key file it shares): each request pays for
    token verification, as a real EHR's would."""
    base = f"http://127.0.0.1:{port}"
    tokens = TokenService(SigningKeys(data_dir / "signing-keys.json", 3600),
                          AuthRegistry(data_dir / "auth.db"), issuer=f"{base}/auth",
                          audience=f"{base}/fhir", lifetime=3600)
    return str(tokens.issue(subject="bench", client_id="bench", scope="system/*.cruds")["access_token"])


async def push_all(port: int, bodies: list[bytes], clients: int, token: str) -> tuple[list[float], int, int]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    resources = failures = 0

    async def client() -> None:
        nonlocal resources, failures
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/fhir", timeout=300) as http:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                response = await http.post("", content=body, headers={
                    "Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"})
                latencies.append(time.perf_counter() - started)
                if response.status_code == 200:
                    resources += len(orjson.loads(response.content)["entry"])
                else:
                    failures += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, resources, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--bundles", type=int, default=240)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=18231)
    parser.add_argument("--schema-only", action="store_true", help="skip the fhir.resources layer")
    args = parser.parse_args()
    sources = patient_bundles()
    bodies = [fresh_copy(sources[i % len(sources)]) for i in range(args.bundles)]
    with tempfile.TemporaryDirectory() as data:
        create_key_ring(Path(data) / "keyring.json")  # bodies are encrypted at rest (docs/security.md)
        server = start_server(Path(data), args.port, args.workers, args.schema_only)
        try:
            started, cpu = time.perf_counter(), server_cpu(server.pid)
            token = access_token(Path(data), args.port)
            latencies, resources, failures = asyncio.run(push_all(args.port, bodies, args.clients, token))
            elapsed, cpu = time.perf_counter() - started, server_cpu(server.pid) - cpu
        finally:
            server.terminate()
            server.wait(30)
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    validation = "schema only" if args.schema_only else "schema + fhir.resources models"
    print(f"{args.bundles} bundles, {resources} resources, {failures} failed, {args.clients} clients, "
          f"{args.workers} workers, {validation}")
    print(f"{resources / elapsed:,.0f} resources/s over {elapsed:.1f} s; per bundle "
          f"p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms, mean {statistics.mean(latencies) * 1000:.0f} ms")
    print(f"server CPU {cpu:.1f} s: {cpu / max(resources, 1) * 1e6:,.0f} µs per resource")


if __name__ == "__main__":
    main()
