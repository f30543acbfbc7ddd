"""The dispatcher reads the subscriptions served again every `poll` (subscriptions/dispatcher.py
`reload`); a Subscription a write of the same process serves meanwhile stays served: that read
may have been taken before the write, and would otherwise drop it until the next one, the
events of that second lost."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.search import default_registry
from fhir_server.subscriptions import Dispatcher, Policy, Sender, Watch
from fhir_server.subscriptions.criteria import plan
from tests.subscriptions.test_delivery import subscription

pytestmark = pytest.mark.anyio


class _Desk:
    """Its first read of the subscriptions predates the write of `late`, which this process
    serves while that read is under way; the reads after it find `late` stored."""

    def __init__(self, watch: Watch, late: dict[str, Any]) -> None:
        self.watch = watch
        self.late = late
        self.reads = 0

    async def served(self) -> list[dict[str, Any]]:
        self.reads += 1
        if self.reads > 1:
            return [self.late]
        self.watch.put(plan(self.late, self.watch.registry, self.watch.policy), self.late["id"])
        return []


async def test_a_subscription_served_during_a_reload_stays_served() -> None:
    watch = Watch(default_registry(), Policy())
    late = {**subscription("https://receiver.example/hook"), "id": "s1"}
    desk = _Desk(watch, late)
    await Dispatcher(None, watch, desk, Sender()).reload()  # type: ignore[arg-type]
    assert [found.id for found in watch.plans()] == ["s1"]
    assert desk.reads == 2
