"""A real uvicorn process (two workers) on a free loopback port, started per module."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from fhir_server.auth.keys import SigningKeys
from fhir_server.auth.registry import Registry as AuthRegistry
from fhir_server.auth.tokens import TokenService

# A wait, not a timing: two workers starting on a machine busy with other tests take long.
READY_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A running `fhir-server serve` process and its base URL."""

    def __init__(
        self, data_dir: Path, *, workers: int = 2, demo: bool = False, log_level: str = "warning",
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "FHIR_SERVER_DATA_DIR": str(data_dir),
            "FHIR_SERVER_BASE_URL": f"{self.base}/fhir",
            "FHIR_SERVER_LOG_LEVEL": log_level,
            **(env or {}),
        }
        args = [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(self.port),
                "--workers", str(workers)]
        if demo:
            args.append("--demo")
        self.data_dir = data_dir
        self.log = (data_dir / "server.log").open("wb")
        self.process = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.process.kill()  # else it outlives the test run, serving on its port
        self.process.wait()
        raise RuntimeError(f"server did not become ready in {READY_SECONDS} s")

    def token(self, scope: str = "system/*.cruds", subject: str = "e2e", **claims: str) -> str:
        """An access token this server accepts, signed with the key file it shares; `claims`:
        `patient`, `fhir_user`."""
        tokens = TokenService(
            SigningKeys(self.data_dir / "signing-keys.json", 300),
            AuthRegistry(self.data_dir / "auth.db"),
            issuer=f"{self.base}/auth", audience=f"{self.base}/fhir", lifetime=300)
        return str(tokens.issue(subject=subject, client_id="e2e", scope=scope, **claims)["access_token"])

    def auth(self) -> dict[str, str]:
        """The Authorization header of a token with every system scope."""
        return {"Authorization": f"Bearer {self.token()}"}

    def client(self, **options: Any) -> httpx.Client:
        """An HTTP client of the FHIR endpoint, authorised with every system scope."""
        return httpx.Client(base_url=f"{self.base}/fhir", headers=self.auth(), **options)

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(timeout=30)
        self.log.close()
        return code


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("e2e"))
    yield running
    running.stop()
