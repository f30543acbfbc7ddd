"""The one duplicate SMTP leaves possible (docs/notifications.md, "Crashes"), kept as small as
it can be: once the relay has answered 250 to the DATA the message counts as sent, whatever
QUIT then gets; and a process killed after that answer but before the item is recorded as
sent has it sent again after the lease with the very same Message-ID, on both stores, so the
receiving MTA or mail reader can drop the copy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fhir_server import clock
from fhir_server.notify.channels import SmtpChannel, SmtpSettings
from fhir_server.notify.delivery import Delivery
from fhir_server.notify.scheduler import NOTICE, Item, Scheduler, enqueue
from fhir_server.store.base import Store
from tests.notify.conftest import scheduling
from tests.notify.mail import SmtpServer
from tests.notify.test_channels import MESSAGE
from tests.notify.test_delivery import Events, _context

pytestmark = pytest.mark.anyio
LEASE = 120.0


def _channel(server: SmtpServer, timeout: float = 5) -> SmtpChannel:
    return SmtpChannel(SmtpSettings("127.0.0.1", server.port, "platform@oncotrials.example",
                                    ca_file=str(server.ca_file), timeout=timeout))


@pytest.mark.parametrize("answer, delay", [("421 4.4.2 closing", 0.0), ("221 Bye", 3.0)])
async def test_a_message_the_relay_accepted_is_sent_whatever_quit_gets(
        tmp_path: Path, answer: str, delay: float) -> None:
    """A QUIT refused or unanswered within the timeout must not make the message go again."""
    with SmtpServer(tmp_path) as server:
        server.mailbox.quit_answer, server.mailbox.quit_delay = answer, delay
        await _channel(server, timeout=1).send(MESSAGE)
        assert len(server.mailbox.received) == 1


class Killed(BaseException):
    """The process dies (kill -9): nothing after this point runs, no handler catches it."""


async def test_a_send_not_recorded_goes_again_with_the_same_message_id(store: Store, tmp_path: Path) -> None:
    ctx, schedule, events = await _context(store, tmp_path), scheduling(store).schedule, Events()
    start = datetime(2027, 3, 1, 9, tzinfo=UTC)
    with SmtpServer(tmp_path) as server:
        delivery = Delivery(ctx, schedule, {"email": _channel(server)}, "https://portal.example/", events)

        async def dies_after_the_relay_accepted(item: Item) -> None:
            await delivery(item)
            raise Killed

        with clock.frozen(start) as frozen:
            await enqueue(schedule, person="Practitioner/both", template="new-message", params={},
                          not_before=start, key="referral/r1/1/Practitioner/both")
            with pytest.raises(Killed):
                await Scheduler(schedule, {NOTICE: dies_after_the_relay_accepted},
                                lease_seconds=LEASE).run_due()
            [held] = await schedule.items("referral/r1/")
            assert held.state == "claimed" and len(server.mailbox.received) == 1
            restarted = Scheduler(schedule, {NOTICE: delivery}, lease_seconds=LEASE)
            assert await restarted.run_due() == 0  # the dead process's lease still holds it
            frozen.advance(LEASE + 1)
            assert await restarted.run_due() == 1
            frozen.advance(timedelta(days=1).total_seconds())
            assert await restarted.run_due() == 0
        first, again = server.mailbox.received
        assert first["Message-ID"] == again["Message-ID"]
        assert first["Message-ID"].endswith("@oncotrials.example>") and "r1" not in first["Message-ID"]
        [done] = await schedule.items("referral/r1/")
        assert done.state == "sent"
        assert [code for code, _ in events.codes()] == ["sent", "sent"]
