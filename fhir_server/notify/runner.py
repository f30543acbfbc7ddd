"""The notification machinery as the settings configure it: channels, the referral reminder
policy, and the scheduler task the server runs beside HTTP (app.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import cast
from urllib.parse import urlsplit

from ..services.context import Context
from ..services.notifications import Record
from ..services.server_writes import as_server
from ..settings import Settings
from ..store.base import Store
from ..store.schedule import Schedule, Scheduling
from .channels import Channel, HttpSmsGateway, SmtpChannel, SmtpSettings
from .delivery import Delivery, SignInCodes
from .purge import purge
from .reminders import KIND, Policy, Reminders, settled
from .scheduler import NOTICE, Handler, Scheduler

log = logging.getLogger("fhir_server.notify")


CATCH_UP_SECONDS = 3600.0  # between two catch-ups of referral reminders


def schedule_of(store: Store) -> Schedule:
    """The schedule of the store the server runs on (store/schedule.py)."""
    return cast(Scheduling, store).schedule


def policy(settings: Settings) -> Policy:
    return Policy(settings.referral_reminder_days, settings.referral_reminder_repeat_days,
                  settings.referral_reminder_count)


def link(settings: Settings) -> str:
    """Where messages point: the portal, else the origin of the server's base URL."""
    parts = urlsplit(settings.base_url)
    return settings.notify_link or f"{parts.scheme}://{parts.netloc}/"


def smtp(settings: Settings) -> SmtpChannel | None:
    """The e-mail channel, when an SMTP relay is configured."""
    if not settings.smtp_host:
        return None
    return SmtpChannel(SmtpSettings(
        settings.smtp_host, settings.smtp_port, settings.smtp_sender, settings.smtp_user,
        settings.smtp_password.get_secret_value(), settings.smtp_starttls,
        str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
        timeout=min(30.0, settings.notify_lease_seconds / 3)))


def channels(settings: Settings) -> dict[str, Channel]:
    """The channels configured, by name."""
    found: dict[str, Channel] = {}
    if (email := smtp(settings)) is not None:
        found["email"] = email
    if settings.sms_gateway_url:
        found["sms"] = HttpSmsGateway(settings.sms_gateway_url,
                                      settings.sms_gateway_token.get_secret_value())
    return found


def code_sender(settings: Settings, ctx: Context,
                record: Record) -> Callable[[str, str, int, str], Awaitable[bool]] | None:
    """What sends sign-in codes by e-mail (auth/email_codes.py), when an SMTP relay is
    configured: at once, not through the schedule (the person is waiting), audited."""
    channel = smtp(settings)
    if channel is None:
        return None
    return SignInCodes(as_server(ctx, "notifications"), schedule_of(ctx.store), channel,
                       link(settings), record).send


def reminders(settings: Settings, store: Store) -> Reminders:
    return Reminders(schedule_of(store), policy(settings))


def scheduler(settings: Settings, ctx: Context, record: Record) -> Scheduler:
    """The scheduler of the server behind `ctx`, acting as the server itself."""
    server = as_server(ctx, "notifications")
    schedule = schedule_of(ctx.store)
    delivery = Delivery(server, schedule, channels(settings), link(settings), record)
    handlers: dict[str, Handler] = {
        NOTICE: delivery, KIND: partial(reminders(settings, ctx.store).handler, server)}
    return Scheduler(schedule, handlers, lease_seconds=settings.notify_lease_seconds)


async def _catch_up(settings: Settings, ctx: Context, every: float) -> None:
    """Schedule what a crash may have left unscheduled, at start and every `every` seconds:
    a referral whose hook failed is caught up without waiting for a restart; then delete
    the finished items no one can enqueue again (purge.py)."""
    while True:
        try:
            await reminders(settings, ctx.store).catch_up(as_server(ctx, "notifications"))
            await purge(as_server(ctx, "notifications"), schedule_of(ctx.store))
        except Exception:  # the store is away: tried again at the next turn
            log.exception("referral reminders could not be caught up")
        await asyncio.sleep(every)


async def run(settings: Settings, ctx: Context, record: Record,
              catch_up_seconds: float = CATCH_UP_SECONDS) -> None:
    """Catch up the reminders (now and on a timer) and send what falls due, until
    cancelled (the server's lifespan)."""
    if not channels(settings):
        log.warning("no notification channel is configured (FHIR_SERVER_SMTP_HOST, "
                    "FHIR_SERVER_SMS_GATEWAY_URL): reminders are kept until one is")
    catching = asyncio.get_running_loop().create_task(_catch_up(settings, ctx, catch_up_seconds))
    try:
        await scheduler(settings, ctx, record).run_forever(settings.notify_poll_seconds)
    finally:
        catching.cancel()
        await asyncio.gather(catching, return_exceptions=True)


def start(settings: Settings, ctx: Context, record: Record) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(run(settings, ctx, record))


async def stop(task: asyncio.Task[None]) -> None:
    """Stop the scheduler `start` returned, and let the referral hook's writes finish
    (before the store closes)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await settled()
