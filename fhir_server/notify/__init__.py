"""Reminders and notifications to people (docs/notifications.md): the durable scheduler of
time-based triggers, the e-mail and SMS channels, the fr/en templates, and what is sent when
(referral reminders, new-message notices)."""

from . import runner
from .messages import Messages
from .runner import schedule_of
from .scheduler import Handler, Item, Retry, Scheduler, cancel, enqueue

__all__ = ["Handler", "Item", "Messages", "Retry", "Scheduler", "cancel", "enqueue", "runner", "schedule_of"]
