"""`fhir-server serve --workers N`: each worker listens on its own SO_REUSEPORT socket, so the
kernel spreads client connections over the workers (fhir_server/workers.py).

Which worker holds a connection is read from /proc: the socket inodes each worker process has
open, matched with the established TCP connections of the server's port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.conftest import Server, _free_port


def _workers(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            # Not multiprocessing's resource tracker, the other child of the supervisor.
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"spawn_main" in cmdline:
                children.append(int(entry))
    return children


def _established_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _connections_per_worker(server: Server) -> dict[int, int]:
    established = _established_inodes(server.port)
    return {pid: len(_socket_inodes(pid) & established) for pid in _workers(server.process.pid)}


def test_keep_alive_connections_are_spread_over_the_workers(tmp_path: Path) -> None:
    server = Server(tmp_path, workers=2)
    # A burst of connections, as EHR clients starting together make: all are queued by the
    # kernel before any worker accepts one. They stay open (keep-alive) after a request each.
    connections = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
    try:
        for connection in connections:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        for connection in connections:
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
        counts = _connections_per_worker(server)
        assert len(counts) == 2 and sum(counts.values()) == 40, counts
        # On a shared socket one worker took the whole burst; the kernel's spread over
        # SO_REUSEPORT sockets is about even (fewer than 8 of 40 on one side: 4 in 100,000).
        assert min(counts.values()) >= 8, counts
    finally:
        for connection in connections:
            connection.close()
        assert server.stop() == 0


def test_a_worker_that_dies_is_replaced(tmp_path: Path) -> None:
    server = Server(tmp_path, workers=2)
    try:
        first, second = _workers(server.process.pid)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _workers(server.process.pid)
            if len(now) == 2 and first not in now:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("no worker replaced the one that died")
        assert second in now
        with server.client() as http:
            for _ in range(10):
                assert http.get("/metadata").status_code == 200
    finally:
        assert server.stop() == 0


def test_a_port_in_use_stops_the_server_at_once(tmp_path: Path) -> None:
    port = _free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        env = {**os.environ, "FHIR_SERVER_DATA_DIR": str(tmp_path), "FHIR_SERVER_LOG_LEVEL": "warning"}
        process = subprocess.run(
            [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(port), "--workers", "2"],
            env=env, capture_output=True, timeout=60)
    assert process.returncode == 1
    assert b"cannot listen" in process.stderr


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    env = {**os.environ, "FHIR_SERVER_DATA_DIR": str(tmp_path), "FHIR_SERVER_LOG_LEVEL": "warning",
           "FHIR_SERVER_STORE": "nosuchstore://anywhere"}
    process = subprocess.run(
        [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(_free_port()), "--workers", "2"],
        env=env, capture_output=True, timeout=60)
    assert process.returncode == 1
    assert b"worker cannot start" in process.stderr
    assert b"a worker could not start; stopping" in process.stderr


def test_a_second_server_on_the_same_port_is_refused(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    first = Server(tmp_path / "one", workers=2)
    try:
        env = {**os.environ, "FHIR_SERVER_DATA_DIR": str(tmp_path / "two"), "FHIR_SERVER_LOG_LEVEL": "warning"}
        second = subprocess.run(
            [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(first.port), "--workers", "2"],
            env=env, capture_output=True, timeout=60)
        assert second.returncode == 1
        assert b"cannot listen" in second.stderr
    finally:
        assert first.stop() == 0


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    server = Server(tmp_path, workers=2)
    workers = _workers(server.process.pid)
    server.process.kill()
    server.process.wait()
    server.log.close()
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() and b"spawn_main" in _cmdline(pid) for pid in workers):
        assert time.monotonic() < deadline, "orphaned workers kept running"
        time.sleep(0.2)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
