"""CPU per request of single-resource traffic, in process (docs/performance.md, issue 15).

Drives the whole ASGI application (middleware, routes, services, SQLite stores, audit trail)
without sockets: `--concurrency` requests at a time, like wrk's connections, on Patients
shaped like the perf harness's (`../shared/perf`). Prints the process CPU (every thread:
the event loop and the stores' writer threads) per request for each op, and that of the event
loop's thread and of each writer thread apart (`time.thread_time`, no profiler); `--profile OP`
adds a cProfile of that op, one for the event loop's thread and one for each store's writer
thread (where the SQLite writes, the sealing and the index rows are done); `--auth` sends a SMART access token
(a backend client's, `system/*.cruds`) on every request, as the harness's `PERF_AUTH` does.

    .venv/bin/python -m bench.requests [--n 2000] [--requests 3000] [--profile search] [--auth]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import pstats
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from fhir_server.app import create_app
from fhir_server.crypto import create_key_ring
from fhir_server.settings import Settings
from fhir_server.store.sqlite import SqliteStore

Call = Callable[[int], Awaitable[int]]
_TAGS = "http://example.org/perf-tags"


def _patient(i: int, tag: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": f"perf-{i:07d}",
            "meta": {"tag": [{"system": _TAGS, "code": tag}]},
            "identifier": [{"system": "urn:example:mrn", "value": f"MRN{i:07d}"},
                           {"use": "official", "system": "urn:oid:1.2.250.1.213.1.4.8",
                            "value": f"1{i:012d}{97 - (10**12 + i) % 97:02d}"}],
            "name": [{"family": f"Family{i % 500}", "given": [f"Given{i % 70}", "Marie"]}],
            "gender": "female" if i % 2 else "male", "birthDate": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 9}",
            "address": [{"line": [f"{i} rue de la Paix"], "city": f"City{i % 300}",
                         "postalCode": "75001", "country": "FR"}],
            "telecom": [{"system": "phone", "value": f"+33 1 23 45 {i % 100:02d} 00"}]}


class Client:
    """Calls the ASGI app directly; returns the status, checks nothing else."""

    def __init__(self, app: Any, token: str | None = None) -> None:
        self.app = app
        self.auth = [(b"authorization", f"Bearer {token}".encode())] if token else []

    async def __call__(self, method: str, path: str, body: bytes = b"", query: str = "") -> int:
        headers = [(b"host", b"bench"), (b"content-type", b"application/fhir+json"),
                   (b"content-length", str(len(body)).encode()), *self.auth]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": query.encode(), "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, receive, send)
        return status


def _ops(client: Client, n: int) -> dict[str, Call]:
    created = itertools.count(10_000_000)

    async def read(i: int) -> int:
        return await client("GET", f"/fhir/Patient/perf-{i % n:07d}")

    async def create(i: int) -> int:
        return await client("POST", "/fhir/Patient", orjson.dumps(_patient(next(created), "created")))

    async def search(i: int) -> int:
        if i % 2:
            return await client("GET", "/fhir/Patient", query=f"_tag={_TAGS}|bucket-{i % (n // 20):05d}&_count=20")
        return await client("GET", "/fhir/Patient", query=f"identifier=urn:example:mrn|MRN{i % n:07d}&_count=20")

    return {"read": read, "create": create, "search": search}


async def _drive(call: Call, requests: int, concurrency: int) -> tuple[float, int]:
    """CPU seconds of the process for `requests` calls, and how many failed."""
    counter = itertools.count()
    failed = 0

    async def worker() -> None:
        nonlocal failed
        while (i := next(counter)) < requests:
            if await call(i) >= 400:
                failed += 1

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.process_time() - started, failed


class ThreadProfile:
    """A cProfile, in CPU time, of one thread: the event loop's (`pool` None) or a pool's single thread."""

    def __init__(self, pool: ThreadPoolExecutor | None = None) -> None:
        self.profile = cProfile.Profile(time.thread_time)  # CPU time: waits (fsync, locks) are not counted
        self.pool = pool

    async def _in_thread(self, call: Callable[[], object]) -> None:
        if self.pool is None:
            call()
        else:
            await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def start(self) -> ThreadProfile:
        await self._in_thread(self.profile.enable)
        return self

    async def stop(self) -> None:
        await self._in_thread(self.profile.disable)

    def seconds(self) -> float:
        return float(pstats.Stats(self.profile).total_tt)  # type: ignore[attr-defined]


def _writers(app: Any) -> dict[str, ThreadPoolExecutor]:
    """Each SQLite store's writer thread (a pool of one), by store."""
    store = app.state.context.store
    return {f"{name} store's writer thread": getattr(store, name)._writer
            for name in ("main", "audit") if isinstance(getattr(store, name), SqliteStore)}


async def _profiling(app: Any) -> dict[str, ThreadProfile]:
    """Profiles started on the event loop and on each SQLite store's writer thread."""
    return {"event loop": await ThreadProfile().start(),
            **{name: await ThreadProfile(pool).start() for name, pool in _writers(app).items()}}


async def _thread_times(app: Any) -> dict[str, float]:
    """CPU seconds so far of the event loop's thread and of each writer thread (no profiler)."""
    loop = asyncio.get_running_loop()
    return {"event loop": time.thread_time(),
            **{name: await loop.run_in_executor(pool, time.thread_time)
               for name, pool in _writers(app).items()}}


def _token(app: Any) -> str:
    """An access token of a registered backend client, as the token endpoint would issue it."""
    app.state.oauth.registry.add_backend_client("bench", "system/*.cruds", jwks={"keys": []})
    issued = app.state.tokens.issue(subject="bench", client_id="bench", scope="system/*.cruds")
    return str(issued["access_token"])


@asynccontextmanager
async def seeded(n: int, encryption: bool = True, auth: bool = False) -> AsyncIterator[Client]:
    """An app on a fresh data directory (its own key ring) holding `n` Patients; with `auth`,
    its client sends a backend client's access token on every request."""
    data = Path(tempfile.mkdtemp(prefix="bench-requests-"))
    create_key_ring(data / "keyring.json")
    app = create_app(Settings(data_dir=data, auth="smart" if auth else "off", token_lifetime=3600,
                              encryption=encryption, key_ring=data / "keyring.json"))
    client = Client(app, _token(app) if auth else None)
    async with app.router.lifespan_context(app):
        for start in range(0, n, 100):
            entries = [{"resource": _patient(i, f"bucket-{i % (n // 20):05d}"),
                        "request": {"method": "PUT", "url": f"Patient/perf-{i:07d}"}}
                       for i in range(start, min(start + 100, n))]
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            assert await client("POST", "/fhir", orjson.dumps(bundle)) == 200
        yield client


async def main(args: argparse.Namespace) -> None:
    async with seeded(args.n, args.encryption, args.auth) as client:
        ops = _ops(client, args.n)
        for name in args.ops.split(","):
            await _drive(ops[name], args.requests // 5, args.concurrency)  # warm-up
            profiles = await _profiling(client.app) if name == args.profile else {}
            before = await _thread_times(client.app)
            cpu, failed = await _drive(ops[name], args.requests, args.concurrency)
            after = await _thread_times(client.app)
            for profile in profiles.values():
                await profile.stop()
            threads = ", ".join(f"{thread} {(after[thread] - before[thread]) / args.requests * 1e6:,.0f}"
                                for thread in before)
            print(f"{name}: {cpu / args.requests * 1e6:,.0f} CPU µs/request, {failed} failed "
                  f"(of which {threads})")
            for thread, profile in profiles.items():
                print(f"--- {thread}: {profile.seconds() / args.requests * 1e6:,.0f} profiled µs/request")
                pstats.Stats(profile.profile).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="Patients seeded")
    parser.add_argument("--requests", type=int, default=3000, help="measured requests per op")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--ops", default="read,create,search")
    parser.add_argument("--profile", default="", help="op to profile")
    parser.add_argument("--sort", default="tottime", help="pstats sort key")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--encryption", action=argparse.BooleanOptionalAction, default=True,
                        help="stored bodies encrypted (the default) or not")
    parser.add_argument("--auth", action="store_true", help="a SMART token on every request")
    asyncio.run(main(parser.parse_args()))
