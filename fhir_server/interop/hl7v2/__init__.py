"""HL7 v2 over MLLP (docs/hl7v2.md): the listener, the inbox of received messages, and the
declarative maps of mappings/hl7v2/ that turn each message into one FHIR transaction."""

from __future__ import annotations

from ...services.auditing import AuditRecorder
from ...services.context import Context
from ...settings import Settings
from .inbox import APPLIED, ERASED, ERROR, RECEIVED, Codec, Inbox, SealedInboxError, Stored
from .listener import Listener
from .mapping import MappingFileError, Mappings, load
from .receiver import Receiver
from .upkeep import expire, forget_patient, keep

INBOX = "hl7v2.db"


def receiver_for(settings: Settings, ctx: Context, recorder: AuditRecorder, codec: Codec) -> Receiver:
    """A Receiver on the store behind `ctx`, its inbox in the data directory, sealed by
    `codec` (the store's body codec)."""
    mappings = load()  # first: maps that do not load leave no inbox open
    return Receiver(ctx, recorder, Inbox(settings.data_dir / INBOX, codec), mappings)


def listener_for(settings: Settings, ctx: Context, recorder: AuditRecorder, codec: Codec) -> Listener:
    """The MLLP listener the settings describe (not started)."""
    return Listener(receiver_for(settings, ctx, recorder, codec), settings.mllp_host,
                    settings.mllp_port, settings.mllp_max_message_bytes,
                    max_connections=settings.mllp_max_connections)


__all__ = ["APPLIED", "Codec", "ERASED", "ERROR", "INBOX", "RECEIVED", "Inbox", "Listener", "MappingFileError",
           "Mappings", "Receiver", "SealedInboxError", "Stored", "expire", "forget_patient", "keep", "listener_for", "load",
           "receiver_for"]
