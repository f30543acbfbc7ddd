"""Protected storage: envelope encryption of stored bodies, the key ring, data keys
(docs/security.md); messages sealed by their senders and recipients' keys
(docs/sealed-messages.md)."""

from .blind import BlindDigest
from .codec import BodyCodec, EnvelopeCodec, PlainCodec, UnreadableBody, key_scope, patient_key_ids
from .datakeys import (RECHECK_SECONDS, DataKeys, DataKeysStatus, KeyDestroyed, patient_scope,
                       type_scope)
from .envelope import EnvelopeError, key_id_of
from .keyring import KeyProvider, KeyRingError, KeyRingStatus, LocalKeyRing, create_key_ring
from .providers import open_provider
from .ledger import ErasureLedger, LedgerError, ledger_key
from .recipients import USER_TYPES, EnrolledKeys, KeyDirectory
from .seal import CONTENT_TYPES, SealError, recipient_kids

__all__ = [
    "RECHECK_SECONDS", "BlindDigest", "BodyCodec", "DataKeys", "DataKeysStatus", "EnvelopeCodec",
    "EnvelopeError", "ErasureLedger", "KeyDestroyed", "KeyProvider", "KeyRingError",
    "KeyRingStatus", "LedgerError", "LocalKeyRing", "key_id_of", "ledger_key", "PlainCodec",
    "UnreadableBody", "create_key_ring", "open_provider", "patient_key_ids", "key_scope", "patient_scope", "type_scope",
    "CONTENT_TYPES", "USER_TYPES", "EnrolledKeys", "KeyDirectory", "SealError", "recipient_kids",
]
