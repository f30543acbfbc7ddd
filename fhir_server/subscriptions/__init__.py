"""Subscriptions (R5 Backport IG 1.1.0 on R4, and classic R4 rest-hooks): topics, what a
Subscription asks for, the events a write leaves in the store's outbox, and their delivery."""

from .capabilities import subscription_capabilities
from .capture import SubscribedStore, Watch
from .credentials import MASK, SECRET, unmask
from .credentials import load as load_credentials
from .criteria import CONTENTS, FILTER_CRITERIA, Content, Plan, Policy, check_new
from .delivery import Sender
from .dispatcher import Dispatcher, Timing
from .notifications import notification, status_parameters
from .records import (CREDENTIALS_PREFIX, TOLD_PREFIX, Event, dump, one, owner_key, pending_key, purged_key, state,
                      state_key)
from .records import forget as forget_events
from .records import numbered as kept_events
from .retention import purge as purge_events
from .retention import purged
from .retention import run as retain_events

__all__ = ["CONTENTS", "CREDENTIALS_PREFIX", "FILTER_CRITERIA", "MASK", "SECRET", "Content", "Dispatcher",
           "Event", "Plan", "Policy", "Sender", "SubscribedStore", "Timing", "Watch", "check_new", "dump",
           "forget_events", "kept_events", "load_credentials", "notification", "one", "owner_key", "pending_key",
           "purge_events", "purged", "purged_key", "retain_events", "state", "state_key",
           "status_parameters", "subscription_capabilities", "TOLD_PREFIX", "unmask"]
