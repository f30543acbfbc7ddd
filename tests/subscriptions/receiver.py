"""A notification receiver on loopback, run in a thread: it keeps what it is sent and answers
what the test programs (`answers`, one status per request, then 200; 0: drop the
connection; `down`: drop them all)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def kind(self) -> str:
        """The notification type of a backport notification Bundle."""
        parameters = self.json()["entry"][0]["resource"]["parameter"]
        return next(str(p["valueCode"]) for p in parameters if p["name"] == "type")

    @property
    def numbers(self) -> list[int]:
        parameters = self.json()["entry"][0]["resource"]["parameter"]
        return [int(part["valueString"]) for p in parameters if p["name"] == "notification-event"
                for part in p["part"] if part["name"] == "event-number"]


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    down: bool = False  # drop every connection unanswered
    delay: float = 0.0  # seconds before each answer
    dropped: int = 0

    def of_kind(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.method == "POST" and r.body and r.kind == kind]


@contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(state.delay)
            answer = 0 if state.down else state.answers.pop(0) if state.answers else 200
            if answer == 0:
                state.dropped += 1  # the receiver is down: no answer at all
                self.close_connection = True
                self.connection.close()
                return
            state.received.append(Received(self.command, self.path, dict(self.headers), body))
            self.send_response(answer)
            if 300 <= answer < 400:
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = _any

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
