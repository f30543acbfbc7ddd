"""Subscriptions (R5 Backport IG 1.1.0 on R4, and classic R4 rest-hooks): topics, what a
Subscription asks for, the events a write leaves in the store's outbox, and their delivery."""

from .capabilities import subscription_capabilities

__all__ = ["subscription_capabilities"]
