"""The SQLite writers' file lock (store/sqlite/lock.py): one holder at a time, across
processes; a waiter gets the lock as soon as it is released, or BUSY after its timeout."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from fhir_server.model.errors import FhirError, Kind
from fhir_server.store.sqlite.lock import WriterLock


def test_a_second_holder_waits_for_the_first(tmp_path: Path) -> None:
    first, second = WriterLock(tmp_path / "w", 5), WriterLock(tmp_path / "w", 5)
    first.acquire()
    taken = threading.Event()

    def wait() -> None:
        second.acquire()
        taken.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert not taken.wait(0.2)
    first.release()
    assert taken.wait(5)
    waiter.join()
    second.release()
    first.close()
    second.close()


def test_busy_after_the_timeout(tmp_path: Path) -> None:
    holder, waiter = WriterLock(tmp_path / "w", 5), WriterLock(tmp_path / "w", 0.1)
    holder.acquire()
    with pytest.raises(FhirError) as busy:
        waiter.acquire()
    assert busy.value.kind is Kind.BUSY
    holder.release()
    waiter.acquire()  # free again
    waiter.release()
    holder.close()
    waiter.close()


def test_the_lock_of_a_process_that_dies_is_released(tmp_path: Path) -> None:
    path = tmp_path / "w"
    script = (f"from fhir_server.store.sqlite.lock import WriterLock\nfrom pathlib import Path\n"
              f"WriterLock(Path({str(path)!r}), 5).acquire()\nprint('held', flush=True)\n"
              "import time; time.sleep(60)\n")
    lock = WriterLock(path, 0.2)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE) as other:
        try:
            assert other.stdout is not None and other.stdout.readline() == b"held\n"
            with pytest.raises(FhirError):
                lock.acquire()
        finally:
            other.kill()
    started = time.monotonic()
    lock.timeout = 5
    lock.acquire()
    assert time.monotonic() - started < 5
    lock.release()
    lock.close()


def test_processes_opening_a_new_store_together_all_succeed(tmp_path: Path) -> None:
    # Two workers starting at once used to race on `PRAGMA journal_mode = WAL` and fail with
    # "database is locked" whatever the busy timeout.
    script = ("import asyncio, sys, time\nfrom pathlib import Path\n"
              "from fhir_server.store.sqlite import SqliteStore\n"
              "async def main():\n"
              "    store = SqliteStore(Path(sys.argv[1]))\n"
              "    print('ready', flush=True)\n"
              "    while not Path(sys.argv[2]).exists():\n"
              "        time.sleep(0.001)\n"
              "    await store.open()\n"
              "    await store.close()\n"
              "asyncio.run(main())\n")
    for round in range(5):
        path, go = tmp_path / f"store{round}.db", tmp_path / f"go{round}"
        with ExitStack() as running:
            processes = [running.enter_context(subprocess.Popen(
                [sys.executable, "-c", script, str(path), str(go)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)) for _ in range(6)]
            for process in processes:  # every one imported and waiting: then all open at once
                assert process.stdout is not None and process.stdout.readline() == b"ready\n"
            go.touch()
            for process in processes:
                _, error = process.communicate(timeout=60)
                assert process.returncode == 0, error.decode()[-500:]
