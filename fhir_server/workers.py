"""Worker processes for `fhir-server serve --workers N`, each listening on its own socket.

uvicorn's supervisor binds one socket that all its workers share: the worker that wakes first
accepts a whole burst of new connections, and since EHRs keep their connections open, one
worker can end up serving every client while the others idle (measured: 20 pushing clients,
20 connections on one worker of two). Here each worker binds the port itself with
SO_REUSEPORT, and the kernel spreads new connections over the workers' sockets.

The supervisor restarts a worker that dies, and stops everything if one cannot start. Each
process tunes its garbage collector once the application is loaded (`settle_heap`).
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import logging
import os
import multiprocessing
import signal
import socket
import sys
import tempfile
import threading
import time
from multiprocessing.context import SpawnProcess
from pathlib import Path

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from .logs import configure

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no state shared by fork


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT, not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def settle_heap() -> None:
    """Tune the garbage collector for a server process whose application is loaded.

    A request allocates containers by the hundred thousand (a parsed Bundle and its
    validation), nearly all freed by reference counting. With Python's default thresholds
    (700, 10, 10) a full collection ran every few Bundles, each walking every live object,
    the imported FHIR models included: about 12% of a worker's CPU while ingesting. What
    start-up made is frozen (never garbage), and collections run less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _claim(host: str, port: int) -> int:
    """An exclusive lock on (host, port) for this user: with SO_REUSEPORT a second server
    on the same port would otherwise start and share the connections. OSError if taken."""
    path = Path(tempfile.gettempdir()) / f"fhir-server-{os.getuid()}-{host}-{port}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise OSError(f"another server holds {host}:{port}") from None
    return fd


def _die_with(parent: int) -> None:
    """Ask Linux to send SIGTERM when the supervisor dies (even by SIGKILL): orphaned
    workers would keep serving the port beside the next server."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # died before prctl took effect
        sys.exit(STARTUP_FAILURE)


def _worker(config: uvicorn.Config, log_level: str, parent: int) -> None:
    _die_with(parent)
    configure(log_level)
    try:
        sock = _bind(config.host, config.port)
        sock.listen(config.backlog)
        config.load()  # builds the application; uvicorn exits with status 1 if it cannot
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - reported, then a clean exit
        # Told apart from a crash while serving, so the supervisor stops instead of
        # starting the same failure again and again.
        log.error("worker cannot start", extra={"error": repr(exc)})
        sys.exit(STARTUP_FAILURE)
    settle_heap()
    uvicorn.Server(config).run(sockets=[sock])


def run(config: uvicorn.Config, workers: int, log_level: str) -> int:
    """Serve `config` with `workers` processes until SIGINT or SIGTERM; the exit status."""
    if workers == 1:
        config.load()
        settle_heap()
        uvicorn.Server(config).run()
        return 0
    try:
        # Held, never listened on, until the end: the port is ours, and a port in use fails here.
        lock = _claim(config.host, config.port)
        claim = _bind(config.host, config.port)
    except OSError as exc:
        log.error("cannot listen", extra={"host": config.host, "port": config.port, "error": str(exc)})
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    processes = [_start(config, log_level) for _ in range(workers)]
    status = 0
    try:
        while not stop.wait(0.5):
            for index, process in enumerate(processes):
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    log.error("a worker could not start; stopping")
                    status = 1
                    stop.set()
                    break
                log.error("worker exited; starting another", extra={"exitcode": process.exitcode})
                processes[index] = _start(config, log_level)
    finally:
        for process in processes:
            process.terminate()  # SIGTERM: uvicorn finishes requests in flight
        deadline = time.monotonic() + (config.timeout_graceful_shutdown or 30)
        for process in processes:  # one grace period for all, not one each
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        claim.close()
        os.close(lock)
    return status


def _start(config: uvicorn.Config, log_level: str) -> SpawnProcess:
    process = _spawn.Process(target=_worker, args=(config, log_level, os.getpid()))
    process.start()
    return process
