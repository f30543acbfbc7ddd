"""The scheduler (notify/scheduler.py) on every store, on a simulated clock: items are handled
once when due, retried with backoff when a handler fails, never lost when a claimer dies; the
referral hook schedules per policy and never fails a committed write."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from fhir_server import clock
from fhir_server.app import build_context
from fhir_server.settings import Settings
from fhir_server.notify import Item, Retry, Scheduler, cancel, enqueue
from fhir_server.notify.scheduler import FAILURES_SET_ASIDE, NOTICE, backoff
from fhir_server.audit.outbox import AuditedStore, Intent, Settled
from fhir_server.audit.trail import Trail
from fhir_server.model import platform_codes as codes
from fhir_server.notify import runner
from fhir_server.notify.reminders import Policy, Reminders, settled
from fhir_server.store.base import Store, Version
from tests.notify.conftest import scheduling

pytestmark = pytest.mark.anyio
START = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)


class Recorder:
    """A handler that records what it was given and fails while `failing`."""

    def __init__(self) -> None:
        self.seen: list[Item] = []
        self.failing = False

    async def __call__(self, item: Item) -> None:
        if self.failing:
            raise Retry("channel down")
        self.seen.append(item)


async def test_a_notice_is_handled_once_when_due(store: Store) -> None:
    schedule, handler = scheduling(store).schedule, Recorder()
    with clock.frozen(START) as now:
        assert await enqueue(schedule, person="Practitioner/1", template="new-message",
                             params={}, not_before=START + timedelta(days=5), key="m/1")
        assert not await enqueue(schedule, person="Practitioner/1", template="new-message",
                                 params={}, not_before=START, key="m/1")
        scheduler = Scheduler(schedule, {NOTICE: handler})
        now.advance(timedelta(days=5).total_seconds() - 1)
        assert await scheduler.run_due() == 0
        now.advance(1)
        assert await scheduler.run_due() == 1
        assert await scheduler.run_due() == 0
        now.advance(timedelta(days=3650).total_seconds())
        assert await scheduler.run_due() == 0
    [item] = handler.seen
    assert (item.key, item.kind, item.attempts) == ("m/1", NOTICE, 1)
    assert item.data == {"person": "Practitioner/1", "template": "new-message", "params": {}}


async def test_a_failing_handler_gets_the_item_back_later(store: Store) -> None:
    schedule, handler = scheduling(store).schedule, Recorder()
    scheduler = Scheduler(schedule, {NOTICE: handler})
    handler.failing = True
    with clock.frozen(START) as now:
        await enqueue(schedule, person="Patient/1", template="new-message", params={},
                      not_before=START, key="m/1")
        for _ in range(12):  # twelve failures: backoff grows to an hour, nothing is dropped
            assert await scheduler.run_due() == 0
            now.advance(30)
            assert await scheduler.run_due() == 0
            now.advance(timedelta(hours=1, minutes=7).total_seconds())
        handler.failing = False
        assert await scheduler.run_due() == 1
    assert [i.attempts for i in handler.seen] == [13]


async def test_an_item_claimed_by_a_dead_process_is_sent_once_after_its_lease(store: Store) -> None:
    schedule, handler = scheduling(store).schedule, Recorder()
    with clock.frozen(START) as now:
        await enqueue(schedule, person="Patient/1", template="new-message", params={},
                      not_before=START, key="m/1")
        # a process claims the item and dies before sending it
        assert len(await schedule.claim(clock.micros(START), clock.micros(START) + 120_000_000,
                                        "dead", 10)) == 1
        survivor = Scheduler(schedule, {NOTICE: handler}, lease_seconds=120)
        assert await survivor.run_due() == 0
        now.advance(120)
        assert await survivor.run_due() == 1
        assert await survivor.run_due() == 0
    assert len(handler.seen) == 1


async def test_cancelled_items_are_not_handled(store: Store) -> None:
    schedule, handler = scheduling(store).schedule, Recorder()
    with clock.frozen(START) as now:
        for n in (1, 2):
            await enqueue(schedule, person="Patient/1", template="new-message", params={},
                          not_before=START + timedelta(days=n), key=f"ref/9/{n}")
        assert await cancel(schedule, "ref/9/") == 2
        now.advance(timedelta(days=3).total_seconds())
        assert await Scheduler(schedule, {NOTICE: handler}).run_due() == 0
    assert handler.seen == []


def test_backoff_doubles_from_a_minute_up_to_an_hour() -> None:
    assert timedelta(minutes=1) <= backoff(1) <= timedelta(minutes=1.1)
    assert timedelta(minutes=8) <= backoff(4) <= timedelta(minutes=8.8)
    assert timedelta(hours=1) <= backoff(30) <= timedelta(hours=1.1)


async def test_a_failing_schedule_does_not_fail_the_committed_referral(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def enqueue(self, items: object) -> list[str]:
            raise OSError("disk full")

    referral = {"resourceType": "Communication", "id": "r1", "status": "in-progress",
                "sent": "2027-01-04T09:00:00Z",
                "statusReason": {"coding": [{"system": codes.OUTCOME_SYSTEM, "code": "referred"}]},
                "category": [{"coding": [{"system": codes.MESSAGE_SYSTEM, "code": codes.REFERRAL}]}]}
    version = Version("Communication", "r1", 1, "2027-01-04T09:00:00Z", "POST",
                      orjson.dumps(referral))
    await Reminders(Broken(), Policy()).after_commit(None, [version])  # type: ignore[arg-type]
    await settled()
    assert "referral reminders not updated" in caplog.text
    working = Reminders(scheduling(store).schedule, Policy(5, 7, 2))
    await working.after_commit(None, [version])  # type: ignore[arg-type]
    await settled()
    items = await scheduling(store).schedule.items("referral/r1/")
    assert [(i.key, i.due) for i in items] == [
        ("referral/r1/1", clock.micros(START + timedelta(days=5))),
        ("referral/r1/2", clock.micros(START + timedelta(days=12)))]


async def test_a_request_reaches_the_schedule_of_its_store(store: Store) -> None:
    """What a request sees as its store (audit/outbox.py) passes the schedule through."""
    audited = AuditedStore(store, Trail(), Intent("test", lambda trail: []), Settled())
    await enqueue(runner.schedule_of(audited), person="Patient/1", template="new-message",
                  params={}, not_before=START, key="m/1")
    assert [i.key for i in await scheduling(store).schedule.items("m/")] == ["m/1"]


async def test_an_item_that_cannot_be_read_is_set_aside_and_blocks_nothing(store: Store) -> None:
    """A body that is not an item (or whose key is gone) fails inside the error handling:
    the later items are sent, and after FAILURES_SET_ASIDE faults it is set aside as failed,
    claimed no more, visible to the operator."""
    schedule, handler = scheduling(store).schedule, Recorder()
    scheduler = Scheduler(schedule, {NOTICE: handler}, lease_seconds=60)
    with clock.frozen(START) as now:
        await schedule.enqueue([("bad/1", clock.micros(START - timedelta(days=1)), b'{"oops": 1}')])
        await enqueue(schedule, person="Practitioner/1", template="new-message", params={},
                      not_before=START, key="good/1")
        for _ in range(FAILURES_SET_ASIDE + 2):
            await scheduler.run_due()
            now.advance(3600)
    assert [i.key for i in handler.seen] == ["good/1"]
    [bad] = await schedule.items("bad/")
    assert bad.state == "failed" and bad.attempts == FAILURES_SET_ASIDE
    assert [d.key for d in await schedule.failed()] == ["bad/1"]


async def test_a_channel_down_is_retried_without_end(store: Store) -> None:
    """Only faults set an item aside: Retry (a channel down) never does."""
    schedule, handler = scheduling(store).schedule, Recorder()
    handler.failing = True
    scheduler = Scheduler(schedule, {NOTICE: handler})
    with clock.frozen(START) as now:
        await enqueue(schedule, person="Patient/1", template="new-message", params={},
                      not_before=START, key="m/1")
        for _ in range(FAILURES_SET_ASIDE + 2):
            await scheduler.run_due()
            now.advance(7200)
    [item] = await schedule.items("m/")
    assert item.state == "pending"


async def test_an_item_whose_lease_ran_out_while_waiting_in_its_batch_is_not_sent(
        store: Store) -> None:
    """A slow send (a relay timing out) lets the lease of the next items of the batch run
    out; another process claims and sends them: the first must not send them too."""
    schedule = scheduling(store).schedule
    sends: list[tuple[str, str]] = []
    with clock.frozen(START) as now:
        for n in range(2):
            await enqueue(schedule, person="Practitioner/1", template="new-message", params={},
                          not_before=START, key=f"m/{n}")

        async def fast(item: Item) -> None:
            sends.append(("B", item.key))

        other = Scheduler(schedule, {NOTICE: fast}, lease_seconds=120)

        async def slow(item: Item) -> None:
            sends.append(("A", item.key))
            if item.key == "m/0":
                now.advance(121)
                await other.run_due()

        await Scheduler(schedule, {NOTICE: slow}, lease_seconds=120, batch=2).run_due()
    assert [key for _, key in sends].count("m/1") == 1, sends


async def test_a_notice_to_anything_but_a_person_is_refused(store: Store) -> None:
    schedule = scheduling(store).schedule
    for person in ("Organization/1", "Practitioner/", "Patient/1/_history/2", "nobody"):
        with pytest.raises(ValueError, match="person"):
            await enqueue(schedule, person=person, template="new-message", params={},
                          not_before=START, key=f"bad/{person}")
    assert await schedule.items("bad/") == []


async def test_reminders_are_caught_up_on_a_timer_not_only_at_start(
        store: Store, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    turns: list[float] = []

    async def catch_up(self: Reminders, ctx: Any) -> None:
        turns.append(time.monotonic())
    monkeypatch.setattr(Reminders, "catch_up", catch_up)
    settings = Settings(data_dir=tmp_path, notify_poll_seconds=3600)

    async def record(event: dict[str, Any]) -> str:
        return "1"
    task = asyncio.create_task(runner.run(settings, build_context(settings, store), record,
                                          catch_up_seconds=0.02))
    await asyncio.sleep(0.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(turns) >= 3
