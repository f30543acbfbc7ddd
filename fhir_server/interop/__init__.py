"""Ingestion adapters: the bulk loader (`fhir-server load`, docs/ingestion.md) and HL7 v2 over
MLLP (`fhir-server mllp`, docs/hl7v2.md)."""

from .hl7v2 import INBOX as HL7_INBOX, Listener, MappingFileError, SealedInboxError, listener_for
from .hl7v2 import forget_patient as forget_hl7_patient, keep as keep_hl7_messages
from .hl7v2.inbox import ERROR as HL7_ERROR, RECEIVED as HL7_RECEIVED
from .loader import Failure, Loader, LoadOptions, LoadReport, load

__all__ = ["Failure", "HL7_ERROR", "HL7_INBOX", "HL7_RECEIVED", "Listener", "LoadOptions", "LoadReport",
           "Loader", "MappingFileError", "SealedInboxError", "forget_hl7_patient", "keep_hl7_messages", "listener_for",
           "load"]
