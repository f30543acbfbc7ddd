"""Ingestion adapters: the bulk loader (`fhir-server load`), docs/ingestion.md."""

from .loader import Failure, Loader, LoadOptions, LoadReport, load

__all__ = ["Failure", "LoadOptions", "LoadReport", "Loader", "load"]
