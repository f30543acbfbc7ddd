"""The server's one clock: the time stamped on versions (meta.lastUpdated), AuditEvents,
Bundles, Communications and tokens, and the "today" of consent periods, is read here.

Reading it in one place keeps those times consistent with each other and lets a test freeze
or move time (`frozen`) for all of them at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _system() -> datetime:
    return datetime.now(UTC)


_read: Callable[[], datetime] = _system


def now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return _read()


def instant(moment: datetime | None = None) -> str:
    """`moment` (default: now) as a FHIR instant with microseconds."""
    return (moment or _read()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def micros(moment: datetime) -> int:
    """`moment` as microseconds since the epoch."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def instant_and_micros() -> tuple[str, int]:
    """One reading of the clock as a FHIR instant and as microseconds since the epoch."""
    moment = _read()
    return instant(moment), micros(moment)


def seconds() -> float:
    """Seconds since the epoch (token `iat`/`exp`)."""
    return _read().timestamp()


def today() -> str:
    """Today's date in UTC, as a FHIR date."""
    return _read().date().isoformat()


class Frozen:
    """A stopped clock that a test moves by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@contextmanager
def frozen(at: datetime) -> Iterator[Frozen]:
    """For tests: every reading of the clock returns `at` (moved by `advance`) in the block."""
    global _read
    clock = Frozen(at)
    _read = clock
    try:
        yield clock
    finally:
        _read = _system
