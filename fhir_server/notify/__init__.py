"""Reminders and notifications to people (docs/notifications.md): the durable scheduler of
time-based triggers, the e-mail and SMS channels, the fr/en templates, and what is sent when
(referral reminders)."""

from . import runner
from .runner import schedule_of
from .scheduler import Handler, Item, Retry, Scheduler, cancel, enqueue

__all__ = ["Handler", "Item", "Retry", "Scheduler", "cancel", "enqueue", "runner", "schedule_of"]
