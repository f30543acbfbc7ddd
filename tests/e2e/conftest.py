"""A real uvicorn process (two workers) on a free loopback port, started per module."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A running `fhir-server serve` process and its base URL."""

    def __init__(
        self, data_dir: Path, *, workers: int = 2, demo: bool = False, log_level: str = "warning"
    ) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "FHIR_SERVER_DATA_DIR": str(data_dir),
            "FHIR_SERVER_BASE_URL": f"{self.base}/fhir",
            "FHIR_SERVER_LOG_LEVEL": log_level,
        }
        args = [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(self.port),
                "--workers", str(workers)]
        if demo:
            args.append("--demo")
        self.log = (data_dir / "server.log").open("wb")
        self.process = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready in 30 s")

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
