"""The purge of finished schedule items (notify/purge.py, docs/notifications.md "Purge"), on
both stores: only items whose key nobody can enqueue again go, so that a purge followed by
the hourly rescan of waiting referrals never sends a reminder twice."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fhir_server import clock
from fhir_server.notify import runner
from fhir_server.notify.purge import purge
from fhir_server.notify.reminders import settled
from fhir_server.notify.scheduler import enqueue
from fhir_server.services.server_writes import as_server
from tests.notify.test_reminders import World, _refer, world  # noqa: F401 - the fixture
from tests.http.helpers import send

DAY = timedelta(days=1)


def _now(world: World) -> datetime:
    assert world.start is not None
    return world.start + world.days * DAY


def _purge_and_rescan(world: World) -> int:
    """A purge, then the hourly rescan, as the server runs them (runner._catch_up), once
    the commit hooks' schedule writes are done (an answer's cancellations run in a task of
    their own: under load, a purge before them finds nothing finished yet)."""
    app: Any = world.client.app
    server = as_server(app.state.context, "notifications")
    assert world.client.portal is not None
    world.client.portal.call(settled)
    with clock.frozen(_now(world)):
        purged = int(world.client.portal.call(purge, server, runner.schedule_of(server.store)))
        world.client.portal.call(runner.reminders(app.state.settings, server.store).catch_up, server)
    return purged


def _keys(world: World, prefix: str) -> dict[str, str]:
    app: Any = world.client.app
    assert world.client.portal is not None
    return {i.key: i.state for i in world.client.portal.call(app.state.schedule.items, prefix)}


def test_a_purge_then_the_rescan_never_sends_a_reminder_twice(world: World) -> None:
    waiting, answered = _refer(world), _refer(world)
    world.advance(5.01)  # the first reminder of each, to both recipients
    assert len(world.mail()) == 4
    assert world.answer(answered, "preselected", reason="Screening next week.").status_code == 201
    # The answered referral's items are all finished and it never waits again: they go.
    # The waiting one's stay: its keys keep the rescan from scheduling reminder 1 again.
    assert _purge_and_rescan(world) == 5  # reminder 1 sent, its 2 notices, reminders 2 and 3
    assert _keys(world, f"referral/{answered}/") == {}
    assert len(_keys(world, f"referral/{waiting}/")) == 5
    assert world.run_due() == 1  # the answer's new-message notice to the physician
    assert len(world.mail()) == 4
    for _ in range(4):  # days 10 and 15, then years: purges and rescans in between
        world.advance(5)
        _purge_and_rescan(world)
    world.advance(365 * 3)
    _purge_and_rescan(world)
    assert world.run_due() == 0
    assert len(world.mail()) == 4 + 4  # the waiting referral's reminders 2 and 3
    ids = [m["Message-ID"] for m in world.received()]
    assert len(ids) == len(set(ids)) == 8
    # Still waiting: its items are kept for good (a rescan would schedule them again).
    assert set(_keys(world, f"referral/{waiting}/").values()) == {"sent"}


def test_retention_warnings_go_once_their_day_is_past_and_post_mortem_ones_with_their_patient(
        world: World) -> None:
    _refer(world)  # sets the world's clock
    app: Any = world.client.app
    schedule = app.state.schedule
    portal = world.client.portal
    assert portal is not None
    today = _now(world).date()
    keys = [f"retention/accounts/jo/{today - 3 * DAY}", f"retention/accounts/jo/{today + 20 * DAY}",
            f"retention/tele-expertise/sr1/{today - 2 * DAY}", f"retention/tele-expertise/sr1/{today}",
            "retention/post-mortem/never-stored", "retention/post-mortem/kept", "other/thing"]
    assert send(world.client, "PUT", "/fhir/Patient/kept",
                {"resourceType": "Patient", "id": "kept"}).status_code == 201
    with clock.frozen(_now(world)):
        for key in keys:
            portal.call(lambda k=key: enqueue(schedule, person="Practitioner/dr-inv",
                                              template="new-message", params={},
                                              not_before=clock.now(), key=k))
        [pending] = [k for k in keys if k.endswith("/sr1/" + str(today))]
        portal.call(schedule.cancel, pending)
    world.run_due()  # the others are sent
    purged = _purge_and_rescan(world)
    assert purged == 3
    assert sorted(_keys(world, "retention/")) == sorted([
        f"retention/accounts/jo/{today + 20 * DAY}", f"retention/tele-expertise/sr1/{today}",
        "retention/post-mortem/kept"])
    assert "other/thing" in _keys(world, "other/")
