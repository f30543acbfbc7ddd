"""The server's own backups (backup/schedule.py): one process backs up per turn, a fresh
archive or a held lock skips the turn, a failure is logged and the next turn tries again."""

from __future__ import annotations

import fcntl
import os
from datetime import timedelta
from pathlib import Path

import pytest

from fhir_server import clock
from fhir_server.backup.schedule import once
from fhir_server.backup.take import archive_name

pytestmark = pytest.mark.anyio


class Backups:
    def __init__(self, directory: Path, fail: bool = False) -> None:
        self.directory, self.fail, self.taken = directory, fail, 0

    async def __call__(self) -> None:
        if self.fail:
            raise OSError("disk full")
        self.taken += 1
        (self.directory / archive_name(clock.now())).touch()


async def test_a_turn_backs_up_then_the_next_one_finds_it_fresh(tmp_path: Path) -> None:
    backups = Backups(tmp_path)
    assert await once(24, tmp_path, backups) is True
    assert await once(24, tmp_path, backups) is False  # another worker's turn, same day
    assert backups.taken == 1


async def test_an_old_archive_does_not_skip_the_turn(tmp_path: Path) -> None:
    (tmp_path / archive_name(clock.now() - timedelta(hours=13))).touch()
    backups = Backups(tmp_path)
    assert await once(24, tmp_path, backups) is True and backups.taken == 1


async def test_a_held_lock_skips_the_turn(tmp_path: Path) -> None:
    fd = os.open(tmp_path / ".backup.lock", os.O_RDWR | os.O_CREAT, 0o600)  # another worker
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        backups = Backups(tmp_path)
        assert await once(24, tmp_path, backups) is False and backups.taken == 0
    finally:
        os.close(fd)


async def test_a_failure_is_logged_and_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert await once(24, tmp_path, Backups(tmp_path, fail=True)) is False
    assert "scheduled backup failed" in caplog.text
