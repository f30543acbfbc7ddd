"""Subscriptions (R5 Backport IG 1.1.0 on R4, and classic R4 rest-hooks): topics, what a
Subscription asks for, the events a write leaves in the store's outbox, and their delivery."""

from .capabilities import subscription_capabilities
from .capture import SubscribedStore, Watch
from .criteria import CONTENTS, FILTER_CRITERIA, Content, Plan, Policy, check_new
from .delivery import Sender
from .dispatcher import Dispatcher, Timing
from .notifications import notification, status_parameters
from .records import Event, dump, one, owner_key, state, state_key
from .records import numbered as kept_events

__all__ = ["CONTENTS", "FILTER_CRITERIA", "Content", "Dispatcher", "Event", "Plan", "Policy", "Sender",
           "SubscribedStore", "Timing", "Watch", "check_new", "dump", "kept_events", "notification",
           "one", "owner_key", "state", "state_key", "status_parameters", "subscription_capabilities"]
