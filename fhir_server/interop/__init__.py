"""Ingestion adapters: the bulk loader (`fhir-server load`, docs/ingestion.md) and HL7 v2 over
MLLP (`fhir-server mllp`, docs/hl7v2.md)."""

from .hl7v2 import Listener, MappingFileError, listener_for
from .hl7v2.inbox import ERROR as HL7_ERROR, RECEIVED as HL7_RECEIVED
from .loader import Failure, Loader, LoadOptions, LoadReport, load

__all__ = ["Failure", "HL7_ERROR", "HL7_RECEIVED", "Listener", "LoadOptions", "LoadReport",
           "Loader", "MappingFileError", "listener_for", "load"]
